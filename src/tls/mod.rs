//! HTTPS: certificates read from files or ordered by ACME (in the master), kept in the
//! state directory, and the TLS handshake of accepted connections (in workers).

pub mod acceptor;
pub mod acme;
pub mod certs;
pub mod store;
pub mod tickets;
