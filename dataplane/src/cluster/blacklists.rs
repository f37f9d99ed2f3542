//! Revocation through `Blacklist` objects in cluster mode, without waiting for the operator.
//!
//! - **Direct watch** ([`watch()`]): every data plane watches `Blacklist` objects in all namespaces
//!   and applies each one the moment it arrives: its session is revoked and the session's live
//!   connections in this process are closed (SSE and long-polling get `rig.session_killed`,
//!   WebSocket close 1000 `Session killed.`), exactly as the API does. A deleted object lifts its
//!   revocation. So revocation reaches every pod within one watch event even with no operator
//!   running; the operator's snapshot lists the same objects later, and the two combine as a
//!   union in the [`crate::sessions::Blacklist`] (a session is revoked while any source says so).
//!   Objects are recorded by `namespace/name`; after a re-list the objects no longer listed are
//!   forgotten. An expired or invalid object revokes nothing (invalid ones are counted in
//!   `rig_blacklist_objects_invalid_total` and logged). Watch errors are logged and counted in
//!   `rig_blacklist_watch_errors_total`; the watcher retries with exponential backoff and the
//!   revocations already applied stay in force meanwhile.
//! - **API writes** ([`revoke_via_object`]): the cluster-mode `POST /v3/session-blacklist`
//!   revokes the session in this process at once (as the object it is about to write, so that
//!   deleting the object lifts it here too), then stores a `Blacklist` object in `POD_NAMESPACE`
//!   named after the session ([`object_name`]), so repeating the request updates the one object
//!   instead of adding another, every pod learns of it and it survives restarts. Like RIG,
//!   re-adding only extends: an existing object with a later `expiresAt` is left as it is. When
//!   the apiserver cannot be written, the revocation stays in force on this pod as an API entry
//!   (it only expires) and the caller is told to retry (`503`): revocation is a security action,
//!   so a failure to spread it must not also undo it locally.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rig_crds::{Blacklist, BlacklistSpec};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use super::kube::{FIELD_MANAGER, Kube};
use crate::metrics::Metrics;
use crate::sessions::Revocations;
use crate::sessions::{self, Source, rfc3339};
use crate::support::error_chain;

/// Prefix of the names of objects written by the API ([`object_name`]).
pub const NAME_PREFIX: &str = "session-";

/// How long an API request waits for the apiserver before answering `503`.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-modify-write rounds before giving up on an object that keeps changing under us.
const STORE_ATTEMPTS: usize = 5;

/// Why a revocation could not be stored as a `Blacklist` object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The apiserver refused or could not be reached (retry later).
    #[error("{op} of Blacklist {name} failed")]
    Api {
        /// What was attempted.
        op: &'static str,
        /// The object's name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No answer in time (5 s; retry later).
    #[error("the apiserver did not answer within {0:?}")]
    Timeout(Duration),
    /// Concurrent writers kept changing the object (retry later).
    #[error("Blacklist {0} kept changing during the update")]
    Contended(String),
    /// The object of that name revokes another session (a hash collision; not expected).
    #[error("Blacklist {name} already revokes another session")]
    Collision {
        /// The object's name.
        name: String,
    },
}

/// The name of the object the API writes for `session`: `session-` and the first 128 bits of
/// its SHA-256 in hex. Deterministic (every pod and every retry picks the same name), a valid
/// Kubernetes name whatever the session id contains, and it does not show the id itself.
pub fn object_name(session: &str) -> String {
    let digest = Sha256::digest(session.as_bytes());
    let mut name = String::with_capacity(NAME_PREFIX.len() + 32);
    name.push_str(NAME_PREFIX);
    for byte in &digest[..16] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// How an object is recorded in the blacklist: `namespace/name`.
pub fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// What a `Blacklist` object means for this process, judged at `wall` (wall clock) / `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Revoke `spec.sessionId` until this instant.
    Revokes(Instant),
    /// `expiresAt` has passed: nothing to revoke.
    Expired,
    /// The spec cannot be used (why).
    Invalid(String),
}

/// Judge `spec` at the wall-clock time `wall`, which is the monotonic instant `now`. Deadlines
/// beyond [`sessions::MAX_VALIDITY`] are capped to it.
pub fn effect(spec: &BlacklistSpec, wall: SystemTime, now: Instant) -> Effect {
    if spec.session_id.is_empty() {
        return Effect::Invalid("sessionId is empty".to_owned());
    }
    match rfc3339::parse(&spec.expires_at) {
        Err(error) => Effect::Invalid(format!("expiresAt: {error}")),
        Ok(expires) => match expires.duration_since(wall) {
            Ok(left) if !left.is_zero() => Effect::Revokes(now + left.min(sessions::MAX_VALIDITY)),
            _ => Effect::Expired,
        },
    }
}

/// Apply the object `key` (`namespace/name`) with `spec`: revoke its session and close the
/// session's connections in this process, or forget the object when it is expired or invalid.
/// Returns how many connections were closed.
pub fn apply(
    revocations: &Revocations,
    metrics: &Metrics,
    key: &str,
    spec: &BlacklistSpec,
) -> usize {
    match effect(spec, SystemTime::now(), Instant::now()) {
        Effect::Revokes(until) => {
            let newly = revocations
                .revoked()
                .apply_object(key, &spec.session_id, until);
            let killed = revocations.kill_session(&spec.session_id);
            tracing::info!(
                object = key,
                session = %spec.session_id,
                newly,
                closed = killed,
                "Blacklist object applied"
            );
            killed
        }
        Effect::Expired => {
            if revocations.revoked().remove_object(key) {
                tracing::info!(object = key, "Blacklist object expired");
            }
            0
        }
        Effect::Invalid(reason) => {
            revocations.revoked().remove_object(key);
            metrics
                .blacklist_objects_invalid
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(object = key, %reason, "Blacklist object ignored: invalid");
            0
        }
    }
}

/// The object `key` was deleted: forget it. Its session stays revoked only while another
/// source (another object, the snapshot, the API) says so.
pub fn delete(revocations: &Revocations, key: &str) {
    if revocations.revoked().remove_object(key) {
        tracing::info!(
            object = key,
            "Blacklist object deleted: its revocation is lifted"
        );
    }
}

/// Watch `Blacklist` objects in all namespaces and apply every change at once (module docs),
/// until `shutdown` turns true. Never returns early: errors are retried with backoff.
pub async fn watch(
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    client: kube::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Blacklist> = Api::all(client);
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    // Objects seen during the current (re-)list; `None` outside a list.
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = crate::support::stopped(&mut shutdown) => break,
        };
        let Some(event) = event else {
            // The watcher's stream does not end; if it ever did, revocations already applied
            // stay in force and the snapshot keeps delivering objects.
            tracing::error!("the Blacklist watch ended");
            break;
        };
        match event {
            Ok(watcher::Event::Apply(object)) => {
                apply(&revocations, &metrics, &key_of(&object), &object.spec);
            }
            Ok(watcher::Event::Delete(object)) => delete(&revocations, &key_of(&object)),
            Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(object)) => {
                let key = key_of(&object);
                // Applied at once, not at the end of the list: revocation does not wait.
                apply(&revocations, &metrics, &key, &object.spec);
                if let Some(listed) = listed.as_mut() {
                    listed.insert(key);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let listed = listed.take().unwrap_or_default();
                let forgotten = revocations
                    .revoked()
                    .retain_objects(|key| listed.contains(key));
                tracing::info!(
                    objects = listed.len(),
                    forgotten,
                    "Blacklist objects listed"
                );
            }
            Err(error) => {
                metrics
                    .blacklist_watch_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %error_chain(&error),
                    "Blacklist watch failed; retrying with backoff"
                );
            }
        }
    }
}

fn key_of(object: &Blacklist) -> String {
    object_key(
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Cluster-mode `POST /v3/session-blacklist` (module docs): revoke `session` for `validity` in
/// this process at once and store it as a `Blacklist` object. On `Err` the revocation is in
/// force here (as an API entry) but not stored; the caller answers `503`.
pub async fn revoke_via_object(
    revocations: &Revocations,
    metrics: &Metrics,
    kube: &Kube,
    session: &str,
    validity: Duration,
) -> Result<(), StoreError> {
    let now = Instant::now();
    let until = now + validity;
    let name = object_name(session);
    let key = object_key(kube.namespace(), &name);
    // Revoke first: the connections close now, whatever the apiserver does. As the object, so
    // that deleting the object lifts it here too; never shortening what the object said.
    let local = revocations.revoked().object_until(&key).max(Some(until));
    revocations
        .revoked()
        .apply_object(&key, session, local.unwrap_or(until));
    revocations.kill_session(session);

    let expires = whole_seconds_after(SystemTime::now(), validity);
    let stored = tokio::time::timeout(STORE_TIMEOUT, store(kube, &name, session, expires)).await;
    match stored.unwrap_or(Err(StoreError::Timeout(STORE_TIMEOUT))) {
        Ok(spec) => {
            // What the object says now (a later `expiresAt` that was already there is kept).
            apply(revocations, metrics, &key, &spec);
            tracing::info!(
                session,
                object = %key,
                expires_at = %spec.expires_at,
                "session revoked through the API and stored as a Blacklist object"
            );
            Ok(())
        }
        Err(error) => {
            revocations.revoke(session, until, Source::Api);
            metrics
                .blacklist_store_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session,
                object = %key,
                error = %error_chain(&error),
                "revocation in force on this pod only: it could not be stored as a Blacklist object"
            );
            Err(error)
        }
    }
}

/// `from + validity`, rounded up to a whole second (`expiresAt` stays readable).
fn whole_seconds_after(from: SystemTime, validity: Duration) -> SystemTime {
    let end = from + validity;
    let since = end.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 3339 text of `t` (UTC, `Z`).
fn format_rfc3339(t: SystemTime) -> String {
    // Beyond jiff's range (year 9999) only with absurd validities, which are capped before.
    Timestamp::try_from(t).unwrap_or(Timestamp::MAX).to_string()
}

/// Create the object `name` revoking `session` until `expires`, or extend an existing one; returns
/// the spec the object has afterwards. Read-modify-write guarded by `resourceVersion`, so
/// concurrent writers (another pod, a repeated request) never shorten each other.
async fn store(
    kube: &Kube,
    name: &str,
    session: &str,
    expires: SystemTime,
) -> Result<BlacklistSpec, StoreError> {
    let api: Api<Blacklist> = Api::namespaced(kube.client(), kube.namespace());
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    let err = |op: &'static str| {
        move |source| StoreError::Api {
            op,
            name: name.to_owned(),
            source,
        }
    };
    let spec = BlacklistSpec {
        session_id: session.to_owned(),
        expires_at: format_rfc3339(expires),
        reason: Some(format!(
            "revoked through POST /v3/session-blacklist (data plane {})",
            kube.pod()
        )),
    };
    for _ in 0..STORE_ATTEMPTS {
        let written = match api.get_opt(name).await.map_err(err("read"))? {
            Some(current) => {
                if current.spec.session_id != session {
                    return Err(StoreError::Collision {
                        name: name.to_owned(),
                    });
                }
                let later = rfc3339::parse(&current.spec.expires_at)
                    .is_ok_and(|current_end| current_end >= expires);
                if later {
                    return Ok(current.spec);
                }
                let mut object = current;
                object.spec = spec.clone();
                // `replace` sends the resourceVersion read above: a concurrent change is a 409.
                api.replace(name, &params, &object).await
            }
            None => {
                let object = Blacklist {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace: Some(kube.namespace().to_owned()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            FIELD_MANAGER.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    spec: spec.clone(),
                    status: None,
                };
                api.create(&params, &object).await
            }
        };
        match written {
            Ok(object) => return Ok(object.spec),
            // Changed or created meanwhile: read again.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => return Err(err("write")(source)),
        }
    }
    Err(StoreError::Contended(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(session: &str, expires_at: &str) -> BlacklistSpec {
        BlacklistSpec {
            session_id: session.to_owned(),
            expires_at: expires_at.to_owned(),
            reason: None,
        }
    }

    #[test]
    fn object_names_are_deterministic_valid_and_distinct() {
        let a = object_name("session-a");
        assert_eq!(a, object_name("session-a"));
        assert_ne!(a, object_name("session-b"));
        assert_eq!(a.len(), NAME_PREFIX.len() + 32);
        // Any session id, even one that is not a valid name, gives a valid DNS-1123 name.
        let odd = object_name("Ünïcode/../ with spaces and UPPER");
        assert!(odd.len() <= 63);
        assert!(
            odd.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{odd}"
        );
        assert_eq!(object_key("ns", &a), format!("ns/{a}"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_revokes_until_expires_at_and_expired_or_invalid_ones_do_not() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // 2027-01-15T08:00:00Z
        let now = Instant::now();
        assert_eq!(
            effect(&spec("x", "2027-01-15T08:01:00Z"), wall, now),
            Effect::Revokes(now + Duration::from_secs(60))
        );
        assert_eq!(
            effect(&spec("x", "2027-01-15T08:00:00Z"), wall, now),
            Effect::Expired
        );
        assert_eq!(
            effect(&spec("x", "2020-01-01T00:00:00Z"), wall, now),
            Effect::Expired
        );
        assert_eq!(
            effect(&spec("x", "9999-12-31T23:59:59Z"), wall, now),
            Effect::Revokes(now + sessions::MAX_VALIDITY),
            "capped"
        );
        assert!(matches!(
            effect(&spec("x", "tomorrow"), wall, now),
            Effect::Invalid(reason) if reason.starts_with("expiresAt: not an RFC 3339 date-time")
        ));
        assert!(matches!(
            effect(&spec("", "2027-01-15T08:01:00Z"), wall, now),
            Effect::Invalid(_)
        ));
    }

    #[test]
    fn expires_at_is_whole_seconds_rfc3339_and_reads_back() {
        let from = UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        let end = whole_seconds_after(from, Duration::from_secs(60));
        assert_eq!(end, UNIX_EPOCH + Duration::from_secs(1_800_000_061));
        let text = format_rfc3339(end);
        assert_eq!(text, "2027-01-15T08:01:01Z");
        assert_eq!(rfc3339::parse(&text), Ok(end));
        assert_eq!(
            whole_seconds_after(UNIX_EPOCH + Duration::from_secs(5), Duration::from_secs(1)),
            UNIX_EPOCH + Duration::from_secs(6),
            "already whole"
        );
    }
}
