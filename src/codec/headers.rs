//! Lookups in a response's header map by scanning it. A response carries a handful of
//! headers, and the front asks about ten names of it per response (the length, the
//! type, whether it is already encoded, Date, Connection, ...). Comparing the names in
//! order is a fraction of what hashing each one costs (`HeaderMap::get` took about 110
//! instructions per call, counted with bench/count.py); a map past SCAN_MAX entries is
//! looked up by hash as before.

use http::{HeaderMap, HeaderValue, header::HeaderName};

const SCAN_MAX: usize = 16;

/// The first value of `name`, as `HeaderMap::get`.
pub fn first<'a>(map: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if map.len() > SCAN_MAX {
        return map.get(name);
    }
    map.iter().find_map(|(k, v)| (k == name).then_some(v))
}

/// Whether `name` is present, as `HeaderMap::contains_key`.
pub fn has(map: &HeaderMap, name: &HeaderName) -> bool {
    first(map, name).is_some()
}

/// The Content-Length a response declares, when it is a number, for its body to announce
/// (an app's is checked on the loop side: at most one, a number).
pub fn content_length(map: &HeaderMap) -> Option<u64> {
    first(map, &http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// Every value of `name` in order, as `HeaderMap::get_all`.
pub fn all<'a>(map: &'a HeaderMap, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> + 'a {
    map.iter().filter_map(move |(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn answers_as_the_hash_lookups_do_for_small_and_large_maps() {
        for extra in [0, SCAN_MAX + 4] {
            let mut map = HeaderMap::new();
            map.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            map.append(header::VARY, HeaderValue::from_static("a"));
            map.append("x-custom", HeaderValue::from_static("1"));
            map.append(header::VARY, HeaderValue::from_static("b"));
            for i in 0..extra {
                map.append(HeaderName::from_bytes(format!("x-fill-{i}").as_bytes()).unwrap(), HeaderValue::from_static("f"));
            }
            for name in [header::CONTENT_TYPE, header::VARY, HeaderName::from_static("x-custom"), header::DATE, HeaderName::from_static("x-none")] {
                assert_eq!(first(&map, &name), map.get(&name), "{name} with {extra} more");
                assert_eq!(has(&map, &name), map.contains_key(&name));
                assert_eq!(all(&map, &name).collect::<Vec<_>>(), map.get_all(&name).iter().collect::<Vec<_>>());
            }
        }
    }
}
