//! A body being compressed as the connection pulls it. Work is done in pieces
//! of at most PIECE input bytes per poll, so that one large body cannot keep
//! the I/O thread from the other connections; an app's streamed chunk is
//! flushed once all of it is compressed, so that nothing it sends (an SSE
//! event) waits in the encoder for the next one.

use bytes::Bytes;
use std::io;
use std::sync::Arc;

use super::cache::{self, Cache, Key};
use super::encoder::Encoder;
use crate::config::front::{CompressLevel, Encoding};

/// Input compressed per poll: tens to hundreds of microseconds at the balanced level.
pub const PIECE: usize = 64 * 1024;

pub struct Compressing {
    coding: Encoding,
    level: CompressLevel,
    /// The input's length when known (a file, a whole body), for the encoder's setup.
    size: Option<u64>,
    /// Created on the first piece: a HEAD response, whose body is never sent, costs none.
    encoder: Option<Encoder>,
    /// Input taken from the body and not yet compressed.
    pending: Bytes,
    /// Flush at the end of each pushed chunk (the app's own messages).
    flush_each: bool,
    /// The body has ended: finish once `pending` is empty.
    ended: bool,
    done: bool,
    trailers: Option<http::HeaderMap>,
    /// Keeps a copy of the output for the static cache, stored when complete.
    fill: Option<Fill>,
}

struct Fill {
    cache: Arc<Cache>,
    key: Key,
    out: Vec<u8>,
}

impl Compressing {
    /// `size`: the exact length of the input, when known. `flush_each`: flush after
    /// every pushed chunk.
    pub fn new(coding: Encoding, level: CompressLevel, size: Option<u64>, flush_each: bool) -> Self {
        Compressing { coding, level, size, encoder: None, pending: Bytes::new(), flush_each, ended: false, done: false, trailers: None, fill: None }
    }

    /// Stores the complete output in `cache` under `key` when the body ends.
    pub fn filling(mut self, cache: Arc<Cache>, key: Key) -> Self {
        self.fill = Some(Fill { cache, key, out: Vec::new() });
        self
    }

    pub fn coding(&self) -> Encoding {
        self.coding
    }

    /// Takes the next chunk of the body; call only when `wants_input`.
    pub fn push(&mut self, chunk: Bytes) {
        debug_assert!(self.pending.is_empty());
        self.pending = chunk;
    }

    /// No more input: the stream is finished after what is pending.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Trailers come after the compressed stream's end.
    pub fn end_with_trailers(&mut self, trailers: http::HeaderMap) {
        self.trailers = Some(trailers);
        self.ended = true;
    }

    pub fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        self.trailers.take()
    }

    pub fn has_trailers(&self) -> bool {
        self.trailers.is_some()
    }

    pub fn wants_input(&self) -> bool {
        self.pending.is_empty() && !self.ended
    }

    pub fn has_work(&self) -> bool {
        !self.pending.is_empty() || (self.ended && !self.done)
    }

    /// The compressed stream is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One bounded piece of work; the output may be empty (the encoder keeps it).
    pub fn step(&mut self) -> io::Result<Bytes> {
        let encoder = match &mut self.encoder {
            Some(e) => e,
            None => self.encoder.insert(Encoder::new(self.coding, self.level, self.size)?),
        };
        if !self.pending.is_empty() {
            let piece = self.pending.split_to(self.pending.len().min(PIECE));
            encoder.write(&piece)?;
            if self.pending.is_empty() && self.flush_each {
                encoder.flush()?;
            }
        } else if self.ended && !self.done {
            encoder.finish()?;
            self.done = true;
        }
        let out = encoder.take();
        if let Some(fill) = &mut self.fill {
            if fill.out.len() + out.len() > cache::MAX_FILE as usize {
                self.fill = None; // compressed larger than any file kept: not worth keeping
            } else {
                fill.out.extend_from_slice(&out);
                if self.done {
                    let fill = self.fill.take().expect("present");
                    fill.cache.insert(fill.key, Bytes::from(fill.out));
                }
            }
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::compress::encoder::tests::{decode, sample};

    fn drain(c: &mut Compressing, wire: &mut Vec<u8>) -> usize {
        let mut steps = 0;
        while c.has_work() {
            wire.extend_from_slice(&c.step().unwrap());
            steps += 1;
        }
        steps
    }

    #[test]
    fn large_chunks_are_compressed_in_pieces() {
        let input = sample(20_000); // ~ 800 KiB
        let mut c = Compressing::new(Encoding::Zstd, CompressLevel::Balanced, Some(input.len() as u64), false);
        let mut wire = Vec::new();
        c.push(Bytes::from(input.clone()));
        let steps = drain(&mut c, &mut wire);
        assert_eq!(steps, input.len().div_ceil(PIECE));
        assert!(c.wants_input() && !c.is_done());
        c.end();
        drain(&mut c, &mut wire);
        assert!(c.is_done() && !c.has_work());
        assert_eq!(decode(Encoding::Zstd, &wire), input);
    }

    #[test]
    fn the_cache_is_filled_when_the_stream_completes() {
        let cache = Arc::new(Cache::new(1 << 20));
        let meta = std::fs::metadata("Cargo.toml").unwrap();
        let key = Key::of(&meta, Encoding::Gzip);
        let mut c = Compressing::new(Encoding::Gzip, CompressLevel::Fast, None, false).filling(cache.clone(), key);
        let mut wire = Vec::new();
        c.push(Bytes::from(sample(100)));
        drain(&mut c, &mut wire);
        assert!(cache.get(&key).is_none());
        c.end();
        drain(&mut c, &mut wire);
        assert_eq!(cache.get(&key).unwrap(), wire);
    }
}
