//! An open WebSocket on the I/O thread: frames in and out, pings, closing.

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use crate::bridge::responses::ResponseReceiver;

use crate::codec::websocket::deflate::{Codec, Params};
use crate::codec::websocket::frame::{self, Frame, OpCode, Violation};
use crate::config::WsConfig;
use crate::bridge::stop::StopReason;
use crate::bridge::exchange::{Exchange, ResponseEvent, WsMessage};

/// How long we wait for the client's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A message being received in several frames.
struct Partial {
    opcode: OpCode,
    compressed: bool,
    data: BytesMut,
}

struct Session<'a, W> {
    ex: &'a Arc<Exchange>,
    writer: W,
    codec: Option<Codec>,
    max_size: usize,
    partial: Option<Partial>,
    out: BytesMut,
}

enum Flow {
    Continue,
    /// The socket is done: stop the session.
    Done,
}

/// `leftover`: bytes the client sent after its opening request, already read.
pub async fn run<IO>(
    io: IO,
    leftover: BytesMut,
    ex: Arc<Exchange>,
    mut app: ResponseReceiver,
    config: WsConfig,
    deflate: Option<Params>,
    mut stop: crate::bridge::stop::StopSignal,
)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, writer) = tokio::io::split(io);
    let mut s = Session { ex: &ex, writer, codec: deflate.map(Codec::new), max_size: config.max_size, partial: None, out: BytesMut::new() };
    let mut buf = leftover;
    buf.reserve(8 * 1024);
    let mut paused = false;
    let max_queue = config.max_queue;
    let ping_every = config.ping_interval.map(Duration::from_secs_f64);
    let pong_within = Duration::from_secs_f64(config.ping_timeout.unwrap_or(20.0));
    let mut ping_timer = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping_timer.tick().await;
    let mut awaiting_pong: Option<Instant> = None;

    loop {
        // Handle every whole frame already buffered before waiting for more.
        loop {
            match frame::parse(&mut buf, s.max_size, s.codec.is_some()) {
                Ok(Some(f)) => {
                    if f.opcode == OpCode::Pong {
                        awaiting_pong = None;
                        continue;
                    }
                    match s.on_frame(f).await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Done) => return,
                        Err(v) => return s.fail(v).await,
                    }
                    if s.ex.lock().ws_backlog() >= max_queue {
                        paused = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(v) => return s.fail(v).await,
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buf), if !paused => match read {
                Ok(0) | Err(_) => {
                    s.ex.ws_closed(1006, String::new());
                    return;
                }
                Ok(_) => {}
            },
            _ = s.ex.wants_more.notified(), if paused => paused = false,
            event = app.recv() => match s.on_app(event).await {
                Flow::Continue => {}
                Flow::Done => {
                    // Give the client a moment to answer our close, as RFC 6455 asks.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                        while let Ok(n) = reader.read_buf(&mut buf).await {
                            if n == 0 { break; }
                            if let Ok(Some(Frame { opcode: OpCode::Close, .. })) = frame::parse(&mut buf, s.max_size, true) { break; }
                            buf.clear();
                        }
                    }).await;
                    return;
                }
            },
            // The worker is stopping: 1001 when the server goes away, 1012 when
            // it restarts (the client may reconnect at once).
            reason = crate::bridge::stop::stopped(&mut stop) => {
                let close = match reason {
                    StopReason::Shutdown => Violation { code: 1001, reason: "server shutting down" },
                    StopReason::Restart => Violation { code: 1012, reason: "server restarting" },
                };
                return s.fail(close).await;
            }
            _ = ping_timer.tick(), if ping_every.is_some() => {
                if awaiting_pong.is_some_and(|since| since.elapsed() >= pong_within) {
                    return s.fail(Violation { code: 1011, reason: "keepalive ping timeout" }).await;
                }
                if awaiting_pong.is_none() {
                    awaiting_pong = Some(Instant::now());
                }
                if s.send(OpCode::Ping, false, b"").await.is_err() {
                    s.ex.ws_closed(1006, String::new());
                    return;
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    async fn send(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        frame::encode(&mut self.out, opcode, rsv1, payload);
        self.writer.write_all(&self.out).await?;
        self.ex.sent(payload.len());
        Ok(())
    }

    async fn on_frame(&mut self, f: Frame) -> Result<Flow, Violation> {
        match f.opcode {
            OpCode::Ping => {
                let _ = self.send(OpCode::Pong, false, &f.payload).await;
                Ok(Flow::Continue)
            }
            OpCode::Pong => Ok(Flow::Continue),
            OpCode::Close => {
                let (code, reason) = frame::parse_close(&f.payload)?;
                let echo = if code == 1005 { 1000 } else { code };
                let _ = self.send(OpCode::Close, false, &frame::close_payload(echo, "")).await;
                let _ = self.writer.shutdown().await;
                self.ex.ws_closed(code, reason);
                Ok(Flow::Done)
            }
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(Violation { code: frame::PROTOCOL_ERROR, reason: "new message before the previous one ended" });
                }
                if f.fin {
                    self.deliver(f.opcode, f.rsv1, f.payload)?;
                } else {
                    self.partial = Some(Partial { opcode: f.opcode, compressed: f.rsv1, data: BytesMut::from(&f.payload[..]) });
                }
                Ok(Flow::Continue)
            }
            OpCode::Continuation => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(Violation { code: frame::PROTOCOL_ERROR, reason: "continuation without a message" });
                };
                if f.rsv1 {
                    return Err(Violation { code: frame::PROTOCOL_ERROR, reason: "RSV1 on a continuation frame" });
                }
                if p.data.len() + f.payload.len() > self.max_size {
                    return Err(Violation { code: frame::TOO_BIG, reason: "message too big" });
                }
                p.data.extend_from_slice(&f.payload);
                if f.fin {
                    let p = self.partial.take().expect("checked above");
                    self.deliver(p.opcode, p.compressed, p.data.freeze())?;
                }
                Ok(Flow::Continue)
            }
        }
    }

    fn deliver(&mut self, opcode: OpCode, compressed: bool, data: Bytes) -> Result<(), Violation> {
        let data = match (compressed, self.codec.as_mut()) {
            (true, Some(codec)) => Bytes::from(codec.decompress(&data, self.max_size).map_err(|reason| Violation { code: frame::TOO_BIG, reason })?),
            _ => data,
        };
        let msg = if opcode == OpCode::Text {
            let text = String::from_utf8(data.into()).map_err(|_| Violation { code: frame::INVALID_DATA, reason: "text message is not UTF-8" })?;
            WsMessage::Text(text)
        } else {
            WsMessage::Binary(data)
        };
        self.ex.push_ws(msg);
        Ok(())
    }

    async fn on_app(&mut self, event: Option<ResponseEvent>) -> Flow {
        let (opcode, payload) = match event {
            Some(ResponseEvent::Text(t)) => (OpCode::Text, Bytes::from(t)),
            Some(ResponseEvent::Binary(b)) => (OpCode::Binary, b),
            Some(ResponseEvent::Close { code, reason }) => {
                let _ = self.send(OpCode::Close, false, &frame::close_payload(code, &reason)).await;
                self.ex.ws_closed(code, reason);
                return Flow::Done;
            }
            // The app's side ended without closing (it returned or failed): close for it.
            None | Some(ResponseEvent::Abort) => {
                let _ = self.send(OpCode::Close, false, &frame::close_payload(1011, "server error")).await;
                self.ex.ws_closed(1011, String::new());
                return Flow::Done;
            }
            Some(_) => return Flow::Continue,
        };
        let sent = match self.codec.as_mut() {
            Some(codec) => {
                let (wire, compressed) = codec.compress(&payload);
                self.send(opcode, compressed, &wire).await
            }
            None => self.send(opcode, false, &payload).await,
        };
        if sent.is_err() {
            self.ex.ws_closed(1006, String::new());
            return Flow::Done;
        }
        Flow::Continue
    }

    async fn fail(&mut self, v: Violation) {
        crate::debug!("closing WebSocket: {} ({})", v.reason, v.code);
        let _ = self.send(OpCode::Close, false, &frame::close_payload(v.code, v.reason)).await;
        let _ = self.writer.shutdown().await;
        self.ex.ws_closed(v.code, v.reason.to_string());
    }
}
