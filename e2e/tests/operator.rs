//! The operator against the real apiserver: two replicas of the real `rig-operator` binary compile
//! the same snapshot (same version), serve it on their streams (HTTP/1.1 and h2c), report each
//! object's verdict on its status (only the Lease holder writes), and a follower takes over status
//! writing when the leader is killed. A restarted replica reproduces the version.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rig_crds::condition::ACCEPTED;
use rig_crds::snapshot::StreamMessage;
use rig_crds::{Blacklist, ConditionStatus, EventRoute, ProxyRoute, RigStatus, Snapshot};
use rig_e2e::operator::{Operator, OperatorConfig, Protocol};
use rig_e2e::{Env, kube_env, unique_name, wait_until};
use serde::de::DeserializeOwned;

/// Generous bounds: the test machine is small and shared. They bound waiting; nothing asserts a
/// duration.
const STATUS_WAIT: Duration = Duration::from_secs(30);
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// Lease duration (15 s) + the follower's poll and one renewal period, with room for a slow box.
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);

async fn namespace(client: &kube::Client) -> String {
    let name = unique_name("op");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

fn object<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn event_route(ns: &str) -> EventRoute {
    object(serde_json::json!({
        "apiVersion": "rig.dev/v1alpha1", "kind": "EventRoute",
        "metadata": {"name": "greetings", "namespace": ns},
        "spec": {"source": {"kafka": {"topics": ["greetings"]}},
                 "events": [{"type": "com.example.greeting",
                             "extractors": [{"field": "name", "eventPointer": "/data/name"}]}]}
    }))
}

fn proxy_route(ns: &str, name: &str, path_regex: &str) -> ProxyRoute {
    object(serde_json::json!({
        "apiVersion": "rig.dev/v1alpha1", "kind": "ProxyRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"endpoints": [{"id": "get", "method": "GET", "pathRegex": path_regex,
                                "pathReplacement": "/v2/books/\\1"}],
                 "target": {"kind": "Http", "url": "http://books.example:8080"}}
    }))
}

fn blacklist(ns: &str) -> Blacklist {
    object(serde_json::json!({
        "apiVersion": "rig.dev/v1alpha1", "kind": "Blacklist",
        "metadata": {"name": "revoked", "namespace": ns},
        "spec": {"sessionId": "session-1", "expiresAt": "2099-01-01T00:00:00Z"}
    }))
}

/// Wait until the object's `Accepted` condition has `status` for its current generation; returns
/// (reason, message).
async fn accepted<K>(api: &Api<K>, name: &str, status: ConditionStatus) -> (String, String)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    let what = format!("{name} to be Accepted={status:?} for its generation");
    wait_until(&what, STATUS_WAIT, || async {
        let object = api.get(name).await.ok()?;
        let generation = object.meta().generation;
        let rig = object.rig_status()?;
        let condition = rig.condition(ACCEPTED)?;
        (condition.status == status
            && rig.observed_generation == generation
            && condition.observed_generation == generation)
            .then(|| (condition.reason.clone(), condition.message.clone()))
    })
    .await
}

trait HasStatus {
    fn rig_status(&self) -> Option<&RigStatus>;
}
impl HasStatus for EventRoute {
    fn rig_status(&self) -> Option<&RigStatus> {
        self.status.as_ref()
    }
}
impl HasStatus for ProxyRoute {
    fn rig_status(&self) -> Option<&RigStatus> {
        self.status.as_ref()
    }
}
impl HasStatus for Blacklist {
    fn rig_status(&self) -> Option<&RigStatus> {
        self.status.as_ref()
    }
}

fn names<S>(list: &[rig_crds::NamedSpec<S>]) -> Vec<&str> {
    list.iter().map(|n| n.name.as_str()).collect()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("rig-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_report_status_and_fail_over() {
    let env = Env::load().expect("test environment");
    kube_env::install_crds(&env).expect("install CRDs");
    let client = kube_env::client(&env).await.expect("client");
    let ns = namespace(&client).await;
    let pp = PostParams::default();

    let a = Operator::start(&env, OperatorConfig::new("op-a", &ns, &ns).expect("config"))
        .await
        .expect("start replica a");
    let b = Operator::start(&env, OperatorConfig::new("op-b", &ns, &ns).expect("config"))
        .await
        .expect("start replica b");
    let mut stream_a = a.stream(None, Protocol::Http1).await.expect("stream a");
    let mut stream_b = b.stream(None, Protocol::Http2).await.expect("stream b");

    let ers = Api::<EventRoute>::namespaced(client.clone(), &ns);
    let prs = Api::<ProxyRoute>::namespaced(client.clone(), &ns);
    let bls = Api::<Blacklist>::namespaced(client.clone(), &ns);
    ers.create(&pp, &event_route(&ns))
        .await
        .expect("EventRoute");
    prs.create(&pp, &proxy_route(&ns, "books", "/books/(unclosed"))
        .await
        .expect("ProxyRoute");
    bls.create(&pp, &blacklist(&ns)).await.expect("Blacklist");

    // Verdicts on the objects' status.
    let (reason, message) = accepted(&prs, "books", ConditionStatus::False).await;
    assert_eq!(reason, "InvalidPathRegex");
    assert!(
        message.contains("pathRegex \"/books/(unclosed\" does not compile"),
        "{message}"
    );
    // ... and a Warning Event that `kubectl describe` shows.
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let note = wait_until(
        "a Warning Event on the bad ProxyRoute",
        STATUS_WAIT,
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                let about_books = e.regarding.as_ref()?.name.as_deref() == Some("books");
                (about_books
                    && e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("InvalidPathRegex"))
                .then_some(e.note)
                .flatten()
            })
        },
    )
    .await;
    assert!(note.contains("does not compile"), "{note}");
    assert_eq!(
        accepted(&ers, "greetings", ConditionStatus::True).await.0,
        "Accepted"
    );
    assert_eq!(
        accepted(&bls, "revoked", ConditionStatus::True).await.0,
        "Accepted"
    );

    // Status is level-based: an edited status is put back.
    let tamper = serde_json::json!({"status": {"observedGeneration": 1, "conditions": [{
        "type": "Accepted", "status": "False", "reason": "Tampered", "message": "by hand",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}});
    ers.patch_status("greetings", &PatchParams::default(), &Patch::Merge(&tamper))
        .await
        .expect("edit the status");
    assert_eq!(
        accepted(&ers, "greetings", ConditionStatus::True).await.0,
        "Accepted"
    );

    // Both replicas stream the same snapshot: the valid objects, not the invalid one.
    let complete = |s: &Snapshot| {
        names(&s.event_routes) == ["greetings"] && names(&s.blacklists) == ["revoked"]
    };
    let first_a = stream_a
        .snapshot_where(STREAM_WAIT, complete)
        .await
        .expect("a");
    let first_b = stream_b
        .snapshot_where(STREAM_WAIT, complete)
        .await
        .expect("b");
    assert_eq!(first_a.version, first_b.version);
    assert!(
        first_a.proxy_routes.is_empty(),
        "{:?}",
        first_a.proxy_routes
    );
    assert_eq!(first_a.content_version(), first_a.version);

    // Fixing the regex: accepted for generation 2, and a new version on both streams.
    let fix = serde_json::json!({"spec": {"endpoints": [{"id": "get", "method": "GET",
        "pathRegex": "/books/(.+)", "pathReplacement": "/v2/books/\\1"}]}});
    prs.patch("books", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix the regex");
    accepted(&prs, "books", ConditionStatus::True).await;
    let fixed = prs.get("books").await.expect("books");
    assert_eq!(fixed.metadata.generation, Some(2));
    let with_books = |s: &Snapshot| names(&s.proxy_routes) == ["books"];
    let second_a = stream_a
        .snapshot_where(STREAM_WAIT, with_books)
        .await
        .expect("a");
    let second_b = stream_b
        .snapshot_where(STREAM_WAIT, with_books)
        .await
        .expect("b");
    assert_eq!(second_a.version, second_b.version);
    assert_ne!(second_a.version, first_a.version);
    assert_eq!(second_a.proxy_routes[0].generation, 2);
    assert_eq!(
        second_a.proxy_routes[0].spec.endpoints[0].path_regex,
        "/books/(.+)"
    );

    // Exactly one replica holds the Lease.
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    let leader = holder(&leases).await.expect("a Lease holder");
    let (leader, follower, follower_stream) = match leader.as_str() {
        "op-a" => (a, b, stream_b),
        "op-b" => (b, a, stream_a),
        other => panic!("unexpected Lease holder {other:?}"),
    };
    let follower_name = follower.config.identity.clone();

    // Kill the leader: the follower takes over status writing.
    leader.kill().await.expect("kill the leader");
    prs.create(&pp, &proxy_route(&ns, "late", "/late/(.*)"))
        .await
        .expect("ProxyRoute after the kill");
    let started = tokio::time::Instant::now();
    let what = "the follower to write the new object's status";
    wait_until(what, TAKEOVER_WAIT, || async {
        let object = prs.get("late").await.ok()?;
        let condition = object.status?.condition(ACCEPTED)?.clone();
        (condition.status == ConditionStatus::True).then_some(())
    })
    .await;
    eprintln!(
        "status of a new object written {:?} after the leader was killed",
        started.elapsed()
    );
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(follower_name.as_str())
    );
    let mut follower_stream = follower_stream;
    let third = follower_stream
        .snapshot_where(STREAM_WAIT, |s| names(&s.proxy_routes) == ["books", "late"])
        .await
        .expect("the follower keeps streaming");

    // A replica started now computes the same version from the same objects; a client that
    // already has it gets heartbeats, not a resend.
    let c = Operator::start(&env, OperatorConfig::new("op-c", &ns, &ns).expect("config"))
        .await
        .expect("start replica c");
    let mut stream_c = c.stream(None, Protocol::Http2).await.expect("stream c");
    let restarted = stream_c
        .snapshot_where(STREAM_WAIT, |s| names(&s.proxy_routes) == ["books", "late"])
        .await
        .expect("c");
    assert_eq!(restarted.version, third.version);
    let mut resumed = c
        .stream(Some(&third.version), Protocol::Http1)
        .await
        .expect("stream c with have=");
    assert_eq!(
        resumed.next(STREAM_WAIT).await.expect("a message"),
        StreamMessage::Heartbeat {
            version: Some(third.version.clone())
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_over_the_lease() {
    let env = Env::load().expect("test environment");
    kube_env::install_crds(&env).expect("install CRDs");
    let client = kube_env::client(&env).await.expect("client");
    let ns = namespace(&client).await;
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);

    let a = Operator::start(&env, OperatorConfig::new("op-a", &ns, &ns).expect("config"))
        .await
        .expect("start replica a");
    wait_until("replica a to take the Lease", STATUS_WAIT, || async {
        (holder(&leases).await.as_deref() == Some("op-a")).then_some(())
    })
    .await;
    let b = Operator::start(&env, OperatorConfig::new("op-b", &ns, &ns).expect("config"))
        .await
        .expect("start replica b");
    let before = leases
        .get("rig-operator")
        .await
        .expect("Lease")
        .spec
        .and_then(|s| s.lease_transitions);

    // A graceful stop clears the holder; b takes over without waiting for the Lease to expire
    // (the wait below is bounded by the same generous limit as elsewhere; no timing is asserted).
    a.stop().await.expect("replica a stops cleanly");
    // Released, not left to expire: right after the exit the holder is empty (or b already).
    let released = holder(&leases).await;
    assert_ne!(
        released.as_deref(),
        Some("op-a"),
        "the Lease was not released"
    );
    wait_until("replica b to take the Lease", TAKEOVER_WAIT, || async {
        (holder(&leases).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    let after = leases.get("rig-operator").await.expect("Lease").spec;
    assert_eq!(
        after.and_then(|s| s.lease_transitions),
        before.map(|t| t + 1),
        "one transition recorded"
    );

    // b writes status now.
    let prs = Api::<ProxyRoute>::namespaced(client.clone(), &ns);
    prs.create(
        &PostParams::default(),
        &proxy_route(&ns, "after", "/after/(.*)"),
    )
    .await
    .expect("ProxyRoute");
    accepted(&prs, "after", ConditionStatus::True).await;
    drop(b);
}
