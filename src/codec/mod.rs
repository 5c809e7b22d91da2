//! The wire formats, as pure functions over bytes: no sockets, no tasks, no
//! Python. HTTP/1.1 heads and bodies, WebSocket frames and permessage-deflate.
//! The connection code in `http/` drives them; they import nothing of it.

pub mod h1;
pub mod headers;
pub mod websocket;
