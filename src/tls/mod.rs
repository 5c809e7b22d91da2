//! TLS certificates: obtaining them from an ACME CA and keeping them on disk.

pub mod acme;
pub mod store;
