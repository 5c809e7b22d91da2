//! A static file sent compressed: its precompressed sibling (`app.js.br`, made at
//! build time with the best settings, no CPU per request) when the client takes
//! that coding and the sibling is at least as new as the file; else the file
//! compressed by us, cached in memory (http/compress/cache.rs).

use http::HeaderMap;
use std::fs::{File, Metadata};
use std::os::fd::OwnedFd;

use super::{Reply, StaticFiles};
use crate::http::body::Kind;
use crate::http::compress::{self, Accepted, Compression, StaticPlan};

/// The headers every response for a compressible file gets, 304s included.
pub(super) fn vary_and_tag(headers: &mut HeaderMap, plan: &StaticPlan) {
    if plan.vary {
        compress::add_vary(headers);
    }
    if !plan.accepted.is_empty() {
        // What a 200 would carry: the compressed form's weak tag.
        compress::weaken_etag(headers);
    }
}

impl StaticFiles {
    /// Fills in the body and headers of a whole-file 200 (or its HEAD) sent with the
    /// client's best coding. The identity headers (type, tags, Vary) are already there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_encoded(&self, root: &OwnedFd, name: &[u8], meta: &Metadata, file: File, accepted: Accepted, compress: &Compression, head: bool, response: &mut Reply) {
        for coding in accepted.iter() {
            let sibling = [name, coding.file_suffix().as_bytes()].concat();
            let Ok(sib) = self.open_beneath(root, &sibling) else { continue };
            let Ok(sib_meta) = sib.metadata() else { continue };
            if sib_meta.is_file() && is_not_older(&sib_meta, meta) {
                compress::mark_encoded(response.headers_mut(), coding, Some(sib_meta.len()));
                if !head && sib_meta.len() > 0 {
                    *response.body_mut() = Kind::File { file: sib, offset: 0, remaining: sib_meta.len() };
                }
                return;
            }
        }
        let coding = accepted.best().expect("not empty");
        let (kind, length) = compress.file_body(file, meta, coding, head);
        compress::mark_encoded(response.headers_mut(), coding, length);
        *response.body_mut() = kind;
    }
}

/// A sibling older than its file is a leftover of a previous build: not served.
fn is_not_older(sibling: &Metadata, original: &Metadata) -> bool {
    match (sibling.modified(), original.modified()) {
        (Ok(s), Ok(o)) => s >= o,
        _ => false,
    }
}

