//! Certificates made at test time with the `openssl` command: a CA, server
//! certificates for 127.0.0.1 signed by it, and a client certificate, as
//! PEM files in a temp dir (what both node_exporter and Steward read).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test CA and the files it signed.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl: install the Debian package openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            path.to_str().unwrap(),
        ],
        dir,
    );
    path
}

impl Pki {
    /// A CA named `ca.pem`/`ca.key` in `dir`.
    pub fn new(dir: &Path) -> Pki {
        let ca_key = new_key(dir, "ca.key");
        let ca_cert = dir.join("ca.pem");
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                ca_key.to_str().unwrap(),
                "-subj",
                "/CN=steward test CA",
                "-days",
                "2",
                "-out",
                ca_cert.to_str().unwrap(),
            ],
            dir,
        );
        Pki {
            dir: dir.to_path_buf(),
            ca_cert,
            ca_key,
        }
    }

    /// A certificate + key signed by the CA, `<name>.pem` and `<name>.key`;
    /// `server` adds the SANs 127.0.0.1 and localhost and serverAuth, else
    /// it is a clientAuth certificate.
    pub fn issue(&self, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let key = new_key(&self.dir, &format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.pem"));
        let ext = self.dir.join(format!("{name}.ext"));
        let extensions = if server {
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(&ext, extensions).unwrap();
        openssl(
            &[
                "req",
                "-new",
                "-key",
                key.to_str().unwrap(),
                "-subj",
                &format!("/CN={name}"),
                "-out",
                csr.to_str().unwrap(),
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                self.ca_cert.to_str().unwrap(),
                "-CAkey",
                self.ca_key.to_str().unwrap(),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            &self.dir,
        );
        (cert, key)
    }
}

/// The DER bytes of the first certificate of a PEM file, to compare with
/// what a server presents.
pub fn cert_der(pem_path: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem_path)
        .output()
        .expect("cannot run openssl");
    assert!(out.status.success());
    out.stdout
}
