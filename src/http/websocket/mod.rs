//! WebSockets (RFC 6455, RFC 7692), spoken by the I/O thread; the app sees ASGI messages.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod session;
