//! The HTTP side of a worker: listeners, the request pipeline, responses.
//! Nothing here touches Python.

pub mod access_log;
pub mod body;
pub mod ctx;
pub mod error_page;
pub mod h1;
pub mod h2;
pub mod host;
pub mod limits;
pub mod listeners;
pub mod proxy;
pub mod proxy_protocol;
pub mod server;
pub mod service;
pub mod sniff;
#[cfg(test)]
mod testing;
pub mod static_files;
pub mod to_https;
pub mod websocket;
