//! The HTTP side of a worker: listeners, the request pipeline, responses.
//! Nothing here touches Python.

pub mod access_log;
pub mod balance;
pub mod bans;
pub mod body;
pub mod compress;
pub mod ctx;
pub mod error_page;
#[cfg(test)]
mod front_checks_tests;
pub mod h1;
pub mod h2;
pub mod host;
pub mod limits;
pub mod listeners;
pub mod proxy;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod server;
pub mod service;
pub mod shared_memory;
pub mod sniff;
#[cfg(test)]
mod testing;
pub mod static_files;
pub mod to_https;
pub mod websocket;
