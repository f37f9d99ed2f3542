//! The connection token: what a client is given on connect and sends back to change its
//! subscriptions (`PUT /_rig/v1/connection/.../<token>/subscriptions`).
//!
//! RIG encrypted an Erlang pid with AES-GCM. Here the token only needs to be authentic, not secret:
//! it names the owning process (so any pod that receives the request can forward it to the owner)
//! and the connection number there. Layout, then base64url without padding:
//!
//! ```text
//! version (1) | owner length (1) | owner (0..=63, UTF-8) | connection (8, big-endian) | MAC (16)
//! ```
//!
//! The MAC is HMAC-SHA256 over a fixed context string and everything before it, truncated to 16
//! bytes, compared in constant time. Tokens are at most 119 characters of `[A-Za-z0-9_-]`.
//!
//! The key is `RIG_TOKEN_KEY`, shared by all pods of a deployment so that each pod accepts the
//! others' tokens. If it is unset, a random key is drawn at start and a warning logged: tokens then
//! only work on the pod that issued them and stop working when it restarts (fine for one replica).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{ConfigError, random_bytes};

/// The HMAC key for connection tokens, shared by every pod (at least [`MIN_KEY_LEN`] bytes).
pub const ENV_TOKEN_KEY: &str = "RIG_TOKEN_KEY";
/// Longest owner name a token carries: a DNS label (a pod's hostname is one). The process name
/// given to [`TokenCodec::encode`] must fit.
pub const MAX_OWNER_LEN: usize = 63;
/// Shortest `RIG_TOKEN_KEY` accepted: 128 bits, so that the key cannot be guessed.
pub const MIN_KEY_LEN: usize = 16;

const VERSION: u8 = 1;
/// Bound into every MAC so that a key reused elsewhere cannot produce valid tokens.
const CONTEXT: &[u8] = b"rig-connection-token";
const MAC_LEN: usize = 16;
const HEADER_LEN: usize = 2;
const CONN_LEN: usize = 8;
const MIN_LEN: usize = HEADER_LEN + CONN_LEN + MAC_LEN;
const MAX_LEN: usize = MIN_LEN + MAX_OWNER_LEN;
/// Base64 length of [`MAX_LEN`] bytes without padding.
const MAX_ENCODED_LEN: usize = (MAX_LEN * 4).div_ceil(3);
/// Length of a generated key: as long as the HMAC output.
const RANDOM_KEY_LEN: usize = 32;
/// SHA-256's block size, HMAC's key size.
const SHA256_BLOCK_LEN: usize = 64;

/// What a valid connection token names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionToken {
    /// The process that holds the connection.
    pub owner: String,
    /// The connection's number within that process.
    pub conn: u64,
}

/// A string that is not a connection token issued with this key. All variants mean the same to the
/// client (RIG: 400 `Invalid connection token.`); they differ for logs.
#[derive(Debug, Error)]
pub enum TokenError {
    /// Not unpadded base64url.
    #[error("connection token is not base64url")]
    Base64(#[source] base64::DecodeError),
    /// Too short or too long for its owner length.
    #[error("connection token has the wrong length")]
    Length,
    /// Made by an unknown format version.
    #[error("connection token has unknown version {0}")]
    Version(u8),
    /// The MAC does not match: tampered with, or made with another key.
    #[error("connection token is not authentic")]
    Mac,
    /// The owner is not UTF-8 (only possible with a leaked key).
    #[error("connection token's owner is not UTF-8")]
    Owner,
}

/// Mints and checks connection tokens with one HMAC key. Cheap to clone; the key is processed once.
#[derive(Clone)]
pub struct TokenCodec {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCodec").finish_non_exhaustive()
    }
}

/// The connection-token key (`RIG_TOKEN_KEY`), validated; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// `RIG_TOKEN_KEY` through `lookup`: its bytes as given, at least [`MIN_KEY_LEN`]; `None`
    /// when unset or empty.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        match lookup(ENV_TOKEN_KEY).filter(|key| !key.is_empty()) {
            Some(key) if key.len() >= MIN_KEY_LEN => Ok(Some(Self(key.into_bytes()))),
            Some(_) => Err(ConfigError::Invalid {
                var: ENV_TOKEN_KEY,
                reason: format!("must be at least {MIN_KEY_LEN} bytes"),
            }),
            None => Ok(None),
        }
    }
}

impl TokenCodec {
    /// A codec with `key` (any length; [`TokenCodec::from_lookup`] enforces [`MIN_KEY_LEN`]).
    pub fn new(key: &[u8]) -> Self {
        // HMAC's own key preparation (RFC 2104: hash a key longer than a block, pad with zeros),
        // done here so that construction is infallible.
        let mut block = [0u8; SHA256_BLOCK_LEN];
        if key.len() <= SHA256_BLOCK_LEN {
            block[..key.len()].copy_from_slice(key);
        } else {
            block[..32].copy_from_slice(&Sha256::digest(key));
        }
        Self {
            mac: <Hmac<Sha256> as KeyInit>::new(&block.into()),
        }
    }

    /// A codec with a fresh random key: its tokens are valid only in this process.
    pub fn random() -> Result<Self, ConfigError> {
        let mut key = [0u8; RANDOM_KEY_LEN];
        random_bytes(&mut key, "the connection token key")?;
        Ok(Self::new(&key))
    }

    /// The codec keyed with the bytes of `RIG_TOKEN_KEY` (see [`TokenKey::from_lookup`]); a
    /// random key when it is unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_key(TokenKey::from_lookup(lookup)?.as_ref())
    }

    /// The codec keyed with `key`. Without one, a random key is used and a warning logged,
    /// because tokens will then not be accepted by other pods or after a restart.
    pub fn from_key(key: Option<&TokenKey>) -> Result<Self, ConfigError> {
        match key {
            Some(key) => Ok(Self::new(&key.0)),
            None => {
                tracing::warn!(
                    "{ENV_TOKEN_KEY} is not set: using a random key, so connection tokens are \
                     accepted only by this pod and only until it restarts; set it (the same value \
                     on every pod) when running more than one replica"
                );
                Self::random()
            }
        }
    }

    /// The token for connection `conn` owned by the process `owner`. `owner` should be at most
    /// [`MAX_OWNER_LEN`] bytes: a longer one is cut at the last character boundary within the
    /// limit, and [`TokenCodec::decode`] returns the cut name.
    pub fn encode(&self, owner: &str, conn: u64) -> String {
        let owner = truncate(owner, MAX_OWNER_LEN);
        let mut raw = Vec::with_capacity(MIN_LEN + owner.len());
        raw.push(VERSION);
        // `truncate` keeps the length within MAX_OWNER_LEN (63), so it fits a byte.
        raw.push(u8::try_from(owner.len()).unwrap_or(u8::MAX));
        raw.extend_from_slice(owner.as_bytes());
        raw.extend_from_slice(&conn.to_be_bytes());
        let tag = self.tag(&raw);
        raw.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Check `token` and return what it names. Refuses anything not produced by
    /// [`TokenCodec::encode`] with this key (the base64 must be canonical). Never panics.
    pub fn decode(&self, token: &str) -> Result<ConnectionToken, TokenError> {
        if token.len() > MAX_ENCODED_LEN {
            return Err(TokenError::Length);
        }
        let mut raw = [0u8; MAX_LEN];
        let len = URL_SAFE_NO_PAD
            .decode_slice(token, &mut raw)
            .map_err(|e| match e {
                base64::DecodeSliceError::DecodeError(e) => TokenError::Base64(e),
                base64::DecodeSliceError::OutputSliceTooSmall => TokenError::Length,
            })?;
        let raw = &raw[..len];
        if len < MIN_LEN {
            return Err(TokenError::Length);
        }
        if raw[0] != VERSION {
            return Err(TokenError::Version(raw[0]));
        }
        let owner_len = usize::from(raw[1]);
        if owner_len > MAX_OWNER_LEN || len != MIN_LEN + owner_len {
            return Err(TokenError::Length);
        }
        let (body, tag) = raw.split_at(len - MAC_LEN);
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::Mac)?;
        let (owner, conn) = body[HEADER_LEN..].split_at(owner_len);
        let owner = std::str::from_utf8(owner).map_err(|_| TokenError::Owner)?;
        let mut conn_bytes = [0u8; CONN_LEN];
        conn_bytes.copy_from_slice(conn);
        Ok(ConnectionToken {
            owner: owner.to_owned(),
            conn: u64::from_be_bytes(conn_bytes),
        })
    }

    fn tag(&self, body: &[u8]) -> [u8; 32] {
        self.keyed_tag(CONTEXT, body)
    }

    /// HMAC-SHA256 of `body` under this key, in `context` (a distinct label per kind of token,
    /// so a tag made for one kind is never valid for another). Used for resume tokens too.
    pub fn keyed_tag(&self, context: &[u8], body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(context);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn codec() -> TokenCodec {
        TokenCodec::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn round_trips() {
        let codec = codec();
        for (owner, conn) in [
            ("rig-dataplane-7c9f8d-x2x4q", 0),
            ("a", 1),
            ("", 42),
            ("pod.with.dots", u64::MAX),
            (&"x".repeat(MAX_OWNER_LEN), 1 << 40),
        ] {
            let token = codec.encode(owner, conn);
            let decoded = codec.decode(&token).expect("valid token");
            assert_eq!(
                decoded,
                ConnectionToken {
                    owner: owner.to_owned(),
                    conn
                }
            );
        }
    }

    #[test]
    fn tokens_are_url_safe_and_bounded() {
        let codec = codec();
        for owner in ["", "p", &"é".repeat(40), &"x".repeat(MAX_OWNER_LEN)] {
            let token = codec.encode(owner, u64::MAX);
            assert!(token.len() <= MAX_ENCODED_LEN, "{token}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
        }
    }

    #[test]
    fn long_owners_are_cut_at_a_character_boundary() {
        let codec = codec();
        let owner = "é".repeat(40); // 80 bytes
        let decoded = codec.decode(&codec.encode(&owner, 7)).expect("valid");
        assert_eq!(decoded.owner, "é".repeat(31)); // 62 bytes: 63 would split a character
        assert_eq!(decoded.conn, 7);
    }

    #[test]
    fn every_byte_change_is_rejected() {
        let codec = codec();
        let token = codec.encode("rig-dataplane-0", 123_456_789);
        let raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        for i in 0..raw.len() {
            for mask in 1..=255u8 {
                let mut tampered = raw.clone();
                tampered[i] ^= mask;
                let forged = URL_SAFE_NO_PAD.encode(&tampered);
                assert!(
                    codec.decode(&forged).is_err(),
                    "byte {i} ^ {mask:#04x} accepted"
                );
            }
        }
    }

    #[test]
    fn every_character_change_is_rejected() {
        let codec = codec();
        let token = codec.encode("rig-dataplane-0", 99);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..token.len() {
            for &c in alphabet {
                if token.as_bytes()[i] == c {
                    continue;
                }
                let mut forged = token.clone().into_bytes();
                forged[i] = c;
                let forged = String::from_utf8(forged).expect("ascii");
                assert!(codec.decode(&forged).is_err(), "{forged} accepted");
            }
        }
        // Shortened, lengthened, padded.
        assert!(codec.decode(&token[..token.len() - 1]).is_err());
        assert!(codec.decode(&format!("{token}A")).is_err());
        assert!(codec.decode(&format!("{token}=")).is_err());
    }

    #[test]
    fn the_mac_is_standard_hmac_sha256_for_any_key_length() {
        for len in [0, 1, 16, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut reference =
                <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any length");
            reference.update(CONTEXT);
            reference.update(b"body");
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(
                TokenCodec::new(&key).tag(b"body"),
                expected,
                "key length {len}"
            );
        }
    }

    #[test]
    fn another_key_is_rejected() {
        let token = codec().encode("rig-dataplane-0", 5);
        let other = TokenCodec::new(b"fedcba9876543210fedcba9876543210");
        assert!(matches!(other.decode(&token), Err(TokenError::Mac)));
    }

    #[test]
    fn errors_are_classified() {
        let codec = codec();
        assert!(matches!(codec.decode("a/b+c"), Err(TokenError::Base64(_))));
        assert!(matches!(codec.decode(""), Err(TokenError::Length)));
        assert!(matches!(codec.decode("AAAA"), Err(TokenError::Length)));
        assert!(matches!(
            codec.decode(&"A".repeat(MAX_ENCODED_LEN + 1)),
            Err(TokenError::Length)
        ));
        let mut raw = URL_SAFE_NO_PAD
            .decode(codec.encode("p", 1))
            .expect("base64");
        raw[0] = 9;
        assert!(matches!(
            codec.decode(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::Version(9))
        ));
    }

    #[test]
    fn random_strings_never_panic_and_are_rejected() {
        let codec = codec();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.é \u{0}"
                .chars()
                .collect();
        for _ in 0..20_000 {
            let len = rng.below(MAX_ENCODED_LEN + 20);
            let s: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            assert!(codec.decode(&s).is_err(), "{s:?} accepted");
        }
        // Well-formed layouts with random contents: right length and version, wrong MAC.
        for _ in 0..5_000 {
            let owner_len = rng.below(MAX_OWNER_LEN + 1);
            let mut raw = vec![VERSION, u8::try_from(owner_len).expect("small")];
            raw.extend((0..owner_len + CONN_LEN + MAC_LEN).map(|_| rng.next() as u8));
            assert!(codec.decode(&URL_SAFE_NO_PAD.encode(&raw)).is_err());
        }
    }

    #[test]
    fn the_key_comes_from_the_environment() {
        let key = "a-shared-secret-of-enough-length";
        let a = TokenCodec::from_lookup(|v| (v == ENV_TOKEN_KEY).then(|| key.to_owned()))
            .expect("valid key");
        let b = TokenCodec::new(key.as_bytes());
        assert_eq!(b.decode(&a.encode("p", 3)).expect("same key").conn, 3);

        let err = TokenCodec::from_lookup(|_| Some("short".to_owned())).expect_err("too short");
        assert!(err.to_string().contains(ENV_TOKEN_KEY), "{err}");
        assert!(!err.to_string().contains("short\""), "{err}");
    }

    #[test]
    fn without_a_key_each_process_has_its_own() {
        let a = TokenCodec::from_lookup(|_| None).expect("random key");
        let b = TokenCodec::from_lookup(|_| Some(String::new())).expect("random key");
        let token = a.encode("p", 1);
        assert!(a.decode(&token).is_ok());
        assert!(b.decode(&token).is_err());
    }
}
