//! HTTPS: certificates read from files or ordered by ACME (in the master), and the TLS
//! handshake of accepted connections (in workers).

pub mod acceptor;
pub mod certs;
pub mod tickets;
