use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rig_crds::{BlacklistSpec, EventRouteSpec, ProxyRouteSpec};

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().expect("time")
}

fn meta<K: kube::Resource>(mut object: K, ns: &str, generation: i64, created: &str) -> Arc<K> {
    let m = object.meta_mut();
    m.namespace = Some(ns.into());
    m.generation = Some(generation);
    m.creation_timestamp = Some(Time(created.parse().expect("time")));
    Arc::new(object)
}

fn event_route(ns: &str, name: &str, created: &str, yaml: &str) -> Arc<EventRoute> {
    let spec: EventRouteSpec = serde_yaml::from_str(yaml).expect("event route spec");
    meta(EventRoute::new(name, spec), ns, 1, created)
}

fn proxy_route(ns: &str, name: &str, generation: i64, yaml: &str) -> Arc<ProxyRoute> {
    let spec: ProxyRouteSpec = serde_yaml::from_str(yaml).expect("proxy route spec");
    meta(
        ProxyRoute::new(name, spec),
        ns,
        generation,
        "2026-01-01T00:00:00Z",
    )
}

fn blacklist(ns: &str, name: &str, expires: &str) -> Arc<Blacklist> {
    let spec = BlacklistSpec {
        session_id: format!("session-{name}"),
        expires_at: expires.into(),
        reason: None,
    };
    meta(Blacklist::new(name, spec), ns, 1, "2026-01-01T00:00:00Z")
}

fn outcome<'a>(compiled: &'a Compiled, kind: Kind, name: &str) -> &'a Outcome {
    &compiled
        .verdicts
        .iter()
        .find(|v| v.kind == kind && v.name == name)
        .unwrap_or_else(|| panic!("no verdict for {name}"))
        .outcome
}

fn rejected(outcome: &Outcome) -> (&'static str, &str) {
    match outcome {
        Outcome::Rejected { reason, message } => (reason, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const GREETINGS: &str = "source: {kafka: {topics: [greetings]}}\nevents:\n- type: greeting\n  extractors: [{field: name, eventPointer: /data/name}]\n";

fn proxy(regex: &str, replacement: Option<&str>, timeout: &str) -> String {
    let replacement = replacement
        .map(|r| format!(", pathReplacement: '{r}'"))
        .unwrap_or_default();
    format!(
        "endpoints: [{{id: a, method: GET, pathRegex: '{regex}'{replacement}}}]\n\
         target: {{kind: Http, url: 'http://books:8080'}}\nresponse: {{timeout: '{timeout}'}}\n"
    )
}

#[test]
fn creation_time_from_the_apiserver_settles_conflicts() {
    let other = "source: {kafka: {topics: [other]}}\nevents:\n- type: greeting\n  extractors: [{field: name, eventPointer: /data/other}]\n";
    let ers = [
        event_route("a", "newer", "2026-03-01T00:00:00Z", other),
        event_route("z", "older", "2026-01-01T00:00:00Z", GREETINGS),
    ];
    let c = compile(&ers, &[], &[], now());
    assert_eq!(outcome(&c, Kind::EventRoute, "older"), &Outcome::Accepted);
    assert_eq!(
        rejected(outcome(&c, Kind::EventRoute, "newer")).0,
        "ExtractorConflict"
    );
}

#[test]
fn generations_and_objects_without_a_namespace() {
    let prs = [proxy_route(
        "a",
        "books",
        3,
        &proxy("/books/(.+)", Some("/v2/books/\\1"), "1500ms"),
    )];
    let mut orphan = ProxyRoute::clone(&prs[0]);
    orphan.metadata.namespace = None;
    let c = compile(&[], &[prs[0].clone(), Arc::new(orphan)], &[], now());
    assert_eq!(
        c.verdicts.len(),
        1,
        "an object without a namespace is skipped"
    );
    assert_eq!(c.snapshot.proxy_routes[0].generation, 3);
    assert_eq!(c.verdicts[0].generation, 3);
}

/// The sizing point: 1,000 routes and 10,000 revocations. Prints the snapshot size and
/// the compile time (debug build numbers unless run with `--release`); asserts only the content.
/// Runs with the other tests (it asserts the content at scale); `--nocapture` shows the numbers.
#[test]
fn scale_1000_routes_10000_blacklists() {
    let ers: Vec<_> = (0..500)
        .map(|i| {
            let yaml = format!(
                "source: {{kafka: {{topics: [t{i}]}}}}\nevents:\n- type: type-{i}\n  extractors: [{{field: name, eventPointer: /data/name}}]\n"
            );
            event_route("a", &format!("er-{i:04}"), "2026-01-01T00:00:00Z", &yaml)
        })
        .collect();
    let prs: Vec<_> = (0..500)
        .map(|i| {
            proxy_route(
                "a",
                &format!("pr-{i:04}"),
                1,
                &proxy(&format!("/api/{i}/(.+)"), Some("/\\1"), "5s"),
            )
        })
        .collect();
    let bls: Vec<_> = (0..10_000)
        .map(|i| blacklist("a", &format!("bl-{i:05}"), "2027-01-01T00:00:00Z"))
        .collect();
    let started = std::time::Instant::now();
    let c = compile(&ers, &prs, &bls, now());
    let elapsed = started.elapsed();
    let bytes = serde_json::to_vec(&c.snapshot).expect("encode").len();
    // With the memo warm (a Blacklist change), regexes are not compiled again.
    let mut compiler = Compiler::default();
    let with_uids: Vec<_> = prs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = ProxyRoute::clone(r);
            r.metadata.uid = Some(format!("uid-{i}"));
            Arc::new(r)
        })
        .collect();
    compiler.compile(&ers, &with_uids, &bls, now());
    let warm = std::time::Instant::now();
    compiler.compile(&ers, &with_uids, &bls[1..], now());
    let warm = warm.elapsed();
    eprintln!("recompiled after a Blacklist change (memo warm) in {warm:?}");
    assert_eq!(
        (
            c.snapshot.event_routes.len(),
            c.snapshot.proxy_routes.len(),
            c.snapshot.blacklists.len()
        ),
        (500, 500, 10_000)
    );
    eprintln!("compiled 1,000 routes + 10,000 blacklists in {elapsed:?}; snapshot {bytes} bytes");
}
