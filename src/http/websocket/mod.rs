//! A WebSocket session on an upgraded HTTP/1.1 connection, spoken by the I/O
//! thread over the codec in `codec::websocket`; the app sees ASGI messages.

pub mod session;
