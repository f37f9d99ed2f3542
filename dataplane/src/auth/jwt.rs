//! JWT verification with RIG's settings (`JWT_SECRET_KEY`, `JWT_ALG`, `JWT_SESSION_FIELD`), and
//! keys from a JSON Web Key Set (`JWT_JWKS`, see [`super::jwks`]).
//!
//! Design:
//! - Keys are decoded once, in [`Verifier::new`]; a key that cannot verify anything stops the
//!   process at start-up instead of refusing every token later. A [`Verifier`] is an `Arc`, so
//!   handlers clone it freely.
//! - Only the configured algorithms are accepted (`JWT_ALG`, a comma-separated list). A token
//!   whose header names another (`none`, an HS algorithm while an RSA/EC key is configured,
//!   RS384 when only RS256 is) is refused before any cryptography runs, and the key that checks
//!   the signature must itself serve the token's algorithm. This rules out the classic
//!   key-confusion attacks.
//! - The signature is checked by `jsonwebtoken`; the time claims are checked here, against a
//!   caller-supplied clock ([`Verifier::verify_at`]), so expiry is testable to the second and uses
//!   the same reading of `exp` as [`Claims::exp`].
//! - Every refusal is a [`JwtError`] whose `Display`, the text clients get, is the same generic
//!   "could not decode JWT: invalid token" whatever the cause (no oracle for forgers). The cause
//!   goes to the log ([`JwtError::reason`]) and to `rig_jwt_refused_total{reason}`, both written in
//!   one place, [`Verifier::verify_at`].
//!
//! Key material ([`JwtConfig::from_lookup`]), either `JWT_SECRET_KEY` or `JWT_JWKS` (not both):
//! - `HS256`/`HS384`/`HS512`: the bytes of `JWT_SECRET_KEY`, exactly as given (RIG compatible: no
//!   trimming, never read as a file name). A PEM block is refused: using a public key as an HMAC
//!   secret would let anyone who knows the public key forge tokens.
//! - `RS*`/`PS*` (RSA) and `ES256`/`ES384` (EC P-256/P-384): a PEM public key (`PUBLIC KEY`, or
//!   `RSA PUBLIC KEY` for RSA) or a PEM X.509 `CERTIFICATE`, whose public key is used (its validity
//!   dates and issuer are not checked). The PEM is given inline (RIG style; a value whose line
//!   breaks were written as the two characters `\n` is accepted too), or, when the value contains
//!   no PEM block, it is read as the path of a file holding one. Only the first PEM block is used.
//!   With one key, `JWT_ALG` must name algorithms of one family (`HS*`; `RS*`/`PS*`; `ES*`), and
//!   the token's `kid` is ignored.
//! - `JWT_JWKS`: a file path or `http(s)://` URL of a JWK set; the token's `kid` picks the key.
//!   `JWT_ALG` then defaults to every asymmetric algorithm (`RS*`, `PS*`, `ES256`, `ES384`);
//!   `oct` (HMAC) keys of a set are used only when `JWT_ALG` names an `HS*` algorithm.
//! - Neither set: the verifier refuses every token ([`JwtError::NotConfigured`]).

use crate::support::prom;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use thiserror::Error;

use super::jwks::{self, Jwks, JwksConfig, Miss};
use super::{ConfigError, non_empty};

/// The verification key: an HMAC secret, or a PEM public key / certificate (inline or a file path).
pub const ENV_JWT_SECRET_KEY: &str = "JWT_SECRET_KEY";
/// The accepted algorithms, comma-separated: `HS256|384|512`, `RS256|384|512`, `PS256|384|512`,
/// `ES256|384` (RIG takes exactly one; one is still the usual value).
pub const ENV_JWT_ALG: &str = "JWT_ALG";
/// JSON pointer to the claim that identifies the session (used for blacklisting and kills).
pub const ENV_JWT_SESSION_FIELD: &str = "JWT_SESSION_FIELD";

/// RIG's default algorithm.
const DEFAULT_ALG: Algorithm = Algorithm::HS256;
/// With `JWT_JWKS` and no `JWT_ALG`: every asymmetric algorithm, since a key set published by an
/// identity provider holds public keys whose type already fixes what they can verify. HMAC keys
/// in a set must be opted into by naming `HS*`.
const DEFAULT_JWKS_ALGS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// RIG's default: the session is the token's id.
const DEFAULT_SESSION_FIELD: &str = "/jti";

/// Clock skew, in seconds, tolerated between the token issuer and this pod, for both `exp` and
/// `nbf`. RIG had none; a few seconds absorb ordinary clock drift without keeping an expired token
/// usable for long.
pub const LEEWAY_SECS: u64 = 5;

/// Longest token accepted, in bytes, checked before any decoding. Real tokens are well under
/// 2 KiB; the cap bounds the base64/JSON work an unauthenticated client can cause (RIG's HTTP
/// server capped header values at 16 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The algorithms `JWT_ALG` may name.
const SUPPORTED: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384";

/// JWT settings, read from the environment. Plain data: [`Verifier::new`] decodes the key.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The accepted algorithms (`JWT_ALG`, default `HS256`, or with `JWT_JWKS` every `RS*`,
    /// `PS*` and `ES*` one). Never empty.
    pub algorithms: Vec<Algorithm>,
    /// Key material (`JWT_SECRET_KEY`): the HMAC secret's bytes for `HS*`, PEM text otherwise (a
    /// key file has already been read). `None` when unset.
    pub key: Option<Vec<u8>>,
    /// Keys from a JWK set (`JWT_JWKS`) instead of `key`. With neither, every token is refused.
    pub jwks: Option<JwksConfig>,
    /// JSON pointer to the session id claim (`JWT_SESSION_FIELD`, default `/jti`).
    pub session_field: String,
}

impl Default for JwtConfig {
    /// RIG's defaults: `HS256`, no key, session field `/jti`.
    fn default() -> Self {
        Self {
            algorithms: vec![DEFAULT_ALG],
            key: None,
            jwks: None,
            session_field: DEFAULT_SESSION_FIELD.to_owned(),
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("jwks", &self.jwks)
            .field("session_field", &self.session_field)
            .finish()
    }
}

impl JwtConfig {
    /// Read the settings through `lookup` (the environment, or a map in tests). Empty values count
    /// as unset. A key file named by `JWT_SECRET_KEY` is read here; the key is decoded (and a
    /// `JWT_JWKS` file read) by [`Verifier::new`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let jwks = JwksConfig::from_lookup(&lookup)?;
        let algorithms = match (non_empty(&lookup, ENV_JWT_ALG), &jwks) {
            (Some(value), _) => parse_algorithms(&value)?,
            (None, None) => vec![DEFAULT_ALG],
            (None, Some(_)) => DEFAULT_JWKS_ALGS.to_vec(),
        };
        let session_field = match non_empty(&lookup, ENV_JWT_SESSION_FIELD) {
            None => DEFAULT_SESSION_FIELD.to_owned(),
            Some(pointer) if pointer.trim().starts_with('/') => pointer.trim().to_owned(),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: ENV_JWT_SESSION_FIELD,
                    reason: "expected a JSON pointer such as /jti or /user/id".to_owned(),
                });
            }
        };
        let secret = lookup(ENV_JWT_SECRET_KEY).filter(|value| !value.is_empty());
        if secret.is_some() && jwks.is_some() {
            return Err(ConfigError::Invalid {
                var: ENV_JWT_SECRET_KEY,
                reason: format!(
                    "set either {ENV_JWT_SECRET_KEY} or {}, not both",
                    jwks::ENV_JWT_JWKS
                ),
            });
        }
        let key = match secret {
            None => None,
            Some(value) => {
                let family = single_family(&algorithms)?;
                if family == AlgorithmFamily::Hmac {
                    Some(value.into_bytes())
                } else {
                    Some(read_pem(value)?.into_bytes())
                }
            }
        };
        Ok(Self {
            algorithms,
            key,
            jwks,
            session_field,
        })
    }

    /// Build the [`Verifier`] for these settings.
    pub fn verifier(&self) -> Result<Verifier, ConfigError> {
        Verifier::new(self)
    }
}

/// Parse `JWT_ALG`: one or more supported names, comma-separated, case-insensitive.
fn parse_algorithms(value: &str) -> Result<Vec<Algorithm>, ConfigError> {
    let mut algorithms = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let algorithm = match name.to_ascii_uppercase().as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            _ => {
                return Err(ConfigError::Invalid {
                    var: ENV_JWT_ALG,
                    reason: format!("{name:?} is not supported; expected one of {SUPPORTED}"),
                });
            }
        };
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    if algorithms.is_empty() {
        return Err(ConfigError::Invalid {
            var: ENV_JWT_ALG,
            reason: format!("names no algorithm; expected one or more of {SUPPORTED}"),
        });
    }
    Ok(algorithms)
}

/// The one family of `algorithms`: a single `JWT_SECRET_KEY` is one key, so mixing HMAC, RSA
/// and EC algorithms would mean reading one key in two ways.
fn single_family(algorithms: &[Algorithm]) -> Result<AlgorithmFamily, ConfigError> {
    let family = algorithms
        .first()
        .map_or(AlgorithmFamily::Hmac, |a| a.family());
    if algorithms.iter().any(|a| a.family() != family) {
        return Err(ConfigError::Invalid {
            var: ENV_JWT_ALG,
            reason: format!(
                "{ENV_JWT_SECRET_KEY} holds one key, so {ENV_JWT_ALG} must name algorithms of one \
                 family (HS*, RS*/PS*, or ES*); use {} for keys of several types",
                jwks::ENV_JWT_JWKS
            ),
        });
    }
    Ok(family)
}

/// The PEM text `value` holds, or that the file it names holds.
fn read_pem(value: String) -> Result<String, ConfigError> {
    if value.contains("-----BEGIN") {
        // Helm values and `.env` files often carry a PEM on one line with `\n` escapes.
        return Ok(if value.contains('\n') {
            value
        } else {
            value.replace("\\n", "\n")
        });
    }
    let path = std::path::PathBuf::from(value.trim());
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::KeyFile {
        var: ENV_JWT_SECRET_KEY,
        path: path.clone(),
        source,
    })?;
    if !text.contains("-----BEGIN") {
        return Err(ConfigError::Invalid {
            var: ENV_JWT_SECRET_KEY,
            reason: format!("neither a PEM block nor a file holding one ({path:?})"),
        });
    }
    Ok(text)
}

/// The label of the first PEM block (`PUBLIC KEY`, `CERTIFICATE`, ...), if any.
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = pem.windows(BEGIN.len()).position(|w| w == BEGIN)? + BEGIN.len();
    let rest = &pem[start..];
    let end = rest.windows(5).position(|w| w == b"-----")?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Decode `material` into a key for `algorithms` (all of one family), refusing anything that
/// could not verify a token. Returns the key and the algorithms it serves (for an EC key, those
/// of its curve).
fn decoding_key(
    algorithms: &[Algorithm],
    material: &[u8],
) -> Result<(DecodingKey, Vec<Algorithm>), ConfigError> {
    let family = single_family(algorithms)?;
    let alg = algorithms.first().copied().unwrap_or(DEFAULT_ALG);
    let invalid = |reason: String| ConfigError::Invalid {
        var: ENV_JWT_SECRET_KEY,
        reason,
    };
    let unusable = |source| ConfigError::Key {
        var: ENV_JWT_SECRET_KEY,
        alg,
        source,
    };
    if family == AlgorithmFamily::Hmac {
        if pem_label(material).is_some() {
            return Err(invalid(format!(
                "holds a PEM block but JWT_ALG is {alg:?}: a public key used as an HMAC secret \
                 lets anyone forge tokens; set JWT_ALG to the key's algorithm (RS*, PS*, ES*)"
            )));
        }
        return Ok((DecodingKey::from_secret(material), algorithms.to_vec()));
    }
    let accepted: &[&str] = match family {
        AlgorithmFamily::Rsa => &["PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"],
        AlgorithmFamily::Ec => &["PUBLIC KEY", "CERTIFICATE"],
        _ => return Err(invalid(format!("{alg:?} is not supported"))),
    };
    match pem_label(material) {
        Some(label) if accepted.contains(&label) => {}
        Some(label) if label.contains("PRIVATE") => {
            return Err(invalid(format!(
                "holds a private key ({label}); configure the public key or a certificate"
            )));
        }
        Some(label) => {
            return Err(invalid(format!(
                "holds a {label:?} PEM block; expected one of {accepted:?}"
            )));
        }
        None => return Err(invalid("holds no PEM block".to_owned())),
    }
    let key = if family == AlgorithmFamily::Rsa {
        DecodingKey::from_rsa_pem(material)
    } else {
        DecodingKey::from_ec_pem(material)
    }
    .map_err(unusable)?;
    // Parse the DER now (the library would only do it per token) so a broken key fails start-up.
    let jwk = Jwk::from_decoding_key(&key, Some(alg)).map_err(unusable)?;
    let mut serves = algorithms.to_vec();
    if let AlgorithmParameters::EllipticCurve(params) = &jwk.algorithm {
        let curve_alg = match params.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        };
        serves.retain(|a| Some(*a) == curve_alg);
        if serves.is_empty() {
            let needs = |a: &Algorithm| match a {
                Algorithm::ES256 => "P256",
                _ => "P384",
            };
            return Err(invalid(format!(
                "the EC key is on curve {:?}, but {alg:?} needs {}",
                params.curve,
                needs(&alg)
            )));
        }
    }
    Ok((key, serves))
}

/// The text every refused token gets (RIG's prefix). One text for every cause, so a client
/// learns nothing about why a forged token failed.
const GENERIC: &str = "could not decode JWT: invalid token";

/// A JWT that could not be accepted.
///
/// `Display` is meant for clients and is the same for every cause that [`Verifier`] finds
/// (RIG's `could not decode JWT` prefix); [`JwtError::reason`] carries the detail for logs and
/// [`JwtError::label`] the `reason` label of `rig_jwt_refused_total`. Only
/// [`JwtError::Revoked`], which needs a valid signature, has its own (RIG's) text.
#[derive(Debug, Error)]
pub enum JwtError {
    /// No key is configured (neither `JWT_SECRET_KEY` nor `JWT_JWKS`), so no token can be
    /// verified.
    #[error("{GENERIC}")]
    NotConfigured,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("{GENERIC}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The token starts with `Bearer `: the raw JWT was expected (RIG refuses these too).
    #[error("{GENERIC}")]
    BearerPrefix,
    /// Not three base64url parts, or a header that is not JSON or names an unknown `alg`
    /// (including `none`), or a payload that is not JSON.
    #[error("{GENERIC}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    /// The header's `alg` is not among the configured algorithms (`JWT_ALG`).
    #[error("{GENERIC}")]
    AlgorithmNotAllowed {
        /// The configured algorithms.
        allowed: Vec<Algorithm>,
        /// The token's `alg`.
        found: Algorithm,
    },
    /// `JWT_JWKS`: no key of the set can check this token. Its `kid` is not in the set (a
    /// refresh is requested), or it has no `kid` and the set does not hold exactly one key for
    /// its `alg`.
    #[error("{GENERIC}")]
    UnknownKey {
        /// The token's `kid` (shortened to 64 characters).
        kid: Option<String>,
        /// The token's `alg`.
        alg: Algorithm,
        /// Keys serving `alg`, for a token without `kid`.
        candidates: usize,
    },
    /// `JWT_JWKS`: the key named by `kid` does not serve the token's `alg` (another key type,
    /// curve, or the key's own `alg`): key confusion is refused here.
    #[error("{GENERIC}")]
    KeyMismatch {
        /// The token's `kid` (shortened to 64 characters).
        kid: String,
        /// The token's `alg`.
        alg: Algorithm,
    },
    /// The signature does not match the key.
    #[error("{GENERIC}")]
    BadSignature(#[source] jsonwebtoken::errors::Error),
    /// The payload is JSON but not an object.
    #[error("{GENERIC}")]
    NotAnObject,
    /// The token has no `exp` claim; tokens that never expire are refused.
    #[error("{GENERIC}")]
    MissingExp,
    /// `exp` or `nbf` is not a non-negative number.
    #[error("{GENERIC}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// `exp` has passed (allowing [`LEEWAY_SECS`]).
    #[error("{GENERIC}")]
    Expired {
        /// The token's `exp`, in seconds since the Unix epoch.
        exp: u64,
    },
    /// `nbf` has not yet come (allowing [`LEEWAY_SECS`]).
    #[error("{GENERIC}")]
    NotYetValid {
        /// The token's `nbf`, in seconds since the Unix epoch.
        nbf: u64,
    },
    /// The token is valid, but its session (`JWT_SESSION_FIELD`) is revoked (blacklisted). Never
    /// returned by [`Verifier`], which does not know the blacklist. The text is RIG's.
    #[error("could not decode JWT: Ignoring blacklisted JWT with ID {session:?}.")]
    Revoked {
        /// The session id.
        session: String,
    },
}

/// The `reason` labels of `rig_jwt_refused_total`, in rendering order.
const REFUSAL_LABELS: [&str; 10] = [
    "not_configured",
    "too_long",
    "malformed",
    "algorithm",
    "unknown_key",
    "signature",
    "claims",
    "expired",
    "not_yet_valid",
    "revoked",
];

impl JwtError {
    /// Why the token was refused, for logs. May name claims, algorithms and a shortened `kid`;
    /// never contains the token or the key.
    pub fn reason(&self) -> String {
        match self {
            Self::NotConfigured => format!(
                "no JWT key is configured ({ENV_JWT_SECRET_KEY} and {} unset)",
                jwks::ENV_JWT_JWKS
            ),
            Self::TooLong { len } => {
                format!("token is {len} bytes, over the {MAX_TOKEN_LEN} limit")
            }
            Self::BearerPrefix => "token starts with \"Bearer \"; the raw JWT is expected".into(),
            Self::Malformed(e) => format!("malformed token: {e}"),
            Self::AlgorithmNotAllowed { allowed, found } => {
                format!("token alg is {found:?} but only {allowed:?} are accepted")
            }
            Self::UnknownKey {
                kid: Some(kid),
                alg,
                ..
            } => format!("no {alg:?} key with kid {kid:?} in the JWKS (a refresh was requested)"),
            Self::UnknownKey {
                kid: None,
                alg,
                candidates,
            } => format!(
                "token has no kid and the JWKS holds {candidates} keys for {alg:?} (exactly one \
                 is needed)"
            ),
            Self::KeyMismatch { kid, alg } => {
                format!("the JWKS key {kid:?} does not verify {alg:?} tokens")
            }
            Self::BadSignature(e) => format!("signature check failed: {e}"),
            Self::NotAnObject => "claims are not a JSON object".into(),
            Self::MissingExp => "token has no exp claim".into(),
            Self::InvalidClaim { claim } => {
                format!("claim {claim:?} is not a non-negative number")
            }
            Self::Expired { exp } => format!("token expired (exp {exp})"),
            Self::NotYetValid { nbf } => format!("token not valid yet (nbf {nbf})"),
            Self::Revoked { session } => format!("session {session:?} is revoked"),
        }
    }

    /// The `reason` label of `rig_jwt_refused_total` for this refusal.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::TooLong { .. } => "too_long",
            Self::BearerPrefix | Self::Malformed(_) => "malformed",
            Self::AlgorithmNotAllowed { .. } | Self::KeyMismatch { .. } => "algorithm",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature(_) => "signature",
            Self::NotAnObject | Self::MissingExp | Self::InvalidClaim { .. } => "claims",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Revoked { .. } => "revoked",
        }
    }
}

/// The claims of a token that [`Verifier::verify`] accepted: a JSON object with a valid `exp`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(Value);

impl Claims {
    /// The claims as JSON (always an object).
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// The claims as JSON (always an object).
    pub fn into_value(self) -> Value {
        self.0
    }

    /// The session id: the value at the JSON pointer `pointer` (`JWT_SESSION_FIELD`, see
    /// [`Verifier::session_field`]). Strings are returned as they are, numbers as their JSON
    /// text; anything else, an empty string, or a missing value gives `None`.
    pub fn session_id(&self, pointer: &str) -> Option<String> {
        match self.0.pointer(pointer)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// `exp` in seconds since the Unix epoch (fractions dropped). Always `Some` for verified claims.
    pub fn exp(&self) -> Option<u64> {
        numeric_claim(&self.0, "exp").ok().flatten()
    }
}

/// `claim` as whole seconds: `Ok(None)` when absent, an error when not a non-negative number.
fn numeric_claim(claims: &Value, claim: &'static str) -> Result<Option<u64>, JwtError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    if let Some(n) = value.as_u64() {
        return Ok(Some(n));
    }
    match value.as_f64() {
        // `as` saturates at u64::MAX, which is what a far-future time should become.
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(JwtError::InvalidClaim { claim }),
    }
}

/// Verifies JWTs against the configured keys and algorithms. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

/// Where the keys come from.
enum Keys {
    /// Nothing configured: every token is refused.
    None,
    /// `JWT_SECRET_KEY`: one key, serving every accepted algorithm.
    Static(DecodingKey),
    /// `JWT_JWKS`: a live key set.
    Jwks(Arc<Jwks>),
}

struct Inner {
    /// The accepted algorithms, each with its `jsonwebtoken` settings.
    validations: Vec<(Algorithm, Validation)>,
    keys: Keys,
    session_field: String,
    /// Refusals by [`REFUSAL_LABELS`] index.
    refused: [AtomicU64; REFUSAL_LABELS.len()],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms())
            .field("configured", &self.is_configured())
            .field(
                "jwks",
                &match &self.inner.keys {
                    Keys::Jwks(jwks) => Some(jwks),
                    _ => None,
                },
            )
            .field("session_field", &self.inner.session_field)
            .finish()
    }
}

impl Verifier {
    /// Decode the key of `config` (or load its `JWT_JWKS` file). Fails when the key cannot verify
    /// tokens of the configured algorithms (wrong family, private key, unparsable PEM, wrong
    /// curve, a PEM for HS*), or when a key set file holds no usable key.
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let mut algorithms = config.algorithms.clone();
        if algorithms.is_empty() {
            algorithms.push(DEFAULT_ALG);
        }
        let keys = match (&config.key, &config.jwks) {
            (Some(material), _) => {
                let (key, serves) = decoding_key(&algorithms, material)?;
                algorithms = serves;
                Keys::Static(key)
            }
            (None, Some(jwks)) => {
                Keys::Jwks(Arc::new(Jwks::new(jwks.clone(), algorithms.clone())?))
            }
            (None, None) => Keys::None,
        };
        let validations = algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                // Time claims are checked in `verify_at`; RIG checks neither `aud` nor `iss`.
                validation.required_spec_claims.clear();
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.validate_aud = false;
                (alg, validation)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                validations,
                keys,
                session_field: config.session_field.clone(),
                refused: Default::default(),
            }),
        })
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.inner.validations.iter().map(|(a, _)| *a).collect()
    }

    /// Whether keys are configured (if not, every token is refused). A `JWT_JWKS` URL counts as
    /// configured before its first fetch.
    pub fn is_configured(&self) -> bool {
        !matches!(self.inner.keys, Keys::None)
    }

    /// The live key set, when keys come from `JWT_JWKS`.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.inner.keys {
            Keys::Jwks(jwks) => Some(jwks),
            _ => None,
        }
    }

    /// Changes whenever the verification keys may have changed (a `JWT_JWKS` reload); constant
    /// for a PEM key or secret. Caches of verification results compare it.
    pub fn key_epoch(&self) -> u64 {
        self.jwks().map_or(0, |jwks| jwks.epoch())
    }

    /// The task that keeps a `JWT_JWKS` key set fresh (see [`Jwks::run`]), to be spawned once;
    /// `None` for other key sources. It ends when `shutdown` turns true.
    pub fn refresher(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.jwks().map(|jwks| jwks.clone().run(shutdown))
    }

    /// The configured session field (a JSON pointer).
    pub fn session_field(&self) -> &str {
        &self.inner.session_field
    }

    /// The session id of `claims`, read at the configured session field.
    pub fn session_id(&self, claims: &Claims) -> Option<String> {
        claims.session_id(&self.inner.session_field)
    }

    /// Verify `token` (the raw JWT, without `Bearer `) now. See [`Verifier::verify_at`].
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now)
    }

    /// Verify `token` as of `now` (seconds since the Unix epoch): size, header `alg` among the
    /// accepted ones, the key (by `kid` for a key set), signature, claims being an object, `exp`
    /// present and `now < exp + LEEWAY_SECS`, and, when present, `nbf <= now + LEEWAY_SECS`.
    /// Does not consult the blacklist. Never panics. Each refusal is logged with its reason and
    /// counted in `rig_jwt_refused_total{reason}`.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        let result = self.check(token, now);
        if let Err(error) = &result {
            self.record_refusal(error);
        }
        result
    }

    /// Count and log a refusal; also for [`JwtError::Revoked`], which callers find after
    /// verification.
    pub fn record_refusal(&self, error: &JwtError) {
        let label = error.label();
        if let Some(i) = REFUSAL_LABELS.iter().position(|l| *l == label) {
            self.inner.refused[i].fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(reason = %error.reason(), "JWT refused");
    }

    fn check(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong { len: token.len() });
        }
        if token
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        {
            return Err(JwtError::BearerPrefix);
        }
        if let Keys::None = self.inner.keys {
            return Err(JwtError::NotConfigured);
        }
        let header = jsonwebtoken::decode_header(token).map_err(JwtError::Malformed)?;
        let Some((alg, validation)) = self
            .inner
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
        else {
            return Err(JwtError::AlgorithmNotAllowed {
                allowed: self.algorithms(),
                found: header.alg,
            });
        };
        let alg = *alg;
        let set;
        let key = match &self.inner.keys {
            Keys::None => return Err(JwtError::NotConfigured),
            Keys::Static(key) => key,
            Keys::Jwks(jwks) => {
                set = jwks.current();
                let kid = header.kid.as_deref();
                match set.select(kid, alg) {
                    Ok(key) => key,
                    Err(miss) => {
                        let short = kid.map(|k| jwks::loggable(k).to_owned());
                        return Err(match miss {
                            Miss::UnknownKid => {
                                jwks.request_refresh();
                                JwtError::UnknownKey {
                                    kid: short,
                                    alg,
                                    candidates: 0,
                                }
                            }
                            Miss::WrongAlgorithm => JwtError::KeyMismatch {
                                kid: short.unwrap_or_default(),
                                alg,
                            },
                            Miss::Ambiguous(candidates) => {
                                if set.is_empty() {
                                    // A URL set not fetched yet (or after failures): ask again.
                                    jwks.request_refresh();
                                }
                                JwtError::UnknownKey {
                                    kid: None,
                                    alg,
                                    candidates,
                                }
                            }
                        });
                    }
                }
            }
        };
        let data =
            jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => JwtError::Malformed(e),
                _ => JwtError::BadSignature(e),
            })?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(JwtError::NotAnObject);
        }
        let exp = numeric_claim(&claims, "exp")?.ok_or(JwtError::MissingExp)?;
        if now >= exp.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::Expired { exp });
        }
        if let Some(nbf) = numeric_claim(&claims, "nbf")?
            && nbf > now.saturating_add(LEEWAY_SECS)
        {
            return Err(JwtError::NotYetValid { nbf });
        }
        Ok(Claims(claims))
    }

    /// Append the JWT metrics to a `/metrics` text: refusals by reason, and the `JWT_JWKS` key
    /// set's refreshes and size (zero without a key set).
    pub fn render_metrics(&self, out: &mut String) {
        let name = "rig_jwt_refused_total";
        prom::family(
            out,
            name,
            prom::Kind::Counter,
            "JWTs refused, by reason (the log line says more).",
        );
        for (label, count) in REFUSAL_LABELS.iter().zip(&self.inner.refused) {
            prom::sample(
                out,
                name,
                &[("reason", label)],
                count.load(Ordering::Relaxed),
            );
        }
        let (ok, failed, keys) = match self.jwks() {
            Some(jwks) => (
                jwks.metrics.refreshes.load(Ordering::Relaxed),
                jwks.metrics.refresh_failures.load(Ordering::Relaxed),
                jwks.metrics.keys.load(Ordering::Relaxed),
            ),
            None => (0, 0, 0),
        };
        let name = "rig_jwks_refreshes_total";
        prom::family(
            out,
            name,
            prom::Kind::Counter,
            "JWT_JWKS loads, by result (a failure keeps the last good set).",
        );
        prom::sample(out, name, &[("result", "ok")], ok);
        prom::sample(out, name, &[("result", "error")], failed);
        prom::gauge(
            out,
            "rig_jwks_keys",
            "Usable keys in the current JWT_JWKS key set.",
            keys,
        );
    }
}

/// The tokens of every `Authorization: Bearer <jwt>` credential in `headers`, in order.
///
/// All `Authorization` headers are read, and each may hold several credentials separated by
/// commas (RIG's PUT subscriptions). The scheme is case-sensitive (`Bearer`, as in RIG); other
/// schemes, scheme-less values and non-ASCII header values are skipped. The tokens are not
/// verified.
pub fn bearer_tokens(headers: &::http::HeaderMap) -> Vec<&str> {
    headers
        .get_all(::http::header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|credential| credential.trim().strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
