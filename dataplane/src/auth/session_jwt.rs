//! End-user JWTs as every entry point uses them: verified ([`super::jwt::Verifier`]) and refused
//! when their session is revoked ([`super::revoked::Blacklist`]). One handle, shared by the
//! connection endpoints, the proxy's secured routes and the access checks, so a revoked session
//! is refused everywhere the same way.

use std::sync::Arc;

use super::jwt::{Claims, JwtError, Verifier};
use super::revoked::Blacklist;

/// JWT verification with revocation (module docs).
#[derive(Debug)]
pub struct Jwt {
    verifier: Verifier,
    revoked: Arc<Blacklist>,
}

impl Jwt {
    /// Verification by `verifier`, refusing the sessions `revoked` lists.
    pub fn new(verifier: Verifier, revoked: Arc<Blacklist>) -> Self {
        Self { verifier, revoked }
    }

    /// Verify a raw JWT (signature, expiry, algorithm) and refuse it when its session is revoked
    /// ([`JwtError::Revoked`]). Every use of end-user JWTs goes through here.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let claims = self.verifier.verify(token)?;
        if let Some(session) = self.verifier.session_id(&claims)
            && self.revoked.is_revoked(&session)
        {
            let error = JwtError::Revoked { session };
            self.verifier.record_refusal(&error);
            return Err(error);
        }
        Ok(claims)
    }

    /// The session of verified `claims` (the claim at `JWT_SESSION_FIELD`), if it has one.
    pub fn session_of(&self, claims: &Claims) -> Option<Arc<str>> {
        self.verifier.session_id(claims).map(Arc::from)
    }

    /// The verifier (key epochs, metrics, the JWKS refresher).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The revoked sessions.
    pub fn revoked(&self) -> &Arc<Blacklist> {
        &self.revoked
    }
}
