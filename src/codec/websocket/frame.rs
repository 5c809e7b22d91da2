//! RFC 6455 frames: parsing what clients send, encoding what we send.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    /// permessage-deflate's "compressed" bit.
    pub rsv1: bool,
    pub opcode: OpCode,
    pub payload: Bytes,
}

/// Why the connection must close, as a close code and reason (RFC 6455 7.4.1).
#[derive(Debug, PartialEq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const TOO_BIG: u16 = 1009;

fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Takes one whole frame off the front of `buf`, or None if more bytes are needed.
pub fn parse(buf: &mut BytesMut, max_payload: usize, deflate: bool) -> Result<Option<Frame>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !deflate) {
        return Err(violation(PROTOCOL_ERROR, "reserved bits set"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or_else(|| violation(PROTOCOL_ERROR, "unknown opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(violation(PROTOCOL_ERROR, "client frames must be masked"));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10)
        }
        n => (n as u64, 2),
    };
    if opcode.is_control() && (len > 125 || !fin) {
        return Err(violation(PROTOCOL_ERROR, "control frames must be short and unfragmented"));
    }
    if len > max_payload as u64 {
        return Err(violation(TOO_BIG, "message too big"));
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        buf.reserve(at + 4 + len - buf.len());
        return Ok(None);
    }
    let mask: [u8; 4] = buf[at..at + 4].try_into().expect("4 bytes");
    at += 4;
    buf.advance(at);
    let mut payload = buf.split_to(len);
    unmask(&mut payload, mask);
    Ok(Some(Frame { fin, rsv1, opcode, payload: payload.freeze() }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends one unmasked (server) frame.
pub fn encode(out: &mut BytesMut, opcode: OpCode, rsv1: bool, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.put_u8(0x80 | if rsv1 { 0x40 } else { 0 } | opcode.as_u8());
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= u16::MAX as usize => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    // A close reason must fit a control frame: 123 bytes, cut on a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// Reads a received close frame's code and reason; 1005 when it has none.
pub fn parse_close(payload: &[u8]) -> Result<(u16, String), Violation> {
    match payload.len() {
        0 => Ok((1005, String::new())),
        1 => Err(violation(PROTOCOL_ERROR, "close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(violation(PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| violation(INVALID_DATA, "close reason is not UTF-8"))?;
            Ok((code, reason.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(first);
        if payload.len() < 126 {
            b.put_u8(0x80 | payload.len() as u8);
        } else {
            b.put_u8(0x80 | 126);
            b.put_u16(payload.len() as u16);
        }
        b.put_slice(&mask);
        b.extend(payload.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
        b
    }

    #[test]
    fn parses_masked_text_in_pieces() {
        let full = client_frame(0x81, b"hello websocket", [1, 2, 3, 4]);
        let mut buf = BytesMut::from(&full[..5]);
        assert!(parse(&mut buf, 1024, false).unwrap().is_none());
        buf.extend_from_slice(&full[5..]);
        let f = parse(&mut buf, 1024, false).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, OpCode::Text, &b"hello websocket"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn medium_lengths_use_the_16_bit_form() {
        let payload = vec![7u8; 300];
        let mut buf = client_frame(0x82, &payload, [9, 9, 9, 9]);
        assert_eq!(parse(&mut buf, 1024, false).unwrap().unwrap().payload.len(), 300);
        let mut out = BytesMut::new();
        encode(&mut out, OpCode::Binary, false, &payload);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
    }

    #[test]
    fn rejects_protocol_violations() {
        let mut unmasked = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert_eq!(parse(&mut unmasked, 10, false).unwrap_err().code, PROTOCOL_ERROR);
        let mut rsv = client_frame(0xC1, b"a", [0; 4]);
        assert_eq!(parse(&mut rsv, 10, false).unwrap_err().code, PROTOCOL_ERROR);
        let mut big = client_frame(0x82, &[0; 200], [0; 4]);
        assert_eq!(parse(&mut big, 100, false).unwrap_err().code, TOO_BIG);
        let mut fragmented_ping = client_frame(0x09, b"", [0; 4]);
        assert_eq!(parse(&mut fragmented_ping, 100, false).unwrap_err().code, PROTOCOL_ERROR);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&close_payload(1000, "bye")).unwrap(), (1000, "bye".into()));
        assert_eq!(parse_close(&[]).unwrap().0, 1005);
        assert!(parse_close(&[0x03, 0xed]).is_err()); // 1005 may not be sent
        assert_eq!(close_payload(1000, &"é".repeat(100)).len(), 2 + 122);
    }
}
