//! --reload: notices when a .py file under the watched directories changes.
//! Polling twice a second is plenty for a person editing code, and needs no
//! inotify limits or platform code.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub struct Watcher {
    dirs: Vec<PathBuf>,
    filter: Filter,
    seen: Vec<(PathBuf, SystemTime)>,
}

/// --reload-include / --reload-exclude, matched against file names.
struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filter {
    fn wants(&self, name: &str) -> bool {
        self.include.iter().any(|p| glob(p, name)) && !self.exclude.iter().any(|p| glob(p, name))
    }
}

/// Shell-style matching with `*` (any run) and `?` (one character).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Watcher {
    pub fn new(dirs: &[PathBuf], include: &[String], exclude: &[String]) -> Self {
        let dirs = dirs.to_vec();
        let filter = Filter { include: include.to_vec(), exclude: exclude.to_vec() };
        let seen = snapshot(&dirs, &filter);
        Watcher { dirs, filter, seen }
    }

    pub fn describe(&self) -> String {
        self.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The first file added, removed or modified since the last call.
    pub fn changed(&mut self) -> Option<PathBuf> {
        let now = snapshot(&self.dirs, &self.filter);
        let changed = now
            .iter()
            .find(|entry| !self.seen.contains(entry))
            .or_else(|| self.seen.iter().find(|entry| !now.iter().any(|n| n.0 == entry.0)))
            .map(|(p, _)| p.clone());
        self.seen = now;
        changed
    }
}

fn snapshot(dirs: &[PathBuf], filter: &Filter) -> Vec<(PathBuf, SystemTime)> {
    let mut files = Vec::new();
    for dir in dirs {
        walk(dir, 0, filter, &mut files);
    }
    files.sort();
    files
}

fn walk(dir: &Path, depth: usize, filter: &Filter, out: &mut Vec<(PathBuf, SystemTime)>) {
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
                walk(&path, depth + 1, filter, out);
            }
        } else if filter.wants(&name) {
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                out.push((path, modified));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("*.py", "main.py"));
        assert!(!glob("*.py", "main.pyc"));
        assert!(glob("*_test.py", "api_test.py"));
        assert!(glob("templates*.html", "templates_a.html"));
        assert!(glob("?.txt", "a.txt") && !glob("?.txt", "ab.txt"));
    }
}
