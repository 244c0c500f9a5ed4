//! The web-config file of the Prometheus exporter ecosystem
//! (`--web.config.file`, exporter-toolkit's format): parsed strictly, so a
//! file that node_exporter rejects for an unknown key is rejected here too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file. Every section is optional; an empty file means plain
/// HTTP without authentication, as for exporter-toolkit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: TlsServerConfig,
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User name -> bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub client_auth_type: String,
    #[serde(default)]
    pub client_ca_file: String,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub min_version: String,
    #[serde(default)]
    pub max_version: String,
    /// exporter-toolkit's default is true.
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
}

impl TlsServerConfig {
    /// exporter-toolkit serves plain HTTP when none of these is set.
    pub fn is_enabled(&self) -> bool {
        !(self.cert_file.is_empty()
            && self.key_file.is_empty()
            && self.client_auth_type.is_empty()
            && self.client_ca_file.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Accepted for compatibility; Steward's endpoints speak HTTP/1.1 (the
    /// gRPC receiver always speaks HTTP/2).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Extra response headers; only the ones exporter-toolkit allows.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The headers exporter-toolkit lets a web-config file set, with the
/// values it accepts (`None`: any value).
const ALLOWED_HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// A web-config file that cannot be used: the file and what is wrong, with
/// the key it is about.
#[derive(Debug, thiserror::Error)]
#[error("web config {}: {message}", file.display())]
pub struct WebConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl WebConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        WebConfigError {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }
}

impl WebConfigFile {
    /// Reads and parses a file; relative paths inside it are resolved
    /// against the file's directory, as exporter-toolkit does.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| WebConfigError::new(path, format!("cannot read the file: {e}")))?;
        let mut parsed = Self::parse(&text).map_err(|m| WebConfigError::new(path, m))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut parsed.tls_server_config.cert_file,
            &mut parsed.tls_server_config.key_file,
            &mut parsed.tls_server_config.client_ca_file,
        ] {
            if !file.is_empty() && Path::new(file.as_str()).is_relative() {
                *file = dir.join(file.as_str()).display().to_string();
            }
        }
        Ok(parsed)
    }

    /// Parses YAML text; the error names the key (`tls_server_config.foo`).
    pub fn parse(text: &str) -> Result<Self, String> {
        // An empty document is YAML null, which means "all defaults".
        if text.trim().is_empty() {
            return Ok(WebConfigFile::default());
        }
        // serde_norway's messages already start with the key path
        // (`tls_server_config: unknown field ...`) and end with the line.
        let parsed: WebConfigFile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        parsed.validate_headers()?;
        Ok(parsed)
    }

    fn validate_headers(&self) -> Result<(), String> {
        for (name, value) in &self.http_server_config.headers {
            let Some((_, allowed)) = ALLOWED_HEADERS
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(name))
            else {
                return Err(format!(
                    "http_server_config.headers.{name}: this header cannot be configured; allowed are {}",
                    ALLOWED_HEADERS
                        .iter()
                        .map(|(h, _)| *h)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            if let Some(values) = allowed {
                if !values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                    return Err(format!(
                        "http_server_config.headers.{name}: invalid value {value:?}; expected one of {values:?}"
                    ));
                }
            }
            if axum::http::HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "http_server_config.headers.{name}: {value:?} is not a valid header value"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = WebConfigFile::parse("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert!(
            err.starts_with("tls_server_config: unknown field `cert_fil`"),
            "{err}"
        );
        let err = WebConfigFile::parse("basic_auth_user:\n  a: b\n").unwrap_err();
        assert!(err.contains("unknown field `basic_auth_user`"), "{err}");
    }

    #[test]
    fn headers_follow_exporter_toolkit() {
        let ok = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n";
        assert_eq!(
            WebConfigFile::parse(ok)
                .unwrap()
                .http_server_config
                .headers
                .len(),
            2
        );
        let err =
            WebConfigFile::parse("http_server_config:\n  headers:\n    Foo: bar\n").unwrap_err();
        assert!(
            err.contains("headers.Foo: this header cannot be configured"),
            "{err}"
        );
        let err =
            WebConfigFile::parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n")
                .unwrap_err();
        assert!(err.contains("invalid value \"allow\""), "{err}");
    }

    #[test]
    fn empty_file_is_plain_http() {
        let c = WebConfigFile::parse("").unwrap();
        assert!(!c.tls_server_config.is_enabled());
        assert!(c.basic_auth_users.is_empty());
        let c = WebConfigFile::parse("tls_server_config:\n  cert_file: a\n").unwrap();
        assert!(c.tls_server_config.is_enabled());
    }

    #[test]
    fn relative_paths_are_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: c.pem\n  key_file: /abs/k.pem\n",
        )
        .unwrap();
        let c = WebConfigFile::load(&path).unwrap();
        assert_eq!(
            c.tls_server_config.cert_file,
            dir.path().join("c.pem").display().to_string()
        );
        assert_eq!(c.tls_server_config.key_file, "/abs/k.pem");
        let err = WebConfigFile::load(&dir.path().join("missing.yml")).unwrap_err();
        assert!(
            err.to_string().contains("missing.yml: cannot read"),
            "{err}"
        );
    }
}
