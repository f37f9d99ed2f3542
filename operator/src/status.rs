//! Status writing: each object's `Accepted` condition and `observedGeneration`, from the
//! compiler's verdicts, by the Lease holder only.
//!
//! Writes are server-side applies on the `status` subresource with the field manager
//! `rig-operator`, so the operator owns exactly the status fields and never touches `spec` (Git
//! and Argo CD own that). Before writing, the desired status is compared with the object's status
//! in the reflector store; an object that already says the same is not written again, which makes
//! the loop idempotent (a status write comes back as a watch event, compiles to the same verdict,
//! and stops there). Verdicts for an older generation than the store's are skipped: the next
//! compilation brings the fresh one. Failed writes are retried after a pause, as a whole pass.
//! A rejection also becomes a `Warning` Kubernetes Event on the object (once per status change,
//! so `kubectl describe` explains it without a stream of repeats).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use rig_crds::condition::ACCEPTED;
use rig_crds::{Condition, ConditionStatus, RigStatus};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::compile::{Kind, Outcome, Verdict};
use crate::config::FIELD_MANAGER;
use crate::controller::Stores;
use crate::lease::error_chain;

/// Pause before a pass is retried after a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(2);

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

/// The status to write for `verdict` given the object's current status, or `None` when the
/// current status already says it. Other conditions (`Programmed`, `Ready`) are kept; the
/// transition time moves only when the condition's status changes.
pub fn desired_status(
    verdict: &Verdict,
    current: Option<&RigStatus>,
    now: Timestamp,
) -> Option<RigStatus> {
    let (status, reason, message) = accepted_condition(verdict);
    let generation = Some(verdict.generation);
    let mut next = current.cloned().unwrap_or_default();
    let old = next.condition(ACCEPTED).cloned();
    if let Some(old) = &old
        && next.observed_generation == generation
        && old.status == status
        && old.reason == reason
        && old.message == message
        && old.observed_generation == generation
    {
        return None;
    }
    let last_transition_time = match &old {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.round(k8s_openapi::jiff::Unit::Second).ok()?.to_string(),
    };
    let condition = Condition {
        type_: ACCEPTED.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    next.observed_generation = generation;
    match next.conditions.iter_mut().find(|c| c.type_ == ACCEPTED) {
        Some(slot) => *slot = condition,
        None => next.conditions.insert(0, condition),
    }
    Some(next)
}

/// Events carry at most 1 kB of note.
const NOTE_LIMIT: usize = 1000;

/// Write status while `leading` is true, whenever the verdicts change or leadership is gained.
/// `identity` names this replica on the Events it records.
pub async fn run(
    client: kube::Client,
    identity: String,
    stores: Stores,
    mut verdicts: watch::Receiver<Arc<Vec<Verdict>>>,
    mut leading: watch::Receiver<bool>,
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
    };
    let mut failed = false;
    loop {
        if *leading.borrow_and_update() {
            let current = verdicts.borrow_and_update().clone();
            failed = !write_pass(&writer, &stores, &current, &leading).await;
        }
        tokio::select! {
            changed = verdicts.changed() => if changed.is_err() { return },
            changed = leading.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY_AFTER), if failed => {}
        }
    }
}

/// What a status write needs.
struct Writer {
    client: kube::Client,
    recorder: Recorder,
}

/// One pass over all verdicts; false when a write failed (the pass will be retried).
async fn write_pass(
    writer: &Writer,
    stores: &Stores,
    verdicts: &[Verdict],
    leading: &watch::Receiver<bool>,
) -> bool {
    let mut ok = true;
    for verdict in verdicts {
        // Lost the Lease mid-pass: stop writing at once.
        if !*leading.borrow() {
            return true;
        }
        let result = match verdict.kind {
            Kind::EventRoute => write_one(writer, &stores.event_routes, verdict).await,
            Kind::ProxyRoute => write_one(writer, &stores.proxy_routes, verdict).await,
            Kind::Blacklist => write_one(writer, &stores.blacklists, verdict).await,
        };
        if let Err(error) = result {
            ok = false;
            tracing::warn!(
                kind = ?verdict.kind,
                namespace = %verdict.namespace,
                name = %verdict.name,
                error = %error_chain(&error),
                "status write failed"
            );
        }
    }
    ok
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

async fn write_one<K>(
    writer: &Writer,
    store: &Store<K>,
    verdict: &Verdict,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + HasStatus
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let key = ObjectRef::new(&verdict.name).within(&verdict.namespace);
    let Some(object) = store.get(&key) else {
        return Ok(()); // Deleted meanwhile.
    };
    if object.meta().generation.unwrap_or_default() != verdict.generation {
        return Ok(()); // A newer generation is on its way through the compiler.
    }
    let Some(status) = desired_status(verdict, object.rig_status(), Timestamp::now()) else {
        return Ok(());
    };
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
    if let Outcome::Rejected { reason, message } = &verdict.outcome {
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
    Ok(())
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
        let first = desired_status(&v, None, t("2026-01-01T00:00:00.7Z")).expect("write");
        assert_eq!(first.observed_generation, Some(2));
        let c = first.condition(ACCEPTED).expect("condition");
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.last_transition_time, "2026-01-01T00:00:01Z");
        assert_eq!(
            desired_status(&v, Some(&first), t("2026-01-02T00:00:00Z")),
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
        let mut s = desired_status(&bad, None, t("2026-01-01T00:00:00Z")).expect("write");
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
        let s2 = desired_status(&worse, Some(&s), t("2026-01-05T00:00:00Z")).expect("write");
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
        let s3 = desired_status(&fixed, Some(&s2), t("2026-01-06T00:00:00Z")).expect("write");
        let c = s3.condition(ACCEPTED).expect("condition");
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.observed_generation, Some(2));
        assert_eq!(c.last_transition_time, "2026-01-06T00:00:00Z");
    }
}
