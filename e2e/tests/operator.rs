//! The operator against the real apiserver: two replicas of the real `rig-operator` binary compile
//! the same snapshot (same version), serve it on their streams (HTTP/1.1 and h2c), report each
//! object's verdict on its status (only the Lease holder writes), and a follower takes over status
//! writing when the leader is killed. A restarted replica reproduces the version. Data-plane
//! report Leases (written here with kubectl, as two simulated pods) drive `Programmed` (`1/2 pods`
//! → `2/2 pods`, `Rejected`, expiry) and `Ready`; `/metrics` shows the counts.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rig_crds::condition::{ACCEPTED, PROGRAMMED, READY};
use rig_crds::snapshot::StreamMessage;
use rig_crds::{Blacklist, ConditionStatus, EventRoute, ProxyRoute, RigStatus, Snapshot};
use rig_e2e::operator::{Operator, OperatorConfig, Protocol};
use rig_e2e::{Env, kube_env, wait_until};
use serde::de::DeserializeOwned;

/// Generous bounds: the test machine is small and shared. They bound waiting; nothing asserts a
/// duration.
const STATUS_WAIT: Duration = Duration::from_secs(30);
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// Lease duration (15 s) + the follower's poll and one renewal period, with room for a slow box.
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);

async fn namespace(client: &kube::Client) -> String {
    kube_env::namespace(client, "op").await.expect("namespace")
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
    // `kubectl get` shows it in the ACCEPTED column, like the other kinds.
    let table = kube_env::kubectl_ok(&env, &["get", "-n", &ns, "blacklist", "revoked"], None)
        .expect("kubectl get blacklist");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    let column = header
        .iter()
        .position(|h| *h == "ACCEPTED")
        .expect("ACCEPTED column");
    assert_eq!(row.get(column), Some(&"True"), "{table}");

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

/// Write (server-side apply, as the data plane does) the report Lease of simulated data-plane pod
/// `pod`: renewed now, valid for `seconds`, with `report` = `(version, rejection message)`.
fn report_lease(
    env: &Env,
    ns: &str,
    pod: &str,
    report: Option<(&str, Option<&str>)>,
    seconds: i32,
) {
    let renewed = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    let mut lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("rig-dataplane-{pod}"), "namespace": ns,
                     "labels": {"app.kubernetes.io/name": "rig",
                                "rig.dev/role": "dataplane-report"}},
        "spec": {"holderIdentity": pod, "leaseDurationSeconds": seconds, "renewTime": renewed}
    });
    if let Some((version, rejected)) = report {
        let outcome = match rejected {
            None => rig_crds::snapshot::Outcome::Applied,
            Some(message) => rig_crds::snapshot::Outcome::Rejected {
                message: message.into(),
            },
        };
        let report = rig_crds::snapshot::DataPlaneReport {
            pod: pod.into(),
            version: version.into(),
            outcome,
        };
        lease["metadata"]["annotations"] = serde_json::json!({
            "rig.dev/report": serde_json::to_string(&report).expect("report JSON")
        });
    }
    let json = serde_json::to_vec(&lease).expect("Lease JSON");
    kube_env::kubectl_ok(
        env,
        &[
            "apply",
            "--server-side",
            "--field-manager=rig-dataplane",
            "-f",
            "-",
        ],
        Some(&json),
    )
    .expect("kubectl apply the report Lease");
}

/// What `Programmed` should say.
#[derive(Clone, Copy)]
struct Expect<'a> {
    status: ConditionStatus,
    reason: &'a str,
    /// A substring of the message.
    message: &'a str,
    /// The `programmed` status field.
    counts: Option<&'a str>,
    /// `Ready`'s status.
    ready: ConditionStatus,
}

/// Wait until the object's `Programmed` and `Ready` conditions say `want` for its current
/// generation (every condition and the status carry that generation); returns the status. Bounded
/// by [`TAKEOVER_WAIT`], which also covers a report Lease running out.
async fn programmed<K>(api: &Api<K>, name: &str, want: Expect<'_>) -> RigStatus
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    let what = format!(
        "{name}: Programmed={:?} {} {:?} ({:?}), Ready={:?}",
        want.status, want.reason, want.message, want.counts, want.ready
    );
    let mut last = None;
    let found = tokio::time::timeout(TAKEOVER_WAIT, async {
        loop {
            if let Ok(object) = api.get(name).await {
                let generation = object.meta().generation;
                if let Some(rig) = object.rig_status().cloned() {
                    let matches =
                        rig.condition(PROGRAMMED).is_some_and(|c| {
                            c.status == want.status
                                && c.reason == want.reason
                                && c.message.contains(want.message)
                        }) && rig.condition(READY).is_some_and(|c| c.status == want.ready)
                            && rig.programmed.as_deref() == want.counts
                            && rig.observed_generation == generation
                            && rig.conditions.len() == 3
                            && rig
                                .conditions
                                .iter()
                                .all(|c| c.observed_generation == generation);
                    if matches {
                        return rig;
                    }
                    last = Some(rig);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match found {
        Ok(rig) => rig,
        Err(_) => {
            panic!("timed out after {TAKEOVER_WAIT:?} waiting for {what}; last status: {last:#?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programmed_follows_the_dataplane_reports() {
    let env = Env::load().expect("test environment");
    kube_env::install_crds(&env).expect("install CRDs");
    let client = kube_env::client(&env).await.expect("client");
    let ns = namespace(&client).await;
    let pp = PostParams::default();

    // Two replicas; each reads the report Leases of the namespace it watches.
    let a = Operator::start(&env, OperatorConfig::new("op-a", &ns, &ns).expect("config"))
        .await
        .expect("start replica a");
    let b = Operator::start(&env, OperatorConfig::new("op-b", &ns, &ns).expect("config"))
        .await
        .expect("start replica b");
    let mut stream = a.stream(None, Protocol::Http2).await.expect("stream a");
    let ers = Api::<EventRoute>::namespaced(client.clone(), &ns);
    let prs = Api::<ProxyRoute>::namespaced(client.clone(), &ns);
    ers.create(&pp, &event_route(&ns))
        .await
        .expect("EventRoute");
    prs.create(&pp, &proxy_route(&ns, "books", "/books/(.+)"))
        .await
        .expect("ProxyRoute");
    let v1 = stream
        .snapshot_where(STREAM_WAIT, |s| {
            names(&s.event_routes) == ["greetings"] && names(&s.proxy_routes) == ["books"]
        })
        .await
        .expect("the first snapshot")
        .version;

    // No data plane reports yet.
    let no_pods = Expect {
        status: ConditionStatus::Unknown,
        reason: "NoDataPlanes",
        message: "0/0 pods",
        counts: Some("0/0"),
        ready: ConditionStatus::Unknown,
    };
    programmed(&prs, "books", no_pods).await;

    // dp-1 applied the current version; dp-2 is up but has not reported yet.
    report_lease(&env, &ns, "dp-1", Some((&v1, None)), 30);
    report_lease(&env, &ns, "dp-2", None, 30);
    let half = Expect {
        status: ConditionStatus::False,
        reason: "Pending",
        message: "1/2 pods",
        counts: Some("1/2"),
        ready: ConditionStatus::False,
    };
    let status = programmed(&prs, "books", half).await;
    let ready = status.condition(READY).expect("Ready");
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("Pending", "1/2 pods")
    );

    // Both applied it: programmed and ready.
    report_lease(&env, &ns, "dp-2", Some((&v1, None)), 30);
    let all = |n| Expect {
        status: ConditionStatus::True,
        reason: "Programmed",
        message: n,
        counts: Some(&n[..3]),
        ready: ConditionStatus::True,
    };
    programmed(&prs, "books", all("2/2 pods")).await;
    let status = programmed(&ers, "greetings", all("2/2 pods")).await;
    assert_eq!(status.condition(READY).expect("Ready").reason, "Ready");
    assert_eq!(
        status.condition(ACCEPTED).expect("Accepted").status,
        ConditionStatus::True
    );

    // The metrics of both replicas count the pods; only one leads.
    let metric = |op: &Operator, name: &str| {
        let addr = op.config.stream;
        let prefix = format!("{name} ");
        async move { rig_e2e::http::metric(addr, &prefix).await }
    };
    for op in [&a, &b] {
        wait_until(
            "two live pods on the current version in /metrics",
            STATUS_WAIT,
            || async {
                (metric(op, "rig_operator_dataplane_pods").await == 2.0
                    && metric(op, "rig_operator_dataplane_pods_current").await == 2.0)
                    .then_some(())
            },
        )
        .await;
        let (_, text) = rig_e2e::http::get(op.config.stream, "/metrics")
            .await
            .expect("GET /metrics");
        assert!(
            text.contains(&format!("rig_operator_snapshot_info{{version=\"{v1}\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains("rig_operator_objects{kind=\"ProxyRoute\",verdict=\"accepted\"} 1"),
            "{text}"
        );
        assert!(metric(op, "rig_operator_snapshot_bytes").await > 100.0);
        assert!(metric(op, "rig_operator_compiles_total").await >= 1.0);
        assert!(metric(op, "rig_operator_stream_clients").await >= 0.0);
    }
    assert_eq!(
        metric(&a, "rig_operator_leader").await + metric(&b, "rig_operator_leader").await,
        1.0,
        "exactly one leader"
    );
    assert_eq!(metric(&a, "rig_operator_stream_clients").await, 1.0);

    // A new generation of books: a new version that no pod runs yet. The unchanged EventRoute
    // still counts both pods (their version carries its generation).
    let change = serde_json::json!({"spec": {"endpoints": [{"id": "get", "method": "GET",
        "pathRegex": "/library/(.+)", "pathReplacement": "/v2/books/\\1"}]}});
    prs.patch("books", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("change books");
    let v2 = stream
        .snapshot_where(STREAM_WAIT, |s| {
            s.proxy_routes.first().is_some_and(|r| r.generation == 2)
        })
        .await
        .expect("the second snapshot")
        .version;
    let none_yet = Expect {
        status: ConditionStatus::False,
        reason: "Pending",
        message: "0/2 pods",
        counts: Some("0/2"),
        ready: ConditionStatus::False,
    };
    programmed(&prs, "books", none_yet).await;
    programmed(&ers, "greetings", all("2/2 pods")).await;

    report_lease(&env, &ns, "dp-1", Some((&v2, None)), 30);
    programmed(
        &prs,
        "books",
        Expect {
            message: "1/2 pods",
            counts: Some("1/2"),
            ..half
        },
    )
    .await;

    // dp-2 rejects the new version: every object in it says so, with the data plane's message.
    report_lease(
        &env,
        &ns,
        "dp-2",
        Some((&v2, Some("regex engine refused /library/(.+)"))),
        30,
    );
    let rejected = format!("1/2 pods; pod dp-2 rejected snapshot {v2}: regex engine refused");
    let expect_rejected = || Expect {
        status: ConditionStatus::False,
        reason: "Rejected",
        message: &rejected,
        counts: Some("1/2"),
        ready: ConditionStatus::False,
    };
    let status = programmed(&prs, "books", expect_rejected()).await;
    assert_eq!(status.condition(READY).expect("Ready").reason, "Rejected");
    programmed(&ers, "greetings", expect_rejected()).await;
    for op in [&a, &b] {
        wait_until("the rejecting pod in /metrics", STATUS_WAIT, || async {
            (metric(op, "rig_operator_dataplane_pods_rejecting").await == 1.0).then_some(())
        })
        .await;
    }

    // dp-2 applies it after all, then stops renewing: once its Lease expires it no longer
    // counts (the 20 s lease is long enough to see 2/2 first, short enough for a quick test).
    report_lease(&env, &ns, "dp-2", Some((&v2, None)), 20);
    programmed(&prs, "books", all("2/2 pods")).await;
    let status = programmed(&prs, "books", all("1/1 pods")).await;
    assert_eq!(status.programmed.as_deref(), Some("1/1"));
    programmed(&ers, "greetings", all("1/1 pods")).await;
}
