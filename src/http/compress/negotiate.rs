//! Accept-Encoding (RFC 9110 12.5.3): which of the codings we offer a client
//! takes, best first. Parsed in place, without allocating: it runs on every
//! response that could be compressed.

use crate::config::front::Encoding;

/// The codings a client accepts, in the order to use them: its q-values first,
/// the server's preference (`--compress-encodings`) among equals. Empty: identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    codings: [Option<Encoding>; 3],
}

impl Accepted {
    pub fn iter(&self) -> impl Iterator<Item = Encoding> + '_ {
        self.codings.iter().map_while(|c| *c)
    }

    pub fn best(&self) -> Option<Encoding> {
        self.codings[0]
    }

    pub fn is_empty(&self) -> bool {
        self.codings[0].is_none()
    }
}

/// Ranks `offered` (the server's preference order) by the client's header.
/// No header: identity (RFC 9110 allows any coding then, but no client that
/// omits it expects one). A coding is acceptable with q > 0, named or through
/// `*`; `identity` named with a q higher than a coding's wins over it, so
/// `gzip;q=0.5, identity` stays uncompressed; `identity;q=0` only means that
/// compression is welcome (the body is still sent identity when it cannot be).
pub fn accepted(header: Option<&[u8]>, offered: &[Encoding]) -> Accepted {
    let mut out = Accepted::default();
    let Some(header) = header else { return out };
    // q in thousandths per offered coding (None: not named), `*`, identity.
    let mut named = [None::<u16>; 3];
    let mut star = None::<u16>;
    let mut identity = None::<u16>;
    for item in header.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let token = parts.next().unwrap_or_default().trim_ascii();
        if token.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for param in parts {
            let param = param.trim_ascii();
            if param.len() >= 2 && param[0].eq_ignore_ascii_case(&b'q') && param[1..].trim_ascii_start().starts_with(b"=") {
                let value = param[1..].trim_ascii_start()[1..].trim_ascii();
                q = parse_q(value);
            }
        }
        let Some(q) = q else { continue }; // a malformed q: the item is ignored
        if token == b"*" {
            star = Some(q);
        } else if token.eq_ignore_ascii_case(b"identity") {
            identity = Some(q);
        } else if let Some(i) = offered.iter().position(|e| matches_token(*e, token)) {
            if i < named.len() {
                // Repeated names: the highest q counts.
                named[i] = Some(named[i].map_or(q, |old| old.max(q)));
            }
        }
    }
    let mut ranked = [(0u16, 0usize, None::<Encoding>); 3];
    let mut n = 0;
    for (i, &coding) in offered.iter().enumerate().take(3) {
        let q = named[i].or(star).unwrap_or(0);
        if q == 0 || identity.is_some_and(|iq| iq > q) {
            continue;
        }
        ranked[n] = (q, i, Some(coding));
        n += 1;
    }
    // By q, then the server order (the index makes it a total order: no stable sort needed).
    ranked[..n].sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (slot, (_, _, coding)) in out.codings.iter_mut().zip(&ranked[..n]) {
        *slot = *coding;
    }
    out
}

fn matches_token(coding: Encoding, token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(coding.token().as_bytes()) || (coding == Encoding::Gzip && token.eq_ignore_ascii_case(b"x-gzip"))
}

/// "1", "1.0", "0.5", "0.001" as thousandths; None when malformed (RFC 9110 12.4.2).
fn parse_q(value: &[u8]) -> Option<u16> {
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    const ALL: &[Encoding] = &[Zstd, Br, Gzip];

    fn order(header: &str, offered: &[Encoding]) -> Vec<Encoding> {
        accepted(Some(header.as_bytes()), offered).iter().collect()
    }

    #[test]
    fn ties_follow_the_server_order() {
        assert_eq!(order("gzip, deflate, br, zstd", ALL), vec![Zstd, Br, Gzip]);
        assert_eq!(order("gzip, br", ALL), vec![Br, Gzip]);
        assert_eq!(order("gzip, br, zstd", &[Gzip, Br]), vec![Gzip, Br]);
        assert_eq!(order("GZIP", ALL), vec![Gzip]);
        assert_eq!(order("x-gzip", ALL), vec![Gzip]);
    }

    #[test]
    fn q_values_rank_and_zero_refuses() {
        assert_eq!(order("gzip;q=1.0, br;q=0.5, zstd;q=0.8", ALL), vec![Gzip, Zstd, Br]);
        assert_eq!(order("gzip ; q=0.2 , br", ALL), vec![Br, Gzip]);
        assert_eq!(order("br;q=0, gzip", ALL), vec![Gzip]);
        assert_eq!(order("gzip;q=0.000", ALL), vec![]);
        assert_eq!(order("gzip;Q=0.001", ALL), vec![Gzip]);
        // Malformed q: the item is ignored, not taken as q=1.
        assert_eq!(order("gzip;q=2, br;q=0.5555, zstd;q=abc", ALL), vec![]);
        assert_eq!(order("gzip;q=1, gzip;q=0", ALL), vec![Gzip]);
    }

    #[test]
    fn star_covers_the_codings_not_named() {
        assert_eq!(order("*", ALL), vec![Zstd, Br, Gzip]);
        assert_eq!(order("br;q=0, *", ALL), vec![Zstd, Gzip]);
        assert_eq!(order("*;q=0.5, gzip", ALL), vec![Gzip, Zstd, Br]);
        assert_eq!(order("*;q=0", ALL), vec![]);
    }

    #[test]
    fn identity_preferred_or_refused() {
        assert_eq!(order("gzip;q=0.5, identity", ALL), vec![]);
        assert_eq!(order("gzip;q=0.5, identity;q=0.5", ALL), vec![Gzip]);
        assert_eq!(order("identity;q=0, gzip", ALL), vec![Gzip]);
        assert_eq!(order("identity", ALL), vec![]);
        assert_eq!(order("", ALL), vec![]);
        assert!(accepted(None, ALL).is_empty());
    }

    #[test]
    fn unknown_codings_and_junk_are_ignored() {
        assert_eq!(order("deflate, compress, , ;q=1, gzip", ALL), vec![Gzip]);
        assert_eq!(order("gzip;level=9;q=0.7, br;q=0.9", ALL), vec![Br, Gzip]);
        assert_eq!(accepted(Some(b"br, gzip"), ALL).best(), Some(Br));
    }
}
