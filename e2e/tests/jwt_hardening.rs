//! JWT hardening against the real `rig-dataplane` binary: a negative security suite.
//!
//! Every bad token (`alg: none`, an HS256 token signed with the RSA public key, expired, not yet
//! valid, malformed base64 or JSON, a wrong signature, oversized, an unknown `kid`) is refused at
//! each entry point — SSE connect (`jwt` query), subscription PUT (`Authorization: Bearer`), and a
//! `secured` proxy route — with one generic answer per entry point, so a client learns nothing
//! about why. The reason is counted in `rig_jwt_refused_total{reason}` (where it is also logged).
//! A valid token passes each entry point, so the refusals are not an artefact of the setup.
//!
//! Keys come from a PEM (`JWT_SECRET_KEY`) or from a JWK set served over HTTP by a tiny server in
//! the test (`JWT_JWKS`): the `kid` selects the key, a key serves only its own type, a rotated set
//! is picked up after an unknown `kid`, a flood of random `kid`s is rate-limited, and a failing key
//! server leaves the last good set in use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::{form_encode, request, send};
use rig_e2e::sse::{self, Connect};
use rig_e2e::wait_until;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const RSA_PRIVATE: &str = include_str!("../../dataplane/src/auth/testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../dataplane/src/auth/testdata/rsa_public.pem");
const EC256_PRIVATE: &str = include_str!("../../dataplane/src/auth/testdata/ec256_private.pem");
const EC256_PUBLIC: &str = include_str!("../../dataplane/src/auth/testdata/ec256_public.pem");
const EC384_PRIVATE: &str = include_str!("../../dataplane/src/auth/testdata/ec384_private.pem");
const EC384_PUBLIC: &str = include_str!("../../dataplane/src/auth/testdata/ec384_public.pem");

const TIMEOUT: Duration = Duration::from_secs(20);
/// The data plane's `MAX_TOKEN_LEN`.
const MAX_TOKEN_LEN: usize = 8 * 1024;

// --- Tokens ----------------------------------------------------------------------------------

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims() -> Value {
    json!({ "exp": now() + 3600, "jti": "session-1" })
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa key")
}

fn ec256() -> EncodingKey {
    EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).expect("P-256 key")
}

fn ec384() -> EncodingKey {
    EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).expect("P-384 key")
}

/// Unpadded base64url (RFC 4648 §5), for hand-made token parts.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

fn raw(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    )
}

/// The bad tokens for a data plane that accepts RS256 with the test RSA key, with the `reason`
/// label each is counted under.
fn bad_tokens() -> Vec<(&'static str, String, &'static str)> {
    let valid = sign(Algorithm::RS256, None, &rsa(), &claims());
    let (message, _) = valid.rsplit_once('.').expect("three parts");
    let (_, rest) = valid.split_once('.').expect("three parts");
    let (_, signature) = rest.split_once('.').expect("three parts");
    let forged_payload = b64url(
        json!({ "exp": now() + 3600, "jti": "admin" })
            .to_string()
            .as_bytes(),
    );
    let header = message.split('.').next().expect("header");
    vec![
        (
            "alg none",
            raw(r#"{"alg":"none","typ":"JWT"}"#, &claims().to_string(), ""),
            "malformed",
        ),
        (
            "HS256 signed with the RSA public key (key confusion)",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
                &claims(),
            ),
            "algorithm",
        ),
        (
            "expired",
            sign(
                Algorithm::RS256,
                None,
                &rsa(),
                &json!({ "exp": now() - 3600, "jti": "session-1" }),
            ),
            "expired",
        ),
        (
            "not yet valid",
            sign(
                Algorithm::RS256,
                None,
                &rsa(),
                &json!({ "exp": now() + 7200, "nbf": now() + 3600, "jti": "session-1" }),
            ),
            "not_yet_valid",
        ),
        (
            "malformed base64",
            format!("{message}.not*base64!"),
            "malformed",
        ),
        (
            "malformed JSON header",
            raw("{\"alg\":", &claims().to_string(), "AAAA"),
            "malformed",
        ),
        (
            "wrong signature (payload changed)",
            format!("{header}.{forged_payload}.{signature}"),
            "signature",
        ),
        (
            "oversized (validly signed)",
            sign(
                Algorithm::RS256,
                None,
                &rsa(),
                &json!({ "exp": now() + 3600, "pad": "x".repeat(MAX_TOKEN_LEN) }),
            ),
            "too_long",
        ),
    ]
}

// --- Servers ---------------------------------------------------------------------------------

/// A tiny HTTP/1.1 server on loopback answering every request with the current `(status, body)`
/// (`connection: close`); counts the requests.
struct TinyServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
    requests: Arc<AtomicUsize>,
}

impl TinyServer {
    async fn start(status: u16, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new((status, body)));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, r) = (answer.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (a, r) = (a.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
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
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            addr,
            answer,
            requests,
        }
    }

    fn set(&self, status: u16, body: Vec<u8>) {
        *self.answer.lock().expect("answer") = (status, body);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A RIG API definition with one `secured` endpoint, `GET /secured`, proxied to `backend`.
fn proxy_config(backend: SocketAddr) -> String {
    json!([{
        "id": "secure-api", "name": "secure-api",
        "auth_type": "jwt",
        "auth": {"use_header": true, "header_name": "Authorization", "use_query": false},
        "version_data": {"default": {"endpoints": [
            {"id": "secured", "method": "GET", "path_regex": "/secured", "secured": true}
        ]}},
        "proxy": {"use_env": false, "target_url": "127.0.0.1", "port": backend.port()}
    }])
    .to_string()
}

/// The public JWK of a PEM key, with a `kid`.
fn jwk(public_pem: &str, rsa: bool, kid: &str) -> Value {
    let key = if rsa {
        DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("rsa")
    } else {
        DecodingKey::from_ec_pem(public_pem.as_bytes()).expect("ec")
    };
    let alg = if rsa {
        Algorithm::RS256
    } else {
        Algorithm::ES256
    };
    let mut value =
        serde_json::to_value(Jwk::from_decoding_key(&key, Some(alg)).expect("jwk")).expect("json");
    let obj = value.as_object_mut().expect("object");
    obj.remove("alg");
    obj.insert("kid".into(), kid.into());
    value
}

fn key_set(keys: &[Value]) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

// --- Entry points ----------------------------------------------------------------------------

/// How one entry point answered a token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    body: String,
}

/// The answers of the three entry points to `token`: SSE connect, subscription PUT (on the live
/// connection `conn`), secured proxy route.
async fn answers(dp: &DataPlane, conn: &str, token: &str) -> [Answer; 3] {
    let sse = match sse::connect(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?jwt={}", form_encode(token)),
        &[],
    )
    .await
    .expect("SSE connect")
    {
        Connect::Stream(_) => Answer {
            status: StatusCode::OK,
            body: String::new(),
        },
        Connect::Refused(status, _, body) => Answer { status, body },
    };
    let put = request(
        Method::PUT,
        dp.inbound(),
        &format!("/_rig/v1/connection/sse/{conn}/subscriptions"),
    )
    .header("authorization", format!("Bearer {token}"))
    .header("content-type", "application/json")
    .header("accept", "application/json")
    .body(Full::new(Bytes::from_static(br#"{"subscriptions":[]}"#)))
    .expect("request");
    let (status, _, body) = send(dp.inbound(), put).await.expect("PUT");
    let put = Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let proxied = request(Method::GET, dp.inbound(), "/secured")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, body) = send(dp.inbound(), proxied).await.expect("proxy");
    let proxied = Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    [sse, put, proxied]
}

/// Whether every entry point accepted the token.
fn accepted(answers: &[Answer; 3]) -> bool {
    answers[0].status == StatusCode::OK
        && answers[1].status == StatusCode::NO_CONTENT
        && answers[2].status == StatusCode::OK
}

/// The generic refusals of the three entry points (RIG's statuses).
fn generic_refusals() -> [Answer; 3] {
    let text = "could not decode JWT: invalid token";
    [
        Answer {
            status: StatusCode::BAD_REQUEST,
            body: format!("could not parse subscriptions: {text}"),
        },
        Answer {
            status: StatusCode::BAD_REQUEST,
            body: format!(
                "cannot accept subscription request: invalid authorization header: {text}"
            ),
        },
        Answer {
            status: StatusCode::UNAUTHORIZED,
            body: "Authentication failed.".to_owned(),
        },
    ]
}

/// A live anonymous SSE connection's token, for the subscription PUTs; keep the client open.
async fn live_connection(dp: &DataPlane) -> (sse::SseClient, String) {
    let (client, token, _) =
        sse::open_greeted(dp.inbound(), "/_rig/v1/connection/sse", &[], TIMEOUT)
            .await
            .expect("anonymous SSE connection");
    (client, token)
}

async fn refused_count(dp: &DataPlane, label: &str) -> f64 {
    dp.metric(&format!("rig_jwt_refused_total{{reason=\"{label}\"}}"))
        .await
}

// --- Tests -----------------------------------------------------------------------------------

#[tokio::test]
async fn every_bad_token_gets_the_same_generic_answer_at_every_entry_point() {
    let backend = TinyServer::start(200, b"backend".to_vec()).await;
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("JWT_ALG", "RS256")
            .env("JWT_SECRET_KEY", RSA_PUBLIC)
            .env("PROXY_CONFIG_FILE", proxy_config(backend.addr)),
    )
    .await
    .expect("data plane");
    let (_client, conn) = live_connection(&dp).await;

    // The positive control: a valid token passes all three.
    let valid = sign(Algorithm::RS256, None, &rsa(), &claims());
    let good = answers(&dp, &conn, &valid).await;
    assert!(accepted(&good), "a valid token: {good:?}");
    let proxied_before = backend.requests();

    let cases = bad_tokens();
    for (what, token, _) in &cases {
        let got = answers(&dp, &conn, token).await;
        assert_eq!(got, generic_refusals(), "{what}");
    }
    assert_eq!(
        backend.requests(),
        proxied_before,
        "no refused request reached the backend"
    );
    // Each refusal was counted under its reason (and logged there), once per entry point.
    for label in [
        "malformed",
        "algorithm",
        "expired",
        "not_yet_valid",
        "signature",
        "too_long",
    ] {
        let expected = 3 * cases.iter().filter(|(_, _, l)| *l == label).count();
        assert_eq!(refused_count(&dp, label).await, expected as f64, "{label}");
    }
    // The live connection survived all of it.
    assert!(accepted(&answers(&dp, &conn, &valid).await));
    dp.stop().await.expect("stop");
}

#[tokio::test]
async fn keys_from_a_jwks_url_are_selected_by_kid_rotated_and_kept_when_the_server_fails() {
    let backend = TinyServer::start(200, b"backend".to_vec()).await;
    let keys = TinyServer::start(
        200,
        key_set(&[
            jwk(RSA_PUBLIC, true, "rsa-1"),
            jwk(EC256_PUBLIC, false, "ec-1"),
        ]),
    )
    .await;
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("JWT_JWKS", format!("http://{}/jwks.json", keys.addr))
            .env("JWT_JWKS_REFRESH_SECS", "3600")
            .env("JWT_JWKS_MIN_REFRESH_SECS", "1")
            .env("PROXY_CONFIG_FILE", proxy_config(backend.addr)),
    )
    .await
    .expect("data plane");
    let (_client, conn) = live_connection(&dp).await;

    // The set is fetched right after start.
    let rsa_1 = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims());
    wait_until("the first key set fetch", TIMEOUT, || {
        let (dp, conn, token) = (&dp, &conn, &rsa_1);
        async move { accepted(&answers(dp, conn, token).await).then_some(()) }
    })
    .await;
    // The kid picks the key; each key verifies only its own type.
    let ec_1 = sign(Algorithm::ES256, Some("ec-1"), &ec256(), &claims());
    assert!(accepted(&answers(&dp, &conn, &ec_1).await), "ES256 by kid");
    let refused = generic_refusals();
    for (what, token) in [
        (
            "RS256 naming the EC key",
            sign(Algorithm::RS256, Some("ec-1"), &rsa(), &claims()),
        ),
        (
            "ES256 naming the RSA key",
            sign(Algorithm::ES256, Some("rsa-1"), &ec256(), &claims()),
        ),
        (
            "HS256 signed with the RSA public key, naming it",
            sign(
                Algorithm::HS256,
                Some("rsa-1"),
                &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
                &claims(),
            ),
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("nope"), &rsa(), &claims()),
        ),
    ] {
        assert_eq!(answers(&dp, &conn, &token).await, refused, "{what}");
    }

    // A flood of random kids costs the key server at most one fetch per second.
    let before = keys.requests();
    let started = Instant::now();
    for i in 0..200 {
        // The kid is looked up before any signature check: no real signature is needed.
        let header = json!({ "alg": "RS256", "kid": format!("random-{i}") }).to_string();
        let token = raw(&header, &claims().to_string(), "AAAA");
        let req = request(Method::GET, dp.inbound(), "/secured")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, _, _) = send(dp.inbound(), req).await.expect("proxy");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let fetches = keys.requests() - before;
    let allowed = started.elapsed().as_secs() as usize + 2;
    assert!(
        fetches <= allowed,
        "{fetches} fetches for 200 random kids within {:?}",
        started.elapsed()
    );

    // Rotation: the server now publishes only a P-384 key; a token naming it is accepted after
    // the refresh its unknown kid triggers, and the removed keys stop working.
    keys.set(200, key_set(&[jwk(EC384_PUBLIC, false, "ec-2")]));
    let ec_2 = sign(Algorithm::ES384, Some("ec-2"), &ec384(), &claims());
    wait_until("the rotated key", TIMEOUT, || {
        let (dp, conn, token) = (&dp, &conn, &ec_2);
        async move { accepted(&answers(dp, conn, token).await).then_some(()) }
    })
    .await;
    assert_eq!(answers(&dp, &conn, &rsa_1).await, refused, "rotated away");
    assert_eq!(dp.metric("rig_jwks_keys").await, 1.0);

    // The key server fails: the last good set stays in use (and the failure is counted).
    keys.set(500, b"down".to_vec());
    let errors = dp
        .metric("rig_jwks_refreshes_total{result=\"error\"}")
        .await;
    let probe = sign(Algorithm::ES384, Some("not-there"), &ec384(), &claims());
    wait_until("a failed refresh", TIMEOUT, || {
        let (dp, conn, token) = (&dp, &conn, &probe);
        async move {
            // Each unknown kid asks for a refresh (rate-limited).
            let _ = answers(dp, conn, token).await;
            (dp.metric("rig_jwks_refreshes_total{result=\"error\"}")
                .await
                > errors)
                .then_some(())
        }
    })
    .await;
    assert!(
        accepted(&answers(&dp, &conn, &ec_2).await),
        "the last good key set is kept"
    );
    assert!(refused_count(&dp, "unknown_key").await >= 200.0);
    dp.stop().await.expect("stop");
}
