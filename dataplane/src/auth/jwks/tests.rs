use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::auth::jwt::{JwtConfig, JwtError, Verifier};

const RSA_PRIVATE: &str = include_str!("../testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa_public.pem");
const EC256_PRIVATE: &str = include_str!("../testdata/ec256_private.pem");
const EC256_PUBLIC: &str = include_str!("../testdata/ec256_public.pem");
const EC384_PUBLIC: &str = include_str!("../testdata/ec384_public.pem");
const SECRET: &[u8] = b"an oct key that is long enough for HS256";

const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The public JWK of a PEM key, with `kid` (and `alg` when given).
fn jwk(pem: &str, kid: Option<&str>, alg: Option<&str>) -> Value {
    let (key, family_alg) = if pem.contains("BEGIN PUBLIC KEY") && pem.len() > 300 {
        (
            DecodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa"),
            Algorithm::RS256,
        )
    } else {
        (
            DecodingKey::from_ec_pem(pem.as_bytes()).expect("ec"),
            Algorithm::ES256,
        )
    };
    let mut value =
        serde_json::to_value(Jwk::from_decoding_key(&key, Some(family_alg)).expect("jwk"))
            .expect("json");
    let obj = value.as_object_mut().expect("object");
    obj.remove("alg");
    if let Some(kid) = kid {
        obj.insert("kid".into(), kid.into());
    }
    if let Some(alg) = alg {
        obj.insert("alg".into(), alg.into());
    }
    value
}

fn oct(kid: &str) -> Value {
    json!({ "kty": "oct", "kid": kid, "k": URL_SAFE_NO_PAD.encode(SECRET) })
}

fn set(keys: &[Value]) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &json!({ "exp": now() + 600, "jti": "s" }), key).expect("sign")
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa")
}

fn ec256() -> EncodingKey {
    EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).expect("ec")
}

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A key set file in a fresh temporary directory (removed on drop).
struct TempSet {
    path: PathBuf,
}

impl TempSet {
    fn new(document: &[u8]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rig-jwks-test-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, document).expect("write");
        Self { path }
    }

    fn write(&self, document: &[u8]) {
        std::fs::write(&self.path, document).expect("write");
    }

    fn verifier(&self, vars: &[(&str, &str)]) -> Verifier {
        let path = self.path.to_str().expect("utf-8").to_owned();
        let mut all = vec![("JWT_JWKS", path.as_str())];
        all.extend_from_slice(vars);
        JwtConfig::from_lookup(lookup(&all))
            .expect("config")
            .verifier()
            .expect("verifier")
    }
}

impl Drop for TempSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// --- Parsing ---------------------------------------------------------------------------------

#[test]
fn rsa_ec_and_oct_keys_are_read_with_the_algorithms_their_type_allows() {
    let all: Vec<Algorithm> = ASYMMETRIC
        .iter()
        .copied()
        .chain([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512])
        .collect();
    let document = set(&[
        jwk(RSA_PUBLIC, Some("rsa"), None),
        jwk(EC256_PUBLIC, Some("p256"), None),
        jwk(EC384_PUBLIC, Some("p384"), None),
        oct("hmac"),
        jwk(RSA_PUBLIC, Some("rs384-only"), Some("RS384")),
    ]);
    let (keys, skipped) = KeySet::parse(&document, &all).expect("set");
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(keys.len(), 5);
    for alg in [Algorithm::RS256, Algorithm::PS512] {
        assert!(keys.select(Some("rsa"), alg).is_ok(), "{alg:?}");
    }
    assert!(keys.select(Some("p256"), Algorithm::ES256).is_ok());
    assert!(keys.select(Some("p384"), Algorithm::ES384).is_ok());
    assert!(keys.select(Some("hmac"), Algorithm::HS512).is_ok());
    assert!(keys.select(Some("rs384-only"), Algorithm::RS384).is_ok());
    // Key confusion in every direction is a miss.
    for (kid, alg) in [
        ("rsa", Algorithm::HS256),
        ("rsa", Algorithm::ES256),
        ("p256", Algorithm::ES384),
        ("p256", Algorithm::HS256),
        ("p384", Algorithm::ES256),
        ("hmac", Algorithm::RS256),
        ("rs384-only", Algorithm::RS256),
    ] {
        assert_eq!(
            keys.select(Some(kid), alg).err(),
            Some(Miss::WrongAlgorithm),
            "{kid} {alg:?}"
        );
    }
    assert_eq!(
        keys.select(Some("nope"), Algorithm::RS256).err(),
        Some(Miss::UnknownKid)
    );
}

#[test]
fn unusable_keys_are_skipped_with_a_reason() {
    let mut enc = jwk(RSA_PUBLIC, Some("enc"), None);
    enc["use"] = "enc".into();
    let mut sign_only = jwk(RSA_PUBLIC, Some("sign-only"), None);
    sign_only["key_ops"] = json!(["sign"]);
    let mut small = jwk(RSA_PUBLIC, Some("small"), None);
    small["n"] = URL_SAFE_NO_PAD.encode([0xC5u8; 128]).into();
    let mut short_x = jwk(EC256_PUBLIC, Some("short-x"), None);
    short_x["x"] = "AAAA".into();
    let mut bad_b64 = jwk(RSA_PUBLIC, Some("bad-b64"), None);
    bad_b64["n"] = "!!!".into();
    let cases = [
        (enc, "enc"),
        (sign_only, "key_ops"),
        (small, "1024 bits"),
        (short_x, "32 bytes"),
        (bad_b64, "base64"),
        (
            jwk(RSA_PUBLIC, Some("lying"), Some("ES256")),
            "does not fit",
        ),
        (
            json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            "not supported",
        ),
        (
            json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
            "not supported",
        ),
        (json!({"kid": "no-kty"}), "not supported"),
        (json!("a string"), "not a JWK"),
        (oct("hmac-not-allowed"), "JWT_ALG"),
        (json!({"kty": "oct", "kid": "empty", "k": ""}), "empty"),
    ];
    for (key, reason) in cases {
        let document = set(&[key.clone(), jwk(EC256_PUBLIC, Some("good"), None)]);
        let (keys, skipped) = KeySet::parse(&document, &ASYMMETRIC).expect("good key left");
        assert_eq!(keys.len(), 1, "{key}");
        assert_eq!(skipped.len(), 1, "{key}");
        assert!(skipped[0].contains(reason), "{key}: {skipped:?}");
    }
    // The first of two keys with one kid wins.
    let document = set(&[
        jwk(EC256_PUBLIC, Some("dup"), None),
        jwk(RSA_PUBLIC, Some("dup"), None),
    ]);
    let (keys, skipped) = KeySet::parse(&document, &ASYMMETRIC).expect("set");
    assert_eq!(keys.len(), 1);
    assert!(skipped[0].contains("repeated"), "{skipped:?}");
    assert!(keys.select(Some("dup"), Algorithm::ES256).is_ok());
}

#[test]
fn documents_that_are_not_sets_or_hold_no_usable_key_are_errors() {
    for document in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        br#"{"keys": {}}"#,
        br#"{"keys": "x"}"#,
    ] {
        assert!(
            matches!(
                KeySet::parse(document, &ASYMMETRIC),
                Err(JwksError::NotASet(_))
            ),
            "{}",
            String::from_utf8_lossy(document)
        );
    }
    let err = KeySet::parse(&set(&[oct("h")]), &ASYMMETRIC).expect_err("no usable key");
    assert!(matches!(err, JwksError::NoUsableKey { .. }));
    assert!(err.to_string().contains("JWT_ALG"), "{err}");
    assert!(matches!(
        KeySet::parse(&set(&[]), &ASYMMETRIC),
        Err(JwksError::NoUsableKey { .. })
    ));
}

#[test]
fn a_token_without_kid_needs_exactly_one_key_for_its_algorithm() {
    let document = set(&[
        jwk(RSA_PUBLIC, None, None),
        jwk(EC256_PUBLIC, Some("a"), None),
        jwk(EC256_PUBLIC, Some("b"), None),
    ]);
    let (keys, _) = KeySet::parse(&document, &ASYMMETRIC).expect("set");
    assert!(keys.select(None, Algorithm::RS256).is_ok());
    assert_eq!(
        keys.select(None, Algorithm::ES256).err(),
        Some(Miss::Ambiguous(2))
    );
    assert_eq!(
        keys.select(None, Algorithm::ES384).err(),
        Some(Miss::Ambiguous(0))
    );
}

// --- Settings --------------------------------------------------------------------------------

#[test]
fn settings_name_a_path_or_a_url() {
    let c = JwksConfig::from_lookup(&lookup(&[("JWT_JWKS", " /etc/rig/jwks.json ")]))
        .expect("valid")
        .expect("set");
    assert_eq!(c.source, Source::File("/etc/rig/jwks.json".into()));
    assert_eq!(c.refresh_interval, Duration::from_secs(300));
    assert_eq!(c.min_refresh_interval, Duration::from_secs(10));
    let c = JwksConfig::from_lookup(&lookup(&[
        ("JWT_JWKS", "https://idp.example/.well-known/jwks.json"),
        ("JWT_JWKS_REFRESH_SECS", "60"),
        ("JWT_JWKS_MIN_REFRESH_SECS", "2"),
    ]))
    .expect("valid")
    .expect("set");
    assert!(matches!(&c.source, Source::Url(u) if u.host() == Some("idp.example")));
    assert_eq!(c.refresh_interval, Duration::from_secs(60));
    assert_eq!(c.min_refresh_interval, Duration::from_secs(2));
    assert_eq!(JwksConfig::from_lookup(&lookup(&[])).expect("valid"), None);
    assert_eq!(
        JwksConfig::from_lookup(&lookup(&[("JWT_JWKS", " ")])).expect("valid"),
        None
    );
    for (var, vars) in [
        ("JWT_JWKS", &[("JWT_JWKS", "ftp://idp/jwks")][..]),
        ("JWT_JWKS", &[("JWT_JWKS", "http://")][..]),
        (
            "JWT_JWKS_REFRESH_SECS",
            &[("JWT_JWKS", "/x"), ("JWT_JWKS_REFRESH_SECS", "0")][..],
        ),
        (
            "JWT_JWKS_MIN_REFRESH_SECS",
            &[("JWT_JWKS", "/x"), ("JWT_JWKS_MIN_REFRESH_SECS", "soon")][..],
        ),
    ] {
        let err = JwksConfig::from_lookup(&lookup(vars)).expect_err(var);
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn jwks_and_a_secret_key_exclude_each_other_and_a_broken_file_stops_start_up() {
    let err = JwtConfig::from_lookup(lookup(&[
        ("JWT_JWKS", "/x.json"),
        ("JWT_SECRET_KEY", "secret"),
    ]))
    .expect_err("both");
    assert!(err.to_string().contains("not both"), "{err}");

    let c = JwtConfig::from_lookup(lookup(&[("JWT_JWKS", "/no/such/jwks.json")])).expect("valid");
    assert_eq!(c.algorithms, ASYMMETRIC, "asymmetric algorithms by default");
    let err = c.verifier().expect_err("missing file");
    assert!(matches!(err, ConfigError::Jwks { .. }), "{err}");
    assert!(err.to_string().contains("JWT_JWKS"), "{err}");

    let file = TempSet::new(&set(&[oct("only-hmac")]));
    let config =
        JwtConfig::from_lookup(lookup(&[("JWT_JWKS", file.path.to_str().expect("utf-8"))]))
            .expect("valid");
    assert!(config.verifier().is_err(), "no key usable by default");
}

// --- Verification ----------------------------------------------------------------------------

#[test]
fn the_kid_selects_the_key_and_keys_serve_only_their_type() {
    let file = TempSet::new(&set(&[
        jwk(RSA_PUBLIC, Some("r"), None),
        jwk(EC256_PUBLIC, Some("e"), None),
        oct("h"),
    ]));
    let v = file.verifier(&[("JWT_ALG", "RS256,PS256,ES256,HS256")]);
    let hs = EncodingKey::from_secret(SECRET);
    for good in [
        token(Algorithm::RS256, Some("r"), &rsa()),
        token(Algorithm::PS256, Some("r"), &rsa()),
        token(Algorithm::ES256, Some("e"), &ec256()),
        token(Algorithm::HS256, Some("h"), &hs),
    ] {
        assert!(v.verify(&good).is_ok(), "{good}");
    }
    // Right key type, wrong key.
    assert!(matches!(
        v.verify(&token(Algorithm::ES256, Some("r"), &ec256())),
        Err(JwtError::KeyMismatch { .. })
    ));
    // Key confusion: an HS256 token "signed" with the RSA public key, naming the RSA key.
    let confused = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
    assert!(matches!(
        v.verify(&token(Algorithm::HS256, Some("r"), &confused)),
        Err(JwtError::KeyMismatch { .. })
    ));
    // Signed by another key than the one named.
    let other = EncodingKey::from_secret(b"not the oct key of the set at all");
    assert!(matches!(
        v.verify(&token(Algorithm::HS256, Some("h"), &other)),
        Err(JwtError::BadSignature(_))
    ));
    // Not in JWT_ALG, whatever the set holds.
    assert!(matches!(
        v.verify(&token(Algorithm::RS384, Some("r"), &rsa())),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));
    // Without a kid: one RSA key, so RS256 works; unknown kids are refused.
    assert!(v.verify(&token(Algorithm::RS256, None, &rsa())).is_ok());
    assert!(matches!(
        v.verify(&token(Algorithm::RS256, Some("x"), &rsa())),
        Err(JwtError::UnknownKey { .. })
    ));
}

#[test]
fn refusals_are_counted_by_reason_and_rendered() {
    let file = TempSet::new(&set(&[jwk(RSA_PUBLIC, Some("r"), None)]));
    let v = file.verifier(&[]);
    let _ = v.verify(&token(Algorithm::RS256, Some("gone"), &rsa()));
    let _ = v.verify(&token(Algorithm::RS256, Some("gone"), &rsa()));
    let _ = v.verify("garbage");
    assert!(
        v.verify(&token(Algorithm::RS256, Some("r"), &rsa()))
            .is_ok()
    );
    let mut text = String::new();
    v.render_metrics(&mut text);
    assert!(
        text.contains("rig_jwt_refused_total{reason=\"unknown_key\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("rig_jwt_refused_total{reason=\"malformed\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("rig_jwt_refused_total{reason=\"signature\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("rig_jwks_refreshes_total{result=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("rig_jwks_keys 1\n"), "{text}");
}

// --- Refreshing ------------------------------------------------------------------------------

fn jwks_of(v: &Verifier) -> Arc<Jwks> {
    v.jwks().expect("a key set").clone()
}

/// Let the refresh task run until it waits again.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_triggers_a_refresh_and_the_new_key_is_accepted() {
    let file = TempSet::new(&set(&[jwk(RSA_PUBLIC, Some("old"), None)]));
    let v = file.verifier(&[("JWT_JWKS_MIN_REFRESH_SECS", "5")]);
    let jwks = jwks_of(&v);
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(v.refresher(shutdown).expect("a refresher"));
    settle().await;

    // The provider rotates: the new set holds only the EC key.
    file.write(&set(&[jwk(EC256_PUBLIC, Some("new"), None)]));
    let rotated = token(Algorithm::ES256, Some("new"), &ec256());
    assert!(matches!(
        v.verify(&rotated),
        Err(JwtError::UnknownKey { .. })
    ));
    // The start-up load was just now: the refresh waits for the minimum interval.
    settle().await;
    assert_eq!(jwks.metrics.refreshes.load(Ordering::Relaxed), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(jwks.metrics.refreshes.load(Ordering::Relaxed), 2);
    assert!(v.verify(&rotated).is_ok());
    assert!(matches!(
        v.verify(&token(Algorithm::RS256, Some("old"), &rsa())),
        Err(JwtError::UnknownKey { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_unknown_kids_refreshes_at_most_once_per_minimum_interval() {
    let file = TempSet::new(&set(&[jwk(RSA_PUBLIC, Some("k"), None)]));
    let v = file.verifier(&[
        ("JWT_JWKS_MIN_REFRESH_SECS", "10"),
        ("JWT_JWKS_REFRESH_SECS", "3600"),
    ]);
    let jwks = jwks_of(&v);
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(v.refresher(shutdown).expect("a refresher"));
    settle().await;
    let loads = || jwks.metrics.refreshes.load(Ordering::Relaxed);
    assert_eq!(loads(), 1, "the start-up load");
    // 35 s of random kids, 100 per second. The kid is looked up before the signature is
    // checked, so the tokens need no real signature.
    for second in 0..35u64 {
        for i in 0..100 {
            let header = json!({ "alg": "RS256", "kid": format!("random-{second}-{i}") });
            let forged = format!(
                "{}.{}.AAAA",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(r#"{"exp":1}"#)
            );
            assert!(matches!(
                v.verify(&forged),
                Err(JwtError::UnknownKey { .. })
            ));
        }
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
    }
    // Loads at 10, 20 and 30 s after the start-up load, and no more.
    assert_eq!(loads(), 4);
    // Quiet again: nothing more until the scheduled refresh.
    tokio::time::advance(Duration::from_secs(100)).await;
    settle().await;
    assert_eq!(loads(), 5, "one more for the flood's last requests");
    tokio::time::advance(Duration::from_secs(1000)).await;
    settle().await;
    assert_eq!(loads(), 5);
    tokio::time::advance(Duration::from_secs(3600)).await;
    settle().await;
    assert_eq!(loads(), 6, "the scheduled refresh");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_set() {
    let file = TempSet::new(&set(&[jwk(RSA_PUBLIC, Some("k"), None)]));
    let v = file.verifier(&[]);
    let jwks = jwks_of(&v);
    let good = token(Algorithm::RS256, Some("k"), &rsa());
    for broken in [&b"{not json"[..], br#"{"keys": []}"#, &set(&[oct("h")])] {
        file.write(broken);
        assert!(jwks.refresh().await.is_err());
        assert!(v.verify(&good).is_ok(), "still the last good set");
    }
    std::fs::remove_file(&file.path).expect("remove");
    assert!(matches!(jwks.refresh().await, Err(JwksError::Read { .. })));
    assert!(v.verify(&good).is_ok());
    assert_eq!(jwks.metrics.refresh_failures.load(Ordering::Relaxed), 4);
    assert_eq!(jwks.metrics.refreshes.load(Ordering::Relaxed), 1);
    file.write(&vec![b' '; MAX_DOCUMENT_BYTES + 1]);
    assert!(matches!(jwks.refresh().await, Err(JwksError::TooLarge)));
}

// --- URL sources -----------------------------------------------------------------------------

/// A one-route HTTP/1.1 server on loopback answering every request with the current
/// `(status, body)`; counts requests.
struct KeyServer {
    url: String,
    answer: Arc<std::sync::Mutex<(u16, Vec<u8>)>>,
    requests: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(status: u16, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let answer = Arc::new(std::sync::Mutex::new((status, body)));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, r) = (answer.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (a, r) = (a.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = a.lock().expect("answer").clone();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        Self {
            url,
            answer,
            requests,
        }
    }

    fn set(&self, status: u16, body: Vec<u8>) {
        *self.answer.lock().expect("answer") = (status, body);
    }
}

#[tokio::test]
async fn a_url_set_is_fetched_and_a_failed_fetch_keeps_the_last_good_set() {
    let server = KeyServer::start(200, set(&[jwk(RSA_PUBLIC, Some("k"), None)])).await;
    let v = JwtConfig::from_lookup(lookup(&[("JWT_JWKS", &server.url)]))
        .expect("config")
        .verifier()
        .expect("verifier");
    let jwks = jwks_of(&v);
    let good = token(Algorithm::RS256, Some("k"), &rsa());
    // Nothing fetched yet: refused, and a fetch is requested.
    assert!(matches!(v.verify(&good), Err(JwtError::UnknownKey { .. })));
    jwks.refresh().await.expect("fetched");
    assert!(v.verify(&good).is_ok());
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    for (status, body) in [
        (500, b"oops".to_vec()),
        (200, b"<html>".to_vec()),
        (200, vec![b' '; MAX_DOCUMENT_BYTES + 10]),
    ] {
        server.set(status, body);
        assert!(jwks.refresh().await.is_err());
        assert!(v.verify(&good).is_ok(), "the last good set stays");
    }
    server.set(200, set(&[jwk(EC256_PUBLIC, Some("k2"), None)]));
    jwks.refresh().await.expect("fetched");
    assert!(v.verify(&good).is_err(), "rotated away");
    assert!(
        v.verify(&token(Algorithm::ES256, Some("k2"), &ec256()))
            .is_ok()
    );
    assert_eq!(jwks.metrics.refresh_failures.load(Ordering::Relaxed), 3);

    // A server that is gone.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", closed.local_addr().expect("addr"));
    drop(closed);
    let gone = Jwks::new(
        JwksConfig::from_lookup(&lookup(&[("JWT_JWKS", &url)]))
            .expect("valid")
            .expect("set"),
        ASYMMETRIC.to_vec(),
    )
    .expect("no fetch at start");
    assert!(matches!(gone.refresh().await, Err(JwksError::Fetch(_))));
    assert!(gone.current().is_empty());
}

#[tokio::test]
async fn the_refresh_task_fetches_a_url_set_right_after_start() {
    let server = KeyServer::start(200, set(&[jwk(EC256_PUBLIC, Some("k"), None)])).await;
    let v = JwtConfig::from_lookup(lookup(&[("JWT_JWKS", &server.url)]))
        .expect("config")
        .verifier()
        .expect("verifier");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(v.refresher(shutdown).expect("a refresher"));
    let good = token(Algorithm::ES256, Some("k"), &ec256());
    let deadline = Instant::now() + Duration::from_secs(10);
    while v.verify(&good).is_err() {
        assert!(Instant::now() < deadline, "the set was never fetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task ends on shutdown")
        .expect("no panic");
}

#[test]
fn an_https_url_builds_a_tls_client() {
    // Building needs CA certificates only for https; the system has some or the error says so.
    match Jwks::new(
        JwksConfig::from_lookup(&lookup(&[("JWT_JWKS", "https://127.0.0.1:1/jwks")]))
            .expect("valid")
            .expect("set"),
        ASYMMETRIC.to_vec(),
    ) {
        Ok(jwks) => assert!(jwks.current().is_empty()),
        Err(err) => assert!(matches!(err, ConfigError::Jwks { .. }), "{err}"),
    }
}
