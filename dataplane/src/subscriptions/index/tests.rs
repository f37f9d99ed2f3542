use super::*;
use crate::events::parse_structured;
use serde_json::json;

const GREETING: &str = "greeting";

fn extractors() -> Arc<Extractors> {
    Arc::new(
        Extractors::from_rig_json(
            r#"{"greeting": {
                "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}},
                "age":  {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}}
            }}"#,
        )
        .expect("extractors"),
    )
}

fn event(event_type: &str, data: Value) -> CloudEvent {
    let json =
        json!({"specversion": "1.0", "type": event_type, "source": "s", "id": "i", "data": data});
    parse_structured(json.to_string().as_bytes()).expect("event")
}

fn sub(event_type: &str, one_of: Value) -> Subscription {
    Subscription::new(event_type, serde_json::from_value(one_of).expect("one_of"))
}

fn matches(index: &Index, event: &CloudEvent) -> Vec<ConnId> {
    let mut out = Vec::new();
    index.matching(event, &mut out);
    let len = out.len();
    out.sort_unstable();
    out.dedup();
    assert_eq!(out.len(), len, "each connection at most once");
    out
}

#[test]
fn rigs_example() {
    let index = Index::new(extractors());
    index.set(1, &[sub(GREETING, json!([{"name": "joe"}]))]);
    index.set(2, &[sub(GREETING, json!([{"name": "joe", "age": 30}]))]);
    let cases: &[(Value, &[ConnId])] = &[
        (json!({"name": "joe", "age": 20}), &[1]),
        (json!({"name": "joe", "age": 30}), &[1, 2]),
        (json!({"name": "joe"}), &[1]),
        (json!({"name": "joe", "age": null}), &[1]),
        (json!({"name": "bob", "age": 30}), &[]),
    ];
    for (data, expected) in cases {
        assert_eq!(
            matches(&index, &event(GREETING, data.clone())),
            *expected,
            "{data}"
        );
    }
}

#[test]
fn each_semantic_rule() {
    // (subscription type, oneOf, event type, event data, matches?)
    let cases: &[(&str, Value, &str, Value, bool)] = &[
        // Exact type match.
        (GREETING, json!([]), GREETING, json!({}), true),
        (GREETING, json!([]), "greeting.x", json!({}), false),
        (GREETING, json!([]), "Greeting", json!({}), false),
        ("greeting.*", json!([]), "greeting.x", json!({}), false),
        // Empty oneOf, or an empty clause: every event of the type.
        (GREETING, json!([]), GREETING, json!({"name": "x"}), true),
        (GREETING, json!([{}]), GREETING, json!(null), true),
        // OR of ANDs.
        (
            GREETING,
            json!([{"name": "joe"}, {"name": "bob"}]),
            GREETING,
            json!({"name": "bob"}),
            true,
        ),
        (
            GREETING,
            json!([{"name": "joe"}, {"name": "bob"}]),
            GREETING,
            json!({"name": "ann"}),
            false,
        ),
        (
            GREETING,
            json!([{"name": "joe", "age": 30}]),
            GREETING,
            json!({"name": "joe", "age": 31}),
            false,
        ),
        (
            GREETING,
            json!([{"name": "joe", "age": 30}, {"age": 31}]),
            GREETING,
            json!({"name": "x", "age": 31}),
            true,
        ),
        // Keys without an extractor are wildcards, also for types without extractors.
        (
            GREETING,
            json!([{"name": "joe", "color": "red"}]),
            GREETING,
            json!({"name": "joe"}),
            true,
        ),
        (
            "other",
            json!([{"name": "joe"}]),
            "other",
            json!({"name": "bob"}),
            true,
        ),
        // A null constraint is a wildcard.
        (
            GREETING,
            json!([{"name": null}]),
            GREETING,
            json!({"name": "bob"}),
            true,
        ),
        // Missing, null and non-scalar event values are null: only unconstrained matches.
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!({"name": "joe"}),
            false,
        ),
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!({"age": null}),
            false,
        ),
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!({"age": [30]}),
            false,
        ),
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!({"age": {"v": 30}}),
            false,
        ),
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!("not an object"),
            false,
        ),
        (
            GREETING,
            json!([{"name": "joe"}]),
            GREETING,
            json!({"age": [30], "name": "joe"}),
            true,
        ),
        // Scalars compare as canonical JSON.
        (
            GREETING,
            json!([{"age": "30"}]),
            GREETING,
            json!({"age": 30}),
            false,
        ),
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!({"age": "30"}),
            false,
        ),
        (
            GREETING,
            json!([{"age": 30}]),
            GREETING,
            json!({"age": 30.0}),
            true,
        ),
        (
            GREETING,
            json!([{"age": 30.5}]),
            GREETING,
            json!({"age": 30.5}),
            true,
        ),
        (
            GREETING,
            json!([{"age": -1}]),
            GREETING,
            json!({"age": -1.0}),
            true,
        ),
        (
            GREETING,
            json!([{"age": 18446744073709551615u64}]),
            GREETING,
            json!({"age": 18446744073709551615u64}),
            true,
        ),
        (
            GREETING,
            json!([{"age": 1}]),
            GREETING,
            json!({"age": true}),
            false,
        ),
        (
            GREETING,
            json!([{"age": true}]),
            GREETING,
            json!({"age": true}),
            true,
        ),
        (
            GREETING,
            json!([{"age": true}]),
            GREETING,
            json!({"age": "true"}),
            false,
        ),
        (
            GREETING,
            json!([{"name": ""}]),
            GREETING,
            json!({"name": ""}),
            true,
        ),
        (
            GREETING,
            json!([{"name": "a"}]),
            GREETING,
            json!({"name": "A"}),
            false,
        ),
        // Array and object constraints never match.
        (
            GREETING,
            json!([{"name": ["joe"]}]),
            GREETING,
            json!({"name": ["joe"]}),
            false,
        ),
        (
            GREETING,
            json!([{"name": {"a": 1}}]),
            GREETING,
            json!({"name": {"a": 1}}),
            false,
        ),
        (
            GREETING,
            json!([{"name": ["joe"]}, {"age": 1}]),
            GREETING,
            json!({"name": "x", "age": 1}),
            true,
        ),
    ];
    for (sub_type, one_of, event_type, data, expected) in cases {
        let index = Index::new(extractors());
        index.set(7, &[sub(sub_type, one_of.clone())]);
        let got = matches(&index, &event(event_type, data.clone()));
        assert_eq!(
            got == [7],
            *expected,
            "{sub_type} {one_of} vs {event_type} {data}: {got:?}"
        );
    }
}

#[test]
fn a_connection_matching_several_ways_is_returned_once() {
    let index = Index::new(extractors());
    index.set(
        1,
        &[
            sub(
                GREETING,
                json!([{"name": "joe"}, {"age": 30}, {"name": "joe", "age": 30}]),
            ),
            sub(GREETING, json!([])),
            sub(GREETING, json!([{"name": "joe"}])),
            sub("other", json!([])),
        ],
    );
    index.set(2, &[sub(GREETING, json!([{"name": "joe"}]))]);
    assert_eq!(
        matches(&index, &event(GREETING, json!({"name": "joe", "age": 30}))),
        [1, 2]
    );
    assert_eq!(
        matches(&index, &event(GREETING, json!({"name": "bob"}))),
        [1]
    );
    assert_eq!(matches(&index, &event("other", json!({}))), [1]);
    // `out` is appended to, not cleared.
    let mut out = vec![99];
    index.matching(&event("other", json!({})), &mut out);
    assert_eq!(out, [99, 1]);
}

#[test]
fn set_replaces_and_remove_forgets() {
    let index = Index::new(extractors());
    let joe = event(GREETING, json!({"name": "joe"}));
    let bob = event(GREETING, json!({"name": "bob"}));
    assert!(index.is_empty());

    index.set(
        1,
        &[
            sub(GREETING, json!([{"name": "joe"}])),
            sub("other", json!([])),
        ],
    );
    index.set(2, &[sub(GREETING, json!([{"name": "joe"}]))]);
    assert_eq!((index.len(), index.subscription_count()), (2, 3));
    assert_eq!(matches(&index, &joe), [1, 2]);

    index.set(1, &[sub(GREETING, json!([{"name": "bob"}]))]);
    assert_eq!((index.len(), index.subscription_count()), (2, 2));
    assert_eq!(matches(&index, &joe), [2]);
    assert_eq!(matches(&index, &bob), [1]);
    assert_eq!(
        matches(&index, &event("other", json!({}))),
        Vec::<ConnId>::new()
    );

    index.remove(2);
    index.remove(2);
    index.remove(12345);
    assert_eq!((index.len(), index.subscription_count()), (1, 1));
    assert!(matches(&index, &joe).is_empty());

    index.set(1, &[]);
    assert!(index.is_empty());
    assert_eq!(index.subscription_count(), 0);
    assert!(matches(&index, &bob).is_empty());
    assert!(
        index.read().types.is_empty(),
        "no empty tables are left behind"
    );
}

#[test]
fn set_extractors_rekeys_changed_types_only() {
    let none = Arc::new(Extractors::new());
    let index = Index::new(none.clone());
    index.set(1, &[sub(GREETING, json!([{"name": "joe"}]))]);
    index.set(2, &[sub("other", json!([{"name": "joe"}]))]);
    let bob = event(GREETING, json!({"name": "bob", "user": "joe"}));
    let joe = event(GREETING, json!({"name": "joe", "user": "bob"}));
    let other_bob = event("other", json!({"name": "bob"}));

    // No extractor: `name` is a wildcard.
    assert_eq!(matches(&index, &bob), [1]);
    assert_eq!(matches(&index, &other_bob), [2]);

    index.set_extractors(extractors());
    assert!(Arc::ptr_eq(&index.extractors(), &index.extractors()));
    assert_eq!(matches(&index, &bob), Vec::<ConnId>::new());
    assert_eq!(matches(&index, &joe), [1]);
    assert_eq!(matches(&index, &other_bob), [2], "other types untouched");

    let moved = Extractors::from_rig_json(
        r#"{"greeting": {"name": {"stable_field_index": 0, "event": {"json_pointer": "/data/user"}}}}"#,
    )
    .expect("moved");
    index.set_extractors(Arc::new(moved));
    assert_eq!(matches(&index, &bob), [1]);
    assert_eq!(matches(&index, &joe), Vec::<ConnId>::new());

    index.set_extractors(none);
    assert_eq!(matches(&index, &bob), [1]);
    assert_eq!(matches(&index, &joe), [1]);
    assert_eq!((index.len(), index.subscription_count()), (2, 2));

    // Re-keyed connections can still be replaced and removed cleanly.
    index.set_extractors(extractors());
    index.set(1, &[sub(GREETING, json!([{"age": 3}]))]);
    assert!(matches(&index, &joe).is_empty());
    index.remove(1);
    index.remove(2);
    assert!(index.read().types.is_empty());
}

#[test]
fn large_cells_stay_consistent_through_removals() {
    let index = Index::new(extractors());
    let all: Vec<ConnId> = (0..200).collect();
    for &conn in &all {
        index.set(conn, &[sub(GREETING, json!([]))]);
    }
    for conn in (0..200).step_by(3) {
        index.remove(conn);
    }
    let expected: Vec<ConnId> = all.iter().copied().filter(|c| c % 3 != 0).collect();
    assert_eq!(matches(&index, &event(GREETING, json!({}))), expected);
    for &conn in &expected {
        index.remove(conn);
    }
    assert!(matches(&index, &event(GREETING, json!({}))).is_empty());
}

/// xorshift64*, for deterministic pseudo-random workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// RIG's semantics, written the slow and obvious way.
fn naive_match(extractors: &Extractors, subscription: &Subscription, event: &CloudEvent) -> bool {
    if subscription.event_type != event.event_type {
        return false;
    }
    let fields = extractors.fields(&subscription.event_type);
    let clause_matches = |clause: &Constraints| {
        fields.iter().all(|f| match clause.get(&f.field) {
            None | Some(Value::Null) => true,
            Some(wanted) => match (wanted, f.event_pointer.resolve(&event.value)) {
                (Value::String(a), Some(Value::String(b))) => a == b,
                (Value::Bool(a), Some(Value::Bool(b))) => a == b,
                (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
                _ => false,
            },
        })
    };
    subscription.one_of.is_empty() || subscription.one_of.iter().any(clause_matches)
}

fn random_subscription(rng: &mut Rng) -> Subscription {
    let types = [GREETING, GREETING, GREETING, "other", "rare"];
    let names = [
        json!("joe"),
        json!("bob"),
        json!("ann"),
        json!(null),
        json!(["joe"]),
    ];
    let ages = [json!(20), json!(30), json!("30"), json!(30.0), json!(null)];
    let clauses = (0..rng.next() % 3)
        .map(|_| {
            let mut clause = Constraints::new();
            if rng.next().is_multiple_of(2) {
                clause.insert("name".into(), rng.pick(&names).clone());
            }
            if rng.next().is_multiple_of(2) {
                clause.insert("age".into(), rng.pick(&ages).clone());
            }
            if rng.next().is_multiple_of(5) {
                clause.insert("color".into(), json!("red"));
            }
            clause
        })
        .collect();
    Subscription::new(*rng.pick(&types), clauses)
}

#[test]
fn ten_thousand_connections_match_exactly_the_expected_ids() {
    let extractors = extractors();
    let index = Index::new(extractors.clone());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut all: HashMap<ConnId, Vec<Subscription>> = HashMap::new();
    for conn in 0..10_000u64 {
        let subs: Vec<Subscription> = (0..1 + rng.next() % 3)
            .map(|_| random_subscription(&mut rng))
            .collect();
        index.set(conn, &subs);
        all.insert(conn, subs);
    }
    // Churn: replace some, remove some.
    for conn in (0..10_000u64).step_by(7) {
        let subs = vec![random_subscription(&mut rng)];
        index.set(conn, &subs);
        all.insert(conn, subs);
    }
    for conn in (0..10_000u64).step_by(11) {
        index.remove(conn);
        all.remove(&conn);
    }
    assert_eq!(index.len(), all.len());
    assert_eq!(
        index.subscription_count(),
        all.values().map(Vec::len).sum::<usize>()
    );

    let names = [
        json!("joe"),
        json!("bob"),
        json!("ann"),
        json!(null),
        json!(["joe"]),
    ];
    let ages = [
        json!(20),
        json!(30),
        json!("30"),
        json!(30.0),
        json!(null),
        json!({}),
    ];
    let mut total = 0;
    for _ in 0..300 {
        let mut data = serde_json::Map::new();
        if !rng.next().is_multiple_of(4) {
            data.insert("name".into(), rng.pick(&names).clone());
        }
        if !rng.next().is_multiple_of(4) {
            data.insert("age".into(), rng.pick(&ages).clone());
        }
        let event_type = *rng.pick(&[GREETING, GREETING, "other", "unknown"]);
        let ev = event(event_type, Value::Object(data));
        let mut expected: Vec<ConnId> = all
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| naive_match(&extractors, s, &ev)))
            .map(|(conn, _)| *conn)
            .collect();
        expected.sort_unstable();
        let got = matches(&index, &ev);
        assert_eq!(got, expected, "{}", ev.value);
        total += got.len();
    }
    assert!(total > 10_000, "the workload matches plenty ({total})");
}

#[test]
fn concurrent_writers_and_readers() {
    let index = Index::new(extractors());
    let joe = event(GREETING, json!({"name": "joe"}));
    std::thread::scope(|scope| {
        for worker in 0..4u64 {
            let index = &index;
            scope.spawn(move || {
                for i in 0..500u64 {
                    let conn = worker * 1_000 + i;
                    index.set(conn, &[sub(GREETING, json!([{"name": "joe"}]))]);
                    if i % 2 == 0 {
                        index.remove(conn);
                    }
                }
            });
        }
        for _ in 0..2 {
            let (index, joe) = (&index, &joe);
            scope.spawn(move || {
                for _ in 0..200 {
                    let _ = matches(index, joe);
                }
            });
        }
    });
    let got = matches(&index, &joe);
    let expected: Vec<ConnId> = (0..4u64)
        .flat_map(|w| {
            (0..500u64)
                .filter(|i| i % 2 == 1)
                .map(move |i| w * 1_000 + i)
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(index.len(), 1_000);
}

#[test]
fn encodings_are_canonical_and_unambiguous() {
    let enc = |v: Value| {
        let mut out = Vec::new();
        assert!(encode_scalar(&v, &mut out), "{v}");
        out
    };
    assert_eq!(enc(json!(30)), enc(json!(30.0)));
    assert_eq!(enc(json!(0)), enc(json!(-0.0)));
    assert_eq!(enc(json!(9.3e18)), enc(json!(9_300_000_000_000_000_000u64)));
    assert_ne!(enc(json!(30)), enc(json!("30")));
    assert_ne!(enc(json!(30)), enc(json!(30.5)));
    assert_ne!(enc(json!(true)), enc(json!("true")));
    // Concatenations cannot collide: ("ab","c") vs ("a","bc").
    let mut one = enc(json!("ab"));
    one.extend(enc(json!("c")));
    let mut two = enc(json!("a"));
    two.extend(enc(json!("bc")));
    assert_ne!(one, two);
    for v in [json!(null), json!([]), json!({})] {
        let mut out = Vec::new();
        assert!(!encode_scalar(&v, &mut out));
        assert!(out.is_empty());
    }
}
