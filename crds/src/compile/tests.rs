use super::*;
use crate::{BlacklistSpec, EventRouteSpec, ProxyRouteSpec};
use std::time::Duration;

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().expect("time")
}

fn event_route(ns: &str, name: &str, created: &str, yaml: &str) -> Object<EventRouteSpec> {
    let spec: EventRouteSpec = serde_yaml::from_str(yaml).expect("event route spec");
    let mut o = Object::new(ns, name, spec);
    o.named.generation = 1;
    o.created = Some(created.parse().expect("time"));
    o
}

fn proxy_route(ns: &str, name: &str, generation: i64, yaml: &str) -> Object<ProxyRouteSpec> {
    let spec: ProxyRouteSpec = serde_yaml::from_str(yaml).expect("proxy route spec");
    let mut o = Object::new(ns, name, spec);
    o.named.generation = generation;
    o
}

fn blacklist(ns: &str, name: &str, expires: &str) -> Object<BlacklistSpec> {
    let spec = BlacklistSpec {
        session_id: format!("session-{name}"),
        expires_at: expires.into(),
        reason: None,
    };
    let mut o = Object::new(ns, name, spec);
    o.named.generation = 1;
    o
}

fn objects(
    ers: &[Object<EventRouteSpec>],
    prs: &[Object<ProxyRouteSpec>],
    bls: &[Object<BlacklistSpec>],
) -> Objects {
    Objects {
        event_routes: ers.to_vec(),
        proxy_routes: prs.to_vec(),
        blacklists: bls.to_vec(),
    }
}

fn run(
    ers: &[Object<EventRouteSpec>],
    prs: &[Object<ProxyRouteSpec>],
    bls: &[Object<BlacklistSpec>],
    now: Timestamp,
) -> Compiled {
    compile(&objects(ers, prs, bls), now)
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
fn valid_objects_are_accepted_and_in_the_snapshot() {
    let ers = [event_route(
        "a",
        "greetings",
        "2026-01-01T00:00:00Z",
        GREETINGS,
    )];
    let prs = [proxy_route(
        "a",
        "books",
        3,
        &proxy("/books/(.+)", Some("/v2/books/\\1"), "1500ms"),
    )];
    let bls = [blacklist("a", "s1", "2026-06-02T00:00:00Z")];
    let c = run(&ers, &prs, &bls, now());
    assert!(c.verdicts.iter().all(|v| v.outcome == Outcome::Accepted));
    assert_eq!(c.snapshot.event_routes.len(), 1);
    assert_eq!(c.snapshot.proxy_routes[0].generation, 3);
    assert_eq!(c.snapshot.blacklists[0].name, "s1");
    assert_eq!(
        c.next_expiry,
        Some("2026-06-02T00:00:00Z".parse().expect("t"))
    );
}

#[test]
fn same_objects_give_the_same_version_in_any_order() {
    let prs = [
        proxy_route("a", "x", 1, &proxy("/x", None, "5s")),
        proxy_route("b", "y", 1, &proxy("/y", None, "5s")),
    ];
    let reversed = [prs[1].clone(), prs[0].clone()];
    let one = run(&[], &prs, &[], now());
    let two = run(&[], &reversed, &[], now());
    assert_eq!(one.snapshot.version, two.snapshot.version);
    assert_eq!(one.verdicts, two.verdicts);
    // A new generation of the same spec is a new version: data planes report generations back.
    let bumped = [
        proxy_route("a", "x", 2, &proxy("/x", None, "5s")),
        prs[1].clone(),
    ];
    assert_ne!(
        run(&[], &bumped, &[], now()).snapshot.version,
        one.snapshot.version
    );
}

#[test]
fn a_bad_regex_rejects_only_its_route_with_a_readable_reason() {
    let prs = [
        proxy_route("a", "bad", 1, &proxy("/books/(unclosed", None, "5s")),
        proxy_route("a", "good", 1, &proxy("/good", None, "5s")),
    ];
    let c = run(&[], &prs, &[], now());
    let (reason, message) = rejected(outcome(&c, Kind::ProxyRoute, "bad"));
    assert_eq!(reason, "InvalidPathRegex");
    assert!(message.contains("\"/books/(unclosed\""), "{message}");
    assert!(message.contains("unclosed group"), "{message}");
    assert!(
        !message.contains("(?:"),
        "the error shows the user's pattern: {message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(outcome(&c, Kind::ProxyRoute, "good"), &Outcome::Accepted);
    let names: Vec<_> = c.snapshot.proxy_routes.iter().map(|r| &r.name).collect();
    assert_eq!(names, ["good"]);
}

#[test]
fn regexes_are_anchored_and_case_insensitive_as_the_data_plane_uses_them() {
    let re = path_regex("/books/(.+)").expect("compiles");
    assert!(re.is_match("/BOOKS/1"));
    assert!(!re.is_match("/api/books/1"));
    assert!(path_regex("^/a$").expect("explicit anchors").is_match("/a"));
    assert!(
        path_regex("/a)|(/b").is_err(),
        "cannot escape the anchoring group"
    );
    // Huge automata are refused instead of being shipped to every data plane.
    assert!(path_regex("/(\\w{100}){100}").is_err());
}

#[test]
fn replacement_groups_must_exist() {
    let prs = [
        proxy_route("a", "two", 1, &proxy("/(a)/(b)", Some("/\\2/\\1"), "5s")),
        proxy_route("a", "missing", 1, &proxy("/(a)", Some("/\\2"), "5s")),
        proxy_route("a", "none", 1, &proxy("/a", Some("/\\1"), "5s")),
    ];
    let c = run(&[], &prs, &[], now());
    assert_eq!(outcome(&c, Kind::ProxyRoute, "two"), &Outcome::Accepted);
    let (reason, message) = rejected(outcome(&c, Kind::ProxyRoute, "missing"));
    assert_eq!(reason, "InvalidPathReplacement");
    assert!(message.contains("uses group \\2"), "{message}");
    assert!(message.contains("has 1 group(s)"), "{message}");
    rejected(outcome(&c, Kind::ProxyRoute, "none"));
}

#[test]
fn timeouts_parse_or_reject() {
    assert_eq!(parse_timeout("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
    for bad in ["0s", "5", "5h", "s", ""] {
        assert!(parse_timeout(bad).is_err(), "{bad}");
    }
    let prs = [proxy_route("a", "zero", 1, &proxy("/a", None, "0ms"))];
    let c = run(&[], &prs, &[], now());
    assert_eq!(
        rejected(outcome(&c, Kind::ProxyRoute, "zero")).0,
        "InvalidTimeout"
    );
}

#[test]
fn all_problems_of_an_object_are_reported_first_reason_wins() {
    let prs = [proxy_route(
        "a",
        "both",
        1,
        &proxy("/(", Some("/\\1"), "0s"),
    )];
    let c = run(&[], &prs, &[], now());
    let (reason, message) = rejected(outcome(&c, Kind::ProxyRoute, "both"));
    assert_eq!(reason, "InvalidPathRegex");
    assert!(message.contains("; response.timeout \"0s\""), "{message}");
}

#[test]
fn json_pointers_follow_rfc_6901() {
    assert!(JsonPointer::parse("/data/a~1b~0c").is_ok());
    assert!(JsonPointer::parse("/data/a~2").is_err());
    assert!(JsonPointer::parse("/data/~").is_err());
    assert!(JsonPointer::parse("data").is_err());
    let yaml = "source: {http: {enabled: true}}\nevents:\n- type: t\n  extractors: [{field: f, eventPointer: /data/x, jwtPointer: '/a~x'}]\n";
    let ers = [event_route("a", "bad", "2026-01-01T00:00:00Z", yaml)];
    let c = run(&ers, &[], &[], now());
    let (reason, message) = rejected(outcome(&c, Kind::EventRoute, "bad"));
    assert_eq!(reason, "InvalidJsonPointer");
    assert!(message.contains("jwtPointer \"/a~x\""), "{message}");
    assert!(c.snapshot.event_routes.is_empty());
}

#[test]
fn conflicting_extractors_reject_the_newer_route() {
    let other = "source: {kafka: {topics: [other]}}\nevents:\n- type: greeting\n  extractors: [{field: name, eventPointer: /data/other}]\n";
    // "z/newer" sorts after "a/older" by name too; make the older one sort last by name to prove
    // that creation time decides.
    let ers = [
        event_route("a", "newer", "2026-03-01T00:00:00Z", other),
        event_route("z", "older", "2026-01-01T00:00:00Z", GREETINGS),
        event_route("b", "same", "2026-04-01T00:00:00Z", GREETINGS),
    ];
    let c = run(&ers, &[], &[], now());
    assert_eq!(outcome(&c, Kind::EventRoute, "older"), &Outcome::Accepted);
    assert_eq!(outcome(&c, Kind::EventRoute, "same"), &Outcome::Accepted);
    let (reason, message) = rejected(outcome(&c, Kind::EventRoute, "newer"));
    assert_eq!(reason, "ExtractorConflict");
    assert!(message.contains("EventRoute z/older"), "{message}");
    assert_eq!(c.snapshot.event_routes.len(), 2);
}

#[test]
fn an_invalid_route_does_not_claim_its_event_types() {
    let bad = "source: {kafka: {topics: [x]}}\nevents:\n- type: greeting\n  extractors: [{field: name, eventPointer: '/~'}]\n";
    let ers = [
        event_route("a", "bad", "2026-01-01T00:00:00Z", bad),
        event_route("a", "good", "2026-02-01T00:00:00Z", GREETINGS),
    ];
    let c = run(&ers, &[], &[], now());
    assert_eq!(outcome(&c, Kind::EventRoute, "good"), &Outcome::Accepted);
}

#[test]
fn expired_blacklists_leave_the_snapshot_without_being_invalid() {
    let bls = [
        blacklist("a", "old", "2026-05-31T23:59:59Z"),
        blacklist("a", "live", "2026-06-01T00:00:01Z"),
        blacklist("a", "later", "2027-01-01T00:00:00Z"),
        blacklist("a", "garbage", "tomorrow"),
    ];
    let c = run(&[], &[], &bls, now());
    assert_eq!(
        outcome(&c, Kind::Blacklist, "old"),
        &Outcome::Expired {
            at: "2026-05-31T23:59:59Z".into()
        }
    );
    assert_eq!(
        rejected(outcome(&c, Kind::Blacklist, "garbage")).0,
        "InvalidExpiry"
    );
    let names: Vec<_> = c.snapshot.blacklists.iter().map(|b| &b.name).collect();
    assert_eq!(names, ["later", "live"]);
    assert_eq!(
        c.next_expiry,
        Some("2026-06-01T00:00:01Z".parse().expect("t"))
    );
    // Once that moment passes, the entry leaves and the version changes.
    let later = run(&[], &[], &bls, "2026-06-01T00:00:02Z".parse().expect("t"));
    assert_eq!(later.snapshot.blacklists.len(), 1);
    assert_ne!(later.snapshot.version, c.snapshot.version);
}

#[test]
fn the_memo_follows_the_spec_and_forgets_deleted_objects() {
    let mut compiler = Compiler::default();
    let bad = [proxy_route("a", "r", 1, &proxy("/(", None, "5s"))];
    let c = compiler.compile(&objects(&[], &bad, &[]), now());
    assert_eq!(
        rejected(outcome(&c, Kind::ProxyRoute, "r")).0,
        "InvalidPathRegex"
    );
    let c = compiler.compile(&objects(&[], &bad, &[]), now());
    assert_eq!(
        rejected(outcome(&c, Kind::ProxyRoute, "r")).0,
        "InvalidPathRegex"
    );
    // The same name with another spec (standalone manifests keep generation 0) is compiled again.
    let fixed = [proxy_route("a", "r", 1, &proxy("/ok", None, "5s"))];
    let c = compiler.compile(&objects(&[], &fixed, &[]), now());
    assert_eq!(outcome(&c, Kind::ProxyRoute, "r"), &Outcome::Accepted);
    assert_eq!(compiler.proxy_memo.len(), 1);
    compiler.compile(&Objects::default(), now());
    assert!(
        compiler.proxy_memo.is_empty(),
        "deleted objects leave the memo"
    );
}

const SECURED: &str = "source: {kafka: {topics: [orders]}, http: {enabled: false}}\nevents:\n- type: order\n  extractors: [{field: user, eventPointer: /data/user, jwtPointer: /sub}]\nsubscriptionCheck: {mode: ValidJwt}\nsubmissionCheck: {mode: External, url: 'http://check.example/ok'}\n";

#[test]
fn access_rules_are_compiled_per_event_type() {
    let c = run(
        &[
            event_route("a", "orders", "2026-01-01T00:00:00Z", SECURED),
            event_route("a", "greetings", "2026-01-01T00:00:00Z", GREETINGS),
        ],
        &[],
        &[],
        now(),
    );
    assert_eq!(c.rejected().count(), 0, "{:?}", c.verdicts);
    let order = &c.config.event_types["order"];
    assert_eq!(order.route, "a/orders");
    assert_eq!(order.subscription, Some(Access::ValidJwt));
    assert!(
        matches!(&order.submission, Some(Access::External(u)) if u == "http://check.example/ok")
    );
    assert!(!order.http_publishing);
    assert_eq!(order.extractors[0].field, "user");
    assert_eq!(
        order.extractors[0]
            .jwt_pointer
            .as_ref()
            .map(JsonPointer::as_str),
        Some("/sub")
    );
    let greeting = &c.config.event_types["greeting"];
    assert_eq!(
        greeting.subscription, None,
        "absent: the process-wide check"
    );
    assert_eq!(greeting.submission, None);
    assert!(greeting.http_publishing, "absent source.http: allowed");
    assert_eq!(c.config.topics, ["greetings", "orders"]);
    assert_eq!(c.config.version, c.snapshot.version);
}

#[test]
fn a_later_route_cannot_loosen_a_types_access_rules() {
    let loose = SECURED
        .replace("subscriptionCheck: {mode: ValidJwt}\n", "")
        .replace("topics: [orders]", "topics: [orders2]");
    let same = SECURED.replace("topics: [orders]", "topics: [orders3]");
    let c = run(
        &[
            event_route("z", "first", "2026-01-01T00:00:00Z", SECURED),
            event_route("a", "loose", "2026-02-01T00:00:00Z", &loose),
            event_route("a", "same", "2026-03-01T00:00:00Z", &same),
        ],
        &[],
        &[],
        now(),
    );
    let (reason, message) = rejected(outcome(&c, Kind::EventRoute, "loose"));
    assert_eq!(reason, "AccessConflict");
    assert!(message.contains("EventRoute z/first"), "{message}");
    assert_eq!(outcome(&c, Kind::EventRoute, "same"), &Outcome::Accepted);
    assert_eq!(c.config.topics, ["orders", "orders3"]);
    assert_eq!(
        c.config.event_types["order"].subscription,
        Some(Access::ValidJwt)
    );
}

#[test]
fn what_the_schema_checks_is_checked_here_too() {
    // Standalone manifests never pass the apiserver's schema and CEL rules.
    let cases = [
        ("source: {}\nevents: [{type: t}]\n", "InvalidSource"),
        (
            "source: {http: {enabled: false}}\nevents: [{type: t}]\n",
            "InvalidSource",
        ),
        (
            "source: {kafka: {topics: ['a b']}}\nevents: [{type: t}]\n",
            "InvalidTopic",
        ),
        (
            "source: {kafka: {topics: [a]}}\nevents: []\n",
            "NoEventTypes",
        ),
        (
            "source: {kafka: {topics: [a]}}\nevents: [{type: t}, {type: t}]\n",
            "DuplicateEventType",
        ),
        (
            "source: {kafka: {topics: [a]}}\nevents: [{type: t}]\nsubscriptionCheck: {mode: External}\n",
            "InvalidAccessCheck",
        ),
        (
            "source: {kafka: {topics: [a]}}\nevents: [{type: t}]\nsubscriptionCheck: {mode: ValidJwt, url: 'http://x:1'}\n",
            "InvalidAccessCheck",
        ),
        (
            "source: {kafka: {topics: [a]}}\nevents: [{type: t}]\nsubmissionCheck: {mode: External, url: 'https://x:1/c'}\n",
            "InvalidAccessCheck",
        ),
    ];
    for (yaml, expected) in cases {
        let c = run(
            &[event_route("a", "r", "2026-01-01T00:00:00Z", yaml)],
            &[],
            &[],
            now(),
        );
        assert_eq!(
            rejected(outcome(&c, Kind::EventRoute, "r")).0,
            expected,
            "{yaml}"
        );
        assert!(c.config.event_types.is_empty(), "{yaml}");
    }
    let proxies = [
        (
            "endpoints: []\ntarget: {kind: Http, url: 'http://a:1'}\n",
            "NoEndpoints",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http}\n",
            "InvalidTarget",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http, url: 'ftp://a:1'}\n",
            "InvalidTarget",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http, url: 'http://a:1/path'}\n",
            "InvalidTarget",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Kafka}\n",
            "InvalidTarget",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Kafka, topic: t}\nresponse: {from: HttpAsync}\n",
            "InvalidResponse",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a, secured: true}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
            "MissingAuth",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http, url: 'http://a:1'}\nauth: {header: cookie}\n",
            "InvalidAuth",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http, url: 'http://a:1'}\naddRequestHeaders: {'bad header': x}\n",
            "InvalidHeader",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: /a}, {id: a, method: GET, pathRegex: /b}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
            "DuplicateEndpointId",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: '/public)|(/admin/.*'}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
            "InvalidPathRegex",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: ''}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
            "InvalidPathRegex",
        ),
        (
            "endpoints: [{id: a, method: GET, pathRegex: 'admin'}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
            "InvalidPathRegex",
        ),
    ];
    for (yaml, expected) in proxies {
        let c = run(&[], &[proxy_route("a", "p", 1, yaml)], &[], now());
        assert_eq!(
            rejected(outcome(&c, Kind::ProxyRoute, "p")).0,
            expected,
            "{yaml}"
        );
        assert!(c.config.proxy_routes.is_empty(), "{yaml}");
    }
    let mut empty = blacklist("a", "b", "2027-01-01T00:00:00Z");
    empty.named.spec.session_id.clear();
    let c = run(&[], &[], &[empty], now());
    assert_eq!(
        rejected(outcome(&c, Kind::Blacklist, "b")).0,
        "InvalidSessionId"
    );
}

#[test]
fn the_proxy_table_is_built_once_in_match_order() {
    let c = run(
        &[],
        &[
            proxy_route("b", "x", 1, &proxy("/x/(.+)", Some("/\\1"), "1500ms")),
            proxy_route("a", "y", 1, &proxy("/y", None, "5s")),
        ],
        &[blacklist("a", "s", "2027-01-01T00:00:00Z")],
        now(),
    );
    let ids: Vec<_> = c
        .config
        .proxy_routes
        .iter()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(ids, ["a/y", "b/x"]);
    let x = &c.config.proxy_routes[1];
    assert_eq!(x.timeout, Duration::from_millis(1500));
    assert!(x.endpoints[0].regex.is_match("/X/1"));
    assert!(!x.endpoints[0].regex.is_match("/a/x/1"));
    match &x.target {
        Target::Http(t) => assert_eq!(t.host, "books:8080"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.config.revocations[0].session_id, "session-s");
}

#[test]
fn a_snapshot_compiles_to_the_same_config_it_was_made_from() {
    let c = run(
        &[event_route("a", "orders", "2026-01-01T00:00:00Z", SECURED)],
        &[proxy_route("a", "y", 1, &proxy("/y", None, "5s"))],
        &[blacklist("a", "s", "2027-01-01T00:00:00Z")],
        now(),
    );
    let again = compile(&Objects::from_snapshot(&c.snapshot), now());
    assert_eq!(again.rejected().count(), 0);
    assert_eq!(again.snapshot, c.snapshot);
    assert_eq!(again.config.event_types, c.config.event_types);
    assert_eq!(again.config.revocations, c.config.revocations);
}

#[test]
fn http_published_events_go_to_the_routes_http_topic_or_its_first_kafka_topic() {
    let named = "source: {kafka: {topics: [orders, more]}, http: {topic: order-posts}}\nevents: [{type: order}]\n";
    let first = "source: {kafka: {topics: [greetings, other]}}\nevents: [{type: greeting}]\n";
    let http_only = "source: {http: {enabled: true}}\nevents: [{type: ping}]\n";
    let bad = "source: {http: {topic: 'a b'}}\nevents: [{type: bad}]\n";
    let c = run(
        &[
            event_route("a", "named", "2026-01-01T00:00:00Z", named),
            event_route("a", "first", "2026-01-01T00:00:00Z", first),
            event_route("a", "http-only", "2026-01-01T00:00:00Z", http_only),
            event_route("a", "bad", "2026-01-01T00:00:00Z", bad),
        ],
        &[],
        &[],
        now(),
    );
    let topic = |t: &str| c.config.event_types[t].http_topic.clone();
    assert_eq!(topic("order").as_deref(), Some("order-posts"));
    assert_eq!(topic("greeting").as_deref(), Some("greetings"));
    assert_eq!(topic("ping"), None, "the data plane's default applies");
    // The named topic is consumed, so what is produced there comes back to every pod.
    assert!(c.config.topics.contains(&"order-posts".to_owned()));
    let (reason, _) = rejected(outcome(&c, Kind::EventRoute, "bad"));
    assert_eq!(reason, "InvalidTopic");
}
