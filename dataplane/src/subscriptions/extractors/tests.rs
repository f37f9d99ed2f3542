use super::*;
use rig_crds::EventRouteSpec;
use rig_crds::event_route::{EventSource, EventType, Extractor, HttpSource};
use serde_json::json;

fn pointer(text: &str) -> JsonPointer {
    JsonPointer::parse(text).expect(text)
}

fn field(name: &str, event: &str, jwt: Option<&str>) -> FieldExtractor {
    FieldExtractor {
        field: name.to_owned(),
        event_pointer: pointer(event),
        jwt_pointer: jwt.map(pointer),
    }
}

#[test]
fn pointers_parse_and_resolve() {
    let doc = json!({
        "data": {"name": "joe", "a/b": 1, "m~n": 2, "list": [10, 20, {"x": true}], "": 3},
    });
    let cases: &[(&str, Option<Value>)] = &[
        ("/data/name", Some(json!("joe"))),
        ("/data/a~1b", Some(json!(1))),
        ("/data/m~0n", Some(json!(2))),
        ("/data/list/0", Some(json!(10))),
        ("/data/list/2/x", Some(json!(true))),
        ("/data/", Some(json!(3))),
        ("/data/list/01", None),
        ("/data/list/-", None),
        ("/data/list/+1", None),
        ("/data/list/3", None),
        ("/data/list/99999999999999999999999", None),
        ("/data/name/x", None),
        ("/nope", None),
    ];
    for (text, expected) in cases {
        assert_eq!(pointer(text).resolve(&doc), expected.as_ref(), "{text}");
        assert_eq!(pointer(text).as_str(), *text);
    }
    for (text, reason) in [
        ("", "must not be empty"),
        ("data", "must start with '/'"),
        ("/a~2", "'~' must be followed by '0' or '1'"),
        ("/a~", "'~' must be followed by '0' or '1'"),
    ] {
        assert_eq!(JsonPointer::parse(text), Err(reason), "{text}");
    }
}

#[test]
fn rig_json_is_parsed_ordered_by_index() {
    let extractors = Extractors::from_rig_json(
        r#"{
          "greeting": {
            "name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}, "jwt": {"json_pointer": "/username"}},
            "age":  {"stable_field_index": 0, "event": {"json_pointer": "/data/age"}}
          },
          "empty": {}
        }"#,
    )
    .expect("valid");
    assert_eq!(
        extractors.fields("greeting"),
        &[
            field("age", "/data/age", None),
            field("name", "/data/name", Some("/username")),
        ]
    );
    assert!(extractors.fields("empty").is_empty());
    assert!(extractors.fields("unknown").is_empty());
    assert_eq!(
        extractors.event_types().collect::<Vec<_>>(),
        ["empty", "greeting"]
    );
    assert!(!extractors.is_empty());
    assert!(Extractors::new().is_empty());
}

#[test]
fn rig_json_errors_use_rigs_texts() {
    let cases: &[(&str, &str)] = &[
        ("nope", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (r#"{"t": []}"#, "event type \"t\": expected an object"),
        (
            r#"{"t": {"a": {"event": {"json_pointer": "/a"}}}}"#,
            "stable_field_index is required, but missing for fields: [\"a\"]",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "/a"}}, "b": {"stable_field_index": 0, "event": {"json_pointer": "/b"}}}}"#,
            "Duplicate index - please use a different stable_field_index value for each field",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": -1, "event": {"json_pointer": "/a"}}}}"#,
            "Negative index - please use only non-negative values for stable_field_index",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 1.5, "event": {"json_pointer": "/a"}}}}"#,
            "Invalid configuration for fields: [\"a\"]",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": "1", "event": {"json_pointer": "/a"}}}}"#,
            "Invalid configuration for fields: [\"a\"]",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": ""}}}}"#,
            "Invalid configuration for fields: [\"a\"]",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 0}}}"#,
            "Invalid configuration for fields: [\"a\"]",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "/a"}, "jwt": "x"}}}"#,
            "Invalid configuration for fields: [\"a\"]",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "a"}}}}"#,
            "event type \"t\", field \"a\": invalid JSON pointer \"a\": must start with '/'",
        ),
        (
            r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "/a"}, "jwt": {"json_pointer": "/~x"}}}}"#,
            "invalid JSON pointer \"/~x\"",
        ),
    ];
    for (json, expected) in cases {
        let err = Extractors::from_rig_json(json).expect_err(json);
        assert!(err.to_string().contains(expected), "{json}: {err}");
    }
    // A null jwt is the same as none.
    let ok = Extractors::from_rig_json(
        r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "/a"}, "jwt": null}}}"#,
    )
    .expect("null jwt");
    assert_eq!(ok.fields("t"), &[field("a", "/a", None)]);
}

/// (field, event pointer, JWT pointer)
type FieldSpec<'a> = (&'a str, &'a str, Option<&'a str>);

fn route(events: Vec<(&str, Vec<FieldSpec<'_>>)>) -> EventRouteSpec {
    EventRouteSpec {
        source: EventSource {
            kafka: None,
            http: Some(HttpSource {
                enabled: true,
                topic: None,
            }),
        },
        events: events
            .into_iter()
            .map(|(ty, fields)| EventType {
                type_: ty.to_owned(),
                extractors: fields
                    .into_iter()
                    .map(|(f, e, j)| Extractor {
                        field: f.to_owned(),
                        event_pointer: e.to_owned(),
                        jwt_pointer: j.map(str::to_owned),
                    })
                    .collect(),
            })
            .collect(),
        subscription_check: None,
        submission_check: None,
    }
}

/// The routes through the one compiler (each its own object, oldest first), as the data plane
/// compiles them; `Err` with the verdicts when one is rejected.
fn from_routes(specs: &[EventRouteSpec]) -> Result<Extractors, String> {
    let objects = rig_crds::compile::Objects {
        event_routes: specs
            .iter()
            .enumerate()
            .map(|(i, spec)| rig_crds::compile::Object::new("ns", format!("r{i}"), spec.clone()))
            .collect(),
        ..Default::default()
    };
    let compiled =
        rig_crds::compile::compile(&objects, "2026-01-01T00:00:00Z".parse().expect("time"));
    let rejected: Vec<String> = compiled.rejected().map(ToString::to_string).collect();
    if rejected.is_empty() {
        Ok(Extractors::from_compiled(&compiled.config.event_types))
    } else {
        Err(rejected.join("; "))
    }
}

#[test]
fn event_routes_give_each_type_its_fields() {
    let specs = [
        route(vec![
            ("greeting", vec![("name", "/data/name", Some("/username"))]),
            ("other", vec![]),
        ]),
        route(vec![(
            "greeting",
            vec![("name", "/data/name", Some("/username"))],
        )]),
    ];
    let extractors = from_routes(&specs).expect("valid");
    assert_eq!(
        extractors.fields("greeting"),
        &[field("name", "/data/name", Some("/username"))]
    );
    assert_eq!(
        extractors.event_types().collect::<Vec<_>>(),
        ["greeting", "other"]
    );
}

#[test]
fn event_route_errors() {
    let cases: Vec<(Vec<EventRouteSpec>, &str)> = vec![
        (
            vec![
                route(vec![("t", vec![("name", "/data/name", None)])]),
                route(vec![("t", vec![("name", "/data/other", None)])]),
            ],
            "ExtractorConflict: event type \"t\" is already defined with different extractors",
        ),
        (
            vec![route(vec![(
                "t",
                vec![("name", "/a", None), ("name", "/a", Some("/u"))],
            )])],
            "DuplicateExtractor: event type \"t\" defines extractor field \"name\" twice",
        ),
        (
            vec![route(vec![("t", vec![("", "/a", None)])])],
            "InvalidExtractor: event type \"t\": an extractor field must not be empty",
        ),
        (
            vec![route(vec![("t", vec![("n", "data", None)])])],
            "field \"n\": eventPointer \"data\" is not a JSON pointer",
        ),
        (
            vec![route(vec![("t", vec![("n", "/a", Some("/~"))])])],
            "jwtPointer \"/~\" is not a JSON pointer",
        ),
    ];
    for (specs, expected) in cases {
        let err = from_routes(&specs).expect_err(expected);
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn merge_unions_fields_and_rejects_conflicts() {
    let rig = Extractors::from_rig_json(
        r#"{"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "/a"}}}, "u": {}}"#,
    )
    .expect("rig");
    let routes = from_routes(&[route(vec![(
        "t",
        vec![("a", "/a", None), ("b", "/b", None)],
    )])])
    .expect("routes");
    let merged = rig.clone().merge(routes).expect("compatible");
    assert_eq!(
        merged.fields("t"),
        &[field("a", "/a", None), field("b", "/b", None)]
    );
    assert_eq!(merged.event_types().collect::<Vec<_>>(), ["t", "u"]);
    let conflicting =
        from_routes(&[route(vec![("t", vec![("a", "/other", None)])])]).expect("routes");
    let err = rig.merge(conflicting).expect_err("conflict");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

#[test]
fn jwt_subscriptions_follow_rig() {
    let extractors = Extractors::from_rig_json(
        r#"{
          "greeting": {
            "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}, "jwt": {"json_pointer": "/username"}},
            "age":  {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}, "jwt": {"json_pointer": "/profile/age"}},
            "city": {"stable_field_index": 2, "event": {"json_pointer": "/data/city"}}
          },
          "alert": {
            "team": {"stable_field_index": 0, "event": {"json_pointer": "/data/team"}, "jwt": {"json_pointer": "/team"}}
          },
          "plain": {}
        }"#,
    )
    .expect("valid");
    let sub = |ty: &str, c: Value| {
        Subscription::new(ty, vec![serde_json::from_value(c).expect("constraints")])
    };
    let cases: Vec<(Value, Vec<Subscription>)> = vec![
        (json!({}), vec![]),
        (json!({"sub": "x"}), vec![]),
        (
            json!({"username": "joe"}),
            vec![sub("greeting", json!({"name": "joe"}))],
        ),
        (
            json!({"username": "joe", "profile": {"age": 30}, "team": true}),
            vec![
                sub("alert", json!({"team": true})),
                sub("greeting", json!({"name": "joe", "age": 30})),
            ],
        ),
        // Only scalars count; null, arrays and objects are ignored.
        (
            json!({"username": ["joe"], "profile": {"age": null}, "team": {"a": 1}}),
            vec![],
        ),
        (
            json!({"username": null, "profile": {"age": 1.5}}),
            vec![sub("greeting", json!({"age": 1.5}))],
        ),
    ];
    for (claims, expected) in cases {
        assert_eq!(extractors.jwt_subscriptions(&claims), expected, "{claims}");
    }
}
