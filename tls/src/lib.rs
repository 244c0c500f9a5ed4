//! TLS client connections to a server Steward talks to itself (Redis over
//! `rediss://` for the collector, Redis backup jobs with `tls = true`):
//! the rustls client configuration (a CA file or the web PKI roots, an
//! optional client certificate, the server name) and the handshake, with
//! errors that say which setting to look at. A crate of its own because
//! `steward-exporters` and `steward-backup` both need it and neither
//! depends on the other. The server's certificate is always verified:
//! there is no setting that turns verification off.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::client::TlsStream;
pub use tokio_rustls::rustls::pki_types::ServerName;
pub use tokio_rustls::rustls::ClientConfig;

/// The TLS settings of one server, named in errors as the configuration
/// names them (`tls_ca_file`, `tls_cert_file`, `tls_key_file`,
/// `tls_server_name`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    /// PEM CA certificates that signed the server's certificate; the web
    /// PKI roots when unset (managed services).
    pub ca: Option<&'a Path>,
    /// PEM client certificate (chain), with `key`.
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    /// The name the server's certificate must carry, when it differs from
    /// the host connected to.
    pub server_name: Option<&'a str>,
}

/// Certificates of a PEM file; the error starts with `key`.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: {} has a broken PEM block: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The client configuration. Each error starts with the setting at fault;
/// none quotes a key's content.
pub fn client_config(t: &TlsFiles<'_>) -> Result<Arc<ClientConfig>, String> {
    // Pinned to ring, as everywhere in the workspace: rustls refuses to
    // pick a provider itself when several are compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: cannot set up TLS: {e}"))?;
    let roots = match t.ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("tls_ca_file", path)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "tls_ca_file: {} holds a certificate that cannot be a root: {e}",
                        path.display()
                    )
                })?;
            }
            roots
        }
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = builder.with_root_certificates(roots);
    let config = match (t.cert, t.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates("tls_cert_file", cert)?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "tls_key_file: {} holds no usable PEM private key: {e}",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "tls_key_file: {} does not fit tls_cert_file {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        (Some(_), None) => return Err("tls_key_file: tls_cert_file needs its private key".into()),
        (None, Some(_)) => return Err("tls_cert_file: tls_key_file needs its certificate".into()),
    };
    if let Some(name) = t.server_name {
        server_name(name).map_err(|e| format!("tls_server_name: {e}"))?;
    }
    Ok(Arc::new(config))
}

/// A DNS name or IP address as rustls checks it against the certificate.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is neither a DNS name nor an IP address"))
}

/// The handshake over an open connection. `host_setting` says where the
/// host checked against the certificate was configured ("the host in
/// addr", "the job's host"), for the hint of a certificate error.
pub async fn handshake<S>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    stream: S,
    host_setting: &str,
) -> Result<TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| {
            let hint = match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(_)) => format!(
                    "; check that tls_ca_file holds the CA that signed the server's certificate \
                     and that the certificate names {host_setting} (or tls_server_name)"
                ),
                Some(rustls::Error::AlertReceived(_)) => {
                    "; the server refused the handshake (a client certificate it requires?)".into()
                }
                _ => "; is this port a TLS port (Redis's tls-port)?".into(),
            };
            format!("TLS handshake failed: {e}{hint}")
        })
}

/// A hint for an I/O error on an established TLS connection: with TLS 1.3
/// a server that requires a client certificate accepts the handshake and
/// refuses with an alert at the first read. Empty for other errors.
pub fn after_handshake_hint(e: &std::io::Error) -> &'static str {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            "; the server requires a client certificate: set tls_cert_file and tls_key_file"
        }
        Some(rustls::Error::AlertReceived(_)) => {
            "; the server refused the TLS session (check tls_cert_file and tls_key_file against the CA it trusts)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_setting_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let err = |files: TlsFiles<'_>| client_config(&files).unwrap_err();

        let e = err(TlsFiles {
            ca: Some(&missing),
            ..Default::default()
        });
        assert!(e.starts_with("tls_ca_file: cannot read"), "{e}");
        let e = err(TlsFiles {
            ca: Some(&empty),
            ..Default::default()
        });
        assert!(
            e.starts_with("tls_ca_file:") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = err(TlsFiles {
            cert: Some(&empty),
            ..Default::default()
        });
        assert!(e.starts_with("tls_key_file: tls_cert_file needs"), "{e}");
        let e = err(TlsFiles {
            key: Some(&empty),
            ..Default::default()
        });
        assert!(e.starts_with("tls_cert_file: tls_key_file needs"), "{e}");
        let e = err(TlsFiles {
            server_name: Some("not a name"),
            ..Default::default()
        });
        assert!(e.starts_with("tls_server_name:"), "{e}");
    }

    #[test]
    fn the_web_pki_roots_and_plain_names_are_accepted() {
        assert!(client_config(&TlsFiles::default()).is_ok());
        assert!(server_name("cache.internal").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
    }
}
