//! A private CA for TLS tests, made with the `openssl` command: server certificates for
//! `127.0.0.1` / `localhost`, encrypted keys, and the rustls configurations that trust the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA in a folder of its own.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// EC P-256 keys: quick to make on a loaded machine.
const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl Pki {
    /// A new CA in `dir` (created).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("PKI folder");
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        let mut ca = vec!["req", "-x509"];
        ca.extend(EC);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rig-e2e-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki.openssl(&ca);
        pki
    }

    /// Run `openssl` in the CA's folder; it must succeed.
    pub fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("the openssl command runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `127.0.0.1` and `localhost` with subject `CN=<name>`, signed by
    /// the CA: `(<name>.pem, <name>.key)`.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let (key, csr, ext, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN={name}");
        let mut req = vec!["req"];
        req.extend(EC);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        self.openssl(&req);
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        (self.dir.join(pem), self.dir.join(key))
    }

    /// `key` as encrypted PKCS#8 (PBES2, AES-256-CBC) with `password`: `<key>.enc`.
    pub fn encrypt_key(&self, key: &Path, password: &str) -> PathBuf {
        let out = key.with_extension("key.enc");
        let pass = format!("pass:{password}");
        self.openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            &key.to_string_lossy(),
            "-out",
            &out.to_string_lossy(),
            "-passout",
            &pass,
        ]);
        out
    }

    /// A rustls server configuration (no ALPN) with a new certificate `name`.
    pub fn server_config(&self, name: &str) -> rustls::ServerConfig {
        let (cert, key) = self.issue(name);
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certificates(&cert), key_of(&key))
        .expect("server certificate")
    }

    /// A rustls client configuration that trusts only this CA and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(&self.ca()) {
            roots.add(cert).expect("CA certificate");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// The certificates of a PEM file.
pub fn certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("PEM certificates")
        .collect::<Result<_, _>>()
        .expect("certificates")
}

fn key_of(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("PEM key")
}
