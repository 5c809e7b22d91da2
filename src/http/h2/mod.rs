//! HTTP/2 on a socket, on the hyperium `h2` crate (the state machine under hyper):
//! framing, HPACK, flow control and the protocol's own defences are the crate's; what
//! is ours is feeding each stream through the same pipeline as HTTP/1.1
//! (`service::dispatch`, the same `ResponseBody`), so no feature exists for one
//! protocol only.
//!
//! - `conn`: one connection: settings and limits, the accept loop, GOAWAY on stop and
//!   when idle, PING liveness, the rapid-reset guard.
//! - `stream`: one stream through the pipeline.
//! - `body`: a request body into the app (flow control as backpressure) and a
//!   response out (the client's window as backpressure, --timeout-io on a stall).
//! - `tunnel`: a stream as a byte pipe, for WebSockets over HTTP/2 (RFC 8441).

pub mod conn;
mod body;
mod stream;
mod tunnel;

#[cfg(test)]
mod tests;

