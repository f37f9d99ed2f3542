use super::*;
use crate::api::state::State;

use rig_crds::{BlacklistSpec, NamedSpec};

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .expect("config")
}

fn named<S>(name: &str, spec: S) -> NamedSpec<S> {
    NamedSpec {
        namespace: "shop".into(),
        name: name.into(),
        generation: 3,
        spec,
    }
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).expect("spec")
}

fn event_route(topic: &str) -> NamedSpec<rig_crds::EventRouteSpec> {
    named(
        "greetings",
        yaml(&format!(
            "source: {{kafka: {{topics: [{topic}]}}}}\nevents: [{{type: greeting, extractors: [{{field: name, eventPointer: /data/name}}]}}]\n"
        )),
    )
}

fn proxy_route(path_regex: &str) -> NamedSpec<rig_crds::ProxyRouteSpec> {
    named(
        "books",
        yaml(&format!(
            "endpoints: [{{id: get, method: GET, pathRegex: '{path_regex}'}}]\ntarget: {{kind: Http, url: 'http://books:8080'}}\n"
        )),
    )
}

fn blacklist(expires_at: &str) -> NamedSpec<BlacklistSpec> {
    named(
        "revoked",
        BlacklistSpec {
            session_id: "s-1".into(),
            expires_at: expires_at.into(),
            reason: None,
        },
    )
}

fn line(message: &StreamMessage) -> Vec<u8> {
    serde_json::to_vec(message).expect("serialize")
}

fn snapshot_line(snapshot: &Snapshot) -> Vec<u8> {
    line(&StreamMessage::Snapshot(Box::new(snapshot.clone())))
}

// ---- configuration ----

#[test]
fn the_operator_url_is_parsed_and_bad_ones_are_refused() {
    let e = Endpoint::parse("http://rig-operator.rig-system:9090").expect("valid");
    assert_eq!(e.addr, "rig-operator.rig-system:9090");
    assert_eq!(
        e.stream_uri(None),
        "http://rig-operator.rig-system:9090/v1/snapshots"
    );
    assert_eq!(
        e.stream_uri(Some("abc")),
        "http://rig-operator.rig-system:9090/v1/snapshots?have=abc"
    );
    let e = Endpoint::parse("http://op/prefix/").expect("valid");
    assert_eq!(e.addr, "op:80");
    assert_eq!(e.stream_uri(None), "http://op:80/prefix/v1/snapshots");
    let e = Endpoint::parse("http://[::1]:9090").expect("IPv6");
    assert_eq!(e.addr, "[::1]:9090");
    for (bad, why) in [
        ("https://op:9090", "scheme must be http"),
        ("op:9090", "scheme must be http"),
        ("http://user:pw@op:9090", "credentials"),
        ("http://op:9090/?x=1", "query"),
        ("not a url", "expected http://host[:port]"),
    ] {
        let err = Endpoint::parse(bad).expect_err(bad).to_string();
        assert!(
            err.contains("RIG_OPERATOR_URL") && err.contains(why),
            "{bad}: {err}"
        );
    }
}

#[test]
fn cluster_mode_refuses_manifests_and_standalone_has_no_endpoint() {
    assert_eq!(endpoint(&config(&[])).expect("standalone"), None);
    let cluster = config(&[("RIG_OPERATOR_URL", "http://op:9090")]);
    assert!(endpoint(&cluster).expect("cluster").is_some());
    let both = config(&[
        ("RIG_OPERATOR_URL", "http://op:9090"),
        ("RIG_MANIFESTS", "/etc/rig"),
    ]);
    let err = endpoint(&both).expect_err("both set").to_string();
    assert!(
        err.contains("RIG_MANIFESTS") && err.contains("RIG_OPERATOR_URL"),
        "{err}"
    );
}

// ---- framing ----

#[test]
fn lines_are_split_across_chunks_and_crlf_and_blank_lines_are_handled() {
    let mut lines = Lines::new(100);
    lines.push(b"{\"a\":");
    assert_eq!(lines.next_line(), None, "no newline yet");
    lines.push(b"1}\r\n\n{\"b\"");
    assert_eq!(
        lines.next_line(),
        Some(Line::Complete(Bytes::from_static(b"{\"a\":1}")))
    );
    assert_eq!(lines.next_line(), None, "the blank line is skipped");
    lines.push(b":2}\n{\"c\":3}\n");
    assert_eq!(
        lines.next_line(),
        Some(Line::Complete(Bytes::from_static(b"{\"b\":2}")))
    );
    assert_eq!(
        lines.next_line(),
        Some(Line::Complete(Bytes::from_static(b"{\"c\":3}")))
    );
    assert_eq!(lines.next_line(), None);
}

#[test]
fn a_too_long_line_is_reported_once_skipped_and_the_next_line_is_read() {
    let mut lines = Lines::new(10);
    lines.push(b"0123456789ABCDEF");
    assert_eq!(
        lines.next_line(),
        Some(Line::TooLong(Bytes::from_static(b"0123456789ABCDEF")))
    );
    lines.push(b"more of the same line");
    assert_eq!(lines.next_line(), None, "still inside the long line");
    assert!(lines.buffer.is_empty(), "its bytes are not kept");
    lines.push(b"end\nok\n");
    assert_eq!(
        lines.next_line(),
        Some(Line::Complete(Bytes::from_static(b"ok")))
    );
    // A long line arriving whole, newline included.
    lines.push(b"0123456789ABCDEF\nnext\n");
    assert!(matches!(lines.next_line(), Some(Line::TooLong(_))));
    assert_eq!(
        lines.next_line(),
        Some(Line::Complete(Bytes::from_static(b"next")))
    );
}

#[test]
fn the_version_of_an_unreadable_snapshot_line_is_read_from_its_start() {
    let s = Snapshot::new(vec![], vec![], vec![]);
    let mut text = snapshot_line(&s);
    text.truncate(70); // cut inside the content, after the version
    assert_eq!(version_hint(&text), Some(s.version.clone()));
    assert_eq!(
        version_hint(br#"{"type":"heartbeat","version":"abc"}"#),
        None
    );
    assert_eq!(
        version_hint(br#"{"type":"snapshot","version":"a\"b"}"#),
        None
    );
    assert_eq!(version_hint(b"garbage"), None);
}

// ---- backoff ----

#[test]
fn backoff_doubles_to_the_cap_with_full_jitter_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let ceilings: Vec<u64> = (0..10)
        .map(|_| {
            let c = b.ceiling().as_millis() as u64;
            assert_eq!(b.next_delay(0.999_999).as_millis() as u64, c - 1);
            c
        })
        .collect();
    assert_eq!(
        ceilings,
        [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
    );
    assert_eq!(b.next_delay(0.0), Duration::ZERO, "full jitter reaches 0");
    assert_eq!(b.next_delay(0.5), Duration::from_secs(5));
    for _ in 0..100 {
        b.next_delay(0.5); // no overflow however long the operator stays away
    }
    assert_eq!(b.ceiling(), Duration::from_secs(10));
    b.reset();
    assert_eq!(b.ceiling(), Duration::from_millis(100));
    let unit = random_unit();
    assert!((0.0..1.0).contains(&unit), "{unit}");
}

// ---- validation ----

#[test]
fn a_valid_snapshot_compiles_like_manifests() {
    let config = config(&[("KAFKA_SOURCE_TOPICS", "rig")]);
    let s = Snapshot::new(
        vec![event_route("greetings")],
        vec![proxy_route("/books/(.*)")],
        vec![blacklist("2099-01-01T00:00:00Z")],
    );
    let Message::Snapshot(valid) =
        check_line(&config, &snapshot_line(&s), None).expect("valid snapshot")
    else {
        panic!("not a snapshot");
    };
    assert_eq!(valid.snapshot, s);
    assert_eq!(valid.routes.topics, ["greetings", "rig"]);
    assert_eq!(valid.routes.compiled.revocations.len(), 1);
    assert_eq!(valid.routes.compiled.revocations[0].session_id, "s-1");
    let route = &valid.routes.compiled.proxy_routes[0];
    assert_eq!(route.id, "shop/books", "routes keep their namespace/name");
    assert_eq!(valid.routes.compiled.version, s.version);
    assert_eq!(
        valid.routes.extractors.fields("greeting").len(),
        1,
        "the route's extractors are compiled"
    );
}

#[test]
fn heartbeats_and_the_version_in_effect_need_no_work() {
    let config = config(&[]);
    let hb = line(&StreamMessage::Heartbeat {
        version: Some("v1".into()),
    });
    assert!(matches!(
        check_line(&config, &hb, None),
        Ok(Message::Heartbeat(Some(v))) if v == "v1"
    ));
    let s = Snapshot::new(vec![], vec![proxy_route("/a")], vec![]);
    assert!(matches!(
        check_line(&config, &snapshot_line(&s), Some(&s.version)),
        Ok(Message::Unchanged(v)) if v == s.version
    ));
}

#[test]
fn an_edited_snapshot_is_rejected_with_both_versions() {
    let mut s = Snapshot::new(vec![], vec![proxy_route("/a")], vec![]);
    s.proxy_routes[0].name = "edited".into();
    let rejection = check_line(&config(&[]), &snapshot_line(&s), None).expect_err("tampered");
    assert_eq!(rejection.version.as_deref(), Some(s.version.as_str()));
    let message = rejection.error.to_string();
    assert!(
        message.contains(&s.version) && message.contains(&s.content_version()),
        "{message}"
    );
}

#[test]
fn invalid_objects_reject_the_snapshot_whole() {
    let config = config(&[]);
    // A regex the data plane cannot compile (the operator normally leaves such a route out).
    let bad_regex = Snapshot::new(
        vec![event_route("t")],
        vec![proxy_route("/books/(")],
        vec![],
    );
    let rejection = check_line(&config, &snapshot_line(&bad_regex), None).expect_err("regex");
    assert!(matches!(rejection.error, Invalid::Compile(_)));
    assert!(
        error_chain(&rejection.error).contains("shop/books"),
        "{}",
        error_chain(&rejection.error)
    );
    // An unusable revocation.
    let bad_expiry = Snapshot::new(vec![], vec![], vec![blacklist("tomorrow")]);
    let rejection = check_line(&config, &snapshot_line(&bad_expiry), None).expect_err("expiry");
    let message = error_chain(&rejection.error);
    assert!(
        message.contains("Blacklist shop/revoked: InvalidExpiry: expiresAt \"tomorrow\""),
        "{message}"
    );
    // Two routes giving one event type conflicting extractors.
    let mut conflicting = event_route("t");
    conflicting.name = "other".into();
    conflicting.spec.events[0].extractors[0].event_pointer = "/data/other".into();
    let conflict = Snapshot::new(vec![event_route("t"), conflicting], vec![], vec![]);
    let rejection = check_line(&config, &snapshot_line(&conflict), None).expect_err("conflict");
    assert!(matches!(rejection.error, Invalid::Compile(_)));
    // A field this data plane does not know (a newer operator): parse error, version still read.
    let mut text = snapshot_line(&Snapshot::new(vec![], vec![], vec![]));
    text.pop(); // the closing brace
    text.extend_from_slice(br#","futureField":1}"#);
    let rejection = check_line(&config, &text, None).expect_err("unknown field");
    assert!(matches!(rejection.error, Invalid::Parse(_)));
    assert!(rejection.version.is_some(), "the version is still reported");
}

// ---- last-known-good file ----

#[test]
fn the_cache_is_written_whole_and_reads_back() {
    let dir = std::env::temp_dir().join(format!("rig-snapshot-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("snapshot.json");
    let first = Snapshot::new(vec![], vec![proxy_route("/a")], vec![]);
    write_cache(&path, &first).expect("write");
    let second = Snapshot::new(vec![event_route("t")], vec![], vec![]);
    write_cache(&path, &second).expect("overwrite");
    let back: Snapshot =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
    assert_eq!(back, second);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("snapshot.json")]);
    let err = write_cache(&dir.join("missing/snapshot.json"), &first).expect_err("no dir");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- status ----

#[test]
fn readiness_and_metrics_follow_the_mode_and_the_version_in_effect() {
    let standalone = Status::new(false);
    assert!(standalone.is_ready());
    let mut text = String::new();
    standalone.render_metrics(&mut text);
    assert!(text.is_empty(), "no cluster metrics in standalone mode");

    let cluster = Status::new(true);
    assert!(!cluster.is_ready());
    let mut text = String::new();
    cluster.render_metrics(&mut text);
    assert!(text.contains("rig_config_ready 0\n"), "{text}");
    assert!(text.contains("rig_operator_connected 0\n"), "{text}");
    assert!(!text.contains("rig_config_snapshot_info{"), "{text}");
    cluster.set_in_effect("abc");
    cluster.applied.fetch_add(1, Ordering::Relaxed);
    assert!(cluster.is_ready());
    let mut text = String::new();
    cluster.render_metrics(&mut text);
    assert!(
        text.contains("rig_config_snapshot_info{version=\"abc\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("rig_config_snapshots_total{outcome=\"applied\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("rig_config_ready 1\n"), "{text}");
}

#[tokio::test]
async fn a_late_report_reader_still_sees_the_latest_report() {
    let status = Status::new(true);
    status.reports.send_replace(Some(DataPlaneReport {
        pod: "dp-0".into(),
        version: "v1".into(),
        outcome: Outcome::Applied,
    }));
    let mut reports = status.reports();
    tokio::time::timeout(Duration::from_secs(5), reports.changed())
        .await
        .expect("marked changed")
        .expect("sender alive");
    assert_eq!(
        reports
            .borrow_and_update()
            .as_ref()
            .map(|r| r.version.as_str()),
        Some("v1")
    );
}

// ---- the client against a fake operator (a loopback h2c server the test drives) ----

/// One stream request the fake operator received: the `have` it asked with, and the sending end
/// of its body (dropping it ends the stream).
struct Opened {
    have: Option<String>,
    lines: tokio::sync::mpsc::Sender<Bytes>,
}

/// A response body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A loopback h2c server answering `GET /v1/snapshots` with lines the test sends.
async fn fake_operator() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<Opened>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (opened_tx, opened_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let opened_tx = opened_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let opened_tx = opened_tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/snapshots");
                        let have = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("have="))
                            .map(str::to_owned);
                        let (lines, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
                        let _ = opened_tx.send(Opened { have, lines }).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(ChannelBody(rx)))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, opened_rx)
}

fn cluster_state(operator: std::net::SocketAddr, cache: &Path) -> Arc<State> {
    let config = config(&[
        ("RIG_OPERATOR_URL", &format!("http://{operator}")),
        ("RIG_SNAPSHOT_CACHE", cache.to_str().expect("utf-8")),
        ("POD_NAME", "dp-test"),
        ("KAFKA_SOURCE_TOPICS", ""),
    ]);
    let verifier = config.jwt.verifier().expect("verifier");
    Arc::new(State::new(
        config,
        Arc::new(crate::subscriptions::Extractors::new()),
        verifier,
        crate::auth::TokenCodec::new(b"0123456789abcdef0123456789abcdef"),
    ))
}

fn client(state: &Arc<State>, topics: watch::Sender<Vec<String>>, idle: Duration) -> Client {
    let url = state.config.operator_url.clone().expect("cluster mode");
    Client {
        config: state.config.clone(),
        status: state.config_status.clone(),
        targets: Arc::new(state.targets(topics)),
        endpoint: Endpoint::parse(&url).expect("endpoint"),
        idle_timeout: idle,
    }
}

async fn next_opened(opened: &mut tokio::sync::mpsc::Receiver<Opened>) -> Opened {
    tokio::time::timeout(Duration::from_secs(10), opened.recv())
        .await
        .expect("the client (re)connects")
        .expect("server alive")
}

async fn send(opened: &Opened, message: &StreamMessage) {
    let mut bytes = line(message);
    bytes.push(b'\n');
    opened
        .lines
        .send(Bytes::from(bytes))
        .await
        .expect("stream open");
}

/// The next report (skipping the initial `None`).
async fn next_report(reports: &mut watch::Receiver<Option<DataPlaneReport>>) -> DataPlaneReport {
    loop {
        tokio::time::timeout(Duration::from_secs(10), reports.changed())
            .await
            .expect("a report")
            .expect("sender alive");
        if let Some(report) = reports.borrow_and_update().clone() {
            return report;
        }
    }
}

#[tokio::test]
async fn follows_the_stream_rejects_bad_snapshots_reconnects_and_restarts_from_the_cache() {
    let dir = std::env::temp_dir().join(format!("rig-snapshot-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let cache = dir.join("snapshot.json");
    let (addr, mut opened) = fake_operator().await;
    let state = cluster_state(addr, &cache);
    let (topics_tx, topics_rx) = watch::channel(Vec::new());
    let mut reports = state.config_status.reports();
    let (_stop_tx, stop) = watch::channel(false);
    let c = client(&state, topics_tx, Duration::from_millis(500));
    c.load_cache().await;
    assert!(!state.config_status.is_ready(), "no cache, no operator yet");
    tokio::spawn(c.run(stop));

    // First stream: no `have`; a valid snapshot goes into effect and is cached.
    let first = next_opened(&mut opened).await;
    assert_eq!(first.have, None);
    let a = Snapshot::new(
        vec![event_route("t-a")],
        vec![proxy_route("/a/(.*)")],
        vec![],
    );
    send(&first, &StreamMessage::Snapshot(Box::new(a.clone()))).await;
    let report = next_report(&mut reports).await;
    assert_eq!(
        (
            report.pod.as_str(),
            report.version.as_str(),
            &report.outcome
        ),
        ("dp-test", a.version.as_str(), &Outcome::Applied)
    );
    assert!(state.config_status.is_ready());
    assert_eq!(state.config_status.version(), Some(a.version.clone()));
    assert_eq!(
        *topics_rx.borrow(),
        ["t-a"],
        "the consumer gets the route's topic"
    );
    assert_eq!(state.proxy.table().apis().len(), 1);
    assert!(state.config_status.is_connected());

    // A tampered snapshot is rejected; `a` stays in effect.
    let mut bad = Snapshot::new(vec![], vec![], vec![]);
    bad.version = "0000".into();
    send(&first, &StreamMessage::Snapshot(Box::new(bad))).await;
    let report = next_report(&mut reports).await;
    assert_eq!(report.version, "0000");
    assert!(
        matches!(&report.outcome, Outcome::Rejected { message } if message.contains("does not match")),
        "{report:?}"
    );
    assert_eq!(state.config_status.version(), Some(a.version.clone()));
    assert_eq!(state.proxy.table().apis().len(), 1);
    let cached: Snapshot =
        serde_json::from_slice(&std::fs::read(&cache).expect("cache written")).expect("parse");
    assert_eq!(cached, a, "only applied snapshots are cached");

    // The operator ends the stream: the client comes back with `have`, and the same version is
    // not applied again.
    drop(first);
    let second = next_opened(&mut opened).await;
    assert_eq!(second.have.as_deref(), Some(a.version.as_str()));
    send(&second, &StreamMessage::Snapshot(Box::new(a.clone()))).await;
    send(
        &second,
        &StreamMessage::Heartbeat {
            version: Some(a.version.clone()),
        },
    )
    .await;
    // A silent operator (no heartbeats) is given up after the idle timeout.
    let third = next_opened(&mut opened).await;
    assert_eq!(third.have.as_deref(), Some(a.version.as_str()));
    assert_eq!(
        state.config_status.applied.load(Ordering::Relaxed),
        1,
        "no reload"
    );
    drop(second);

    // A new process with the same cache and no operator serves `a` before any connection.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let restarted = cluster_state(closed, &cache);
    let (topics_tx, topics_rx) = watch::channel(Vec::new());
    let mut reports = restarted.config_status.reports();
    client(&restarted, topics_tx, Duration::from_millis(500))
        .load_cache()
        .await;
    assert!(restarted.config_status.is_ready());
    assert_eq!(restarted.config_status.version(), Some(a.version.clone()));
    assert_eq!(*topics_rx.borrow(), ["t-a"]);
    assert_eq!(restarted.config_status.cached.load(Ordering::Relaxed), 1);
    let report = next_report(&mut reports).await;
    assert_eq!(
        (report.version.as_str(), &report.outcome),
        (a.version.as_str(), &Outcome::Applied),
        "the cached version is reported: the operator will not resend it"
    );

    // A corrupted cache is not used.
    std::fs::write(&cache, b"{\"version\":").expect("corrupt");
    let broken = cluster_state(closed, &cache);
    let (topics_tx, _topics_rx) = watch::channel(Vec::new());
    client(&broken, topics_tx, Duration::from_millis(500))
        .load_cache()
        .await;
    assert!(!broken.config_status.is_ready());
    assert_eq!(
        broken.config_status.cache_failures.load(Ordering::Relaxed),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
