//! permessage-deflate (RFC 7692): negotiation and per-message (de)compression.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Messages shorter than this go out uncompressed: deflating them costs more CPU than it saves bytes.
const MIN_COMPRESS: usize = 128;
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: u8,
}

impl Params {
    /// Picks the first offer in Sec-WebSocket-Extensions we can honour.
    pub fn negotiate(header: &str) -> Option<Params> {
        'offers: for offer in header.split(',') {
            let mut parts = offer.split(';').map(str::trim);
            if parts.next() != Some("permessage-deflate") {
                continue;
            }
            let mut p = Params { server_no_context_takeover: false, client_no_context_takeover: false, server_max_window_bits: 15 };
            for param in parts {
                let (name, value) = match param.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (param, None),
                };
                match name {
                    "server_no_context_takeover" => p.server_no_context_takeover = true,
                    "client_no_context_takeover" => p.client_no_context_takeover = true,
                    // zlib cannot produce 8-bit windows: decline such offers.
                    "server_max_window_bits" => match value.and_then(|v| v.parse::<u8>().ok()) {
                        Some(bits @ 9..=15) => p.server_max_window_bits = bits,
                        _ => continue 'offers,
                    },
                    "client_max_window_bits" => {}
                    _ => continue 'offers,
                }
            }
            return Some(p);
        }
        None
    }

    pub fn response_header(&self) -> String {
        let mut h = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            h.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            h.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            h.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        }
        h
    }
}

pub struct Codec {
    params: Params,
    compress: Compress,
    decompress: Decompress,
}

impl Codec {
    pub fn new(params: Params) -> Self {
        Codec {
            compress: Compress::new_with_window_bits(Compression::fast(), false, params.server_max_window_bits),
            decompress: Decompress::new_with_window_bits(false, 15),
            params,
        }
    }

    /// The payload to send and whether it is compressed (RSV1).
    pub fn compress(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        if data.len() < MIN_COMPRESS {
            return (data.to_vec(), false);
        }
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start_in = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            if self.compress.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync).is_err() {
                return (data.to_vec(), false);
            }
            let done = (self.compress.total_in() - start_in) as usize == data.len();
            if done && out.ends_with(&TAIL) && out.capacity() > out.len() {
                break;
            }
        }
        out.truncate(out.len() - TAIL.len());
        if self.params.server_no_context_takeover {
            self.compress.reset();
        }
        (out, true)
    }

    /// Inflates one message, refusing to grow it past `max` bytes (a small frame
    /// can expand a thousandfold).
    pub fn decompress(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, &'static str> {
        let mut input = Vec::with_capacity(data.len() + 4);
        input.extend_from_slice(data);
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity((data.len() * 3).clamp(64, max.max(64)));
        let start_in = self.decompress.total_in();
        loop {
            let consumed = (self.decompress.total_in() - start_in) as usize;
            if out.len() == out.capacity() {
                if out.len() >= max {
                    return Err("message too big");
                }
                out.reserve(out.len().max(1024).min(max - out.len() + 1));
            }
            match self.decompress.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let consumed = (self.decompress.total_in() - start_in) as usize;
                    if consumed == input.len() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(_) => return Err("invalid compressed data"),
            }
        }
        if out.len() > max {
            return Err("message too big");
        }
        if self.params.client_no_context_takeover {
            self.decompress.reset(false);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_offers() {
        let p = Params::negotiate("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(p.response_header(), "permessage-deflate");
        let p = Params::negotiate("x-webkit, permessage-deflate; server_no_context_takeover; server_max_window_bits=10").unwrap();
        assert_eq!(p.response_header(), "permessage-deflate; server_no_context_takeover; server_max_window_bits=10");
        assert!(Params::negotiate("permessage-deflate; server_max_window_bits=8").is_none());
        assert!(Params::negotiate("permessage-deflate; unknown=1").is_none());
    }

    #[test]
    fn round_trips_and_bounds_inflation() {
        let params = Params::negotiate("permessage-deflate").unwrap();
        let mut server = Codec::new(params.clone());
        let mut peer = Codec::new(params);
        let text = "ferrogate ".repeat(1000);
        for _ in 0..3 {
            let (wire, compressed) = server.compress(text.as_bytes());
            assert!(compressed && wire.len() < text.len() / 10);
            assert_eq!(peer.decompress(&wire, 1 << 20).unwrap(), text.as_bytes());
        }
        let (wire, _) = server.compress(&vec![0u8; 100_000]);
        assert_eq!(peer.decompress(&wire, 1000), Err("message too big"));
        assert_eq!(server.compress(b"tiny"), (b"tiny".to_vec(), false));
    }
}
