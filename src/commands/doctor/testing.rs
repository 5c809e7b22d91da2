//! Fake roots for the unit tests: a directory with the files a test names, removed after.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::host::Host;

pub struct FakeRoot(pub PathBuf);

impl FakeRoot {
    pub fn new(files: &[(&str, &str)]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("ferrogate-doctor-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).unwrap();
        let root = FakeRoot(dir);
        for (path, text) in files {
            root.write(path, text);
        }
        root
    }

    /// The real path of the host's `path`.
    pub fn at(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    pub fn write(&self, path: &str, text: &str) -> PathBuf {
        let p = self.at(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    pub fn symlink(&self, path: &str, target: &str) {
        let p = self.at(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    pub fn host(&self) -> Host {
        Host::new(self.0.clone())
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
