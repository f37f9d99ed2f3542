//! Status writing: each object's `Accepted`, `Programmed` and `Ready` conditions, the
//! `programmed` counts (`2/2`) and `observedGeneration`, from the compiler's verdicts and the
//! data planes' reports (see [`crate::programmed`]), by the Lease holder only.
//!
//! Writes are server-side applies on the `status` subresource with the field manager
//! `rig-operator`, so the operator owns exactly the status fields and never touches `spec` (Git
//! and Argo CD own that). Before writing, the desired status is compared with the object's status
//! in the reflector store; an object that already says the same is not written again, which makes
//! the loop idempotent (a status write comes back as a watch event, compiles to the same verdict,
//! and stops there). Verdicts for an older generation than the store's are skipped: the next
//! compilation brings the fresh one. Failed writes are retried after a pause, as a whole pass.
//! A rejection also becomes a `Warning` Kubernetes Event on the object (once per status change,
//! so `kubectl describe` explains it without a stream of repeats). Until the report Leases have
//! been listed once, nothing is written for up to [`REPORTS_GRACE`] (so one write per object
//! carries all three conditions), then only `Accepted` (a new leader must not flip every object
//! to "no data planes" and back; and `Accepted` must not wait on a Lease watch that fails). A pass writes a few objects at a time ([`WRITE_CONCURRENCY`]),
//! so 10,000 `Blacklist`s do not take minutes of round trips.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use rig_crds::condition::{ACCEPTED, PROGRAMMED, READY};
use rig_crds::{Condition, ConditionStatus, RigStatus};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::compile::{Kind, Outcome, Verdict};
use crate::config::FIELD_MANAGER;
use crate::controller::{Round, Stores};
use crate::lease::error_chain;
use crate::metrics::Metrics;
use crate::programmed::{self, Programmed, Reports};

/// Pause before a pass is retried after a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long the writer waits for the first list of the report Leases before it writes
/// `Accepted` alone.
pub const REPORTS_GRACE: Duration = Duration::from_secs(10);
/// Status writes in flight at once during a pass.
pub const WRITE_CONCURRENCY: usize = 8;

/// The `Accepted` condition a verdict calls for (without a transition time).
pub fn accepted_condition(verdict: &Verdict) -> (ConditionStatus, &'static str, String) {
    match &verdict.outcome {
        Outcome::Accepted => (
            ConditionStatus::True,
            "Accepted",
            "valid; compiled into the configuration snapshot".into(),
        ),
        Outcome::Expired { at } => (
            ConditionStatus::True,
            "Expired",
            format!("expired at {at}; no longer part of the configuration snapshot"),
        ),
        Outcome::Rejected { reason, message } => (ConditionStatus::False, reason, message.clone()),
    }
}

/// The status to write for `verdict` (and, once the reports are known, `programmed`) given the
/// object's current status, or `None` when the current status already says it. `Programmed` and
/// `Ready` are left as they are when `programmed` is `None`; unknown condition types are kept.
/// A condition's transition time moves only when its status changes; every condition carries the
/// verdict's generation.
pub fn desired_status(
    verdict: &Verdict,
    programmed: Option<&Programmed>,
    current: Option<&RigStatus>,
    now: Timestamp,
) -> Option<RigStatus> {
    let generation = verdict.generation;
    let now = now
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(now)
        .to_string();
    let mut next = current.cloned().unwrap_or_default();
    next.observed_generation = Some(generation);
    let (status, reason, message) = accepted_condition(verdict);
    set_condition(
        &mut next,
        ACCEPTED,
        (status, reason, message),
        generation,
        &now,
    );
    if let Some(p) = programmed {
        let ready = programmed::ready(status, reason, p);
        set_condition(
            &mut next,
            PROGRAMMED,
            (p.status, p.reason, p.message.clone()),
            generation,
            &now,
        );
        set_condition(&mut next, READY, ready, generation, &now);
        next.programmed = p.counts.clone();
    }
    (Some(&next) != current).then_some(next)
}

/// Put a condition in place (Accepted, Programmed, Ready come in that order when new).
fn set_condition(
    status: &mut RigStatus,
    type_: &str,
    (value, reason, message): (ConditionStatus, &str, String),
    generation: i64,
    now: &str,
) {
    let slot = status.conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match slot.map(|i| &status.conditions[i]) {
        Some(old) if old.status == value => old.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    let condition = Condition {
        type_: type_.into(),
        status: value,
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: Some(generation),
    };
    match slot {
        Some(i) => status.conditions[i] = condition,
        None => {
            let order = |t: &str| [ACCEPTED, PROGRAMMED, READY].iter().position(|x| *x == t);
            let at = status
                .conditions
                .iter()
                .position(|c| order(&c.type_).is_none_or(|o| Some(o) > order(type_)))
                .unwrap_or(status.conditions.len());
            status.conditions.insert(at, condition);
        }
    }
}

/// Events carry at most 1 kB of note.
const NOTE_LIMIT: usize = 1000;

/// Write status while `leading` is true, whenever a compilation or the data-plane reports come
/// in, or leadership is gained. `identity` names this replica on the Events it records.
pub async fn run(
    client: kube::Client,
    identity: String,
    stores: Stores,
    mut rounds: watch::Receiver<Arc<Round>>,
    mut reports: watch::Receiver<Option<Arc<Reports>>>,
    mut leading: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let writer = Writer {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity),
            },
        ),
        client,
        metrics,
        written: Default::default(),
    };
    let mut failed = false;
    let grace = tokio::time::Instant::now() + REPORTS_GRACE;
    loop {
        let lead = *leading.borrow_and_update();
        writer.metrics.set_leader(lead);
        let waiting = reports.borrow().is_none() && tokio::time::Instant::now() < grace;
        if lead && !waiting {
            let round = rounds.borrow_and_update().clone();
            let reports = reports.borrow_and_update().clone();
            failed = !write_pass(&writer, &stores, &round, reports.as_deref(), &leading).await;
        }
        tokio::select! {
            changed = rounds.changed() => if changed.is_err() { return },
            changed = reports.changed() => if changed.is_err() { return },
            changed = leading.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY_AFTER), if failed => {}
            _ = tokio::time::sleep_until(grace), if waiting => {}
        }
    }
}

/// What a status write needs.
struct Writer {
    client: kube::Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Per object, the `resourceVersion` it had when we last wrote its status and a hash of what
    /// we wrote. Until the watch brings our write back, the store still shows the old status; a
    /// pass in that window would write the same status again.
    written: std::sync::Mutex<Written>,
}

/// (kind, namespace, name) → (`resourceVersion` before our write, hash of the status written).
type Written = HashMap<(Kind, String, String), (Option<String>, u64)>;

impl Writer {
    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A hash of a status, to recognise a write we already made. Transition times are left out: a
/// status computed a second later differs only there, and what we wrote stands.
fn status_hash(status: &RigStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut status = status.clone();
    for condition in &mut status.conditions {
        condition.last_transition_time.clear();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&status)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// One pass over all verdicts; false when a write failed (the pass will be retried).
async fn write_pass(
    writer: &Writer,
    stores: &Stores,
    round: &Round,
    reports: Option<&Reports>,
    leading: &watch::Receiver<bool>,
) -> bool {
    // A hand-rolled `buffer_unordered`: the combinator's closure trips the compiler's
    // higher-ranked lifetime check once this future is spawned.
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut ok = true;
    for (verdict, entered) in &round.verdicts {
        if in_flight.len() >= WRITE_CONCURRENCY
            && let Some(written) = in_flight.next().await
        {
            ok &= written;
        }
        let programmed =
            reports.map(|r| programmed::programmed(&verdict.outcome, *entered, &round.versions, r));
        in_flight.push(write_item(writer, stores, verdict, programmed, leading));
    }
    while let Some(written) = in_flight.next().await {
        ok &= written;
    }
    // Forget objects that are gone (the verdicts are sorted by kind, namespace, name).
    writer.written().retain(|(kind, ns, name), _| {
        round
            .verdicts
            .binary_search_by(|(v, _)| {
                (v.kind, v.namespace.as_str(), v.name.as_str()).cmp(&(
                    *kind,
                    ns.as_str(),
                    name.as_str(),
                ))
            })
            .is_ok()
    });
    ok
}

/// Write one object's status (unless the Lease was lost); false when the write failed.
async fn write_item(
    writer: &Writer,
    stores: &Stores,
    verdict: &Verdict,
    programmed: Option<Programmed>,
    leading: &watch::Receiver<bool>,
) -> bool {
    // Lost the Lease mid-pass: stop writing at once.
    if !*leading.borrow() {
        return true;
    }
    let programmed = programmed.as_ref();
    let result = match verdict.kind {
        Kind::EventRoute => write_one(writer, &stores.event_routes, verdict, programmed).await,
        Kind::ProxyRoute => write_one(writer, &stores.proxy_routes, verdict, programmed).await,
        Kind::Blacklist => write_one(writer, &stores.blacklists, verdict, programmed).await,
    };
    match result {
        Ok(wrote) => {
            if wrote {
                writer.metrics.status_write(true);
            }
            true
        }
        Err(error) => {
            writer.metrics.status_write(false);
            tracing::warn!(
                kind = ?verdict.kind,
                namespace = %verdict.namespace,
                name = %verdict.name,
                error = %error_chain(&error),
                "status write failed"
            );
            false
        }
    }
}

/// Something with our status block.
trait HasStatus {
    fn rig_status(&self) -> Option<&RigStatus>;
}

impl HasStatus for rig_crds::EventRoute {
    fn rig_status(&self) -> Option<&RigStatus> {
        self.status.as_ref()
    }
}
impl HasStatus for rig_crds::ProxyRoute {
    fn rig_status(&self) -> Option<&RigStatus> {
        self.status.as_ref()
    }
}
impl HasStatus for rig_crds::Blacklist {
    fn rig_status(&self) -> Option<&RigStatus> {
        self.status.as_ref()
    }
}

/// Write one object's status if it differs; `Ok(true)` when written.
async fn write_one<K>(
    writer: &Writer,
    store: &Store<K>,
    verdict: &Verdict,
    programmed: Option<&Programmed>,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + HasStatus
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let key = ObjectRef::new(&verdict.name).within(&verdict.namespace);
    let Some(object) = store.get(&key) else {
        return Ok(false); // Deleted meanwhile.
    };
    if object.meta().generation.unwrap_or_default() != verdict.generation {
        return Ok(false); // A newer generation is on its way through the compiler.
    }
    let current = object.rig_status();
    let Some(status) = desired_status(verdict, programmed, current, Timestamp::now()) else {
        return Ok(false);
    };
    let key = (
        verdict.kind,
        verdict.namespace.clone(),
        verdict.name.clone(),
    );
    let version = object.meta().resource_version.clone();
    let hash = status_hash(&status);
    if writer.written().get(&key) == Some(&(version.clone(), hash)) {
        return Ok(false); // Written already; the watch has not brought it back yet.
    }
    // An Event only when the verdict itself changed, not on every count change.
    let verdict_changed = current.and_then(|c| c.condition(ACCEPTED)) != status.condition(ACCEPTED);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let api: Api<K> = Api::namespaced(writer.client.clone(), &verdict.namespace);
    api.patch_status(
        &verdict.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    writer.written().insert(key, (version, hash));
    if let Outcome::Rejected { reason, message } = &verdict.outcome
        && verdict_changed
    {
        tracing::info!(kind = ?verdict.kind, namespace = %verdict.namespace, name = %verdict.name,
            generation = verdict.generation, reason, message, "object rejected");
        let mut note = message.clone();
        if note.len() > NOTE_LIMIT {
            let mut end = NOTE_LIMIT - 3;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let event = Event {
            type_: EventType::Warning,
            reason: (*reason).into(),
            note: Some(note),
            action: "Compile".into(),
            secondary: None,
        };
        // The status already says it; a lost Event is logged, not retried.
        if let Err(error) = writer
            .recorder
            .publish(&event, &object.object_ref(&()))
            .await
        {
            tracing::warn!(namespace = %verdict.namespace, name = %verdict.name,
                error = %error_chain(&error), "recording the rejection Event failed");
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(generation: i64, outcome: Outcome) -> Verdict {
        Verdict {
            kind: Kind::ProxyRoute,
            namespace: "a".into(),
            name: "b".into(),
            generation,
            outcome,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn first_status_then_idempotent() {
        let v = verdict(2, Outcome::Accepted);
        let first = desired_status(&v, None, None, t("2026-01-01T00:00:00.7Z")).expect("write");
        assert_eq!(first.observed_generation, Some(2));
        let c = first.condition(ACCEPTED).expect("condition");
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.last_transition_time, "2026-01-01T00:00:01Z");
        assert_eq!(
            desired_status(&v, None, Some(&first), t("2026-01-02T00:00:00Z")),
            None
        );
    }

    #[test]
    fn transitions_move_the_time_message_changes_do_not() {
        let bad = verdict(
            1,
            Outcome::Rejected {
                reason: "InvalidPathRegex",
                message: "x".into(),
            },
        );
        let mut s = desired_status(&bad, None, None, t("2026-01-01T00:00:00Z")).expect("write");
        s.conditions.push(Condition {
            type_: "Programmed".into(),
            status: ConditionStatus::Unknown,
            reason: "Pending".into(),
            message: String::new(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        });
        let worse = verdict(
            1,
            Outcome::Rejected {
                reason: "InvalidPathRegex",
                message: "y".into(),
            },
        );
        let s2 = desired_status(&worse, None, Some(&s), t("2026-01-05T00:00:00Z")).expect("write");
        let c = s2.condition(ACCEPTED).expect("condition");
        assert_eq!(
            (c.message.as_str(), c.last_transition_time.as_str()),
            ("y", "2026-01-01T00:00:00Z")
        );
        assert!(
            s2.condition("Programmed").is_some(),
            "other conditions are kept"
        );
        let fixed = verdict(2, Outcome::Accepted);
        let s3 = desired_status(&fixed, None, Some(&s2), t("2026-01-06T00:00:00Z")).expect("write");
        let c = s3.condition(ACCEPTED).expect("condition");
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.observed_generation, Some(2));
        assert_eq!(c.last_transition_time, "2026-01-06T00:00:00Z");
    }

    fn counted(status: ConditionStatus, reason: &'static str, counts: &str) -> Programmed {
        Programmed {
            status,
            reason,
            message: format!("{counts} pods"),
            counts: Some(counts.into()),
        }
    }

    #[test]
    fn programmed_and_ready_follow_the_counts() {
        let v = verdict(3, Outcome::Accepted);
        // Before the reports are known only Accepted is written.
        let s0 = desired_status(&v, None, None, t("2026-01-01T00:00:00Z")).expect("write");
        assert_eq!(s0.conditions.len(), 1);
        assert_eq!(s0.programmed, None);

        let pending = counted(ConditionStatus::False, "Pending", "1/2");
        let s1 = desired_status(&v, Some(&pending), Some(&s0), t("2026-01-01T00:01:00Z"))
            .expect("write");
        let types: Vec<_> = s1.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [ACCEPTED, PROGRAMMED, READY]);
        assert!(
            s1.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3)),
            "{s1:?}"
        );
        assert_eq!(s1.programmed.as_deref(), Some("1/2"));
        let ready = s1.condition(READY).expect("Ready");
        assert_eq!(
            (ready.status, ready.reason.as_str(), ready.message.as_str()),
            (ConditionStatus::False, "Pending", "1/2 pods")
        );
        assert_eq!(
            desired_status(&v, Some(&pending), Some(&s1), t("2026-01-01T00:02:00Z")),
            None,
            "same counts: no write"
        );

        let done = counted(ConditionStatus::True, "Programmed", "2/2");
        let s2 =
            desired_status(&v, Some(&done), Some(&s1), t("2026-01-01T00:03:00Z")).expect("write");
        let programmed = s2.condition(PROGRAMMED).expect("Programmed");
        assert_eq!(programmed.status, ConditionStatus::True);
        assert_eq!(programmed.last_transition_time, "2026-01-01T00:03:00Z");
        assert_eq!(
            s2.condition(READY).expect("Ready").status,
            ConditionStatus::True
        );
        assert_eq!(
            s2.condition(ACCEPTED)
                .expect("Accepted")
                .last_transition_time,
            "2026-01-01T00:00:00Z",
            "Accepted did not change"
        );

        // A pod joins: the counts change, the status (False) keeps its transition time.
        let more = counted(ConditionStatus::False, "Pending", "2/3");
        let s3 =
            desired_status(&v, Some(&more), Some(&s2), t("2026-01-01T00:04:00Z")).expect("write");
        let s4 = desired_status(
            &v,
            Some(&counted(ConditionStatus::False, "Pending", "1/3")),
            Some(&s3),
            t("2026-01-01T00:05:00Z"),
        )
        .expect("write");
        assert_eq!(
            s4.condition(PROGRAMMED)
                .expect("Programmed")
                .last_transition_time,
            "2026-01-01T00:04:00Z"
        );
        assert_eq!(s4.programmed.as_deref(), Some("1/3"));
    }

    #[test]
    fn a_rejected_object_drops_its_counts() {
        let bad = verdict(
            2,
            Outcome::Rejected {
                reason: "InvalidPathRegex",
                message: "x".into(),
            },
        );
        let mut before = desired_status(
            &verdict(1, Outcome::Accepted),
            Some(&counted(ConditionStatus::True, "Programmed", "2/2")),
            None,
            t("2026-01-01T00:00:00Z"),
        )
        .expect("write");
        before.snapshot_version = Some("kept".into());
        let p =
            programmed::programmed(&bad.outcome, None, &Default::default(), &Reports::default());
        let after = desired_status(&bad, Some(&p), Some(&before), t("2026-01-01T00:01:00Z"))
            .expect("write");
        assert_eq!(after.programmed, None);
        assert_eq!(after.snapshot_version.as_deref(), Some("kept"));
        let ready = after.condition(READY).expect("Ready");
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "NotAccepted")
        );
        assert_eq!(ready.observed_generation, Some(2));
    }

    #[test]
    fn the_written_hash_ignores_transition_times_only() {
        let v = verdict(1, Outcome::Accepted);
        let a = desired_status(&v, None, None, t("2026-01-01T00:00:00Z")).expect("write");
        let b = desired_status(&v, None, None, t("2026-01-01T00:00:05Z")).expect("write");
        assert_ne!(a, b);
        assert_eq!(status_hash(&a), status_hash(&b));
        let other = desired_status(
            &verdict(2, Outcome::Accepted),
            None,
            None,
            t("2026-01-01T00:00:00Z"),
        )
        .expect("write");
        assert_ne!(status_hash(&a), status_hash(&other));
    }
}
