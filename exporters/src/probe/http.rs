//! One HTTP(S) exchange taken apart into blackbox_exporter's phases:
//! resolve (`lookup_host`), connect (TCP), tls (rustls handshake, which also
//! yields the presented certificate chain), processing (request sent until
//! the response head arrives) and transfer (reading the body). reqwest hides
//! these steps, so the probe drives hyper's HTTP/1 connection itself.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use super::client::error_chain;

/// Time spent in each phase, summed over redirects like blackbox does.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Phases {
    pub resolve: f64,
    pub connect: f64,
    pub tls: f64,
    pub processing: f64,
    pub transfer: f64,
}

/// Where a hop connected to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peer {
    pub ip: IpAddr,
    /// Seconds `lookup_host` took (0 for an IP literal, which needs none).
    pub lookup_secs: f64,
}

/// What the TLS handshake showed.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsState {
    /// `TLS 1.2`, `TLS 1.3`: the `version` label of `probe_tls_version_info`.
    pub version: String,
    /// The earliest notAfter of every certificate the server presented.
    pub earliest_expiry: Option<i64>,
    /// The notAfter that ends the chain which stays valid longest, when the
    /// chain was verified (blackbox reads Go's verified chains).
    pub last_chain_expiry: Option<i64>,
}

/// A response head whose connection is still being driven, so its body can
/// be read.
pub struct Exchange {
    pub response: hyper::Response<Incoming>,
    pub tls: Option<TlsState>,
    /// When the response head arrived (start of the transfer phase).
    pub head_at: Instant,
    _driver: AbortOnDrop,
}

/// Stops the task driving a connection when the exchange is dropped (the
/// probe finished or ran out of time), so no connection outlives its probe.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS side of a probe: a client configuration per probe, built once.
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// Whether chains are verified (otherwise no last-chain expiry).
    verify: bool,
    /// The `ca_file` certificates, as extra chain links for the
    /// last-chain computation.
    extra_cas: Vec<CertificateDer<'static>>,
}

impl Tls {
    /// `verify`: check the chain and host name against the web PKI roots
    /// plus `ca_file`. The error names the file at fault.
    pub fn new(verify: bool, ca_file: Option<&Path>) -> Result<Tls, String> {
        // Pinned to ring: rustls refuses to pick a provider on its own when
        // several are compiled in, as they are in this workspace.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let mut extra_cas = Vec::new();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                extra_cas.push(cert.map_err(|e| {
                    format!("CA file {} has a broken PEM block: {e}", path.display())
                })?);
            }
            if extra_cas.is_empty() {
                return Err(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                ));
            }
        }
        let mut config = if verify {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for cert in &extra_cas {
                roots.add(cert.clone()).map_err(|e| {
                    format!(
                        "CA file {} holds a certificate rustls cannot use as a root: {e}",
                        ca_file.map(|p| p.display().to_string()).unwrap_or_default()
                    )
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            verify,
            extra_cas,
        })
    }
}

/// `insecure_skip_verify`: handshake signatures are still checked (the
/// connection is real TLS), the certificate chain and name are not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One request and its response head. `peer` and the phases are filled in
/// as they complete, so a failure or timeout keeps what was measured.
pub async fn exchange(
    url: &reqwest::Url,
    request: hyper::Request<Empty<Bytes>>,
    tls: &Tls,
    phases: &mut Phases,
    peer: &mut Option<Peer>,
) -> Result<Exchange, String> {
    let started = Instant::now();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("{url} has no port"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{url} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let literal: Option<IpAddr> = host.parse().ok();
    let addresses: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    let resolved = Instant::now();
    let lookup_secs = if literal.is_some() {
        0.0
    } else {
        (resolved - started).as_secs_f64()
    };
    phases.resolve += lookup_secs;
    let first = addresses
        .first()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    *peer = Some(Peer {
        ip: first.ip(),
        lookup_secs,
    });

    // In the resolver's order (RFC 6724), the first address that accepts.
    let mut last_error = None;
    let mut stream = None;
    for address in &addresses {
        match TcpStream::connect(address).await {
            Ok(s) => {
                *peer = Some(Peer {
                    ip: address.ip(),
                    lookup_secs,
                });
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(format!("cannot connect to {address}: {e}")),
        }
    }
    let stream = stream.ok_or_else(|| last_error.unwrap_or_default())?;
    let _ = stream.set_nodelay(true);
    let connected = Instant::now();
    phases.connect += (connected - resolved).as_secs_f64();

    if url.scheme() != "https" {
        return send(stream, request, None, connected, phases).await;
    }
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} cannot be a TLS server name: {e}"))?;
    let tls_stream = tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(server_name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {url} failed: {}", error_chain(&e)))?;
    let handshaken = Instant::now();
    phases.tls += (handshaken - connected).as_secs_f64();
    let state = tls_state(tls_stream.get_ref().1, tls);
    send(tls_stream, request, Some(state), handshaken, phases).await
}

async fn send<S>(
    io: S,
    request: hyper::Request<Empty<Bytes>>,
    tls: Option<TlsState>,
    got_connection: Instant,
    phases: &mut Phases,
) -> Result<Exchange, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("cannot start HTTP/1.1: {}", error_chain(&e)))?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        // Its errors surface through send_request or the body reads.
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    let head_at = Instant::now();
    phases.processing += (head_at - got_connection).as_secs_f64();
    Ok(Exchange {
        response,
        tls,
        head_at,
        _driver: driver,
    })
}

/// Reads the body, refusing more than `limit` bytes.
pub async fn read_body(body: &mut Incoming, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("cannot read the body: {}", error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(format!("the body is larger than {limit} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

fn tls_state(connection: &rustls::ClientConnection, tls: &Tls) -> TlsState {
    let version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        _ => "unknown",
    };
    let presented: Vec<Parsed> = connection
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .filter_map(|der| Parsed::new(der))
        .collect();
    let earliest_expiry = presented.iter().map(|c| c.not_after).min();
    let last_chain_expiry = if tls.verify && !presented.is_empty() {
        let extra: Vec<Parsed> = tls
            .extra_cas
            .iter()
            .filter_map(|d| Parsed::new(d))
            .collect();
        last_chain_expiry(&presented, &extra)
    } else {
        None
    };
    TlsState {
        version: version.to_string(),
        earliest_expiry,
        last_chain_expiry,
    }
}

/// The parts of a certificate the chain walk needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub not_after: i64,
}

impl Parsed {
    pub(crate) fn new(der: &[u8]) -> Option<Parsed> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Parsed {
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// rustls verified that some chain from the leaf to a trusted root exists
/// but does not say which. Walk every chain the names allow, through the
/// presented intermediates and the `ca_file` certificates, to a self-issued
/// certificate or one issued by a web PKI root; each chain lives until its
/// earliest notAfter, and the answer is the chain that lives longest (a
/// cross-signed intermediate expiring early does not matter while another
/// path stays valid). Roots from the built-in store carry no notAfter.
pub(crate) fn last_chain_expiry(presented: &[Parsed], extra: &[Parsed]) -> Option<i64> {
    const MAX_DEPTH: usize = 8;
    let pool: Vec<&Parsed> = presented.iter().skip(1).chain(extra.iter()).collect();
    let anchored_in_web_pki = |issuer: &[u8]| {
        webpki_roots::TLS_SERVER_ROOTS.iter().any(|root| {
            // The store keeps the Name's contents; x509-parser its whole TLV.
            let subject: &[u8] = root.subject.as_ref();
            issuer.len() > subject.len()
                && issuer.len() - subject.len() <= 4
                && issuer.ends_with(subject)
        })
    };
    fn walk(
        cert: &Parsed,
        lives_until: i64,
        depth: usize,
        pool: &[&Parsed],
        anchored: &dyn Fn(&[u8]) -> bool,
        best: &mut Option<i64>,
    ) {
        if cert.subject == cert.issuer || anchored(&cert.issuer) {
            *best = Some(best.map_or(lives_until, |b| b.max(lives_until)));
            return;
        }
        if depth >= MAX_DEPTH {
            return;
        }
        for next in pool
            .iter()
            .filter(|c| c.subject == cert.issuer && *c != &cert)
        {
            walk(
                next,
                lives_until.min(next.not_after),
                depth + 1,
                pool,
                anchored,
                best,
            );
        }
    }
    let leaf = presented.first()?;
    let mut best = None;
    walk(
        leaf,
        leaf.not_after,
        0,
        &pool,
        &anchored_in_web_pki,
        &mut best,
    );
    best
}

/// blackbox's `probe_ip_addr_hash`: FNV-1a (32 bit) over the address bytes,
/// 4 for IPv4 (also IPv4-mapped IPv6), 16 for IPv6.
pub fn ip_hash(ip: IpAddr) -> f64 {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let bytes: Vec<u8> = match (v4, ip) {
        (Some(v4), _) => v4.octets().to_vec(),
        (None, IpAddr::V6(v6)) => v6.octets().to_vec(),
        (None, IpAddr::V4(v4)) => v4.octets().to_vec(),
    };
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    f64::from(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(subject: &str, issuer: &str, not_after: i64) -> Parsed {
        Parsed {
            subject: subject.as_bytes().to_vec(),
            issuer: issuer.as_bytes().to_vec(),
            not_after,
        }
    }

    #[test]
    fn last_chain_is_the_path_that_lives_longest() {
        // leaf <- inter (cross-signed twice: by old root expiring at 150, by
        // new root at 900); the new path keeps the chain alive until the
        // leaf's own 500.
        let presented = [
            cert("leaf", "inter", 500),
            cert("inter", "old", 800),
            cert("old", "old", 150),
        ];
        let extra = [cert("inter", "new", 1000), cert("new", "new", 900)];
        assert_eq!(last_chain_expiry(&presented, &extra), Some(500));
        assert_eq!(last_chain_expiry(&presented, &[]), Some(150));
        // A chain that ends at an unknown issuer is no chain.
        assert_eq!(last_chain_expiry(&[cert("leaf", "nobody", 5)], &[]), None);
        // Name loops end at the depth limit instead of recursing forever.
        let looped = [cert("a", "b", 1), cert("b", "a", 2)];
        assert_eq!(last_chain_expiry(&looped, &[]), None);
    }

    #[test]
    fn ip_hash_is_fnv1a_of_the_address_bytes() {
        // FNV-1a 32 of the empty input is the offset basis; of [127,0,0,1]
        // computed by hand from the FNV definition.
        let mut h: u32 = 0x811c_9dc5;
        for b in [127u8, 0, 0, 1] {
            h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
        }
        assert_eq!(ip_hash("127.0.0.1".parse().unwrap()), f64::from(h));
        assert_eq!(
            ip_hash("::ffff:127.0.0.1".parse().unwrap()),
            ip_hash("127.0.0.1".parse().unwrap())
        );
        assert_ne!(
            ip_hash("::1".parse().unwrap()),
            ip_hash("127.0.0.1".parse().unwrap())
        );
    }
}
