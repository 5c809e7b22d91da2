//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that passes TCP
//! through (HAProxy `send-proxy`, AWS NLB, GCP, Azure, Fly) says who the client is in
//! a header it writes before the client's first byte. With --proxy-protocol every
//! listener expects one, right after accept and before TLS and HTTP; the address in it
//! becomes the connection's peer, so the scope, the access log, rate limits and bans
//! see the real client.
//!
//! The header is read exactly: what follows it (a TLS ClientHello, an HTTP request)
//! stays in the socket. The socket is peeked, so a header that arrives whole costs
//! one peek and one read; bytes are consumed only once they are known to be header.
//!
//! Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ctx::ConnInfo;
use crate::config::Config;

/// The twelve bytes that open a version 2 header (no HTTP request or TLS record starts so).
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line, CRLF included, is at most this long (spec 2.1).
pub const V1_MAX: usize = 107;
/// A version 2 header's address block and TLVs together may be this long; real ones
/// (addresses, SNI, TLS facts, a cloud endpoint id) are a few hundred bytes.
pub const V2_MAX_PAYLOAD: usize = 4096;
/// Enough to parse any header's addresses: v2's fixed part and its largest address
/// block (two unix paths); v1 fits too.
const PEEK: usize = 16 + 216;

/// What a header says.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// The client's connection to the proxy: the client, and the address it connected to.
    Proxied { source: SocketAddr, destination: SocketAddr },
    /// The proxy speaking for itself (v2 LOCAL, its health checks), or not saying (v1
    /// UNKNOWN, v2 UNSPEC or unix addresses): the connection's own addresses stand.
    Local,
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header of `len` bytes in all (a v2 header's TLVs may not be in the buffer yet).
    Done { header: Header, len: usize },
    /// Every byte so far belongs to a header that is not complete yet.
    Partial,
}

/// Parses the beginning of a connection. An error says what is wrong, for the debug log.
pub fn parse(buf: &[u8]) -> Result<Parsed, &'static str> {
    if buf.len() < V2_SIGNATURE.len() && V2_SIGNATURE.starts_with(buf) && !buf.is_empty() {
        // "\r\n..." could still be either: v1 starts with "PROXY".
        return Ok(Parsed::Partial);
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    let prefix = &b"PROXY "[..buf.len().min(6)];
    if !buf.starts_with(prefix) {
        return Err("no PROXY protocol header (the peer spoke first without one)");
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, &'static str> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err("PROXY v1 line longer than 107 bytes") } else { Ok(Parsed::Partial) };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| "PROXY v1 line is not ASCII")?;
    let len = end + 2;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // Whatever follows UNKNOWN is to be ignored (spec 2.1).
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or("PROXY v1 line has too few fields");
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err("PROXY v1 line has too many fields");
            }
            let ip = |s: &str| -> Result<IpAddr, &'static str> {
                match (family, s.parse::<IpAddr>()) {
                    (_, Err(_)) => Err("PROXY v1 address is not an IP address"),
                    ("TCP4", Ok(ip @ IpAddr::V4(_))) | ("TCP6", Ok(ip @ IpAddr::V6(_))) => Ok(ip),
                    _ => Err("PROXY v1 address does not match its family"),
                }
            };
            let port = |s: &str| -> Result<u16, &'static str> {
                // Decimal without leading zeros (spec 2.1).
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("PROXY v1 port is not a number");
                }
                s.parse().map_err(|_| "PROXY v1 port is out of range")
            };
            Header::Proxied { source: SocketAddr::new(ip(src)?, port(sport)?), destination: SocketAddr::new(ip(dst)?, port(dport)?) }
        }
        _ => return Err("PROXY v1 line names no known protocol (TCP4, TCP6, UNKNOWN)"),
    };
    Ok(Parsed::Done { header, len })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, &'static str> {
    if buf.len() < 16 {
        return Ok(Parsed::Partial);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err("PROXY v2 header with an unknown version");
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err("PROXY v2 header longer than 4 KiB");
    }
    if transport > 2 || family > 3 {
        return Err("PROXY v2 header with an unknown address family or transport");
    }
    let len = 16 + payload;
    let local = Parsed::Done { header: Header::Local, len };
    match command {
        // LOCAL: the receiver must ignore the address block (spec 2.2).
        0 => return Ok(local),
        1 => {}
        _ => return Err("PROXY v2 header with an unknown command"),
    }
    let block = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if payload < block {
        return Err("PROXY v2 address block shorter than its family needs");
    }
    if buf.len() < 16 + block {
        return Ok(Parsed::Partial);
    }
    let a = &buf[16..16 + block];
    let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
    let header = match family {
        1 => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            Header::Proxied { source: SocketAddr::new(ip(0), port(8)), destination: SocketAddr::new(ip(4), port(10)) }
        }
        2 => {
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&a[at..at + 16]).expect("16 bytes")));
            Header::Proxied { source: SocketAddr::new(ip(0), port(32)), destination: SocketAddr::new(ip(16), port(34)) }
        }
        // UNSPEC, or unix paths no scope can carry: keep the connection's addresses.
        _ => Header::Local,
    };
    Ok(Parsed::Done { header, len })
}

/// A socket whose pending bytes can be looked at without taking them.
pub trait Peek: AsyncRead + Unpin + Send {
    fn peek<'a>(&'a mut self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl Peek for tokio::net::TcpStream {
    fn peek<'a>(&'a mut self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        tokio::net::TcpStream::peek(self, buf)
    }
}

impl Peek for tokio::net::UnixStream {
    fn peek<'a>(&'a mut self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        use std::os::fd::AsRawFd;
        // tokio has no peek for unix streams: recv(MSG_PEEK) when readable.
        async move {
            loop {
                self.readable().await?;
                let fd = self.as_raw_fd();
                let peeked = self.try_io(tokio::io::Interest::READABLE, || {
                    // SAFETY: `buf` is valid for writes of its length; fd is this open socket.
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
                    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
                });
                match peeked {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        }
    }
}

/// Reads one header off `io`, and nothing after it.
pub async fn read<S: Peek>(io: &mut S) -> Result<Header, String> {
    let mut buf = [0u8; PEEK];
    // Bytes taken off the socket already: all of them header.
    let mut taken = 0;
    loop {
        let n = io.peek(&mut buf[taken..]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {taken} byte(s) of a PROXY header"));
        }
        match parse(&buf[..taken + n])? {
            // Not complete: every byte seen is header, so take them, and the next
            // peek waits for more instead of seeing the same bytes again.
            Parsed::Partial => {
                io.read_exact(&mut buf[taken..taken + n]).await.map_err(|e| e.to_string())?;
                taken += n;
            }
            Parsed::Done { header, len } => {
                // The rest of the header (v2 TLVs, skipped) and not a byte more.
                let mut rest = len - taken;
                while rest > 0 {
                    let chunk = rest.min(buf.len());
                    io.read_exact(&mut buf[..chunk]).await.map_err(|e| e.to_string())?;
                    rest -= chunk;
                }
                return Ok(header);
            }
        }
    }
}

/// The PROXY step of an accepted connection: refuses a peer outside
/// --forwarded-allow-ips (unix-socket peers are local, so trusted), reads the header
/// within --timeout-keep-alive, and makes its addresses the connection's. False: close it.
pub async fn accept<S: Peek>(io: &mut S, info: &mut ConnInfo, config: &Config) -> bool {
    let peer = info.peer;
    if let Some(p) = peer.filter(|p| !config.proxy.trusted.contains(p.ip())) {
        untrusted(p);
        return false;
    }
    let patience = Duration::from_secs(config.http.keep_alive_timeout);
    let who = || peer.map_or_else(|| "unix socket".to_string(), |p| p.to_string());
    match tokio::time::timeout(patience, read(io)).await {
        Ok(Ok(Header::Proxied { source, destination })) => {
            info.peer = Some(source);
            info.local = Some(destination);
            true
        }
        Ok(Ok(Header::Local)) => true,
        Ok(Err(e)) => {
            crate::debug!("{}: {e}; closing (--proxy-protocol expects a header first)", who());
            false
        }
        Err(_) => {
            crate::debug!("{}: no PROXY header within {} s; closing", who(), patience.as_secs());
            false
        }
    }
}

/// A PROXY header is a claim about who the client is: only our load balancers may
/// make it. Said once at warning level (it is most likely a missing
/// --forwarded-allow-ips entry), then at debug level (it may be a scanner).
fn untrusted(peer: SocketAddr) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        crate::warn!("{peer}: refused a connection: with --proxy-protocol only peers in --forwarded-allow-ips may connect (add the load balancer's address there)");
    } else {
        crate::debug!("{peer}: not in --forwarded-allow-ips; closing (--proxy-protocol)");
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
