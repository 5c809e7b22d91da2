//! --reload: notices when a .py file under the watched directories changes.
//! Polling twice a second is plenty for a person editing code, and needs no
//! inotify limits or platform code.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub struct Watcher {
    dirs: Vec<PathBuf>,
    seen: Vec<(PathBuf, SystemTime)>,
}

impl Watcher {
    pub fn new(dirs: &[PathBuf]) -> Self {
        let dirs = dirs.to_vec();
        let seen = snapshot(&dirs);
        Watcher { dirs, seen }
    }

    pub fn describe(&self) -> String {
        self.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The first file added, removed or modified since the last call.
    pub fn changed(&mut self) -> Option<PathBuf> {
        let now = snapshot(&self.dirs);
        let changed = now
            .iter()
            .find(|entry| !self.seen.contains(entry))
            .or_else(|| self.seen.iter().find(|entry| !now.iter().any(|n| n.0 == entry.0)))
            .map(|(p, _)| p.clone());
        self.seen = now;
        changed
    }
}

fn snapshot(dirs: &[PathBuf]) -> Vec<(PathBuf, SystemTime)> {
    let mut files = Vec::new();
    for dir in dirs {
        walk(dir, 0, &mut files);
    }
    files.sort();
    files
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            // Virtualenvs and caches change under our feet and are not the user's code.
            let skip = name.starts_with('.') || name == "__pycache__" || name == "node_modules" || name == "site-packages";
            if !skip && depth < 16 {
                walk(&path, depth + 1, out);
            }
        } else if name.ends_with(".py") {
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                out.push((path, modified));
            }
        }
    }
}
