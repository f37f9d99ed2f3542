//! JWT verification with RIG's settings (`JWT_SECRET_KEY`, `JWT_ALG`, `JWT_SESSION_FIELD`).
//!
//! Design:
//! - The key is decoded once, in [`Verifier::new`]; a key that cannot verify anything stops the
//!   process at start-up instead of refusing every token later. A [`Verifier`] is an `Arc`, so
//!   handlers clone it freely.
//! - Exactly one algorithm is accepted: the configured one. A token whose header names another
//!   (`none`, an HS algorithm while an RSA/EC key is configured, RS384 when RS256 is configured) is
//!   refused before any cryptography runs. This rules out the classic key-confusion attacks.
//! - The signature is checked by `jsonwebtoken`; the time claims are checked here, against a
//!   caller-supplied clock ([`Verifier::verify_at`]), so expiry is testable to the second and uses
//!   the same reading of `exp` as [`Claims::exp`].
//! - Every refusal is a [`JwtError`]: its `Display` is safe to send to the client ("could not
//!   decode JWT: ..." as in RIG), while [`JwtError::reason`] gives the detail for logs.
//!
//! Key material ([`JwtConfig::from_lookup`]):
//! - `HS256`/`HS384`/`HS512`: the bytes of `JWT_SECRET_KEY`, exactly as given (RIG compatible: no
//!   trimming, never read as a file name). A PEM block is refused: using a public key as an HMAC
//!   secret would let anyone who knows the public key forge tokens.
//! - `RS*`/`PS*` (RSA) and `ES256`/`ES384` (EC P-256/P-384): a PEM public key (`PUBLIC KEY`, or
//!   `RSA PUBLIC KEY` for RSA) or a PEM X.509 `CERTIFICATE`, whose public key is used (its validity
//!   dates and issuer are not checked). The PEM is given inline (RIG style; a value whose line
//!   breaks were written as the two characters `\n` is accepted too), or, when the value contains
//!   no PEM block, it is read as the path of a file holding one. Only the first PEM block is used.
//! - `JWT_SECRET_KEY` unset or empty: the verifier refuses every token ([`JwtError::NotConfigured`]).

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use thiserror::Error;

use super::{ConfigError, non_empty};

/// The verification key: an HMAC secret, or a PEM public key / certificate (inline or a file path).
pub const ENV_JWT_SECRET_KEY: &str = "JWT_SECRET_KEY";
/// The one accepted algorithm: `HS256|384|512`, `RS256|384|512`, `PS256|384|512`, `ES256|384`.
pub const ENV_JWT_ALG: &str = "JWT_ALG";
/// JSON pointer to the claim that identifies the session (used for blacklisting and kills).
pub const ENV_JWT_SESSION_FIELD: &str = "JWT_SESSION_FIELD";

/// RIG's default algorithm.
const DEFAULT_ALG: Algorithm = Algorithm::HS256;
/// RIG's default: the session is the token's id.
const DEFAULT_SESSION_FIELD: &str = "/jti";

/// Clock skew, in seconds, tolerated between the token issuer and this pod, for both `exp` and
/// `nbf`. RIG had none; a few seconds absorb ordinary clock drift without keeping an expired token
/// usable for long.
pub const LEEWAY_SECS: u64 = 5;

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; the cap bounds the
/// base64/JSON work an unauthenticated client can cause (RIG's HTTP server capped header values at
/// 16 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The algorithms `JWT_ALG` may name.
const SUPPORTED: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384";

/// JWT settings, read from the environment. Plain data: [`Verifier::new`] decodes the key.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The one accepted algorithm (`JWT_ALG`, default `HS256`).
    pub algorithm: Algorithm,
    /// Key material (`JWT_SECRET_KEY`): the HMAC secret's bytes for `HS*`, PEM text otherwise (a
    /// key file has already been read). `None` when unset: every token is then refused.
    pub key: Option<Vec<u8>>,
    /// JSON pointer to the session id claim (`JWT_SESSION_FIELD`, default `/jti`).
    pub session_field: String,
}

impl Default for JwtConfig {
    /// RIG's defaults: `HS256`, no key, session field `/jti`.
    fn default() -> Self {
        Self {
            algorithm: DEFAULT_ALG,
            key: None,
            session_field: DEFAULT_SESSION_FIELD.to_owned(),
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("session_field", &self.session_field)
            .finish()
    }
}

impl JwtConfig {
    /// Read the settings from the process environment (and the key file it may name).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Read the settings through `lookup` (the environment, or a map in tests). Empty values count
    /// as unset. A key file named by `JWT_SECRET_KEY` is read here; the key is decoded by
    /// [`Verifier::new`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let algorithm = match non_empty(&lookup, ENV_JWT_ALG) {
            None => DEFAULT_ALG,
            Some(value) => parse_algorithm(&value)?,
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
        let key = match lookup(ENV_JWT_SECRET_KEY) {
            None => None,
            Some(value) if value.is_empty() => None,
            Some(value) if algorithm.family() == AlgorithmFamily::Hmac => Some(value.into_bytes()),
            Some(value) => Some(read_pem(value)?.into_bytes()),
        };
        Ok(Self {
            algorithm,
            key,
            session_field,
        })
    }

    /// Build the [`Verifier`] for these settings.
    pub fn verifier(&self) -> Result<Verifier, ConfigError> {
        Verifier::new(self)
    }
}

fn parse_algorithm(value: &str) -> Result<Algorithm, ConfigError> {
    let algorithm = match value.trim().to_ascii_uppercase().as_str() {
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
                reason: format!("{value:?} is not supported; expected one of {SUPPORTED}"),
            });
        }
    };
    Ok(algorithm)
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

/// Decode `material` into a key for `alg`, refusing anything that could not verify a token.
fn decoding_key(alg: Algorithm, material: &[u8]) -> Result<DecodingKey, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        var: ENV_JWT_SECRET_KEY,
        reason,
    };
    let unusable = |source| ConfigError::Key {
        var: ENV_JWT_SECRET_KEY,
        alg,
        source,
    };
    let family = alg.family();
    if family == AlgorithmFamily::Hmac {
        if pem_label(material).is_some() {
            return Err(invalid(format!(
                "holds a PEM block but JWT_ALG is {alg:?}: a public key used as an HMAC secret \
                 lets anyone forge tokens; set JWT_ALG to the key's algorithm (RS*, PS*, ES*)"
            )));
        }
        return Ok(DecodingKey::from_secret(material));
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
    if let AlgorithmParameters::EllipticCurve(params) = &jwk.algorithm {
        let expected = if alg == Algorithm::ES256 {
            EllipticCurve::P256
        } else {
            EllipticCurve::P384
        };
        if params.curve != expected {
            return Err(invalid(format!(
                "the EC key is on curve {:?}, but {alg:?} needs {expected:?}",
                params.curve
            )));
        }
    }
    Ok(key)
}

/// A JWT that could not be accepted.
///
/// `Display` is meant for clients: it starts with RIG's `could not decode JWT` and tells only
/// whether the token expired, is not yet valid, or is otherwise invalid. [`JwtError::reason`]
/// carries the detail for logs.
#[derive(Debug, Error)]
pub enum JwtError {
    /// No key is configured (`JWT_SECRET_KEY` is unset), so no token can be verified.
    #[error("could not decode JWT: invalid token")]
    NotConfigured,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("could not decode JWT: invalid token")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The token starts with `Bearer `: the raw JWT was expected (RIG refuses these too).
    #[error("could not decode JWT: invalid token")]
    BearerPrefix,
    /// Not three base64url parts, or a header that is not JSON or names an unknown `alg`
    /// (including `none`), or a payload that is not JSON.
    #[error("could not decode JWT: invalid token")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    /// The header's `alg` is not the configured algorithm.
    #[error("could not decode JWT: invalid token")]
    AlgorithmMismatch {
        /// The configured algorithm.
        expected: Algorithm,
        /// The token's `alg`.
        found: Algorithm,
    },
    /// The signature does not match the key.
    #[error("could not decode JWT: invalid token")]
    BadSignature(#[source] jsonwebtoken::errors::Error),
    /// The payload is JSON but not an object.
    #[error("could not decode JWT: invalid token")]
    NotAnObject,
    /// The token has no `exp` claim; tokens that never expire are refused.
    #[error("could not decode JWT: invalid token")]
    MissingExp,
    /// `exp` or `nbf` is not a non-negative number.
    #[error("could not decode JWT: invalid token")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// `exp` has passed (allowing [`LEEWAY_SECS`]).
    #[error("could not decode JWT: token has expired")]
    Expired {
        /// The token's `exp`, in seconds since the Unix epoch.
        exp: u64,
    },
    /// `nbf` has not yet come (allowing [`LEEWAY_SECS`]).
    #[error("could not decode JWT: token is not yet valid")]
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

impl JwtError {
    /// Why the token was refused, for logs. May name claims and algorithms; never contains the
    /// token or the key.
    pub fn reason(&self) -> String {
        match self {
            Self::NotConfigured => format!("no JWT key is configured ({ENV_JWT_SECRET_KEY} unset)"),
            Self::TooLong { len } => {
                format!("token is {len} bytes, over the {MAX_TOKEN_LEN} limit")
            }
            Self::BearerPrefix => "token starts with \"Bearer \"; the raw JWT is expected".into(),
            Self::Malformed(e) => format!("malformed token: {e}"),
            Self::AlgorithmMismatch { expected, found } => {
                format!("token alg is {found:?} but only {expected:?} is accepted")
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

/// Verifies JWTs against the configured key and algorithm. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    algorithm: Algorithm,
    key: Option<DecodingKey>,
    validation: Validation,
    session_field: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.inner.algorithm)
            .field("configured", &self.inner.key.is_some())
            .field("session_field", &self.inner.session_field)
            .finish()
    }
}

impl Verifier {
    /// Decode the key of `config`. Fails when the key cannot verify tokens of the configured
    /// algorithm (wrong family, private key, unparsable PEM, wrong curve, a PEM for HS*).
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let key = config
            .key
            .as_deref()
            .map(|material| decoding_key(config.algorithm, material))
            .transpose()?;
        let mut validation = Validation::new(config.algorithm);
        // Time claims are checked in `verify_at`; RIG checks neither `aud` nor `iss`.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Ok(Self {
            inner: Arc::new(Inner {
                algorithm: config.algorithm,
                key,
                validation,
                session_field: config.session_field.clone(),
            }),
        })
    }

    /// The accepted algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Whether a key is configured (if not, every token is refused).
    pub fn is_configured(&self) -> bool {
        self.inner.key.is_some()
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

    /// Verify `token` as of `now` (seconds since the Unix epoch): size, header `alg`, signature,
    /// claims being an object, `exp` present and `now < exp + LEEWAY_SECS`, and, when present,
    /// `nbf <= now + LEEWAY_SECS`. Does not consult the blacklist. Never panics.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong { len: token.len() });
        }
        if token
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        {
            return Err(JwtError::BearerPrefix);
        }
        let Some(key) = &self.inner.key else {
            return Err(JwtError::NotConfigured);
        };
        let header = jsonwebtoken::decode_header(token).map_err(JwtError::Malformed)?;
        if header.alg != self.inner.algorithm {
            return Err(JwtError::AlgorithmMismatch {
                expected: self.inner.algorithm,
                found: header.alg,
            });
        }
        let data = jsonwebtoken::decode::<Value>(token, key, &self.inner.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => JwtError::Malformed(e),
                _ => JwtError::BadSignature(e),
            },
        )?;
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
