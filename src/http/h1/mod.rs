//! HTTP/1.1 on a socket: our own connection layer, over the codec in
//! `codec::h1`.
//!
//! hyper's connection keeps two 8 KiB buffers per connection for its whole
//! life; this one holds none while a connection idles between requests (see
//! docs/architecture.md).

pub mod conn;
mod read;
pub(crate) use read::read_more;
mod sink;
pub(crate) use sink::{Sink, locked_halves};
mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;
