//! Revocations: revoking a session refuses its tokens everywhere in this process (the revoked
//! set, [`Blacklist`]) and closes its live connections at once (the fan-out). Fed by the RIG API
//! (`POST /v3/session-blacklist`), by `Blacklist` objects as a whole set (standalone manifests,
//! operator snapshots) and one by one (the cluster-mode watch).

use std::sync::Arc;

use crate::auth::revoked::{Blacklist, Source};
use crate::connections::fanout::Fanout;

use super::MAX_VALIDITY;

/// The revocation subsystem's handle (module docs).
#[derive(Debug)]
pub struct Revocations {
    revoked: Arc<Blacklist>,
    fanout: Arc<Fanout>,
}

impl Revocations {
    /// Revocations into `revoked`, closing connections of `fanout`.
    pub fn new(revoked: Arc<Blacklist>, fanout: Arc<Fanout>) -> Self {
        Self { revoked, fanout }
    }

    /// The revoked sessions.
    pub fn revoked(&self) -> &Arc<Blacklist> {
        &self.revoked
    }

    /// Close every connection of `session` in this process ([`Fanout::kill_session`]).
    pub fn kill_session(&self, session: &str) -> usize {
        self.fanout.kill_session(session)
    }

    /// Revoke `session` until `until` and close its connections in this process; returns how
    /// many were closed.
    pub fn revoke(&self, session: &str, until: tokio::time::Instant, source: Source) -> usize {
        let newly = self.revoked.revoke(session, until, source);
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!(
            session,
            ?source,
            newly,
            validity_secs = left.as_secs(),
            "session revoked"
        );
        self.fanout.kill_session(session)
    }

    /// Make `entries` (session id, end of the revocation) the complete set of revocations from
    /// `Blacklist` objects, and close the connections of every session they revoke. Entries
    /// already expired are skipped; a session no longer listed stops being revoked unless the API
    /// revoked it too. The wall-clock end is converted to the monotonic clock once, here.
    pub fn apply_manifest_blacklists(&self, entries: &[(String, std::time::SystemTime)]) {
        let wall = std::time::SystemTime::now();
        let now = tokio::time::Instant::now();
        let active: Vec<(Arc<str>, tokio::time::Instant)> = entries
            .iter()
            .filter_map(|(session, expires)| {
                let left = expires.duration_since(wall).ok()?;
                let left = left.min(MAX_VALIDITY);
                Some((Arc::from(session.as_str()), now + left))
            })
            .collect();
        self.revoked.replace_manifest(&active);
        tracing::info!(
            listed = entries.len(),
            active = active.len(),
            "Blacklist objects applied"
        );
        for (session, _) in &active {
            self.fanout.kill_session(session);
        }
    }
}
