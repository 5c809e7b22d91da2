//! The ban list on disk (STATE_DIR/bans.json), so that bans outlive restarts, reloads
//! and upgrades: JSON a person can read, written whole to a temporary file and renamed
//! over the old one, so a crash leaves the old list or the new, never half of one.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

use super::keeper::Ban;

#[derive(Serialize, Deserialize)]
struct File {
    /// The format's version, for whoever reads it later.
    version: u32,
    bans: Vec<Ban>,
}

/// The bans in `path`; none when it does not exist yet.
pub fn load(path: &Path) -> Result<Vec<Ban>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the ban list {}: {e}", path.display())),
    };
    serde_json::from_str::<File>(&text).map(|f| f.bans).map_err(|e| format!("the ban list {} is not one ferrogate wrote ({e}); move it away to start with no bans", path.display()))
}

pub fn save(path: &Path, bans: &[&Ban]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot save the ban list to {}: {e} (bans still apply until this server stops)", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut text = serde_json::to_vec_pretty(&File { version: 1, bans: bans.iter().map(|b| (*b).clone()).collect() }).expect("bans serialize");
    text.push(b'\n');
    let tmp = path.with_file_name(format!(".{}.{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("bans.json"), std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&text)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_round_trips_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("ferrogate-bans-{}", std::process::id()));
        let path = dir.join("state").join("bans.json");
        assert_eq!(load(&path).unwrap(), Vec::new());
        let bans = vec![
            Ban { address: "203.0.113.9".parse().unwrap(), until: 1_700_000_600, reason: "20 x 404 in 60s".into() },
            Ban { address: "2001:db8::1".parse().unwrap(), until: 1_700_000_900, reason: "5 x 400 in 60s".into() },
        ];
        save(&path, &bans.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(load(&path).unwrap(), bans);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"203.0.113.9\"") && text.contains("20 x 404 in 60s"), "{text}");
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).unwrap_err().contains("move it away"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
