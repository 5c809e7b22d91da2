//! Compressed static files kept in memory, so that a popular asset is compressed
//! once per version rather than on every request (nginx's gzip does the latter).
//! Keyed by the file's identity and version (device, inode, size, mtime), so an
//! edited file misses and its old variants age out. Bounded in bytes; the least
//! recently used variants go first. One per worker, shared by its I/O threads.

use bytes::Bytes;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use crate::config::front::Encoding;

/// All variants together (per worker).
pub const CAPACITY: usize = 32 * 1024 * 1024;
/// Larger files are compressed as they are sent, every time.
pub const MAX_FILE: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    coding: Encoding,
}

impl Key {
    pub fn of(meta: &std::fs::Metadata, coding: Encoding) -> Self {
        Key { dev: meta.dev(), ino: meta.ino(), size: meta.size(), mtime: meta.mtime(), mtime_nsec: meta.mtime_nsec(), coding }
    }
}

pub struct Cache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    total: usize,
    clock: u64,
}

struct Entry {
    data: Bytes,
    used: u64,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache { inner: Mutex::new(Inner::default()), capacity }
    }

    /// The compressed variant, if kept: a reference count, no copy.
    pub fn get(&self, key: &Key) -> Option<Bytes> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        entry.used = now;
        Some(entry.data.clone())
    }

    pub fn insert(&self, key: Key, data: Bytes) {
        if data.len() > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clock += 1;
        let used = inner.clock;
        let len = data.len();
        if let Some(old) = inner.entries.insert(key, Entry { data, used }) {
            inner.total -= old.data.len();
        }
        inner.total += len;
        while inner.total > self.capacity {
            // A scan, on inserts only (one per file version and coding): simpler than a list.
            let Some(oldest) = inner.entries.iter().filter(|(k, _)| **k != key).min_by_key(|(_, e)| e.used).map(|(k, _)| *k) else { break };
            let gone = inner.entries.remove(&oldest).expect("found");
            inner.total -= gone.data.len();
        }
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.inner.lock().unwrap().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Key {
        Key { dev: 1, ino: n, size: 10, mtime: 0, mtime_nsec: 0, coding: Encoding::Gzip }
    }

    #[test]
    fn least_recently_used_goes_first_and_the_total_stays_bounded() {
        let cache = Cache::new(300);
        cache.insert(key(1), Bytes::from(vec![1; 100]));
        cache.insert(key(2), Bytes::from(vec![2; 100]));
        cache.insert(key(3), Bytes::from(vec![3; 100]));
        assert!(cache.get(&key(1)).is_some()); // 2 is now the oldest
        cache.insert(key(4), Bytes::from(vec![4; 100]));
        assert!(cache.get(&key(2)).is_none());
        assert_eq!(cache.get(&key(1)).unwrap()[0], 1);
        assert!(cache.get(&key(3)).is_some() && cache.get(&key(4)).is_some());
        assert_eq!(cache.total(), 300);
        cache.insert(key(4), Bytes::from(vec![5; 50]));
        assert_eq!(cache.total(), 250);
        cache.insert(key(9), Bytes::from(vec![9; 301]));
        assert!(cache.get(&key(9)).is_none());
    }

    #[test]
    fn another_version_or_coding_misses() {
        let dir = std::env::temp_dir().join(format!("ferrogate-cache-{}", std::process::id()));
        std::fs::write(&dir, b"one").unwrap();
        let cache = Cache::new(1000);
        let before = std::fs::metadata(&dir).unwrap();
        cache.insert(Key::of(&before, Encoding::Br), Bytes::from_static(b"x"));
        assert!(cache.get(&Key::of(&before, Encoding::Br)).is_some());
        assert!(cache.get(&Key::of(&before, Encoding::Gzip)).is_none());
        std::fs::write(&dir, b"two!").unwrap();
        let after = std::fs::metadata(&dir).unwrap();
        assert!(cache.get(&Key::of(&after, Encoding::Br)).is_none());
        std::fs::remove_file(&dir).unwrap();
    }
}
