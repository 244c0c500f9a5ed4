//! A throwaway nginx: stub_status on a loopback port and a unix socket, the
//! application health endpoints the seeds describe (`/livez`, `/readyz`,
//! `/health`), a garbage status page, a redirect, an HTTPS server with a
//! certificate signed by a freshly generated test CA, and optionally a FastCGI pass
//! to a PHP-FPM status page (an independent reader to compare against).
//! Also starts the Debian `prometheus-nginx-exporter` against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_for_http, wait_for_tcp, ChildGuard};

/// A running nginx; restartable on the same ports and socket.
#[derive(Debug)]
pub struct Nginx {
    /// HTTP port: `/stub_status`, `/livez` (200), `/readyz` (503),
    /// `/health` (200 JSON), `/garbage` (200, not stub_status),
    /// `/redirect` (302 to `/livez`), `/fpm-status` (when started with FPM).
    pub port: u16,
    /// HTTPS port with the self-signed certificate: `/livez`, `/stub_status`.
    pub tls_port: u16,
    /// Unix socket serving the same locations as `port`.
    pub socket: PathBuf,
    /// PEM certificate of the HTTPS server (SAN 127.0.0.1 and localhost).
    pub cert_path: PathBuf,
    /// PEM certificate of the test CA that signed it.
    pub ca_path: PathBuf,
    /// notAfter of that certificate in unix seconds, as openssl reads it.
    pub cert_not_after: i64,
    guard: Option<ChildGuard>,
    pub dir: tempfile::TempDir,
}

/// Days of validity of the generated certificate.
pub const CERT_DAYS: u32 = 42;

impl Nginx {
    /// Starts nginx without a PHP-FPM upstream.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_fpm(None)
    }

    /// Starts nginx; with `fpm_socket`, `/fpm-status` is passed by FastCGI
    /// to that pool's `/status` with `?json` kept.
    pub fn start_with_fpm(fpm_socket: Option<&Path>) -> anyhow::Result<Self> {
        let bin = nginx_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("steward-nginx-")
            .tempdir()?;
        let port = free_port();
        let tls_port = free_port();
        let socket = dir.path().join("nginx.sock");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        let cert_not_after = test_certificates(dir.path(), &cert_path, &key_path)?;
        let ca_path = dir.path().join("ca.pem");
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join("tmp").join(sub))?;
        }
        let d = dir.path().display();
        let user = if running_as_root() { "user root;" } else { "" };
        let fpm = match fpm_socket {
            Some(s) => format!(
                "location = /fpm-status {{ include {fastcgi_params}; fastcgi_param SCRIPT_FILENAME /status; fastcgi_param SCRIPT_NAME /status; fastcgi_pass unix:{}; }}",
                s.display(),
                fastcgi_params = fastcgi_params()?.display()
            ),
            None => String::new(),
        };
        let locations = format!(
            r#"
        location = /stub_status {{ stub_status; }}
        location = /livez {{ return 200 "ok\n"; }}
        location = /readyz {{ return 503 "not ready\n"; }}
        location = /health {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
        location = /garbage {{ return 200 "Active connections: lots\nthis is not a stub_status page\n"; }}
        location = /redirect {{ return 302 /livez; }}
        {fpm}"#
        );
        let conf = format!(
            r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen unix:{socket};
        {locations}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {locations}
    }}
}}
"#,
            socket = socket.display(),
            cert = cert_path.display(),
            key = key_path.display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let mut nginx = Nginx {
            port,
            tls_port,
            socket,
            cert_path,
            ca_path,
            cert_not_after,
            guard: None,
            dir,
        };
        nginx.boot(&bin)?;
        Ok(nginx)
    }

    fn boot(&mut self, bin: &Path) -> anyhow::Result<()> {
        // A SIGKILLed nginx leaves its socket file behind; bind would fail.
        let _ = std::fs::remove_file(&self.socket);
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("stderr.log"))?;
        let guard = ChildGuard::spawn(
            "nginx",
            Command::new(bin)
                .arg("-p")
                .arg(d)
                .arg("-c")
                .arg(d.join("nginx.conf"))
                .arg("-e")
                .arg(d.join("error.log"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        self.guard = Some(guard);
        if let Err(e) = wait_for_http(self.port, "/livez", Duration::from_secs(15)) {
            anyhow::bail!(
                "nginx did not start: {e}\nerror.log:\n{}\nstderr:\n{}",
                std::fs::read_to_string(d.join("error.log")).unwrap_or_default(),
                std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
            );
        }
        wait_for_tcp(self.tls_port, Duration::from_secs(5))?;
        Ok(())
    }

    /// Stops nginx (SIGTERM: fast shutdown, as `systemctl stop` does).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(10));
        }
    }

    /// Starts it again on the same ports, socket and certificate.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.boot(&nginx_bin()?)
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `https://127.0.0.1:<tls_port><path>`
    pub fn tls_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_bin() -> anyhow::Result<PathBuf> {
    find_bin(&["nginx"], &["/usr/sbin/nginx"]).ok_or_else(|| {
        anyhow::anyhow!(
            "nginx is not installed; install the Debian package nginx (scripts/apt-packages.txt)"
        )
    })
}

fn fastcgi_params() -> anyhow::Result<PathBuf> {
    let p = PathBuf::from("/etc/nginx/fastcgi_params");
    anyhow::ensure!(
        p.exists(),
        "{} is missing; it comes with the Debian package nginx",
        p.display()
    );
    Ok(p)
}

/// The first of `names` on PATH, else the first existing of `fallbacks`.
pub fn find_bin(names: &[&str], fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    fallbacks.iter().map(PathBuf::from).find(|p| p.is_file())
}

pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Runs openssl with `args`; the error carries its stderr.
fn openssl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run openssl (Debian package openssl): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Generates a test CA (`ca.pem`) and a server certificate it signed,
/// valid for [`CERT_DAYS`] days for 127.0.0.1 and localhost (webpki
/// rejects a self-signed CA certificate used as the server certificate).
/// Returns the server certificate's notAfter in unix seconds as openssl
/// reads it.
fn test_certificates(dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<i64> {
    let p = |name: &str| dir.join(name).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_key, ca) = (p("ca.key"), p("ca.pem"));
    args.extend([
        "-days",
        "3650",
        "-subj",
        "/CN=steward test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&args)?;
    let (csr, ext) = (p("server.csr"), p("server.ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=127.0.0.1", "-keyout", &key_s, "-out", &csr]);
    openssl(&args)?;
    let days = CERT_DAYS.to_string();
    let serial = p("ca.srl");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAserial",
        &serial,
        "-CAcreateserial",
        "-days",
        &days,
        "-extfile",
        &ext,
        "-out",
        &cert_s,
    ])?;
    let text = openssl(&["x509", "-noout", "-enddate", "-in", &cert_s])?;
    let date = text
        .trim()
        .strip_prefix("notAfter=")
        .ok_or_else(|| anyhow::anyhow!("unexpected openssl -enddate output {text:?}"))?;
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The Debian `prometheus-nginx-exporter` (0.11) scraping `scrape_uri`.
#[derive(Debug)]
pub struct NginxExporter {
    pub port: u16,
    _guard: ChildGuard,
}

impl NginxExporter {
    pub fn start(scrape_uri: &str) -> anyhow::Result<Self> {
        let bin = find_bin(&["prometheus-nginx-exporter"], &[]).ok_or_else(|| {
            anyhow::anyhow!(
                "prometheus-nginx-exporter is not installed; install the Debian package of that name (scripts/apt-packages.txt)"
            )
        })?;
        let port = free_port();
        let guard = ChildGuard::spawn(
            "prometheus-nginx-exporter",
            Command::new(bin)
                .arg(format!("-nginx.scrape-uri={scrape_uri}"))
                .arg(format!("-web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        wait_for_http(port, "/metrics", Duration::from_secs(15))?;
        Ok(NginxExporter {
            port,
            _guard: guard,
        })
    }

    pub fn pid(&self) -> u32 {
        self._guard.pid()
    }

    pub fn scrape(&self) -> anyhow::Result<String> {
        let (status, _, body) = crate::process::http_get(self.port, "/metrics", &[])?;
        anyhow::ensure!(status == 200, "exporter /metrics answered {status}");
        Ok(String::from_utf8(body)?)
    }
}

/// One sample read back: name, labels in written order, value.
pub type SampleLine = (String, Vec<(String, String)>, f64);

/// A scrape read back into families, for comparing Steward with an anchor.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    /// Family name -> `# TYPE`.
    pub types: std::collections::BTreeMap<String, String>,
    /// Family name -> `# HELP` text (escaped as written).
    pub help: std::collections::BTreeMap<String, String>,
    /// Every sample: name, labels in written order, value.
    pub samples: Vec<SampleLine>,
}

impl Exposition {
    /// Parses text format 0.0.4; an unreadable line is an error naming it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut out = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| anyhow::anyhow!("bad TYPE line {line:?}"))?;
                out.types.insert(name.into(), kind.trim().into());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.help.insert(name.into(), help.into());
            } else if !line.starts_with('#') {
                out.samples.push(
                    parse_sample(line).ok_or_else(|| anyhow::anyhow!("bad sample {line:?}"))?,
                );
            }
        }
        Ok(out)
    }

    /// Samples of `name` whose labels include every pair of `with`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a SampleLine> + 'a {
        self.samples.iter().filter(move |(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    /// The value of the one sample of `name` matching `with`.
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> anyhow::Result<f64> {
        let found: Vec<_> = self.find(name, with).collect();
        anyhow::ensure!(
            found.len() == 1,
            "expected one sample of {name} with {with:?}, found {}",
            found.len()
        );
        Ok(found[0].2)
    }

    /// Sorted label names of each series of family `name` (one set per
    /// distinct shape).
    pub fn label_names(&self, name: &str) -> std::collections::BTreeSet<Vec<String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, labels, _)| {
                let mut names: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
                names.sort();
                names
            })
            .collect()
    }
}

fn parse_sample(line: &str) -> Option<SampleLine> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches(',');
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find("=\"")?;
            let key = inner[..eq].to_string();
            let mut value = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in inner[eq + 2..].char_indices() {
                if escaped {
                    value.push(if c == 'n' { '\n' } else { c });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(eq + 2 + i + 1);
                    break;
                } else {
                    value.push(c);
                }
            }
            labels.push((key, value));
            inner = &inner[end?..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}
