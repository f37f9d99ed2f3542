//! Property tests: untrusted input never panics the data plane's parsers.
//!
//! Random bytes and strings, and random input shaped like the real thing (JWT-like dotted base64,
//! JSON with the field names the parsers look for, CloudEvents headers), are fed to every parser
//! that sees client or producer input: the JWT verifier (HMAC, RSA and a JWK set), connection
//! tokens, resume tokens, connect query strings, subscription lists, and CloudEvents over HTTP
//! (structured and binary) and Kafka. Each must return `Ok` or `Err`; where no random input can
//! be valid (a token needs a signature), the test also asserts the refusal.
//!
//! Case counts stay moderate (the default 256, fewer for RSA) so the file runs in seconds in a
//! debug build; a failure is shrunk and saved by proptest for replay.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use rig_dataplane::auth::{JwtConfig, TokenCodec, Verifier};
use rig_dataplane::connections::open::ConnectParams;
use rig_dataplane::events;
use rig_dataplane::replay::token::Frontier;
use rig_dataplane::subscriptions;
use serde_json::{Map, Value, json};

const SECRET: &str = "a property-test secret that is long enough";
const RSA_PRIVATE: &str = include_str!("../src/auth/testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../src/auth/testdata/rsa_public.pem");
const EC256_PUBLIC: &str = include_str!("../src/auth/testdata/ec256_public.pem");

fn verifier(vars: &[(&str, &str)]) -> Verifier {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    JwtConfig::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .and_then(|c| c.verifier())
        .expect("verifier")
}

/// An HS256 verifier, an RS256 (PEM) verifier, and a JWK-set verifier (RSA and EC keys with kids).
static VERIFIERS: LazyLock<Vec<Verifier>> = LazyLock::new(|| {
    let jwks = {
        let rsa = jsonwebtoken::DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).expect("rsa");
        let ec = jsonwebtoken::DecodingKey::from_ec_pem(EC256_PUBLIC.as_bytes()).expect("ec");
        let mut keys = Vec::new();
        for (key, alg, kid) in [(rsa, Algorithm::RS256, "r"), (ec, Algorithm::ES256, "e")] {
            let mut jwk = serde_json::to_value(
                jsonwebtoken::jwk::Jwk::from_decoding_key(&key, Some(alg)).expect("jwk"),
            )
            .expect("json");
            jwk["kid"] = kid.into();
            keys.push(jwk);
        }
        let path =
            std::env::temp_dir().join(format!("rig-never-panics-{}.json", std::process::id()));
        std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write");
        let v = verifier(&[("JWT_JWKS", path.to_str().expect("utf-8"))]);
        let _ = std::fs::remove_file(&path);
        v
    };
    vec![
        verifier(&[("JWT_SECRET_KEY", SECRET)]),
        verifier(&[("JWT_ALG", "RS256"), ("JWT_SECRET_KEY", RSA_PUBLIC)]),
        jwks,
    ]
});

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Valid tokens for the three verifiers.
static VALID: LazyLock<Vec<String>> = LazyLock::new(|| {
    let claims = json!({ "exp": now() + 3600, "jti": "s" });
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa");
    let mut kid = Header::new(Algorithm::RS256);
    kid.kid = Some("r".into());
    vec![
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("hs"),
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &rsa).expect("rs"),
        jsonwebtoken::encode(&kid, &claims, &rsa).expect("rs with kid"),
    ]
});

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Names the parsers look for, so random JSON often takes their interesting paths.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "alg", "kid", "typ", "exp", "nbf", "jti", "eventType", "oneOf", "subscriptions",
            "specversion", "cloudEventsVersion", "eventTypeVersion", "eventID", "id", "type",
            "source", "time", "data", "data_base64", "datacontenttype", "contentType",
            "dataschema", "subject", "extensions", "rig",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_]{1,10}",
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Binary fractions: serde_json's default float parsing is not exact for every f64
        // (e.g. subnormals), and the text and JSON forms of a list are compared below.
        (any::<i32>(), 0u32..12)
            .prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
        prop::sample::select(vec![
            "",
            "0.2",
            "1.0",
            "0.1",
            "RS256",
            "HS256",
            "none",
            "application/json",
            "2018-04-05T17:31:00Z",
            "greeting",
            "/",
        ])
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects shaped like subscriptions (`eventType`, `oneOf` constraints), with random values.
fn subscription_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof!["[a-z.*]{0,12}".prop_map(Value::from), json_value(),],
        proptest::option::of(prop_oneof![
            prop::collection::vec(
                prop::collection::vec((key(), json_value()), 0..3)
                    .prop_map(|f| Value::Object(f.into_iter().collect::<Map<_, _>>())),
                0..3,
            )
            .prop_map(Value::Array),
            json_value(),
        ]),
    )
        .prop_map(|(event_type, one_of)| {
            let mut sub = json!({ "eventType": event_type });
            if let Some(one_of) = one_of {
                sub["oneOf"] = one_of;
            }
            sub
        })
}

/// Text that looks like a JWT: three base64url parts of random (or JSON) content.
fn jwt_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| b64(&b)),
        json_value().prop_map(|v| b64(v.to_string().as_bytes())),
        "[A-Za-z0-9_=+/.-]{0,40}",
    ];
    let header = prop_oneof![
        (
            prop::sample::select(vec![
                "none", "HS256", "HS512", "RS256", "PS256", "ES256", "ES384", "EdDSA", "",
            ]),
            proptest::option::of(".{0,12}"),
        )
            .prop_map(|(alg, kid)| {
                let mut h = json!({ "alg": alg });
                if let Some(kid) = kid {
                    h["kid"] = kid.into();
                }
                b64(h.to_string().as_bytes())
            }),
        part.clone(),
    ];
    (header, part.clone(), part).prop_map(|(h, p, s)| format!("{h}.{p}.{s}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_text_is_never_a_valid_jwt(text in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ".{0,300}",
        jwt_like(),
    ]) {
        for v in VERIFIERS.iter() {
            prop_assert!(v.verify(&text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn connection_resume_tokens_and_connect_queries_never_panic(text in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[A-Za-z0-9_=%&.:,-]{0,200}",
        "v1\\.[a-z0-9:,~-]{0,100}",
    ]) {
        let codec = TokenCodec::new(b"0123456789abcdef0123456789abcdef");
        prop_assert!(codec.decode(&text).is_err(), "accepted {text:?}");
        let _ = Frontier::decode(&text);
        prop_assert!(Frontier::decode_signed(&text, &codec).is_none(), "a random resume token was accepted: {text:?}");
        let _ = ConnectParams::from_query(Some(&text));
    }

    #[test]
    fn subscription_lists_never_panic(
        value in json_value(),
        list in prop::collection::vec(prop_oneof![subscription_like(), json_value()], 0..6),
        text in ".{0,200}",
    ) {
        let _ = subscriptions::parse_value(&value);
        let _ = subscriptions::parse_value(&Value::Array(list.clone()));
        // The query-string form (text) and the PUT form (parsed JSON) agree. Compared on the
        // JSON the text parses to: a float need not survive a text round trip bit for bit.
        let text_form = Value::Array(list).to_string();
        let reparsed: Value = serde_json::from_str(&text_form).expect("our own JSON text");
        let from_text = subscriptions::parse_list(&text_form);
        prop_assert_eq!(subscriptions::parse_value(&reparsed).ok(), from_text.ok());
        let _ = subscriptions::parse_list(&value.to_string());
        let _ = subscriptions::parse_list(&text);
    }

    #[test]
    fn cloud_events_over_http_never_panic(
        content_type in proptest::option::of(prop_oneof![
            prop::sample::select(vec![
                "application/cloudevents+json", "application/json",
                "application/cloudevents+json; charset=utf-8", "text/plain",
                "application/cloudevents-batch+json", "",
            ]).prop_map(str::to_owned),
            ".{0,30}",
        ]),
        ce_headers in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time",
                    "ce-eventtypeversion", "ce-subject", "ce-x",
                ]),
                prop_oneof![
                    prop::sample::select(vec!["0.2", "1.0", "0.1", ""]).prop_map(str::to_owned),
                    "[ -~]{0,20}",
                ],
            ),
            0..6,
        ),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(|v| v.to_string().into_bytes()),
        ],
    ) {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type
            && let Ok(value) = HeaderValue::from_str(&ct)
        {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        for (name, value) in &ce_headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        let _ = events::from_http(&headers, Bytes::from(body.clone()));
        let _ = events::parse_structured(&body);
    }

    #[test]
    fn cloud_events_from_kafka_never_panic(
        headers in prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(vec![
                        "content-type", "ce_specversion", "ce_id", "ce_type", "ce_source",
                        "ce_time", "ce_x", "traceparent",
                    ]).prop_map(str::to_owned),
                    "[ -~]{0,12}",
                ],
                proptest::option::of(prop::collection::vec(any::<u8>(), 0..24)),
            ),
            0..8,
        ),
        payload in proptest::option::of(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(|v| v.to_string().into_bytes()),
        ]),
    ) {
        let iter = headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
        let _ = events::from_kafka(iter, payload.as_deref());
    }
}

proptest! {
    // RSA verification is slow in debug builds: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_changed_byte_makes_a_valid_token_invalid(
        which in 0..3usize,
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"".to_vec(),
        ),
    ) {
        let (v, token) = (&VERIFIERS[which], &VALID[which]);
        prop_assert!(v.verify(token).is_ok());
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let mutated = String::from_utf8(bytes).expect("ascii");
        prop_assert!(v.verify(&mutated).is_err(), "accepted {mutated}");
    }
}
