//! HTTP(S) plumbing shared by the probes and the nginx collector: client
//! construction with the TLS options the anchors offer, per-scrape time
//! budgets, bounded body reads and readable error chains.

use std::path::Path;
use std::time::Duration;

use crate::collector::CollectContext;

/// Margin left between a collector's own I/O timeout and the scrape
/// deadline, so the collector returns `*_up 0` itself instead of being
/// dropped by the scraper's timeout with nothing exported.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// The time a collector may spend on I/O this scrape: its configured
/// timeout, cut to what is left of the scrape deadline minus a margin.
pub(crate) fn budget(ctx: &CollectContext, configured_secs: f64) -> Duration {
    let configured = Duration::try_from_secs_f64(configured_secs).unwrap_or(Duration::from_secs(5));
    let left = ctx.remaining();
    let left = if left > DEADLINE_MARGIN * 2 {
        left - DEADLINE_MARGIN
    } else {
        left / 2
    };
    configured.min(left).max(Duration::from_millis(1))
}

/// TLS and connection options of one HTTP client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTls<'a> {
    /// Verify the server certificate chain and host name.
    pub verify: bool,
    /// Extra PEM CA certificates to trust.
    pub ca_file: Option<&'a Path>,
    /// Reuse connections between scrapes (status pages), or open a fresh
    /// one each time (probes, which measure connecting and the handshake).
    pub keep_alive: bool,
    /// Keep the peer certificate on responses (certificate expiry).
    pub capture_tls: bool,
    pub follow_redirects: bool,
}

/// Builds a rustls-backed client; the error names the file or option at fault.
pub(crate) fn build_client(tls: &ClientTls<'_>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("steward/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!tls.verify)
        .tls_info(tls.capture_tls)
        .redirect(if tls.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        });
    if !tls.keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    if let Some(path) = tls.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "CA file {} holds no usable PEM certificate: {e}",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// Reads a response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("cannot read the body: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("the body is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes (`error sending request: connection refused`),
/// since reqwest's top-level message alone rarely says what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Why `name` cannot be a Prometheus label name, if it cannot.
pub(crate) fn label_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        Some(format!(
            "{name:?} is not a valid label name; use letters, digits and _, not starting with a digit"
        ))
    } else if name.starts_with("__") {
        Some(format!(
            "{name:?} starts with __, which Prometheus reserves"
        ))
    } else {
        None
    }
}

/// A tiny deterministic generator for the parsers' random-input tests, so
/// the stable test suite exercises them like the fuzz targets do.
#[cfg(test)]
pub(crate) struct XorShift(pub u64);

#[cfg(test)]
impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Applies a few random edits: flip, insert, delete, duplicate a span,
    /// or insert an interesting token.
    pub fn mutate(&mut self, input: &mut Vec<u8>) {
        const TOKENS: &[&[u8]] = &[
            b"\n",
            b" ",
            b":",
            b"\"",
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b"-1",
            b"1e999",
            b"18446744073709551616",
            b"\xff",
            b"\\u0000",
            b"null",
            b"Reading:",
            b"\"processes\":[",
            b"\r\n\r\n",
        ];
        for _ in 0..=self.below(8) {
            let len = input.len();
            match self.below(5) {
                0 if len > 0 => {
                    let i = self.below(len);
                    input[i] ^= 1 << self.below(8);
                }
                1 => {
                    let i = self.below(len + 1);
                    input.insert(i, self.next() as u8);
                }
                2 if len > 0 => {
                    let i = self.below(len);
                    let n = self.below(len - i + 1);
                    input.drain(i..i + n);
                }
                3 if len > 0 => {
                    let i = self.below(len);
                    let n = self.below((len - i).min(64) + 1);
                    let span: Vec<u8> = input[i..i + n].to_vec();
                    let at = self.below(input.len() + 1);
                    input.splice(at..at, span);
                }
                _ => {
                    let token = TOKENS[self.below(TOKENS.len())];
                    let at = self.below(len + 1);
                    input.splice(at..at, token.iter().copied());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_respects_deadline_and_configuration() {
        let ctx = CollectContext::with_timeout(Duration::from_secs(10));
        assert_eq!(budget(&ctx, 2.0), Duration::from_secs(2));
        let ctx = CollectContext::with_timeout(Duration::from_secs(1));
        let b = budget(&ctx, 5.0);
        assert!(
            b < Duration::from_secs(1) && b > Duration::from_millis(800),
            "{b:?}"
        );
        let ctx = CollectContext::with_timeout(Duration::ZERO);
        assert!(budget(&ctx, 5.0) <= Duration::from_millis(1));
    }

    #[test]
    fn label_names() {
        assert!(label_name_problem("env").is_none());
        assert!(label_name_problem("0x").is_some());
        assert!(label_name_problem("a-b").is_some());
        assert!(label_name_problem("__name").is_some());
        assert!(label_name_problem("").is_some());
    }
}
