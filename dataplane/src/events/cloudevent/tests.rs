use super::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn structured_valid_events_keep_their_bytes() {
    let cases: &[(&str, SpecVersion, &str, &str, &str)] = &[
        (
            r#"{"cloudEventsVersion":"0.1","eventType":"t1","source":"s1","eventID":"i1"}"#,
            SpecVersion::V0_1,
            "t1",
            "i1",
            "s1",
        ),
        (
            r#"{"specversion":"0.2","type":"t2","source":"s2","id":"i2","extra":{"a":[1,2]}}"#,
            SpecVersion::V0_2,
            "t2",
            "i2",
            "s2",
        ),
        (
            "  {\"id\":\"i3\",\"type\":\"t3\" , \"specversion\":\"1.0\",\"source\":\"/s3\",\"data\":{\"name\":\"joe\"}}\n",
            SpecVersion::V1_0,
            "t3",
            "i3",
            "/s3",
        ),
    ];
    for (body, version, ty, id, source) in cases {
        let event = parse_structured(body.as_bytes()).expect(body);
        assert_eq!(event.spec_version, *version, "{body}");
        assert_eq!(event.event_type, *ty, "{body}");
        assert_eq!(event.id, *id, "{body}");
        assert_eq!(event.source, *source, "{body}");
        assert_eq!(event.json, body.as_bytes(), "verbatim: {body}");
        assert_eq!(
            event.value,
            serde_json::from_str::<Value>(body).expect("json")
        );
    }
}

#[test]
fn structured_invalid_events_are_rejected_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        ("[1]", "expected a JSON object, got an array"),
        ("\"x\"", "expected a JSON object, got a string"),
        ("null", "expected a JSON object, got null"),
        (
            r#"{"type":"t","source":"s","id":"i"}"#,
            "missing \"specversion\"",
        ),
        (
            r#"{"specversion":"0.3","type":"t","source":"s","id":"i"}"#,
            "unsupported CloudEvents version \"0.3\"",
        ),
        (
            r#"{"specversion":1.0,"type":"t","source":"s","id":"i"}"#,
            "unsupported CloudEvents version 1.0 ",
        ),
        (
            r#"{"cloudEventsVersion":"0.2","eventType":"t","source":"s","eventID":"i"}"#,
            "unsupported CloudEvents version \"0.2\"",
        ),
        (
            r#"{"specversion":"1.0","source":"s","id":"i"}"#,
            "CloudEvents 1.0 requires \"type\"",
        ),
        (
            r#"{"specversion":"1.0","type":"","source":"s","id":"i"}"#,
            "CloudEvents 1.0 requires \"type\"",
        ),
        (
            r#"{"specversion":"1.0","type":"t","source":7,"id":"i"}"#,
            "CloudEvents 1.0 requires \"source\"",
        ),
        (
            r#"{"specversion":"1.0","type":"t","source":"s","id":7}"#,
            "CloudEvents 1.0 requires \"id\" to be a non-empty string",
        ),
        (
            r#"{"specversion":"0.2","type":"t","source":"","id":"i"}"#,
            "CloudEvents 0.2 requires \"source\"",
        ),
        (
            r#"{"specversion":"0.2","eventType":"t","source":"s","id":"i"}"#,
            "CloudEvents 0.2 requires \"type\"",
        ),
        (
            r#"{"cloudEventsVersion":"0.1","type":"t","source":"s","eventID":"i"}"#,
            "CloudEvents 0.1 requires \"eventType\"",
        ),
        (
            r#"{"cloudEventsVersion":"0.1","eventType":"t","source":"s","id":"i"}"#,
            "CloudEvents 0.1 requires \"eventID\"",
        ),
    ];
    for (body, expected) in cases {
        let err = parse_structured(body.as_bytes()).expect_err(body);
        assert!(
            err.to_string().contains(expected),
            "{body}: {err} does not contain {expected}"
        );
    }
}

#[test]
fn long_spec_versions_are_shortened_in_messages() {
    let body = format!(
        r#"{{"specversion":"{}","type":"t","source":"s","id":"i"}}"#,
        "é".repeat(100)
    );
    let err = parse_structured(body.as_bytes()).expect_err("unsupported");
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn binary_builds_ordered_json_for_each_content_type() {
    struct Case {
        version: SpecVersion,
        content_type: Option<&'static str>,
        data: &'static [u8],
        json: &'static str,
    }
    let cases = [
        Case {
            version: SpecVersion::V1_0,
            content_type: Some("application/json"),
            data: br#"{"name":"joe"}"#,
            json: r#"{"specversion":"1.0","id":"i","source":"s","type":"t","x":"1","datacontenttype":"application/json","data":{"name":"joe"}}"#,
        },
        Case {
            version: SpecVersion::V1_0,
            content_type: Some("Application/Vnd.Foo+JSON; charset=utf-8"),
            data: b"[1]",
            json: r#"{"specversion":"1.0","id":"i","source":"s","type":"t","x":"1","datacontenttype":"Application/Vnd.Foo+JSON; charset=utf-8","data":[1]}"#,
        },
        Case {
            version: SpecVersion::V1_0,
            content_type: Some("text/plain"),
            data: b"hello",
            json: r#"{"specversion":"1.0","id":"i","source":"s","type":"t","x":"1","datacontenttype":"text/plain","data":"hello"}"#,
        },
        Case {
            version: SpecVersion::V1_0,
            content_type: Some("application/octet-stream"),
            data: &[0xff, 0x00, 0x10],
            json: r#"{"specversion":"1.0","id":"i","source":"s","type":"t","x":"1","datacontenttype":"application/octet-stream","data_base64":"/wAQ"}"#,
        },
        Case {
            version: SpecVersion::V1_0,
            content_type: None,
            data: b"",
            json: r#"{"specversion":"1.0","id":"i","source":"s","type":"t","x":"1"}"#,
        },
        Case {
            version: SpecVersion::V0_2,
            content_type: Some("application/json"),
            data: br#"{"a":1}"#,
            json: r#"{"specversion":"0.2","id":"i","source":"s","type":"t","x":"1","data":{"a":1}}"#,
        },
        Case {
            version: SpecVersion::V0_2,
            content_type: Some("text/plain"),
            data: b"hi",
            json: r#"{"specversion":"0.2","id":"i","source":"s","type":"t","x":"1","contenttype":"text/plain","data":"hi"}"#,
        },
    ];
    for case in cases {
        let event = Binary {
            spec_version: case.version,
            attributes: vec![
                ("x".into(), Value::from("1")),
                ("type".into(), Value::from("t")),
                ("source".into(), Value::from("s")),
                ("id".into(), Value::from("i")),
                ("id".into(), Value::from("ignored duplicate")),
                ("data".into(), Value::from("reserved")),
                ("specversion".into(), Value::from("9")),
            ],
            content_type: case.content_type,
            data: case.data,
        }
        .into_event()
        .expect(case.json);
        assert_eq!(std::str::from_utf8(&event.json).expect("utf8"), case.json);
        assert_eq!(
            event.value,
            serde_json::from_str::<Value>(case.json).expect("json")
        );
        assert_eq!(event.spec_version, case.version);
        assert_eq!(
            (
                event.event_type.as_str(),
                event.id.as_str(),
                event.source.as_str()
            ),
            ("t", "i", "s")
        );
    }
}

#[test]
fn binary_errors() {
    let base = || {
        vec![
            ("type".to_owned(), Value::from("t")),
            ("source".to_owned(), Value::from("s")),
            ("id".to_owned(), Value::from("i")),
        ]
    };
    let cases: Vec<(Binary<'_>, &str)> = vec![
        (
            Binary {
                spec_version: SpecVersion::V1_0,
                attributes: base(),
                content_type: Some("application/json"),
                data: b"{not json",
            },
            "not valid JSON although the content type is \"application/json\"",
        ),
        (
            Binary {
                spec_version: SpecVersion::V0_2,
                attributes: base(),
                content_type: Some("application/octet-stream"),
                data: &[0xff],
            },
            "not valid UTF-8",
        ),
        (
            Binary {
                spec_version: SpecVersion::V1_0,
                attributes: base().into_iter().skip(1).collect(),
                content_type: None,
                data: b"",
            },
            "requires \"type\"",
        ),
        (
            Binary {
                spec_version: SpecVersion::V1_0,
                attributes: vec![
                    ("type".to_owned(), Value::from("t")),
                    ("source".to_owned(), json!({"not": "a string"})),
                    ("id".to_owned(), Value::from("i")),
                ],
                content_type: None,
                data: b"",
            },
            "requires \"source\"",
        ),
    ];
    for (binary, expected) in cases {
        let err = binary.into_event().expect_err(expected);
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn rig_events_are_valid_1_0_with_unique_ids() {
    let new = |data| CloudEvent::new_rig_as(SpecVersion::V1_0, "rig.connection.create", data);
    let a = new(json!({"connection_token": "tok"}));
    let b = new(json!({"connection_token": "tok"}));
    assert_ne!(a.id, b.id);
    for event in [&a, &b] {
        let parsed = parse_structured(&event.json).expect("own events parse");
        assert_eq!(&parsed, event);
        assert_eq!(event.spec_version, SpecVersion::V1_0);
        assert_eq!(event.source, "/rig");
        assert_eq!(event.event_type, "rig.connection.create");
        assert_eq!(event.data(), Some(&json!({"connection_token": "tok"})));
        let time = event.value["time"].as_str().expect("time");
        assert_eq!(time.len(), "2019-03-27T11:53:18.435690Z".len(), "{time}");
        assert!(time.ends_with('Z'));
    }
    assert!(a.json.starts_with(br#"{"specversion":"1.0","id":""#));
}

#[test]
fn rfc3339_formats_known_instants() {
    let cases: &[(u64, u32, &str)] = &[
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (951_782_400, 0, "2000-02-29T00:00:00.000000Z"),
        (951_868_799, 999_999, "2000-02-29T23:59:59.999999Z"),
        (951_868_800, 0, "2000-03-01T00:00:00.000000Z"),
        (1_553_687_598, 435_690, "2019-03-27T11:53:18.435690Z"),
        (1_700_000_000, 1, "2023-11-14T22:13:20.000001Z"),
        (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
        (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
    ];
    for (secs, micros, expected) in cases {
        let time =
            UNIX_EPOCH + Duration::from_secs(*secs) + Duration::from_micros(u64::from(*micros));
        assert_eq!(format_rfc3339(time), *expected);
    }
}

#[test]
fn base64_matches_rfc4648_vectors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
        (&[0xfb, 0xff], "+/8="),
    ];
    for (input, expected) in cases {
        assert_eq!(base64(input), *expected);
    }
}

#[test]
fn media_types() {
    let cases: &[(&str, &str, bool)] = &[
        ("application/json", "application/json", true),
        (
            " Application/JSON ; charset=utf-8",
            "application/json",
            true,
        ),
        ("text/json", "text/json", true),
        (
            "application/cloudevents+json",
            "application/cloudevents+json",
            true,
        ),
        ("application/ld+json;x=y", "application/ld+json", true),
        ("text/plain", "text/plain", false),
        ("application/jsonx", "application/jsonx", false),
        ("", "", false),
    ];
    for (content_type, essence, json) in cases {
        assert_eq!(media_type(content_type), *essence);
        assert_eq!(is_json_media_type(content_type), *json, "{content_type}");
    }
}

#[test]
fn an_event_never_keeps_the_buffer_it_arrived_in() {
    // A 1 MiB read buffer of which the event is a small part.
    let json = br#"{"specversion":"1.0","type":"t","source":"/s","id":"1"}"#;
    let mut buffer = vec![b' '; 1 << 20];
    buffer[..json.len()].copy_from_slice(json);
    let buffer = Bytes::from(buffer);
    let received = buffer.slice(..json.len());
    let event = parse_structured_bytes(received.clone()).expect("valid");
    assert_eq!(&event.json[..], json);
    let inside = buffer.as_ptr_range();
    assert!(
        !inside.contains(&event.json.as_ptr()),
        "the event must hold its own copy, not a slice of the 1 MiB buffer"
    );
}

#[test]
fn the_gateways_own_events_are_rigs_cloudevents_0_2_or_1_0_on_request() {
    let rig = CloudEvent::new_rig_as(SpecVersion::V0_2, "rig.connection.create", json!({}));
    let v = &rig.value;
    assert_eq!(v["specversion"], "0.2");
    assert_eq!(v["source"], "rig");
    let id = v["id"].as_str().expect("id");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "a UUID v4: {id}");
    let time = v["time"].as_str().expect("time");
    // 2019-03-27T11:53:18.435690+00:00
    assert_eq!(time.len(), 32, "{time}");
    assert!(time.ends_with("+00:00") && time[19..20] == *".", "{time}");
    // The bytes sent are a valid 0.2 event of the gateway.
    let again = parse_structured(&rig.json).expect("valid");
    assert_eq!(again.spec_version, SpecVersion::V0_2);

    let new = CloudEvent::new_rig_as(SpecVersion::V1_0, "rig.connection.create", json!({}));
    assert_eq!(new.value["specversion"], "1.0");
    assert_eq!(new.value["source"], "/rig");
    assert!(new.value["time"].as_str().expect("time").ends_with('Z'));
    // Unset, RIG's format.
    assert_eq!(
        CloudEvent::new_rig("t", json!({})).spec_version,
        SpecVersion::V0_2
    );
}

#[test]
fn an_event_without_source_is_accepted_as_rig_does() {
    for body in [
        r#"{"specversion":"0.2","type":"greeting","id":"x1"}"#,
        r#"{"specversion":"1.0","type":"greeting","id":"x1","source":null}"#,
        r#"{"cloudEventsVersion":"0.1","eventType":"greeting","eventID":"x1"}"#,
    ] {
        let event = parse_structured(body.as_bytes()).expect(body);
        assert_eq!(event.source, "", "{body}");
        assert_eq!(event.event_type, "greeting");
        assert_eq!(&event.json[..], body.as_bytes(), "forwarded as sent");
    }
}
