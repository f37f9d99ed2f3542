//! The session blacklist of this process: session id → when its revocation ends.
//!
//! - **Three sources, one union.** Entries come from the RIG API (`POST /v3/session-blacklist`),
//!   from `Blacklist` objects delivered as a whole set (standalone manifests, or the operator's
//!   snapshot in cluster mode), and from `Blacklist` objects this process watches one by one
//!   (cluster mode, [`crate::cluster::blacklists`]). Each entry keeps the deadline of each source
//!   — per object for the watched ones, since several objects may name one session — and the
//!   session is revoked until the latest of them: it stays revoked while any source says so.
//!   The manifest deadlines are replaced as a whole on every reload
//!   ([`Blacklist::replace_manifest`]); a watched object is applied and removed by its
//!   `namespace/name` ([`Blacklist::apply_object`], [`Blacklist::remove_object`]). So a deleted
//!   `Blacklist` object stops revoking once no source lists it, while a revocation made through
//!   the API only expires.
//! - **Extending, never shortening.** Revoking an already revoked session through the API keeps
//!   the later deadline (RIG: "re-adding extends it"); a manifest says exactly when its entry
//!   ends, so editing `expiresAt` may also bring it forward.
//! - **Memory bounded by expiry.** Deadlines are also kept in an ordered set; one shared sweeper
//!   task ([`Blacklist::run_sweeper`]) sleeps until the earliest deadline and removes what has
//!   expired (with the watched objects recorded in the entry). There is no timer per entry, and
//!   an expired entry never revokes even before the sweeper has removed it
//!   ([`Blacklist::is_revoked`] compares the deadline).
//! - **Hot path.** [`Blacklist::is_revoked`] runs for every JWT verified; it takes a read lock
//!   and does one hash lookup. Writers (revocations, reloads, sweeps) are rare.
//!
//! Deadlines are `tokio::time::Instant`s (monotonic, and paused in tests); wall-clock deadlines
//! (`expiresAt`) are converted when they are applied.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How long the sweeper sleeps when nothing is due (it is woken earlier by new entries).
const IDLE_SWEEP: Duration = Duration::from_secs(3600);

/// Where a revocation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The RIG API (`POST /v3/session-blacklist`).
    Api,
    /// `Blacklist` objects delivered as a whole set: the standalone manifests, or the operator's
    /// snapshot in cluster mode. (Objects watched one by one are recorded per object instead:
    /// [`Blacklist::apply_object`].)
    Manifest,
}

/// The deadlines of one session, per source.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entry {
    api: Option<Instant>,
    manifest: Option<Instant>,
    /// Watched `Blacklist` objects naming this session: `namespace/name` and deadline. Usually
    /// none or one.
    objects: Vec<(Arc<str>, Instant)>,
}

impl Entry {
    /// When the revocation ends (the latest deadline); `None` when no source revokes.
    fn until(&self) -> Option<Instant> {
        let objects = self.objects.iter().map(|(_, until)| *until).max();
        self.api.max(self.manifest).max(objects)
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Arc<str>, Entry>,
    /// `(until, session)` of every entry, earliest first, for the sweeper.
    expiries: BTreeSet<(Instant, Arc<str>)>,
    /// Watched object (`namespace/name`) → the session it revokes, so that a deletion finds its
    /// entry. Holds exactly the objects recorded in `entries`.
    objects: HashMap<Arc<str>, Arc<str>>,
}

impl Inner {
    /// Whether `session` is revoked at `now`.
    fn revoked_at(&self, session: &str, now: Instant) -> bool {
        self.entries
            .get(session)
            .and_then(Entry::until)
            .is_some_and(|until| until > now)
    }

    /// Forget watched object `object`; whether it was recorded.
    fn remove_object(&mut self, object: &str) -> bool {
        let Some(session) = self.objects.remove(object) else {
            return false;
        };
        self.update(&session, |entry| {
            entry.objects.retain(|(o, _)| &**o != object);
        });
        true
    }

    /// Change the entry of `session` with `change`, keeping `expiries` in step; an entry that no
    /// source revokes any more is removed.
    fn update(&mut self, session: &str, change: impl FnOnce(&mut Entry)) {
        let (key, mut entry) = match self.entries.remove_entry(session) {
            Some(found) => found,
            None => (Arc::from(session), Entry::default()),
        };
        let before = entry.until();
        change(&mut entry);
        let after = entry.until();
        if before != after {
            if let Some(until) = before {
                self.expiries.remove(&(until, key.clone()));
            }
            if let Some(until) = after {
                self.expiries.insert((until, key.clone()));
            }
        }
        if after.is_some() {
            self.entries.insert(key, entry);
        }
    }
}

/// The session blacklist (module docs).
#[derive(Debug)]
pub struct Blacklist {
    inner: RwLock<Inner>,
    /// Wakes the sweeper when the earliest deadline may have changed.
    changed: Notify,
    metrics: Arc<Metrics>,
}

impl Blacklist {
    /// An empty blacklist that reports its size in `rig_blacklist_entries`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            changed: Notify::new(),
            metrics,
        }
    }

    /// Revoke `session` until `until` on behalf of `source`. An API revocation of a session that
    /// is already revoked keeps the later deadline; a manifest revocation sets the manifest
    /// deadline as given. Returns whether the session was not revoked before (at `now`).
    pub fn revoke(&self, session: &str, until: Instant, source: Source) -> bool {
        let now = Instant::now();
        let was_revoked;
        {
            let mut inner = self.write();
            was_revoked = inner.revoked_at(session, now);
            inner.update(session, |entry| match source {
                Source::Api => entry.api = entry.api.max(Some(until)),
                Source::Manifest => entry.manifest = Some(until),
            });
            self.report(&inner);
        }
        self.changed.notify_one();
        !was_revoked
    }

    /// Whether `session` is revoked now.
    pub fn is_revoked(&self, session: &str) -> bool {
        self.is_revoked_at(session, Instant::now())
    }

    /// Whether `session` is revoked at `now` (its deadline is later).
    pub fn is_revoked_at(&self, session: &str, now: Instant) -> bool {
        self.read().revoked_at(session, now)
    }

    /// Record that the watched `Blacklist` object `object` (`namespace/name`) revokes `session`
    /// until `until`, replacing what the object said before: its deadline may move either way,
    /// and a session it no longer names loses it. Returns whether the session was not revoked
    /// before (at `now`).
    pub fn apply_object(&self, object: &str, session: &str, until: Instant) -> bool {
        let was_revoked;
        {
            let mut inner = self.write();
            was_revoked = inner.revoked_at(session, Instant::now());
            if inner
                .objects
                .get(object)
                .is_some_and(|named| &**named != session)
            {
                inner.remove_object(object);
            }
            let object: Arc<str> = match inner.objects.get_key_value(object) {
                Some((key, _)) => key.clone(),
                None => Arc::from(object),
            };
            inner.update(session, |entry| {
                match entry.objects.iter_mut().find(|(o, _)| *o == object) {
                    Some(slot) => slot.1 = until,
                    None => entry.objects.push((object.clone(), until)),
                }
            });
            // `update` kept the entry: it now lists the object.
            let session = match inner.entries.get_key_value(session) {
                Some((key, _)) => key.clone(),
                None => Arc::from(session),
            };
            inner.objects.insert(object, session);
            self.report(&inner);
        }
        self.changed.notify_one();
        !was_revoked
    }

    /// Forget the watched object `object` (it was deleted, or no longer revokes): its session
    /// stays revoked only if another source still says so. Returns whether it was recorded.
    pub fn remove_object(&self, object: &str) -> bool {
        let removed;
        {
            let mut inner = self.write();
            removed = inner.remove_object(object);
            self.report(&inner);
        }
        self.changed.notify_one();
        removed
    }

    /// Forget every watched object for which `keep` is false (after a re-list, the objects not
    /// listed any more); returns how many were forgotten.
    pub fn retain_objects(&self, keep: impl Fn(&str) -> bool) -> usize {
        let dropped;
        {
            let mut inner = self.write();
            let gone: Vec<Arc<str>> = inner
                .objects
                .keys()
                .filter(|object| !keep(object))
                .cloned()
                .collect();
            dropped = gone.len();
            for object in gone {
                inner.remove_object(&object);
            }
            self.report(&inner);
        }
        self.changed.notify_one();
        dropped
    }

    /// The deadline recorded for the watched object `object`, if any.
    pub fn object_until(&self, object: &str) -> Option<Instant> {
        let inner = self.read();
        let session = inner.objects.get(object)?;
        inner
            .entries
            .get(session)?
            .objects
            .iter()
            .find(|(o, _)| &**o == object)
            .map(|(_, until)| *until)
    }

    /// Watched objects recorded (including expired ones the sweeper has not removed yet).
    pub fn object_count(&self) -> usize {
        self.read().objects.len()
    }

    /// Make `entries` the complete set of manifest revocations: listed sessions get their
    /// manifest deadline, every other session loses its manifest deadline (and is no longer
    /// revoked unless the API revoked it too).
    pub fn replace_manifest(&self, entries: &[(Arc<str>, Instant)]) {
        {
            let mut inner = self.write();
            let listed: HashMap<&str, Instant> = entries.iter().map(|(s, t)| (&**s, *t)).collect();
            let dropped: Vec<Arc<str>> = inner
                .entries
                .iter()
                .filter(|(session, entry)| {
                    entry.manifest.is_some() && !listed.contains_key(&***session)
                })
                .map(|(session, _)| session.clone())
                .collect();
            for session in dropped {
                inner.update(&session, |entry| entry.manifest = None);
            }
            for (session, until) in &listed {
                inner.update(session, |entry| entry.manifest = Some(*until));
            }
            self.report(&inner);
        }
        self.changed.notify_one();
    }

    /// Remove every entry whose deadline is not after `now`; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut inner = self.write();
        let mut removed = 0;
        while inner
            .expiries
            .first()
            .is_some_and(|(until, _)| *until <= now)
        {
            let Some((_, session)) = inner.expiries.pop_first() else {
                break;
            };
            // The entry's deadline is the latest of its sources', so all have passed.
            if let Some(entry) = inner.entries.remove(&session) {
                for (object, _) in &entry.objects {
                    inner.objects.remove(object);
                }
            }
            removed += 1;
        }
        if removed > 0 {
            self.report(&inner);
            tracing::debug!(
                removed,
                remaining = inner.entries.len(),
                "expired session revocations removed"
            );
        }
        removed
    }

    /// Entries held (revoked sessions, plus expired ones the sweeper has not removed yet).
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared sweeper: remove expired entries as their deadlines pass, until `shutdown`.
    pub async fn run_sweeper(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.read().expiries.first().map(|(until, _)| *until);
            let wake = next.unwrap_or_else(|| Instant::now() + IDLE_SWEEP);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => { self.sweep(Instant::now()); }
                _ = self.changed.notified() => {}
                _ = crate::support::stopped(&mut shutdown) => break,
            }
        }
    }

    fn report(&self, inner: &Inner) {
        self.metrics
            .blacklist_entries
            .store(inner.entries.len() as u64, Ordering::Relaxed);
    }

    // A poisoned lock means a panic while holding it; every update leaves the maps consistent
    // (`update` writes both before returning), so keep serving.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blacklist() -> (Arc<Blacklist>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (Arc::new(Blacklist::new(metrics.clone())), metrics)
    }

    fn gauge(metrics: &Metrics) -> u64 {
        metrics.blacklist_entries.load(Ordering::Relaxed)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_holds_until_its_deadline_and_readding_only_extends() {
        let (bl, metrics) = blacklist();
        let t0 = Instant::now();
        assert!(!bl.is_revoked("x"));
        assert!(bl.revoke("x", t0 + secs(10), Source::Api), "newly revoked");
        assert!(bl.is_revoked("x"));
        assert!(!bl.is_revoked("y"));
        assert_eq!(gauge(&metrics), 1);
        assert!(
            !bl.revoke("x", t0 + secs(5), Source::Api),
            "already revoked"
        );
        assert!(
            bl.is_revoked_at("x", t0 + secs(9)),
            "a shorter re-add does not shorten"
        );
        assert!(!bl.is_revoked_at("x", t0 + secs(10)));
        bl.revoke("x", t0 + secs(20), Source::Api);
        assert!(
            bl.is_revoked_at("x", t0 + secs(19)),
            "a longer re-add extends"
        );
        assert!(!bl.is_revoked_at("x", t0 + secs(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_removes_expired_entries_when_they_expire() {
        let (bl, metrics) = blacklist();
        let (_stop_tx, stop) = watch::channel(false);
        let sweeper = tokio::spawn(bl.clone().run_sweeper(stop));
        let t0 = Instant::now();
        bl.revoke("short", t0 + secs(1), Source::Api);
        bl.revoke("long", t0 + secs(100), Source::Api);
        bl.revoke("extended", t0 + secs(1), Source::Api);
        bl.revoke("extended", t0 + secs(50), Source::Api);
        assert_eq!(bl.len(), 3);
        tokio::time::sleep(secs(2)).await;
        assert!(!bl.is_revoked("short"));
        assert_eq!(bl.len(), 2, "the expired entry is gone");
        assert_eq!(gauge(&metrics), 2);
        tokio::time::sleep(secs(49)).await;
        assert_eq!(
            bl.len(),
            1,
            "the extension moved the deadline, not a second entry"
        );
        assert!(bl.is_revoked("long"));
        // A new entry earlier than the sweeper's current wake-up is still swept on time.
        bl.revoke("soon", Instant::now() + secs(1), Source::Api);
        tokio::time::sleep(secs(2)).await;
        assert_eq!(bl.len(), 1);
        tokio::time::sleep(secs(100)).await;
        assert!(bl.is_empty());
        assert_eq!(gauge(&metrics), 0);
        sweeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_entry_never_revokes_even_before_the_sweep() {
        let (bl, _) = blacklist();
        let t0 = Instant::now();
        bl.revoke("x", t0 + secs(1), Source::Api);
        tokio::time::advance(secs(1)).await;
        assert!(!bl.is_revoked("x"));
        assert_eq!(bl.len(), 1, "no sweeper ran");
        assert_eq!(bl.sweep(Instant::now()), 1);
        assert!(bl.is_empty());
        assert!(
            bl.revoke("x", Instant::now() + secs(1), Source::Api),
            "revoked anew"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn manifest_entries_are_replaced_as_a_whole_and_api_entries_survive() {
        let (bl, metrics) = blacklist();
        let t0 = Instant::now();
        let m = |s: &str, n: u64| (Arc::<str>::from(s), t0 + secs(n));
        bl.replace_manifest(&[m("a", 100), m("b", 100)]);
        bl.revoke("b", t0 + secs(10), Source::Api);
        bl.revoke("c", t0 + secs(10), Source::Api);
        assert!(bl.is_revoked("a") && bl.is_revoked("b") && bl.is_revoked("c"));
        assert!(
            bl.is_revoked_at("b", t0 + secs(50)),
            "the later source wins"
        );
        assert_eq!(gauge(&metrics), 3);

        // `a` was deleted from the manifests, `b` shortened, `d` added.
        bl.replace_manifest(&[m("b", 5), m("d", 100)]);
        assert!(!bl.is_revoked("a"), "a deleted Blacklist no longer revokes");
        assert!(
            bl.is_revoked_at("b", t0 + secs(9)),
            "the API deadline remains"
        );
        assert!(!bl.is_revoked_at("b", t0 + secs(10)));
        assert!(bl.is_revoked("c") && bl.is_revoked("d"));
        assert_eq!(bl.len(), 3);

        bl.replace_manifest(&[]);
        assert!(!bl.is_revoked("d"));
        assert!(
            bl.is_revoked("b") && bl.is_revoked("c"),
            "API entries are untouched"
        );
        assert_eq!(bl.len(), 2);
        assert_eq!(gauge(&metrics), 2);
        assert_eq!(bl.sweep(t0 + secs(10)), 2);
        assert!(bl.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_object_revokes_until_deleted_and_sources_combine_as_a_union() {
        let (bl, metrics) = blacklist();
        let t0 = Instant::now();
        assert!(
            bl.apply_object("ns/a", "x", t0 + secs(100)),
            "newly revoked"
        );
        assert!(bl.is_revoked("x"));
        assert_eq!(gauge(&metrics), 1);
        // The same object applied again (a watch event after the local apply) changes nothing.
        assert!(!bl.apply_object("ns/a", "x", t0 + secs(100)));
        assert_eq!(bl.object_count(), 1);
        // A second object and the other two sources name the same session.
        bl.apply_object("other/b", "x", t0 + secs(50));
        bl.revoke("x", t0 + secs(10), Source::Api);
        let m = |s: &str, n: u64| (Arc::<str>::from(s), t0 + secs(n));
        bl.replace_manifest(&[m("x", 20)]);
        assert_eq!(bl.len(), 1, "one entry per session");

        assert!(bl.remove_object("ns/a"));
        assert!(!bl.remove_object("ns/a"), "already gone");
        assert!(
            bl.is_revoked_at("x", t0 + secs(49)),
            "the other object still revokes"
        );
        assert!(!bl.is_revoked_at("x", t0 + secs(50)));
        assert!(bl.remove_object("other/b"));
        assert!(
            bl.is_revoked_at("x", t0 + secs(19)),
            "the snapshot still lists it"
        );
        bl.replace_manifest(&[]);
        assert!(
            bl.is_revoked_at("x", t0 + secs(9)),
            "API entries only expire"
        );
        assert!(!bl.is_revoked_at("x", t0 + secs(10)));
        assert_eq!(bl.sweep(t0 + secs(10)), 1);
        assert!(bl.is_empty());
        assert_eq!(gauge(&metrics), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deleting_the_only_source_lifts_at_once_and_a_moved_deadline_is_honoured() {
        let (bl, _) = blacklist();
        let t0 = Instant::now();
        bl.apply_object("ns/a", "x", t0 + secs(100));
        bl.apply_object("ns/a", "x", t0 + secs(5));
        assert!(
            !bl.is_revoked_at("x", t0 + secs(5)),
            "an edited expiresAt may bring the end forward"
        );
        bl.remove_object("ns/a");
        assert!(!bl.is_revoked("x"));
        assert!(bl.is_empty());
        assert_eq!(bl.object_count(), 0);
        // An object whose session changed stops revoking the old one.
        bl.apply_object("ns/b", "y", t0 + secs(100));
        bl.apply_object("ns/b", "z", t0 + secs(100));
        assert!(!bl.is_revoked("y") && bl.is_revoked("z"));
        assert_eq!((bl.len(), bl.object_count()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_frees_watched_objects_and_a_relist_forgets_the_unlisted() {
        let (bl, _) = blacklist();
        let t0 = Instant::now();
        bl.apply_object("ns/short", "s", t0 + secs(1));
        bl.apply_object("ns/long", "l", t0 + secs(100));
        bl.apply_object("ns/gone", "g", t0 + secs(100));
        assert_eq!(bl.sweep(t0 + secs(1)), 1);
        assert_eq!(bl.object_count(), 2, "the expired object's record is freed");
        assert!(!bl.remove_object("ns/short"), "a later deletion is a no-op");

        assert_eq!(bl.retain_objects(|o| o == "ns/long"), 1);
        assert!(bl.is_revoked("l") && !bl.is_revoked("g"));
        assert_eq!((bl.len(), bl.object_count()), (1, 1));
    }
}
