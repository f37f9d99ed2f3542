//! The TLS listeners (`HTTPS_CERTFILE`, `HTTPS_KEYFILE`, `HTTPS_KEYFILE_PASS`): rustls, ALPN `h2`
//! and `http/1.1`, the same routes as the plain ports.
//!
//! The certificate is read again when its files change (cert-manager rotates the Secret behind
//! them): [`watch`] compares their bytes every `RIG_TLS_RELOAD_INTERVAL_MS` and swaps the key
//! that new handshakes get. Open connections keep the session they negotiated. Files that cannot
//! be used (half-written, a key that does not match) leave the last good certificate in place,
//! logged and counted (`rig_tls_reloads_total{result="error"}`).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch as signal;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::support::stopped;

/// Where the certificate and its key are, and the key's password.
#[derive(Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC); with a password, encrypted PKCS#8.
    pub key: PathBuf,
    /// `HTTPS_KEYFILE_PASS`.
    pub password: Option<String>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The certificate new handshakes get; [`watch`] replaces it.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl Certificates {
    /// Read the files; an unusable certificate or key is the error, with the reason.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certified, _) = read(&files, &provider)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(certified)),
            provider,
        }))
    }

    /// A TLS acceptor serving the current certificate, offering `h2` and `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn fingerprint(&self) -> Option<u64> {
        fingerprint(&self.files)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The files' bytes, hashed: a change of either is a reload.
fn fingerprint(files: &TlsFiles) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&files.cert).ok()?.hash(&mut hasher);
    std::fs::read(&files.key).ok()?.hash(&mut hasher);
    Some(hasher.finish())
}

/// The certified key the files hold, and the certificate's first bytes (tests tell two apart).
fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<(CertifiedKey, usize), String> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{}: not a readable PEM certificate file ({e})",
                show(&files.cert)
            )
        })?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", show(&files.cert)));
    }
    let key = private_key(&files.key, files.password.as_deref())?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: the key cannot be used ({e})", show(&files.key)))?;
    let n = chain.len();
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not belong to the certificate in {}, or the certificate cannot be read ({e})",
            show(&files.key),
            show(&files.cert)
        )
    })?;
    Ok((certified, n))
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// The private key of a PEM file: plain PKCS#8, PKCS#1 or SEC1, or encrypted PKCS#8 (PBES2, as
/// `openssl pkcs8 -topk8` writes it) with `password`.
fn private_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot be read ({e})", show(path)))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(format!(
                "{}: the key is encrypted; HTTPS_KEYFILE_PASS is not set",
                show(path)
            ));
        };
        let (_, der) = pkcs8::der::pem::decode_vec(&pem)
            .map_err(|e| format!("{}: not a valid encrypted PEM key ({e})", show(path)))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| format!("{}: not an encrypted PKCS#8 key ({e})", show(path)))?;
        let plain = info.decrypt(password).map_err(|e| {
            format!(
                "{}: the key cannot be decrypted with HTTPS_KEYFILE_PASS (a wrong password, or \
                 an encryption other than PBES2 with AES or 3DES: {e})",
                show(path)
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "{}: a legacy OpenSSL-encrypted key; convert it to encrypted PKCS#8 \
             (openssl pkcs8 -topk8 -v2 aes-256-cbc) or to a plain key",
            show(path)
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no usable PEM private key ({e})", show(path)))
}

/// Reload the certificate whenever its files change, until `shutdown`.
pub async fn watch(
    certs: Arc<Certificates>,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: signal::Receiver<bool>,
) {
    let mut seen = certs.fingerprint();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        let now = certs.fingerprint();
        if now.is_none() {
            // Missing or unreadable (mid-rotation, or gone): said once, tried on every tick.
            if seen.is_some() {
                metrics.tls_reloads[1].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(cert = %show(&certs.files.cert), key = %show(&certs.files.key),
                    "TLS certificate files cannot be read: the previous certificate stays");
            }
            seen = None;
            continue;
        }
        if now == seen {
            continue;
        }
        seen = now;
        match read(&certs.files, &certs.provider) {
            Ok((certified, chain)) => {
                *certs.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                metrics.tls_reloads[0].fetch_add(1, Ordering::Relaxed);
                tracing::info!(chain, cert = %show(&certs.files.cert), "TLS certificate reloaded");
            }
            Err(error) => {
                metrics.tls_reloads[1].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "TLS certificate not reloaded: the previous one stays");
            }
        }
    }
}
