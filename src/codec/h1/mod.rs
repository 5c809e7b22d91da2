//! HTTP/1.1 on the wire: request heads (httparse does the tokenizing),
//! request body framing, response heads.

pub mod decode;
pub mod encode;
pub mod parse;

pub use parse::ReceivedOrder;
