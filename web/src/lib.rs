//! Exposing Steward's HTTP endpoints beyond loopback: the exporter-toolkit
//! web-config file (TLS, client certificates, basic auth, extra headers),
//! reloadable, and a server with header-read and idle timeouts.

pub mod auth;
pub mod config;
pub mod limit;
pub mod serve;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{HeaderName, HeaderValue};
use tokio_rustls::TlsAcceptor;

pub use auth::BasicAuth;
pub use config::{WebConfigError, WebConfigFile};
pub use limit::InFlight;
pub use serve::{serve, Timeouts};

/// What a server applies to connections and requests, built from one
/// web-config file (or plain HTTP without one).
#[derive(Default)]
pub struct WebRuntime {
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for WebRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl WebRuntime {
    /// Plain HTTP, no authentication.
    pub fn plain() -> Self {
        WebRuntime::default()
    }

    /// Reads the file and everything it names (certificates, keys, CA) now.
    /// `alpn` lists the protocols the server speaks over TLS.
    pub fn load(path: &Path, alpn: &[&[u8]]) -> Result<Self, WebConfigError> {
        let file = WebConfigFile::load(path)?;
        let fail = |m: String| WebConfigError::new(path, m);
        let tls = if file.tls_server_config.is_enabled() {
            Some(TlsAcceptor::from(
                tls::server_config(&file.tls_server_config, alpn).map_err(fail)?,
            ))
        } else {
            None
        };
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            Some(Arc::new(
                BasicAuth::new(file.basic_auth_users).map_err(fail)?,
            ))
        };
        let mut headers = Vec::new();
        for (name, value) in &file.http_server_config.headers {
            // Both were checked by the parser; a failure here is still an
            // error, never a panic.
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| fail(format!("http_server_config.headers.{name}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| fail(format!("http_server_config.headers.{name}: {e}")))?;
            headers.push((name, value));
        }
        Ok(WebRuntime {
            tls,
            auth,
            headers,
            source: Some(path.to_path_buf()),
        })
    }

    /// An optional file: `None` is plain HTTP.
    pub fn load_optional(path: Option<&Path>, alpn: &[&[u8]]) -> Result<Self, WebConfigError> {
        match path {
            Some(p) => Self::load(p, alpn),
            None => Ok(Self::plain()),
        }
    }

    /// One line for the logs: what is on, never a secret.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        }
        .to_string()];
        if let Some(auth) = &self.auth {
            parts.push(format!("basic auth ({} users)", auth.len()));
        }
        if let Some(source) = &self.source {
            parts.push(format!("from {}", source.display()));
        }
        parts.join(", ")
    }
}

/// The web configuration a server reads for each new connection; replaced
/// whole on reload.
#[derive(Clone, Debug, Default)]
pub struct WebHandle(Arc<RwLock<Arc<WebRuntime>>>);

impl WebHandle {
    pub fn new(runtime: WebRuntime) -> Self {
        WebHandle(Arc::new(RwLock::new(Arc::new(runtime))))
    }

    pub fn current(&self) -> Arc<WebRuntime> {
        match self.0.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, runtime: WebRuntime) {
        let mut slot = match self.0.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(runtime);
    }
}
