//! HTTP/1.1 on a socket: our own connection layer.
//!
//! hyper's connection keeps two 8 KiB buffers per connection for its whole
//! life; this one holds none while a connection idles between requests (see
//! docs/architecture.md). Parsing is httparse's, as in hyper.

pub mod conn;
mod decode;
mod encode;
mod parse;
pub use parse::ReceivedOrder;
