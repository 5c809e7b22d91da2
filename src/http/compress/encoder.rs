//! The three codings behind one streaming interface: write input, flush what
//! is written so far (a sync flush: the client can decode everything sent),
//! finish. Output collects in a Vec that the caller takes after each step.

use std::io::{self, Write};

use crate::config::front::{CompressLevel, Encoding};

/// zstd's window for streams of unknown length: level 12 would pick 8 MiB, the most
/// browsers decode, and that much memory per open response. 1 MiB keeps nearly all the
/// gain on web responses.
const ZSTD_WINDOW_LOG: u32 = 20;
/// brotli's window: 4 MiB is its default; 1 MiB for the same reason as zstd's.
const BROTLI_WINDOW_LOG: u32 = 20;
/// The encoder's internal output buffer (brotli copies from it into our Vec).
const BROTLI_BUFFER: usize = 16 * 1024;
/// zstd's match tables for a stream of unknown length at the best level: its defaults
/// (8 MiB windows, 32 MiB of tables) took 16 ms to set up, per response.
const ZSTD_BEST_STREAM_TABLE_LOG: u32 = 18;

pub struct Encoder {
    state: State,
    /// What `finish` produced, the encoders having been consumed by it.
    tail: Vec<u8>,
}

enum State {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Finished,
}

impl Encoder {
    /// `size`: the exact input length when known. zstd then sizes its window and
    /// tables to it (a small body costs microseconds to set up instead of
    /// milliseconds) and records it in the frame; brotli takes it as a hint.
    pub fn new(coding: Encoding, level: CompressLevel, size: Option<u64>) -> io::Result<Self> {
        let state = match coding {
            Encoding::Gzip => State::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level.gzip()))),
            Encoding::Br => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: level.brotli() as i32,
                    lgwin: BROTLI_WINDOW_LOG as i32,
                    size_hint: size.map_or(0, |n| n.min(usize::MAX as u64) as usize),
                    ..Default::default()
                };
                State::Br(Box::new(brotli::CompressorWriter::with_params(Vec::new(), BROTLI_BUFFER, &params)))
            }
            Encoding::Zstd => {
                use zstd::stream::raw::CParameter;
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), level.zstd())?;
                z.window_log(ZSTD_WINDOW_LOG)?;
                match size {
                    Some(n) => z.set_pledged_src_size(Some(n))?,
                    None if level == CompressLevel::Best => {
                        z.set_parameter(CParameter::HashLog(ZSTD_BEST_STREAM_TABLE_LOG))?;
                        z.set_parameter(CParameter::ChainLog(ZSTD_BEST_STREAM_TABLE_LOG))?;
                    }
                    None => {}
                }
                State::Zstd(z)
            }
        };
        Ok(Encoder { state, tail: Vec::new() })
    }

    pub fn write(&mut self, input: &[u8]) -> io::Result<()> {
        match &mut self.state {
            State::Gzip(w) => w.write_all(input),
            State::Br(w) => w.write_all(input),
            State::Zstd(w) => w.write_all(input),
            State::Finished => Err(io::Error::other("write after the compressed stream ended")),
        }
    }

    /// Makes everything written so far decodable by the client (gzip Z_SYNC_FLUSH,
    /// brotli's and zstd's flush operations): costs a few bytes, never delays data.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            State::Gzip(w) => w.flush(),
            State::Br(w) => w.flush(),
            State::Zstd(w) => w.flush(),
            State::Finished => Ok(()),
        }
    }

    /// Ends the stream: its last bytes are in the next `take`.
    pub fn finish(&mut self) -> io::Result<()> {
        self.tail = match std::mem::replace(&mut self.state, State::Finished) {
            State::Gzip(w) => w.finish()?,
            State::Br(w) => w.into_inner(),
            State::Zstd(w) => w.finish()?,
            State::Finished => return Ok(()),
        };
        Ok(())
    }

    /// The output produced since the last take.
    pub fn take(&mut self) -> Vec<u8> {
        match &mut self.state {
            State::Gzip(w) => std::mem::take(w.get_mut()),
            State::Br(w) => std::mem::take(w.get_mut()),
            State::Zstd(w) => std::mem::take(w.get_mut()),
            State::Finished => std::mem::take(&mut self.tail),
        }
    }
}

/// A whole body at once: what a response of known, moderate size gets, so that
/// its Content-Length can be the compressed one.
pub fn compress_all(coding: Encoding, level: CompressLevel, input: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = Encoder::new(coding, level, Some(input.len() as u64))?;
    e.write(input)?;
    let mut out = e.take();
    e.finish()?;
    out.extend_from_slice(&e.take());
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    pub fn decode(coding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Encoding::Gzip => flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).map(drop),
            Encoding::Br => brotli::Decompressor::new(data, 4096).read_to_end(&mut out).map(drop),
            Encoding::Zstd => zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out)).map(drop),
        }
        .unwrap_or_else(|e| panic!("{coding:?}: {e}"));
        out
    }

    /// What a streaming decoder has produced from a prefix of the stream (no end yet).
    fn decode_prefix(coding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut read = |r: &mut dyn Read| {
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        match coding {
            Encoding::Gzip => read(&mut flate2::read::GzDecoder::new(data)),
            Encoding::Br => read(&mut brotli::Decompressor::new(data, 4096)),
            Encoding::Zstd => read(&mut zstd::stream::read::Decoder::new(data).unwrap()),
        }
        out
    }

    pub fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| format!("{{\"id\":{i},\"name\":\"item {}\"}},", i % 97)).collect::<String>().into_bytes()
    }

    #[test]
    fn round_trip_every_coding_and_level() {
        let input = sample(5000);
        for coding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            for level in [CompressLevel::Fast, CompressLevel::Balanced, CompressLevel::Best] {
                let out = compress_all(coding, level, &input).unwrap();
                assert!(out.len() < input.len() / 4, "{coding:?} {level:?}: {} of {}", out.len(), input.len());
                assert_eq!(decode(coding, &out), input);
            }
            assert_eq!(decode(coding, &compress_all(coding, CompressLevel::Balanced, b"").unwrap()), b"");
        }
    }

    #[test]
    fn a_flush_makes_every_chunk_decodable_at_once() {
        for coding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let mut e = Encoder::new(coding, CompressLevel::Best, None).unwrap();
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for i in 0..5 {
                let event = format!("data: event {i}\n\n");
                e.write(event.as_bytes()).unwrap();
                e.flush().unwrap();
                wire.extend_from_slice(&e.take());
                expected.extend_from_slice(event.as_bytes());
                // Before the stream ends, the client already has this event.
                assert_eq!(decode_prefix(coding, &wire), expected, "{coding:?} after event {i}");
            }
            e.finish().unwrap();
            wire.extend_from_slice(&e.take());
            assert_eq!(decode(coding, &wire), expected);
        }
    }

    /// Rough per-response cost of an encoder and a small body; `cargo test --release
    /// -- --ignored --nocapture encoder_cost` prints it.
    #[test]
    #[ignore]
    fn encoder_cost() {
        let body = sample(2500); // ~ 100 KiB of JSON
        for coding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let n = 200;
            let t = std::time::Instant::now();
            for _ in 0..n {
                let mut e = Encoder::new(coding, CompressLevel::Balanced, None).unwrap();
                e.write(b"{\"ok\":true}").unwrap();
                e.finish().unwrap();
                std::hint::black_box(e.take());
            }
            let create = t.elapsed() / n;
            let t = std::time::Instant::now();
            let mut size = 0;
            for _ in 0..n {
                size = compress_all(coding, CompressLevel::Balanced, &body).unwrap().len();
            }
            println!("{coding:?}: new+tiny {create:?}, {} KiB JSON -> {size} B in {:?}", body.len() / 1024, t.elapsed() / n);
        }
    }
}
