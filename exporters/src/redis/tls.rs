//! `rediss://`: the rustls client configuration of one target (CA file or
//! the web PKI roots, optional client certificate, server name) and the
//! handshake, with errors that say which setting to look at.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The TLS settings of one target, as its configuration names them.
pub(super) struct TlsFiles<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
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

/// The client configuration of a `rediss://` target. Each error starts
/// with the setting at fault; none quotes a key's content.
pub(super) fn client_config(t: &TlsFiles<'_>) -> Result<Arc<rustls::ClientConfig>, String> {
    // Pinned to ring, as everywhere in the workspace: rustls refuses to
    // pick a provider itself when several are compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("addr: cannot set up TLS: {e}"))?;
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
pub(super) fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is neither a DNS name nor an IP address"))
}

/// The handshake over an open TCP connection.
pub(super) async fn handshake(
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let hint = match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(_)) => {
                    "; check that tls_ca_file holds the CA that signed the server's certificate \
                     and that the certificate names the host in addr (or tls_server_name)"
                }
                Some(rustls::Error::AlertReceived(_)) => {
                    "; the server refused the handshake (a client certificate it requires?)"
                }
                _ => "; is this port a TLS port (Redis's tls-port)?",
            };
            format!("TLS handshake failed: {e}{hint}")
        })
}
