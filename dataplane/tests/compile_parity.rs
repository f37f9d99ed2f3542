//! Property test: the operator and a standalone data plane judge every `ProxyRoute` the same way
//! (accepted or rejected, with the same reason), and for an accepted one the data plane matches
//! the same paths whether it got the route from manifests (standalone) or from the operator's
//! snapshot (cluster mode). Path patterns are random strings over regex metacharacters, so many
//! are invalid, some try to escape the anchoring (`/a)|(/b`), and paths are random too.

use std::sync::Arc;

use http::Method;
use proptest::prelude::*;
use rig_crds::compile::Objects;
use rig_crds::{ProxyRoute, ProxyRouteSpec};
use rig_dataplane::Config;
use rig_dataplane::manifests::Manifests;
use rig_dataplane::proxy::metrics::ProxyMetrics;
use rig_dataplane::proxy::routes::{Found, Table, from_compiled};
use rig_dataplane::routes::{self, Routes};

fn route(pattern: &str) -> ProxyRoute {
    let spec: ProxyRouteSpec = serde_json::from_value(serde_json::json!({
        "endpoints": [{"id": "e", "method": "GET", "pathRegex": pattern}],
        "target": {"kind": "Http", "url": "http://127.0.0.1:9"},
    }))
    .expect("spec");
    let mut route = ProxyRoute::new("r", spec);
    route.metadata.namespace = Some("ns".into());
    route.metadata.generation = Some(1);
    route
}

fn table(routes: &Routes) -> Table {
    Table::new(from_compiled(
        &routes.compiled.proxy_routes,
        &ProxyMetrics::default(),
    ))
}

fn matches(table: &Table, path: &str) -> bool {
    matches!(table.find(&Method::GET, path), Found::Endpoint(..))
}

fn pattern() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("/"),
            Just("."),
            Just("*"),
            Just("+"),
            Just("?"),
            Just("("),
            Just(")"),
            Just("|"),
            Just("^"),
            Just("$"),
            Just("\\"),
            Just("["),
            Just("]"),
            Just("{2}"),
        ],
        0..10,
    )
    .prop_map(|parts| format!("/{}", parts.concat()))
}

fn path() -> impl Strategy<Value = String> {
    "/[abAB/.]{0,8}"
}

proptest! {
    #[test]
    fn operator_and_standalone_agree(pattern in pattern(), paths in proptest::collection::vec(path(), 1..8)) {
        let config = Config::from_lookup(|_| None).expect("defaults");
        let now = "2026-06-01T00:00:00Z".parse().expect("time");
        let operator = rig_operator::compile::compile(&[], &[Arc::new(route(&pattern))], &[], now);
        let accepted = operator.verdicts[0].outcome == rig_operator::compile::Outcome::Accepted;
        let manifests = Manifests { proxy_routes: vec![route(&pattern)], ..Default::default() };
        let standalone = routes::compile_objects(&config, &manifests.objects());
        prop_assert_eq!(standalone.is_ok(), accepted, "pattern {:?}: {:?}", pattern, operator.verdicts);
        if let (Err(error), rig_operator::compile::Outcome::Rejected { reason, .. }) =
            (&standalone, &operator.verdicts[0].outcome)
        {
            prop_assert!(error.to_string().contains(reason), "{error}");
        }
        if let Ok(standalone) = standalone {
            let cluster = routes::compile_objects(&config, &Objects::from_snapshot(&operator.snapshot))
                .expect("the operator's snapshot compiles");
            let (a, b) = (table(&standalone), table(&cluster));
            for path in &paths {
                prop_assert_eq!(matches(&a, path), matches(&b, path), "pattern {:?} path {:?}", pattern, path);
                // Anchored: a match covers the whole path, never a part of it.
                if matches(&a, path) {
                    let re = rig_crds::compile::path_regex(&pattern).expect("compiles");
                    let whole = re.find(path).is_some_and(|m| m.start() == 0 && m.end() == path.len());
                    prop_assert!(whole, "pattern {:?} path {:?}", pattern, path);
                }
            }
        }
    }
}

#[test]
fn the_issues_escaping_pattern_is_refused_by_both() {
    let config = Config::from_lookup(|_| None).expect("defaults");
    let pattern = "/public)|(/admin/.*";
    let operator = rig_operator::compile::compile(
        &[],
        &[Arc::new(route(pattern))],
        &[],
        "2026-06-01T00:00:00Z".parse().expect("time"),
    );
    assert!(matches!(
        operator.verdicts[0].outcome,
        rig_operator::compile::Outcome::Rejected {
            reason: "InvalidPathRegex",
            ..
        }
    ));
    let manifests = Manifests {
        proxy_routes: vec![route(pattern)],
        ..Default::default()
    };
    let error = routes::compile_objects(&config, &manifests.objects()).expect_err("refused");
    assert!(error.to_string().contains("InvalidPathRegex"), "{error}");
}
