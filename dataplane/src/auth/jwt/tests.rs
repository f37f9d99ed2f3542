use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"a test secret that is long enough";
const RSA_PRIVATE: &str = include_str!("../testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa_public.pem");
const RSA_PUBLIC_PKCS1: &str = include_str!("../testdata/rsa_public_pkcs1.pem");
const RSA_CERT: &str = include_str!("../testdata/rsa_cert.pem");
const EC256_PRIVATE: &str = include_str!("../testdata/ec256_private.pem");
const EC256_PUBLIC: &str = include_str!("../testdata/ec256_public.pem");
const EC256_CERT: &str = include_str!("../testdata/ec256_cert.pem");
const EC384_PRIVATE: &str = include_str!("../testdata/ec384_private.pem");
const EC384_PUBLIC: &str = include_str!("../testdata/ec384_public.pem");

/// A fixed "now" for `verify_at`.
const NOW: u64 = 1_700_000_000;

fn config(algorithm: Algorithm, key: &[u8]) -> JwtConfig {
    JwtConfig {
        algorithms: vec![algorithm],
        key: Some(key.to_vec()),
        jwks: None,
        session_field: "/jti".to_owned(),
    }
}

fn verifier(algorithm: Algorithm, key: &[u8]) -> Verifier {
    Verifier::new(&config(algorithm, key)).expect("usable key")
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("signing")
}

fn hs(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret)
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa private key")
}

fn ec256() -> EncodingKey {
    EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).expect("P-256 private key")
}

fn ec384() -> EncodingKey {
    EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).expect("P-384 private key")
}

fn valid_claims() -> Value {
    json!({ "jti": "session-1", "exp": NOW + 3600, "sub": "user" })
}

/// A token from raw header and payload text, with `signature` as its third part.
fn raw_token(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

/// A token over raw header and payload text with a correct HS256 signature for `SECRET`.
fn hs256_raw(header: &str, payload: &str) -> String {
    let unsigned = raw_token(header, payload, "");
    let message = unsigned.trim_end_matches('.');
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &hs(SECRET), Algorithm::HS256)
        .expect("hmac");
    format!("{message}.{signature}")
}

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

// --- Accepting -------------------------------------------------------------------------------

#[test]
fn hs_algorithms_accept_their_tokens() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, &hs(SECRET), &valid_claims());
        let claims = verifier(alg, SECRET)
            .verify_at(&token, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {}", e.reason()));
        assert_eq!(claims.session_id("/jti").as_deref(), Some("session-1"));
        assert_eq!(claims.exp(), Some(NOW + 3600));
        assert_eq!(claims.as_value()["sub"], "user");
    }
}

#[test]
fn rsa_accepts_a_public_key_a_pkcs1_key_and_a_certificate() {
    let token = sign(Algorithm::RS256, &rsa(), &valid_claims());
    for key in [RSA_PUBLIC, RSA_PUBLIC_PKCS1, RSA_CERT] {
        let claims = verifier(Algorithm::RS256, key.as_bytes())
            .verify_at(&token, NOW)
            .unwrap_or_else(|e| panic!("{}", e.reason()));
        assert_eq!(claims.session_id("/jti").as_deref(), Some("session-1"));
    }
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS384] {
        let token = sign(alg, &rsa(), &valid_claims());
        assert!(
            verifier(alg, RSA_CERT.as_bytes())
                .verify_at(&token, NOW)
                .is_ok()
        );
    }
}

#[test]
fn ps256_is_accepted() {
    let token = sign(Algorithm::PS256, &rsa(), &valid_claims());
    for key in [RSA_PUBLIC, RSA_CERT] {
        assert!(
            verifier(Algorithm::PS256, key.as_bytes())
                .verify_at(&token, NOW)
                .is_ok()
        );
    }
}

#[test]
fn ec_accepts_a_public_key_and_a_certificate() {
    let token = sign(Algorithm::ES256, &ec256(), &valid_claims());
    for key in [EC256_PUBLIC, EC256_CERT] {
        let claims = verifier(Algorithm::ES256, key.as_bytes())
            .verify_at(&token, NOW)
            .unwrap_or_else(|e| panic!("{}", e.reason()));
        assert_eq!(claims.exp(), Some(NOW + 3600));
    }
    let token = sign(Algorithm::ES384, &ec384(), &valid_claims());
    assert!(
        verifier(Algorithm::ES384, EC384_PUBLIC.as_bytes())
            .verify_at(&token, NOW)
            .is_ok()
    );
}

#[test]
fn verify_uses_the_system_clock() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let v = verifier(Algorithm::HS256, SECRET);
    let fresh = sign(Algorithm::HS256, &hs(SECRET), &json!({ "exp": now + 600 }));
    let stale = sign(Algorithm::HS256, &hs(SECRET), &json!({ "exp": now - 600 }));
    assert!(v.verify(&fresh).is_ok());
    assert!(matches!(v.verify(&stale), Err(JwtError::Expired { .. })));
}

// --- Time claims -----------------------------------------------------------------------------

#[test]
fn expiry_allows_only_the_leeway() {
    let v = verifier(Algorithm::HS256, SECRET);
    let token = sign(Algorithm::HS256, &hs(SECRET), &json!({ "exp": NOW }));
    assert!(v.verify_at(&token, NOW - 100).is_ok());
    assert!(v.verify_at(&token, NOW + LEEWAY_SECS - 1).is_ok());
    assert!(matches!(
        v.verify_at(&token, NOW + LEEWAY_SECS),
        Err(JwtError::Expired { exp: NOW })
    ));
    assert!(matches!(
        v.verify_at(&token, NOW + 3600),
        Err(JwtError::Expired { .. })
    ));
}

#[test]
fn not_before_is_honoured() {
    let v = verifier(Algorithm::HS256, SECRET);
    let future = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({ "exp": NOW + 7200, "nbf": NOW + 600 }),
    );
    assert!(matches!(
        v.verify_at(&future, NOW),
        Err(JwtError::NotYetValid { nbf }) if nbf == NOW + 600
    ));
    assert!(v.verify_at(&future, NOW + 600 - LEEWAY_SECS).is_ok());
    assert!(v.verify_at(&future, NOW + 601).is_ok());
}

#[test]
fn exp_is_required_and_must_be_a_number() {
    let v = verifier(Algorithm::HS256, SECRET);
    let cases = [
        (json!({ "jti": "x" }), "missing"),
        (json!({ "exp": "tomorrow" }), "string"),
        (json!({ "exp": -5 }), "negative"),
        (json!({ "exp": null }), "null"),
    ];
    for (claims, what) in cases {
        let token = sign(Algorithm::HS256, &hs(SECRET), &claims);
        let err = v.verify_at(&token, NOW).expect_err(what);
        assert!(
            matches!(
                err,
                JwtError::MissingExp | JwtError::InvalidClaim { claim: "exp" }
            ),
            "{what}: {}",
            err.reason()
        );
    }
    let bad_nbf = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({ "exp": NOW + 60, "nbf": "now" }),
    );
    assert!(matches!(
        v.verify_at(&bad_nbf, NOW),
        Err(JwtError::InvalidClaim { claim: "nbf" })
    ));
    // Fractional and huge times are numbers too.
    let fractional = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({ "exp": (NOW + 60) as f64 + 0.5 }),
    );
    assert_eq!(
        v.verify_at(&fractional, NOW).expect("valid").exp(),
        Some(NOW + 60)
    );
    let far = sign(Algorithm::HS256, &hs(SECRET), &json!({ "exp": 1e300 }));
    assert!(v.verify_at(&far, NOW).is_ok());
}

// --- Refusing --------------------------------------------------------------------------------

#[test]
fn a_wrong_signature_is_refused() {
    let v = verifier(Algorithm::HS256, SECRET);
    let other = sign(Algorithm::HS256, &hs(b"another secret"), &valid_claims());
    assert!(matches!(
        v.verify_at(&other, NOW),
        Err(JwtError::BadSignature(_))
    ));

    // A changed payload under the original signature.
    let token = sign(Algorithm::RS256, &rsa(), &valid_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(json!({ "jti": "admin", "exp": NOW + 60 }).to_string());
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let v = verifier(Algorithm::RS256, RSA_PUBLIC.as_bytes());
    assert!(matches!(
        v.verify_at(&forged, NOW),
        Err(JwtError::BadSignature(_))
    ));

    let token = sign(Algorithm::ES256, &ec256(), &valid_claims());
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let mut sig = URL_SAFE_NO_PAD.decode(signature).expect("base64");
    sig[10] ^= 1;
    let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig));
    let v = verifier(Algorithm::ES256, EC256_PUBLIC.as_bytes());
    assert!(matches!(
        v.verify_at(&forged, NOW),
        Err(JwtError::BadSignature(_))
    ));
}

#[test]
fn only_the_configured_algorithm_is_accepted() {
    // Key confusion: an HS256 token whose secret is the RSA public key.
    let confused = sign(
        Algorithm::HS256,
        &hs(RSA_PUBLIC.as_bytes()),
        &valid_claims(),
    );
    let rs = verifier(Algorithm::RS256, RSA_PUBLIC.as_bytes());
    assert!(matches!(
        rs.verify_at(&confused, NOW),
        Err(JwtError::AlgorithmNotAllowed {
            found: Algorithm::HS256,
            ..
        })
    ));
    // Same family, other hash.
    let rs384 = sign(Algorithm::RS384, &rsa(), &valid_claims());
    assert!(matches!(
        rs.verify_at(&rs384, NOW),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));
    let ps256 = sign(Algorithm::PS256, &rsa(), &valid_claims());
    assert!(matches!(
        rs.verify_at(&ps256, NOW),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));
    let hs512 = sign(Algorithm::HS512, &hs(SECRET), &valid_claims());
    assert!(matches!(
        verifier(Algorithm::HS256, SECRET).verify_at(&hs512, NOW),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));
    let es = sign(Algorithm::ES256, &ec256(), &valid_claims());
    assert!(matches!(
        rs.verify_at(&es, NOW),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));
}

#[test]
fn alg_none_is_refused() {
    let payload = valid_claims().to_string();
    let v = verifier(Algorithm::HS256, SECRET);
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        for signature in ["", "AAAA"] {
            let token = raw_token(header, &payload, signature);
            let err = v.verify_at(&token, NOW).expect_err(header);
            assert!(matches!(err, JwtError::Malformed(_)), "{}", err.reason());
        }
    }
}

#[test]
fn malformed_tokens_are_refused() {
    let v = verifier(Algorithm::HS256, SECRET);
    let valid = sign(Algorithm::HS256, &hs(SECRET), &valid_claims());
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let cases = [
        String::new(),
        "abc".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "...".to_owned(),
        format!("{valid}.extra"),
        format!("!!{valid}"),
        valid.replacen('.', "..", 1),
        raw_token("not json", "{}", "AAAA"),
        raw_token(header, "not json", "AAAA"),
        format!("{}=", valid),
        // Properly signed, but the payload is not JSON.
        hs256_raw(header, "not json"),
    ];
    for token in cases {
        let err = v.verify_at(&token, NOW).expect_err(&token);
        assert!(
            matches!(err, JwtError::Malformed(_) | JwtError::BadSignature(_)),
            "{token}: {}",
            err.reason()
        );
    }
    for payload in ["[1,2,3]", "42", r#""text""#] {
        let token = hs256_raw(header, payload);
        assert!(v.verify_at(&token, NOW).is_err(), "{payload}");
    }
    // An array that happens to fit the library's claim struct still is not an object.
    let array = hs256_raw(header, r#"[1,2,"s","i","a"]"#);
    assert!(matches!(
        v.verify_at(&array, NOW),
        Err(JwtError::NotAnObject)
    ));
    // Deeply nested JSON is refused without exhausting the stack.
    let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
    assert!(v.verify_at(&raw_token(&deep, "{}", ""), NOW).is_err());
    assert!(v.verify_at(&hs256_raw(header, &deep), NOW).is_err());
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let v = verifier(Algorithm::HS256, SECRET);
    let big = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({ "exp": NOW + 60, "pad": "x".repeat(MAX_TOKEN_LEN) }),
    );
    assert!(matches!(
        v.verify_at(&big, NOW),
        Err(JwtError::TooLong { len }) if len == big.len()
    ));
    let fits = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({ "exp": NOW + 60, "pad": "x".repeat(MAX_TOKEN_LEN / 2) }),
    );
    assert!(v.verify_at(&fits, NOW).is_ok());
}

#[test]
fn a_bearer_prefix_is_refused() {
    let v = verifier(Algorithm::HS256, SECRET);
    let token = sign(Algorithm::HS256, &hs(SECRET), &valid_claims());
    for prefixed in [format!("Bearer {token}"), format!("bearer {token}")] {
        assert!(matches!(
            v.verify_at(&prefixed, NOW),
            Err(JwtError::BearerPrefix)
        ));
    }
    assert!(v.verify_at(&format!(" {token}"), NOW).is_err());
}

#[test]
fn without_a_key_every_token_is_refused() {
    let v = Verifier::new(&JwtConfig::default()).expect("no key is valid config");
    assert!(!v.is_configured());
    let token = sign(Algorithm::HS256, &hs(b""), &valid_claims());
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(JwtError::NotConfigured)
    ));
}

#[test]
fn client_messages_are_generic_and_reasons_are_specific() {
    let v = verifier(Algorithm::HS256, SECRET);
    let other = sign(Algorithm::HS256, &hs(b"another secret"), &valid_claims());
    let err = v.verify_at(&other, NOW).expect_err("bad signature");
    assert_eq!(err.to_string(), "could not decode JWT: invalid token");
    assert!(err.reason().contains("signature"), "{}", err.reason());

    // Expired and not-yet-valid tokens get the same text: clients learn nothing from it.
    let expired = sign(Algorithm::HS256, &hs(SECRET), &json!({ "exp": NOW - 60 }));
    let err = v.verify_at(&expired, NOW).expect_err("expired");
    assert_eq!(err.to_string(), "could not decode JWT: invalid token");
    assert!(err.reason().contains("expired"), "{}", err.reason());
    let early = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({ "exp": NOW + 600, "nbf": NOW + 300 }),
    );
    let err = v.verify_at(&early, NOW).expect_err("not yet valid");
    assert_eq!(err.to_string(), "could not decode JWT: invalid token");

    let none = raw_token(r#"{"alg":"none"}"#, "{}", "");
    let err = v.verify_at(&none, NOW).expect_err("none");
    assert!(err.to_string().starts_with("could not decode JWT"));
    assert!(err.reason().contains("none"), "{}", err.reason());
    assert!(!err.reason().contains(&none));
}

#[test]
fn every_refusal_has_the_same_client_text_and_its_own_reason_label() {
    let v = verifier(Algorithm::RS256, RSA_PUBLIC.as_bytes());
    let valid = sign(Algorithm::RS256, &rsa(), &valid_claims());
    let (message, _) = valid.rsplit_once('.').expect("three parts");
    let rs = |claims: Value| sign(Algorithm::RS256, &rsa(), &claims);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            raw_token(r#"{"alg":"none"}"#, &valid_claims().to_string(), ""),
            "malformed",
        ),
        (
            "HS256 signed with the RSA public key",
            sign(
                Algorithm::HS256,
                &hs(RSA_PUBLIC.as_bytes()),
                &valid_claims(),
            ),
            "algorithm",
        ),
        (
            "another RSA algorithm",
            sign(Algorithm::PS256, &rsa(), &valid_claims()),
            "algorithm",
        ),
        ("expired", rs(json!({ "exp": NOW - 60 })), "expired"),
        (
            "not yet valid",
            rs(json!({ "exp": NOW + 600, "nbf": NOW + 300 })),
            "not_yet_valid",
        ),
        ("no exp", rs(json!({ "jti": "x" })), "claims"),
        ("bad base64", format!("{message}.!!!"), "malformed"),
        (
            "header not JSON",
            raw_token("{not json", "{}", "AAAA"),
            "malformed",
        ),
        (
            "payload not JSON, properly signed",
            {
                let unsigned = raw_token(r#"{"alg":"RS256"}"#, "not json", "");
                let message = unsigned.trim_end_matches('.');
                let signature =
                    jsonwebtoken::crypto::sign(message.as_bytes(), &rsa(), Algorithm::RS256)
                        .expect("rsa");
                format!("{message}.{signature}")
            },
            "malformed",
        ),
        ("wrong signature", format!("{message}.AAAA"), "signature"),
        (
            "oversized",
            format!("{valid}{}", "A".repeat(MAX_TOKEN_LEN)),
            "too_long",
        ),
        ("bearer prefix", format!("Bearer {valid}"), "malformed"),
    ];
    for (what, token, label) in &cases {
        let err = v.verify_at(token, NOW).expect_err(what);
        assert_eq!(
            err.to_string(),
            "could not decode JWT: invalid token",
            "{what}"
        );
        assert_eq!(err.label(), *label, "{what}: {}", err.reason());
    }
    let mut text = String::new();
    v.render_metrics(&mut text);
    for label in ["malformed", "algorithm", "expired", "signature", "too_long"] {
        let expected = cases.iter().filter(|(_, _, l)| *l == label).count();
        assert!(
            text.contains(&format!(
                "rig_jwt_refused_total{{reason=\"{label}\"}} {expected}\n"
            )),
            "{label}: {text}"
        );
    }
    assert!(v.verify_at(&valid, NOW).is_ok());
}

#[test]
fn jwt_alg_may_list_algorithms_of_the_key_family() {
    let c = JwtConfig::from_lookup(lookup(&[
        ("JWT_ALG", "RS256, ps256,RS256"),
        ("JWT_SECRET_KEY", RSA_PUBLIC),
    ]))
    .expect("valid");
    assert_eq!(c.algorithms, [Algorithm::RS256, Algorithm::PS256]);
    let v = c.verifier().expect("usable");
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        assert!(
            v.verify_at(&sign(alg, &rsa(), &valid_claims()), NOW)
                .is_ok()
        );
    }
    assert!(matches!(
        v.verify_at(&sign(Algorithm::RS512, &rsa(), &valid_claims()), NOW),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));

    // One EC key serves its curve's algorithm only.
    let v = JwtConfig::from_lookup(lookup(&[
        ("JWT_ALG", "ES384,ES256"),
        ("JWT_SECRET_KEY", EC256_PUBLIC),
    ]))
    .and_then(|c| c.verifier())
    .expect("usable");
    assert_eq!(v.algorithms(), [Algorithm::ES256]);
    assert!(
        v.verify_at(&sign(Algorithm::ES256, &ec256(), &valid_claims()), NOW)
            .is_ok()
    );
    assert!(matches!(
        v.verify_at(&sign(Algorithm::ES384, &ec384(), &valid_claims()), NOW),
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));

    // An HMAC secret serves every listed hash size.
    let v = JwtConfig::from_lookup(lookup(&[
        ("JWT_ALG", "HS256,HS512"),
        ("JWT_SECRET_KEY", "s3cret"),
    ]))
    .and_then(|c| c.verifier())
    .expect("usable");
    for alg in [Algorithm::HS256, Algorithm::HS512] {
        assert!(
            v.verify_at(&sign(alg, &hs(b"s3cret"), &valid_claims()), NOW)
                .is_ok()
        );
    }

    // One key cannot be read in two ways; an empty list names nothing.
    for (alg, key) in [
        ("HS256,RS256", RSA_PUBLIC),
        ("RS256,ES256", RSA_PUBLIC),
        ("HS256, RS256", "s3cret"),
        (" , ", "s3cret"),
    ] {
        let err = JwtConfig::from_lookup(lookup(&[("JWT_ALG", alg), ("JWT_SECRET_KEY", key)]))
            .expect_err(alg);
        assert!(err.to_string().contains("JWT_ALG"), "{alg}: {err}");
    }
}

/// Deterministic xorshift64*, so a failing case can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("fits")
    }
}

#[test]
fn arbitrary_input_never_panics() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let alphabet: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\":,é\u{0}"
            .chars()
            .collect();
    let verifiers = [
        verifier(Algorithm::HS256, SECRET),
        verifier(Algorithm::RS256, RSA_CERT.as_bytes()),
        verifier(Algorithm::ES256, EC256_PUBLIC.as_bytes()),
    ];
    // Random strings.
    for _ in 0..5_000 {
        let len = rng.below(200);
        let s: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        for v in &verifiers {
            assert!(v.verify_at(&s, NOW).is_err(), "{s:?} accepted");
        }
    }
    // Valid headers with random payloads and signatures of random lengths.
    for v in &verifiers {
        let header = format!(r#"{{"alg":"{:?}","typ":"JWT"}}"#, v.algorithms()[0]);
        for _ in 0..300 {
            let payload: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let signature: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&payload),
                URL_SAFE_NO_PAD.encode(&signature)
            );
            assert!(v.verify_at(&token, NOW).is_err());
        }
    }
    // A change at every position of valid tokens (the library's base64 is strict, so even the
    // unused bits of a last character count).
    let tokens = [
        sign(Algorithm::HS256, &hs(SECRET), &valid_claims()),
        sign(Algorithm::RS256, &rsa(), &valid_claims()),
        sign(Algorithm::ES256, &ec256(), &valid_claims()),
    ];
    for (v, token) in verifiers.iter().zip(&tokens) {
        assert!(v.verify_at(token, NOW).is_ok());
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            let replacement = loop {
                let c = alphabet[rng.below(alphabet.len())];
                if c.is_ascii() && c as u8 != bytes[i] {
                    break c as u8;
                }
            };
            bytes[i] = replacement;
            let mutated = String::from_utf8(bytes).expect("ascii");
            assert!(v.verify_at(&mutated, NOW).is_err(), "{mutated} accepted");
        }
    }
}

// --- Session ids -----------------------------------------------------------------------------

#[test]
fn session_ids_are_read_at_the_pointer() {
    let v = verifier(Algorithm::HS256, SECRET);
    let token = sign(
        Algorithm::HS256,
        &hs(SECRET),
        &json!({
            "exp": NOW + 60, "jti": "abc", "n": 42, "f": 1.5, "empty": "",
            "user": { "id": "u-1", "roles": ["a"] }, "flag": true, "nul": null,
        }),
    );
    let claims = v.verify_at(&token, NOW).expect("valid");
    assert_eq!(v.session_id(&claims).as_deref(), Some("abc"));
    assert_eq!(claims.session_id("/user/id").as_deref(), Some("u-1"));
    assert_eq!(claims.session_id("/n").as_deref(), Some("42"));
    assert_eq!(claims.session_id("/f").as_deref(), Some("1.5"));
    for none in [
        "/missing",
        "/empty",
        "/user",
        "/user/roles",
        "/flag",
        "/nul",
    ] {
        assert_eq!(claims.session_id(none), None, "{none}");
    }
}

// --- Configuration ---------------------------------------------------------------------------

#[test]
fn defaults_are_rigs() {
    let c = JwtConfig::from_lookup(lookup(&[])).expect("defaults");
    assert_eq!(c, JwtConfig::default());
    assert_eq!(c.algorithms, [Algorithm::HS256]);
    assert_eq!(c.session_field, "/jti");
    assert!(c.key.is_none());
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn settings_are_read() {
    let c = JwtConfig::from_lookup(lookup(&[
        ("JWT_SECRET_KEY", " secret with spaces "),
        ("JWT_ALG", "hs512"),
        ("JWT_SESSION_FIELD", "/user/id"),
    ]))
    .expect("valid");
    assert_eq!(c.algorithms, [Algorithm::HS512]);
    assert_eq!(c.key.as_deref(), Some(&b" secret with spaces "[..]));
    assert_eq!(c.session_field, "/user/id");
    assert!(!format!("{c:?}").contains("spaces"));
    assert!(!format!("{:?}", c.verifier().expect("usable")).contains("spaces"));
}

#[test]
fn bad_settings_name_the_variable() {
    for (vars, var) in [
        (&[("JWT_ALG", "EdDSA")][..], "JWT_ALG"),
        (&[("JWT_ALG", "none")][..], "JWT_ALG"),
        (&[("JWT_SESSION_FIELD", "jti")][..], "JWT_SESSION_FIELD"),
        (
            &[("JWT_ALG", "RS256"), ("JWT_SECRET_KEY", "/no/such/key.pem")][..],
            "JWT_SECRET_KEY",
        ),
    ] {
        let err = JwtConfig::from_lookup(lookup(vars)).expect_err(var);
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn unusable_keys_stop_start_up() {
    let cases: [(Algorithm, &str, &str); 7] = [
        (Algorithm::HS256, RSA_PUBLIC, "PEM block"),
        (Algorithm::RS256, RSA_PRIVATE, "private"),
        (Algorithm::ES256, EC256_PRIVATE, "private"),
        (Algorithm::RS256, EC256_PUBLIC, "usable"),
        (Algorithm::ES256, RSA_CERT, "usable"),
        (Algorithm::ES256, EC384_PUBLIC, "curve"),
        (
            Algorithm::RS256,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "usable",
        ),
    ];
    for (alg, key, expected) in cases {
        let err = Verifier::new(&config(alg, key.as_bytes())).expect_err(expected);
        assert!(err.to_string().contains("JWT_SECRET_KEY"), "{err}");
        let chain = format!("{err} {:?}", err);
        assert!(
            chain.contains(expected),
            "{alg:?}, wanted {expected:?}: {chain}"
        );
    }
}

#[test]
fn a_pem_may_be_inline_escaped_or_in_a_file() {
    let token = sign(Algorithm::RS256, &rsa(), &valid_claims());
    let check = |value: &str| {
        let c = JwtConfig::from_lookup(lookup(&[("JWT_ALG", "RS256"), ("JWT_SECRET_KEY", value)]))
            .expect("key material");
        let v = c.verifier().expect("usable key");
        assert!(v.verify_at(&token, NOW).is_ok());
    };
    check(RSA_PUBLIC);
    check(&RSA_PUBLIC.trim_end().replace('\n', "\\n"));

    let path = std::env::temp_dir().join(format!("rig-jwt-test-{}.pem", std::process::id()));
    std::fs::write(&path, RSA_CERT).expect("write key file");
    check(path.to_str().expect("utf-8 path"));
    std::fs::write(&path, "not a pem").expect("write key file");
    let err = JwtConfig::from_lookup(lookup(&[
        ("JWT_ALG", "RS256"),
        ("JWT_SECRET_KEY", path.to_str().expect("utf-8 path")),
    ]))
    .expect_err("no PEM in file");
    assert!(err.to_string().contains("JWT_SECRET_KEY"), "{err}");
    std::fs::remove_file(&path).expect("clean up");
}

#[test]
fn an_hmac_secret_is_never_read_as_a_file() {
    let c = JwtConfig::from_lookup(lookup(&[("JWT_SECRET_KEY", "/etc/hostname")])).expect("valid");
    assert_eq!(c.key.as_deref(), Some(&b"/etc/hostname"[..]));
}

// --- Authorization headers -------------------------------------------------------------------

#[test]
fn bearer_tokens_come_from_every_authorization_header() {
    use ::http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
    let mut headers = HeaderMap::new();
    headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer one"));
    headers.append(
        AUTHORIZATION,
        HeaderValue::from_static("Basic dXNlcjpwdw==, Bearer two ,Bearer three"),
    );
    headers.append(AUTHORIZATION, HeaderValue::from_static("bearer lower"));
    headers.append(AUTHORIZATION, HeaderValue::from_static("scheme-less"));
    headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer "));
    headers.append(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xff").expect("opaque header value"),
    );
    headers.append("x-other", HeaderValue::from_static("Bearer nope"));
    assert_eq!(bearer_tokens(&headers), ["one", "two", "three"]);
    assert!(bearer_tokens(&HeaderMap::new()).is_empty());
}
