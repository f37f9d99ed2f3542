//! Who may do what: end-user JWTs and the data plane's own connection tokens.
//!
//! - [`jwt`] verifies the JWTs frontends send (query `jwt`, `Authorization: Bearer`), with RIG's
//!   `JWT_SECRET_KEY` / `JWT_ALG` / `JWT_SESSION_FIELD`. Keys are decoded once, when the
//!   [`jwt::Verifier`] is built; a bad key stops the process at start-up.
//! - [`jwks`] holds keys from a JSON Web Key Set instead (`JWT_JWKS`, a file or URL), refreshed on
//!   an interval and on an unknown `kid`, keeping the last good set when a refresh fails.
//! - [`check`] runs one access check (`no_check`, `jwt_validation`, an external service);
//!   [`access`] picks, per event type, which checks a subscription or a submission must pass.
//! - [`revoked`] holds the revoked sessions; [`Jwt`] verifies tokens and refuses revoked ones.
//! - [`token`] mints and checks the connection token handed to each SSE / WebSocket / long-polling
//!   client: opaque, URL-safe, HMAC-authenticated, and naming the pod that owns the connection.
//!
//! Both read their configuration through a `lookup` function (the environment, or a map in tests),
//! like [`crate::config`]. Start-up problems are [`ConfigError`]s; a refused token is the module's
//! own error ([`jwt::JwtError`], [`token::TokenError`]), always answered with a 4xx.

pub mod access;
pub mod check;
pub mod jwks;
pub mod jwt;
pub mod revoked;
pub mod session_jwt;
pub mod token;

use std::path::PathBuf;

use thiserror::Error;

pub use jwt::{Claims, JwtConfig, JwtError, Verifier, bearer_tokens};
pub use revoked::{Blacklist, Source};
pub use session_jwt::Jwt;
pub use token::{ConnectionToken, TokenCodec, TokenError, TokenKey};

/// Authentication configuration that cannot be used; the process must not start with it.
///
/// Messages name the variable and never include a secret (an HMAC secret, `RIG_TOKEN_KEY`); a key
/// file's path or an unsupported `JWT_ALG` value may be shown.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The variable is set but its value is not acceptable.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// What is wrong, without the value.
        reason: String,
    },
    /// The variable names a key file that cannot be read.
    #[error("{var}: cannot read the key file {path:?}")]
    KeyFile {
        /// The environment variable.
        var: &'static str,
        /// The file it names.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// The key material does not decode as a key for the configured algorithm.
    #[error("{var} does not hold a usable {alg:?} key")]
    Key {
        /// The environment variable.
        var: &'static str,
        /// The configured algorithm.
        alg: jsonwebtoken::Algorithm,
        /// What the JWT library said about the key.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// `JWT_JWKS` names a key set that cannot be used.
    #[error("JWT_JWKS: cannot load the key set")]
    Jwks {
        /// Why.
        #[source]
        source: jwks::JwksError,
    },
    /// The operating system's random number generator failed (no key or process id could be made).
    #[error("cannot draw random bytes for {what}")]
    Random {
        /// What the randomness was for.
        what: &'static str,
        /// The OS error.
        #[source]
        source: getrandom::Error,
    },
}

/// Fill `buf` from the OS random number generator.
fn random_bytes(buf: &mut [u8], what: &'static str) -> Result<(), ConfigError> {
    getrandom::fill(buf).map_err(|source| ConfigError::Random { what, source })
}

/// The value of `var`, with an empty or blank value counting as unset (as in [`crate::config`]).
fn non_empty(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var).filter(|value| !value.trim().is_empty())
}
