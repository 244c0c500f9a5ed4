//! Secrets in configuration: a key named in [`SECRET_KEYS`] may instead be
//! given as `<key>_file = "/path"` (read once at load, trailing newline
//! dropped), and every secret is shown as `<redacted>` when printed.

/// Keys whose values are secrets anywhere in the configuration.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "api_key",
    "secret_access_key",
    "session_token",
    "access_key_id",
    "headers",
    "basic_auth_password",
    "dsn",
    // [[notify]]: a Healthchecks ping URL or a Slack webhook URL is the
    // credential itself.
    "ping_url",
    "webhook_url",
    "signing_secret",
];

/// Replaces `<secret>_file` keys by `<secret>` with the file's content.
/// Returns one error per unreadable file, naming the key and the path but
/// never any content.
pub fn resolve_files(table: &mut toml::Table, prefix: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(base) = key.strip_suffix("_file") {
            if SECRET_KEYS.contains(&base) {
                let Some(file) = table.get(&key).and_then(|v| v.as_str()).map(str::to_string)
                else {
                    errors.push(format!("{path}: must be a file path string"));
                    continue;
                };
                if table.contains_key(base) {
                    errors.push(format!("{path}: set either {base} or {key}, not both"));
                    continue;
                }
                match std::fs::read_to_string(&file) {
                    Ok(content) => {
                        let content = content.strip_suffix('\n').unwrap_or(&content);
                        let content = content.strip_suffix('\r').unwrap_or(content);
                        table.remove(&key);
                        table.insert(base.to_string(), toml::Value::String(content.to_string()));
                    }
                    Err(e) => errors.push(format!("{path}: cannot read secret file {file}: {e}")),
                }
                continue;
            }
        }
        match table.get_mut(&key) {
            Some(toml::Value::Table(t)) => errors.extend(resolve_files(t, &path)),
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(t) = item {
                        errors.extend(resolve_files(t, &format!("{path}[{i}]")));
                    }
                }
            }
            _ => {}
        }
    }
    errors
}

/// Replaces the value of every secret key by `<redacted>`.
pub fn redact(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        if SECRET_KEYS.contains(&key.as_str()) {
            *value = toml::Value::String("<redacted>".into());
            continue;
        }
        match value {
            toml::Value::Table(t) => redact(t),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        redact(t);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_secret_files_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let text = format!(
            "[[mysql]]\nname = \"db\"\npassword_file = \"{}\"\n[x]\npassword_file = \"/nonexistent/pw\"\n",
            f.display()
        );
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        let errors = resolve_files(&mut table, "");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("x.password_file"));
        let db = &table["mysql"].as_array().unwrap()[0];
        assert_eq!(db["password"].as_str(), Some("s3cret"));
        redact(&mut table);
        let db = &table["mysql"].as_array().unwrap()[0];
        assert_eq!(db["password"].as_str(), Some("<redacted>"));
    }
}
