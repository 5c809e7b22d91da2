//! Request bodies off the wire: a fixed length, or chunked (RFC 9112 section 7.1)
//! with extensions skipped and trailers read and dropped. Every line has a
//! size limit, so a client cannot make us buffer without end.

use bytes::{Bytes, BytesMut};

use super::parse::Framing;

const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Chunk extensions (`;name=value` after a size) allowed over a whole body:
/// without a cap, 4 KiB of extension per 1-byte chunk would make the server read
/// thousands of times the body size that an app limits on.
const MAX_EXTENSIONS: usize = 16 * 1024;

pub enum Decoded {
    Data(Bytes),
    /// Nothing decodable in the buffer: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

#[derive(Debug)]
pub struct Malformed(pub &'static str);

#[derive(Debug, Clone, Copy)]
pub enum Decoder {
    Length(u64),
    /// With the extension bytes read so far.
    Chunked(Chunk, usize),
}

#[derive(Debug, Clone, Copy)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// With the trailer bytes read so far.
    Trailers(usize),
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::Size, 0),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Length(0) | Decoder::Chunked(Chunk::Done, _))
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        match self {
            Decoder::Length(0) => Ok(Decoded::Done),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::Chunked(state, extensions) => loop {
                match *state {
                    Chunk::Done => return Ok(Decoded::Done),
                    Chunk::Size => {
                        let Some(line) = take_line(buf, MAX_CHUNK_LINE, "chunk size line too long")? else {
                            return Ok(Decoded::NeedMore);
                        };
                        let size = parse_chunk_size(&line)?;
                        *extensions += line.iter().position(|&b| b == b';').map_or(0, |at| line.len() - at);
                        if *extensions > MAX_EXTENSIONS {
                            return Err(Malformed("too many chunk extension bytes"));
                        }
                        *state = if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) };
                    }
                    Chunk::Data(remaining) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let n = remaining.min(buf.len() as u64) as usize;
                        *state = if remaining == n as u64 { Chunk::DataEnd } else { Chunk::Data(remaining - n as u64) };
                        return Ok(Decoded::Data(buf.split_to(n).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(Malformed("chunk data not followed by CRLF"));
                        }
                        let _ = buf.split_to(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Trailers(seen) => {
                        let Some(line) = take_line(buf, MAX_TRAILERS - seen, "trailers too long")? else {
                            return Ok(Decoded::NeedMore);
                        };
                        if line.is_empty() {
                            *state = Chunk::Done;
                        } else if seen + line.len() + 2 > MAX_TRAILERS {
                            return Err(Malformed("trailers too long"));
                        } else {
                            *state = Chunk::Trailers(seen + line.len() + 2);
                        }
                    }
                }
            },
        }
    }
}

/// One CRLF-terminated line, without its CRLF; None if it is not all here yet.
/// A bare CR or LF, or any other control byte but tab, is malformed: a proxy in
/// front may end lines differently, and a disagreement is a smuggled request.
fn take_line(buf: &mut BytesMut, limit: usize, too_long: &'static str) -> Result<Option<BytesMut>, Malformed> {
    let mut end = None;
    for (i, &b) in buf.iter().enumerate().take(limit + 2) {
        match b {
            b'\r' if buf.get(i + 1) == Some(&b'\n') => {
                end = Some(i);
                break;
            }
            b'\r' if i + 1 == buf.len() => break, // the LF may be in the next read
            b'\t' => {}
            b if b < 0x20 || b == 0x7f => return Err(Malformed("control character in a chunk line")),
            _ => {}
        }
    }
    match end {
        Some(end) if end > limit => Err(Malformed(too_long)),
        Some(end) => {
            let mut line = buf.split_to(end + 2);
            line.truncate(end);
            Ok(Some(line))
        }
        None if buf.len() > limit => Err(Malformed(too_long)),
        None => Ok(None),
    }
}

/// `1a`, `1a;name=value`, `1a ; ext`: hex digits, optional blanks, optional extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) || rest.iter().any(|&b| b != b' ' && b != b'\t' && b.is_ascii_whitespace()) {
        return Err(Malformed("invalid chunk size line"));
    }
    if digits.is_empty() || digits.len() > 15 {
        return Err(Malformed("invalid chunk size"));
    }
    u64::from_str_radix(std::str::from_utf8(digits).expect("hex digits"), 16).map_err(|_| Malformed("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, input: &[&[u8]]) -> Result<(Vec<u8>, bool), Malformed> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((out, true)),
                }
            }
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn chunked_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6 ; e\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 0..wire.len() {
            let (body, done) = decode_all(Framing::Chunked, &[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!((body.as_slice(), done), (&b"hello world"[..], true), "cut at {cut}");
        }
    }

    #[test]
    fn length_stops_at_the_length() {
        let mut d = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcGET"[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Decoded::Data(b)) if &b[..] == b"abc"));
        assert!(matches!(d.decode(&mut buf), Ok(Decoded::Done)));
        assert_eq!(&buf[..], b"GET");
    }

    #[test]
    fn malformed_chunks() {
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            // A bare LF in an extension: the start of a smuggling attack through a proxy that ends lines at LF.
            b"2;\nxx\r\n47\r\n",
            b"2\n\r\nxx\r\n",
            b"2 x\r\nxx\r\n",
            b"0\r\nX-T: a\nb\r\n\r\n",
        ] {
            assert!(decode_all(Framing::Chunked, &[bad]).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(decode_all(Framing::Chunked, &[&[b'1'; 5000]]).is_err());
        let chatty: Vec<u8> = [b"1;".as_slice(), &[b'e'; 4000], b"\r\nx\r\n"].concat().repeat(5);
        assert!(decode_all(Framing::Chunked, &[&chatty]).is_err());
        let many_trailers: Vec<u8> = [&b"0\r\n"[..], &b"X-T: aaaaaaaaaaaaaaaa\r\n".repeat(1000), b"\r\n"].concat();
        assert!(decode_all(Framing::Chunked, &[&many_trailers]).is_err());
    }
}
