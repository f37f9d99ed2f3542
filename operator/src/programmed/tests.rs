use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::ObjectMeta;
use rig_crds::{BlacklistSpec, ProxyRouteSpec};

fn t(s: &str) -> Timestamp {
    s.parse().expect("time")
}

fn lease(
    ns: &str,
    name: &str,
    holder: Option<&str>,
    renewed: &str,
    seconds: Option<i32>,
    report: Option<&str>,
) -> Arc<Lease> {
    let annotations = report.map(|r| [(REPORT_ANNOTATION.to_owned(), r.to_owned())].into());
    Arc::new(Lease {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(t(renewed))),
            lease_duration_seconds: seconds,
            ..Default::default()
        }),
    })
}

fn report(pod: &str, version: &str, rejected: Option<&str>) -> String {
    let outcome = match rejected {
        None => snapshot::Outcome::Applied,
        Some(message) => snapshot::Outcome::Rejected {
            message: message.into(),
        },
    };
    serde_json::to_string(&DataPlaneReport {
        pod: pod.into(),
        version: version.into(),
        outcome,
    })
    .expect("json")
}

fn applied(pod: &str, version: &str) -> PodReport {
    PodReport {
        pod: pod.into(),
        state: PodState::Applied {
            version: version.into(),
        },
    }
}

fn rejected(pod: &str, version: &str, message: &str) -> PodReport {
    PodReport {
        pod: pod.into(),
        state: PodState::Rejected {
            version: version.into(),
            message: message.into(),
        },
    }
}

fn waiting(pod: &str) -> PodReport {
    PodReport {
        pod: pod.into(),
        state: PodState::Waiting,
    }
}

fn reports(pods: Vec<PodReport>) -> Reports {
    Reports { pods }
}

#[test]
fn live_pods_are_the_unexpired_leases_with_their_reports() {
    let now = t("2026-06-01T12:00:00Z");
    let v1 = report("dp-a", "v1", None);
    let bad = report("dp-c", "v1", Some("no"));
    let leases = [
        // Renewed 29 s ago with the contract's 30 s: live.
        lease(
            "rig",
            "rig-dataplane-dp-b",
            Some("dp-b"),
            "2026-06-01T11:59:31Z",
            Some(30),
            None,
        ),
        lease(
            "rig",
            "rig-dataplane-dp-a",
            Some("dp-a"),
            "2026-06-01T11:59:59Z",
            Some(30),
            Some(&v1),
        ),
        // Renewed exactly a duration ago: expired.
        lease(
            "rig",
            "rig-dataplane-dp-x",
            Some("dp-x"),
            "2026-06-01T11:59:30Z",
            Some(30),
            Some(&v1),
        ),
        // No duration: 30 s by default; no holder: the Lease name.
        lease(
            "rig",
            "rig-dataplane-dp-c",
            None,
            "2026-06-01T11:59:45Z",
            None,
            Some(&bad),
        ),
        lease(
            "rig",
            "rig-dataplane-dp-d",
            Some("dp-d"),
            "2026-06-01T11:59:45Z",
            None,
            Some("{not json"),
        ),
        // A short lease that ran out.
        lease(
            "other",
            "rig-dataplane-dp-e",
            Some("dp-e"),
            "2026-06-01T11:59:55Z",
            Some(3),
            Some(&v1),
        ),
    ];
    let live = live_reports(&leases, now);
    assert_eq!(
        live.pods,
        vec![
            applied("dp-a", "v1"),
            waiting("dp-b"),
            rejected("rig-dataplane-dp-c", "v1", "no"),
            PodReport {
                pod: "dp-d".into(),
                state: PodState::Unreadable
            },
        ]
    );
    assert_eq!(
        live_reports(&leases, t("2026-06-01T13:00:00Z")),
        Reports::default()
    );
}

fn blacklist(name: &str, generation: i64) -> NamedSpec<BlacklistSpec> {
    NamedSpec {
        namespace: "ns".into(),
        name: name.into(),
        generation,
        spec: BlacklistSpec {
            session_id: name.into(),
            expires_at: "2999-01-01T00:00:00Z".into(),
            reason: None,
        },
    }
}

fn proxy_route(name: &str, generation: i64) -> NamedSpec<ProxyRouteSpec> {
    NamedSpec {
        namespace: "ns".into(),
        name: name.into(),
        generation,
        spec: serde_yaml::from_str(
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
        )
        .expect("spec"),
    }
}

#[test]
fn history_remembers_when_each_generation_entered() {
    let mut h = History::default();
    let v1 = Snapshot::new(vec![], vec![proxy_route("r", 1)], vec![blacklist("a", 1)]);
    h.record(&v1);
    assert_eq!(h.entered(Kind::ProxyRoute, "ns", "r", 1), Some(1));
    assert_eq!(h.entered(Kind::Blacklist, "ns", "a", 1), Some(1));
    assert_eq!(h.entered(Kind::ProxyRoute, "ns", "r", 2), None, "other gen");
    assert_eq!(h.entered(Kind::Blacklist, "ns", "r", 1), None, "other kind");

    // r changes generation, b joins, a stays.
    let v2 = Snapshot::new(
        vec![],
        vec![proxy_route("r", 2)],
        vec![blacklist("a", 1), blacklist("b", 1)],
    );
    h.record(&v2);
    assert_eq!(h.entered(Kind::ProxyRoute, "ns", "r", 2), Some(2));
    assert_eq!(h.entered(Kind::Blacklist, "ns", "a", 1), Some(1));
    assert_eq!(h.entered(Kind::Blacklist, "ns", "b", 1), Some(2));

    // b leaves; then the content of v2 comes back: its version moves to the new number.
    let v3 = Snapshot::new(vec![], vec![proxy_route("r", 2)], vec![blacklist("a", 1)]);
    h.record(&v3);
    assert_eq!(h.entered(Kind::Blacklist, "ns", "b", 1), None);
    h.record(&v2);
    let versions = h.versions();
    assert_eq!(versions.seq(&v1.version), Some(1));
    assert_eq!(versions.seq(&v3.version), Some(3));
    assert_eq!(versions.seq(&v2.version), Some(4));
    assert_eq!(versions.current(), Some(v2.version.as_str()));
    assert_eq!(h.entered(Kind::Blacklist, "ns", "b", 1), Some(4));
    assert_eq!(h.entered(Kind::Blacklist, "ns", "a", 1), Some(1));
}

#[test]
fn history_keeps_a_bounded_number_of_versions() {
    let mut h = History::default();
    let first = Snapshot::new(vec![], vec![], vec![blacklist("first", 1)]);
    h.record(&first);
    let held = h.versions();
    for i in 0..HISTORY_VERSIONS {
        h.record(&Snapshot::new(
            vec![],
            vec![],
            vec![blacklist(&format!("b{i}"), 1)],
        ));
    }
    let versions = h.versions();
    assert_eq!(versions.by_version.len(), HISTORY_VERSIONS);
    assert_eq!(versions.seq(&first.version), None, "the oldest is evicted");
    assert_eq!(
        held.seq(&first.version),
        Some(1),
        "a handed-out copy does not change"
    );
}

/// Three versions: v1 {r@1, a@1}, v2 {r@2, a@1}, v3 {r@2, a@1, b@1}.
fn three_versions() -> (History, [String; 3]) {
    let mut h = History::default();
    let v1 = Snapshot::new(vec![], vec![proxy_route("r", 1)], vec![blacklist("a", 1)]);
    let v2 = Snapshot::new(vec![], vec![proxy_route("r", 2)], vec![blacklist("a", 1)]);
    let v3 = Snapshot::new(
        vec![],
        vec![proxy_route("r", 2)],
        vec![blacklist("a", 1), blacklist("b", 1)],
    );
    for v in [&v1, &v2, &v3] {
        h.record(v);
    }
    (h, [v1.version, v2.version, v3.version])
}

fn check(p: &Programmed, status: ConditionStatus, reason: &str, message: &str, counts: &str) {
    assert_eq!(
        (p.status, p.reason, p.message.as_str(), p.counts.as_deref()),
        (status, reason, message, Some(counts)),
    );
}

#[test]
fn counts_pods_running_a_version_that_carries_the_generation() {
    let (h, [v1, v2, v3]) = three_versions();
    let versions = h.versions();
    let r = h.entered(Kind::ProxyRoute, "ns", "r", 2);
    let a = h.entered(Kind::Blacklist, "ns", "a", 1);
    let b = h.entered(Kind::Blacklist, "ns", "b", 1);
    let ok = Outcome::Accepted;

    let none = reports(vec![]);
    check(
        &programmed(&ok, r, &versions, &none),
        ConditionStatus::Unknown,
        "NoDataPlanes",
        "0/0 pods: no data-plane pod reports",
        "0/0",
    );

    // One pod on the current version, one not reporting yet.
    let half = reports(vec![applied("p1", &v3), waiting("p2")]);
    check(
        &programmed(&ok, r, &versions, &half),
        ConditionStatus::False,
        "Pending",
        "1/2 pods",
        "1/2",
    );
    let both = reports(vec![applied("p1", &v3), applied("p2", &v3)]);
    check(
        &programmed(&ok, r, &versions, &both),
        ConditionStatus::True,
        "Programmed",
        "2/2 pods",
        "2/2",
    );

    // A pod still on v2 runs r@2 and a@1 (unchanged since), not b.
    let behind = reports(vec![applied("p1", &v3), applied("p2", &v2)]);
    check(
        &programmed(&ok, r, &versions, &behind),
        ConditionStatus::True,
        "Programmed",
        "2/2 pods",
        "2/2",
    );
    check(
        &programmed(&ok, a, &versions, &behind),
        ConditionStatus::True,
        "Programmed",
        "2/2 pods",
        "2/2",
    );
    check(
        &programmed(&ok, b, &versions, &behind),
        ConditionStatus::False,
        "Pending",
        "1/2 pods",
        "1/2",
    );
    // On v1 it runs a@1 but the old generation of r.
    let old = reports(vec![applied("p1", &v3), applied("p2", &v1)]);
    check(
        &programmed(&ok, a, &versions, &old),
        ConditionStatus::True,
        "Programmed",
        "2/2 pods",
        "2/2",
    );
    check(
        &programmed(&ok, r, &versions, &old),
        ConditionStatus::False,
        "Pending",
        "1/2 pods",
        "1/2",
    );
    // A version this replica never published carries nothing; so does an unreadable report.
    let unknown = reports(vec![
        applied("p1", "feedbeef"),
        PodReport {
            pod: "p2".into(),
            state: PodState::Unreadable,
        },
        applied("p3", &v3),
    ]);
    check(
        &programmed(&ok, a, &versions, &unknown),
        ConditionStatus::False,
        "Pending",
        "1/3 pods",
        "1/3",
    );
    // An accepted object that is not in a published snapshot (the encoding failed) is pending.
    check(
        &programmed(&ok, None, &versions, &both),
        ConditionStatus::False,
        "Pending",
        "0/2 pods",
        "0/2",
    );
}

#[test]
fn a_rejection_of_a_version_carrying_the_object_is_reported() {
    let (h, [v1, v2, v3]) = three_versions();
    let versions = h.versions();
    let r = h.entered(Kind::ProxyRoute, "ns", "r", 2);
    let b = h.entered(Kind::Blacklist, "ns", "b", 1);
    let ok = Outcome::Accepted;
    let one = reports(vec![
        applied("p1", &v3),
        rejected("p2", &v3, "regex too big"),
    ]);
    let expected = format!("1/2 pods; pod p2 rejected snapshot {v3}: regex too big");
    check(
        &programmed(&ok, r, &versions, &one),
        ConditionStatus::False,
        "Rejected",
        &expected,
        "1/2",
    );
    let two = reports(vec![rejected("p1", &v2, "x"), rejected("p2", &v3, "y")]);
    let expected =
        format!("0/2 pods; pod p1 rejected snapshot {v2}: x (and 1 more pods rejected it)");
    check(
        &programmed(&ok, r, &versions, &two),
        ConditionStatus::False,
        "Rejected",
        &expected,
        "0/2",
    );
    // b is not in v2: p1's rejection is not about it (p1 is just not running it).
    let expected = format!("0/2 pods; pod p2 rejected snapshot {v3}: y");
    check(
        &programmed(&ok, b, &versions, &two),
        ConditionStatus::False,
        "Rejected",
        &expected,
        "0/2",
    );
    // A rejected v1 (older generation of r) says nothing about r@2: pending.
    let older = reports(vec![applied("p1", &v3), rejected("p2", &v1, "x")]);
    check(
        &programmed(&ok, r, &versions, &older),
        ConditionStatus::False,
        "Pending",
        "1/2 pods",
        "1/2",
    );
    // Long data-plane messages are cut.
    let long = reports(vec![rejected("p1", &v3, &"é".repeat(600))]);
    let p = programmed(&ok, r, &versions, &long);
    assert!(p.message.ends_with("..."), "{}", p.message);
    assert!(p.message.len() < 700, "{}", p.message.len());
}

#[test]
fn objects_outside_the_snapshot_are_not_programmed() {
    let (h, [_, _, v3]) = three_versions();
    let versions = h.versions();
    let pods = reports(vec![applied("p1", &v3)]);
    let bad = Outcome::Rejected {
        reason: "InvalidPathRegex",
        message: "x".into(),
    };
    let p = programmed(&bad, None, &versions, &pods);
    assert_eq!(
        (p.status, p.reason, p.counts),
        (ConditionStatus::False, "NotAccepted", None)
    );
    let expired = Outcome::Expired {
        at: "2020-01-01T00:00:00Z".into(),
    };
    let p = programmed(&expired, None, &versions, &pods);
    assert_eq!(
        (p.status, p.reason, p.counts.clone()),
        (ConditionStatus::False, "Expired", None)
    );
    assert_eq!(
        ready(ConditionStatus::True, "Expired", &p).1,
        "Expired",
        "an expired entry is not in effect"
    );
}

#[test]
fn ready_needs_accepted_and_programmed() {
    let p = |status, reason: &'static str, message: &str| Programmed {
        status,
        reason,
        message: message.into(),
        counts: Some("1/2".into()),
    };
    let done = p(ConditionStatus::True, "Programmed", "2/2 pods");
    assert_eq!(
        ready(ConditionStatus::True, "Accepted", &done),
        (
            ConditionStatus::True,
            "Ready",
            "accepted and programmed: 2/2 pods".into()
        )
    );
    let pending = p(ConditionStatus::False, "Pending", "1/2 pods");
    assert_eq!(
        ready(ConditionStatus::True, "Accepted", &pending),
        (ConditionStatus::False, "Pending", "1/2 pods".into())
    );
    let unknown = p(ConditionStatus::Unknown, "NoDataPlanes", "0/0 pods");
    assert_eq!(
        ready(ConditionStatus::True, "Accepted", &unknown).0,
        ConditionStatus::Unknown
    );
    let (status, reason, message) = ready(ConditionStatus::False, "InvalidPathRegex", &pending);
    assert_eq!((status, reason), (ConditionStatus::False, "NotAccepted"));
    assert!(message.contains("InvalidPathRegex"), "{message}");
}
