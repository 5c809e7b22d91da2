//! WebSockets on the wire (RFC 6455, RFC 7692): the opening handshake's
//! checks, frames, and permessage-deflate.

pub mod deflate;
pub mod frame;
pub mod handshake;
