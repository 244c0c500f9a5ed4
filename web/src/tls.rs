//! `tls_server_config` -> a rustls server configuration (ring provider):
//! Go's names for versions, cipher suites, curves and client-auth policies
//! mapped onto what rustls offers, anything else refused by name.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls::{SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::config::TlsServerConfig;

/// Go's TLS 1.2 suite names that rustls implements. TLS 1.3 suites are not
/// configurable, in Go as here.
const CIPHER_SUITES: &[(&str, SupportedCipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go suite names that exist but that rustls does not implement (CBC, RSA
/// key exchange, RC4, 3DES): a distinct error from a misspelt name.
const GO_ONLY_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// exporter-toolkit's `client_auth_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => {
                return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?}; use NoClientCert, \
                     RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert"
            ))
            }
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

fn version(key: &str, name: &str) -> Result<Option<&'static SupportedProtocolVersion>, String> {
    match name {
        "" => Ok(None),
        "TLS12" => Ok(Some(&rustls::version::TLS12)),
        "TLS13" => Ok(Some(&rustls::version::TLS13)),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {name} is not offered (rustls speaks TLS 1.2 and 1.3 only); use TLS12 or TLS13"
        )),
        other => Err(format!(
            "tls_server_config.{key}: unknown TLS version {other:?}; use TLS12 or TLS13"
        )),
    }
}

fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, String> {
    match name {
        "X25519" => Ok(kx_group::X25519),
        "CurveP256" => Ok(kx_group::SECP256R1),
        "CurveP384" => Ok(kx_group::SECP384R1),
        "CurveP521" => Err(
            "tls_server_config.curve_preferences: CurveP521 is not offered by Steward's TLS \
             library; use X25519, CurveP256 or CurveP384"
                .into(),
        ),
        other => Err(format!(
            "tls_server_config.curve_preferences: unknown curve {other:?}; use X25519, CurveP256 or CurveP384"
        )),
    }
}

fn suite(name: &str) -> Result<SupportedCipherSuite, String> {
    if let Some((_, s)) = CIPHER_SUITES.iter().find(|(n, _)| *n == name) {
        return Ok(*s);
    }
    if GO_ONLY_SUITES.contains(&name) {
        return Err(format!(
            "tls_server_config.cipher_suites: {name} is not offered by Steward's TLS library \
             (only ECDHE suites with AES-GCM or ChaCha20-Poly1305)"
        ));
    }
    Err(format!(
        "tls_server_config.cipher_suites: unknown cipher suite {name:?}; known are {}",
        CIPHER_SUITES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The ring provider narrowed to the configured suites and curves.
fn provider(cfg: &TlsServerConfig) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !cfg.cipher_suites.is_empty() {
        let mut suites: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.tls13().is_some())
            .collect();
        for name in &cfg.cipher_suites {
            suites.push(suite(name)?);
        }
        provider.cipher_suites = suites;
    }
    if !cfg.curve_preferences.is_empty() {
        provider.kx_groups = cfg
            .curve_preferences
            .iter()
            .map(|n| curve(n))
            .collect::<Result<_, _>>()?;
    }
    Ok(provider)
}

fn read_certs(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!("tls_server_config.{key}: cannot read certificates from {path}: {e}")
        })?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{key}: {path} holds no PEM certificate"
        ));
    }
    Ok(certs)
}

/// Builds the server configuration; every file is read now, so a reload
/// picks up rotated certificates and a broken one is reported here. `alpn`
/// is what the server speaks (`http/1.1`, or `h2` for gRPC).
pub fn server_config(cfg: &TlsServerConfig, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    if cfg.cert_file.is_empty() {
        return Err(
            "tls_server_config.cert_file: missing (TLS needs cert_file and key_file)".into(),
        );
    }
    if cfg.key_file.is_empty() {
        return Err(
            "tls_server_config.key_file: missing (TLS needs cert_file and key_file)".into(),
        );
    }
    let client_auth = ClientAuth::parse(&cfg.client_auth_type)?;
    if !cfg.client_ca_file.is_empty() && client_auth == ClientAuth::NoClientCert {
        return Err(
            "tls_server_config.client_auth_type: client_ca_file is set but no client \
             certificate is asked for; set client_auth_type (e.g. RequireAndVerifyClientCert)"
                .into(),
        );
    }
    if client_auth.verifies() && cfg.client_ca_file.is_empty() {
        return Err(format!(
            "tls_server_config.client_ca_file: missing; {:?} verifies client certificates against it",
            client_auth
        ));
    }
    let min = version("min_version", &cfg.min_version)?.unwrap_or(&rustls::version::TLS12);
    let max = version("max_version", &cfg.max_version)?.unwrap_or(&rustls::version::TLS13);
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let n = u16::from(v.version);
                n >= u16::from(min.version) && n <= u16::from(max.version)
            })
            .collect();
    if versions.is_empty() {
        return Err(format!(
            "tls_server_config.min_version: {} is above max_version {}",
            cfg.min_version, cfg.max_version
        ));
    }
    let provider = Arc::new(provider(cfg)?);

    let certs = read_certs("cert_file", &cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        format!(
            "tls_server_config.key_file: cannot read a private key from {}: {e}",
            cfg.key_file
        )
    })?;

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match client_auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                provider: Arc::clone(&provider),
            })),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client_ca_file", &cfg.client_ca_file)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "tls_server_config.client_ca_file: {}: {e}",
                        cfg.client_ca_file
                    )
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if client_auth == ClientAuth::VerifyClientCertIfGiven {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_server_config.key_file: {} does not fit {}: {e}",
            cfg.key_file, cfg.cert_file
        )
    })?;
    config.ignore_client_order = cfg.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Go's RequestClientCert / RequireAnyClientCert: a certificate is asked
/// for (and required by the second) but not checked against any CA; the
/// handshake signature still proves the client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> TlsServerConfig {
        crate::config::WebConfigFile::parse(yaml)
            .unwrap()
            .tls_server_config
    }

    fn server_config(cfg: &TlsServerConfig) -> Result<Arc<ServerConfig>, String> {
        super::server_config(cfg, &[b"http/1.1"])
    }

    #[test]
    fn go_names_map_or_fail_by_name() {
        assert!(suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").is_ok());
        let e = suite("TLS_RSA_WITH_AES_128_CBC_SHA").unwrap_err();
        assert!(e.contains("is not offered"), "{e}");
        let e = suite("TLS_BOGUS").unwrap_err();
        assert!(e.contains("unknown cipher suite \"TLS_BOGUS\""), "{e}");
        assert!(curve("CurveP521").is_err());
        assert!(version("min_version", "TLS11").is_err());
        let e = version("max_version", "TLS14").unwrap_err();
        assert!(e.starts_with("tls_server_config.max_version"), "{e}");
    }

    #[test]
    fn inconsistent_policies_are_refused_before_reading_files() {
        let e = server_config(&cfg(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
        ))
        .unwrap_err();
        assert!(e.starts_with("tls_server_config.client_auth_type"), "{e}");
        let e = server_config(&cfg(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
        ))
        .unwrap_err();
        assert!(
            e.starts_with("tls_server_config.client_ca_file: missing"),
            "{e}"
        );
        let e = server_config(&cfg(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Maybe\n",
        ))
        .unwrap_err();
        assert!(e.contains("unknown value \"Maybe\""), "{e}");
        let e = server_config(&cfg("tls_server_config:\n  key_file: k\n")).unwrap_err();
        assert!(e.starts_with("tls_server_config.cert_file: missing"), "{e}");
        let e = server_config(&cfg(
            "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k\n",
        ))
        .unwrap_err();
        assert!(
            e.contains("cannot read certificates from /nonexistent/c.pem"),
            "{e}"
        );
        let e = server_config(&cfg(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
        ))
        .unwrap_err();
        assert!(e.contains("above max_version"), "{e}");
    }
}
