//! --env-file: KEY=VALUE lines, as in docker's and uvicorn's (python-dotenv) files.

use std::path::Path;

/// Reads the file and returns its variables in order, or an error naming the line to fix.
pub fn load_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--env-file {}: {e}", path.display()))?;
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or_else(|| {
            format!("{}:{}: '{raw}' is not KEY=VALUE; write e.g. DATABASE_URL=postgres://...", path.display(), i + 1)
        })?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{}:{}: '{key}' is not a variable name (letters, digits, _)", path.display(), i + 1));
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(e)) if value.len() >= 2 && q == e => &value[1..value.len() - 1],
            _ => value.split(" #").next().unwrap_or("").trim_end(),
        };
        vars.push((key.to_string(), value.to_string()));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_comments_and_export() {
        let dir = std::env::temp_dir().join(format!("fg-env-{}", std::process::id()));
        std::fs::write(&dir, "# c\nA=1\nexport B='two words'\nC=\"x=y\"\nD=v # note\n\n").unwrap();
        let vars = load_env_file(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(vars, vec![
            ("A".into(), "1".into()),
            ("B".into(), "two words".into()),
            ("C".into(), "x=y".into()),
            ("D".into(), "v".into()),
        ]);
    }

    #[test]
    fn names_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("fg-env-bad-{}", std::process::id()));
        std::fs::write(&dir, "A=1\njunk\n").unwrap();
        let err = load_env_file(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.contains(":2:") && err.contains("KEY=VALUE"), "{err}");
    }
}
