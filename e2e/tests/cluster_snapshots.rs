//! Cluster mode end to end: the real apiserver, two real `rig-operator` replicas, real
//! `rig-dataplane` processes following the operators' snapshot streams (`RIG_OPERATOR_URL`), the
//! real Kafka and real HTTP backends.
//!
//! `kubectl apply` of an `EventRoute` makes its topic's events reach SSE clients on each data
//! plane (with the route's extractors); a `ProxyRoute` answers on both, follows a change, and 404s
//! after its deletion; an invalid object leaves the previous configuration serving; with both
//! operators down the data planes keep serving, a restarted data plane serves from its on-disk
//! last-known-good snapshot (and is ready), and a restarted operator makes no data plane reload.
//! One test also measures `EventRoute` create → first event delivered on both data planes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::api::{Api, PostParams};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_crds::snapshot::StreamMessage;
use rig_crds::{EventRoute, ProxyRoute};
use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::kafka;
use rig_e2e::operator::{Operator, OperatorConfig, Protocol};
use rig_e2e::sse::{self, SseClient};
use rig_e2e::{Env, http, kube_env, unique_name, wait_until};
use tokio::net::TcpListener;

/// Bounds waiting on a small shared machine; nothing asserts a duration.
const T: Duration = Duration::from_secs(60);

// ---- set-up ----

/// An HTTP backend answering every request with `<name> <path>`.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = format!("{name} {}", req.uri().path());
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn namespace(client: &kube::Client) -> String {
    kube_env::namespace(client, "cs").await.expect("namespace")
}

async fn create_topics(env: &Env, names: &[String]) {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    kafka::create_topics(env.kafka_brokers().expect("kafka"), &names, 1)
        .await
        .expect("create topics");
}

fn producer(env: &Env) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", env.kafka_brokers().expect("kafka"))
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

async fn produce(p: &FutureProducer, topic: &str, event_type: &str, name: &str) {
    let payload = serde_json::json!({
        "specversion": "1.0", "type": event_type, "source": "/e2e", "id": unique_name("e"),
        "data": {"name": name}
    })
    .to_string();
    p.send(
        FutureRecord::to(topic).key(name).payload(&payload),
        Duration::from_secs(30),
    )
    .await
    .expect("delivered");
}

/// Two operator replicas watching a fresh namespace, and the data planes following them.
struct Cluster {
    env: Env,
    client: kube::Client,
    ns: String,
    operators: Vec<Operator>,
    cache_dir: PathBuf,
    /// Where HTTP-published events of types whose route names no topic go (the chart's default
    /// is RIG's `rig` topic).
    http_topic: String,
}

impl Cluster {
    async fn start() -> Self {
        let env = Env::load().expect("test environment");
        kube_env::install_crds(&env).expect("install CRDs");
        let client = kube_env::client(&env).await.expect("client");
        let ns = namespace(&client).await;
        let mut operators = Vec::new();
        for name in ["op-0", "op-1"] {
            let config = OperatorConfig::new(name, &ns, &ns).expect("operator config");
            operators.push(Operator::start(&env, config).await.expect("start operator"));
        }
        let cache_dir = std::env::temp_dir().join(unique_name("rig-snapshots"));
        std::fs::create_dir_all(&cache_dir).expect("cache dir");
        let http_topic = unique_name("cs-http");
        create_topics(&env, std::slice::from_ref(&http_topic)).await;
        Self {
            env,
            client,
            ns,
            operators,
            cache_dir,
            http_topic,
        }
    }

    /// A data-plane pod `name` following the operator at `operator`, with its snapshot cache in
    /// this cluster's temporary folder.
    fn dataplane_config(&self, name: &str, operator: SocketAddr) -> DataPlaneConfig {
        let cache = self.cache_dir.join(format!("{name}.json"));
        DataPlaneConfig::new()
            .expect("ports")
            .env("KAFKA_BROKERS", self.env.kafka_brokers().expect("kafka"))
            .env("KAFKA_SOURCE_TOPICS", "")
            .env("RIG_HTTP_EVENTS_TOPIC", &self.http_topic)
            .env("RIG_OPERATOR_URL", format!("http://{operator}"))
            .env("RIG_SNAPSHOT_CACHE", cache.to_str().expect("utf-8 path"))
            .env("KUBECONFIG", self.env.kubeconfig().expect("kubeconfig"))
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", &self.ns)
    }

    /// `dp-0` follows `op-0`, `dp-1` follows `op-1` (both replicas serve the stream), each with
    /// the extra environment `extra` gives it; waits until both are ready.
    async fn start_dataplanes(&self, extra: &[(usize, &str, &str)]) -> Vec<DataPlane> {
        let mut dps = Vec::new();
        for (i, op) in self.operators.iter().enumerate() {
            let mut config = self.dataplane_config(&format!("dp-{i}"), op.config.stream);
            for (_, key, value) in extra.iter().filter(|(dp, _, _)| *dp == i) {
                config = config.env(key, *value);
            }
            dps.push(DataPlane::start(config).await.expect("start data plane"));
        }
        for dp in &dps {
            wait_ready(dp).await;
        }
        dps
    }

    fn apply(&self, yaml: &str) {
        kube_env::kubectl_ok(
            &self.env,
            &["apply", "-n", &self.ns, "-f", "-"],
            Some(yaml.as_bytes()),
        )
        .expect("kubectl apply");
    }

    /// Wait until `what`'s status, as `<programmed> <Programmed status> <reason> <Ready status>
    /// <Programmed message>`, satisfies `done`; returns it.
    async fn wait_status(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let jsonpath = "jsonpath={.status.programmed} \
            {.status.conditions[?(@.type==\"Programmed\")].status} \
            {.status.conditions[?(@.type==\"Programmed\")].reason} \
            {.status.conditions[?(@.type==\"Ready\")].status} \
            {.status.conditions[?(@.type==\"Programmed\")].message}";
        let done = &done;
        wait_until(&format!("the status of {what}"), T, || async move {
            let out = kube_env::kubectl_ok(
                &self.env,
                &["get", "-n", &self.ns, what, "-o", jsonpath],
                None,
            )
            .ok()?;
            done(&out).then_some(out)
        })
        .await
    }

    fn delete(&self, what: &str) {
        kube_env::kubectl_ok(&self.env, &["delete", "-n", &self.ns, what], None)
            .expect("kubectl delete");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cache_dir);
    }
}

async fn wait_ready(dp: &DataPlane) {
    let addr = dp.internal();
    wait_until("the data plane's /readyz", T, || async move {
        let (status, _) = http::get(addr, "/readyz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
}

/// The snapshot version the data plane runs (its `rig_config_snapshot_info` label).
async fn version_of(dp: &DataPlane) -> String {
    let (_, text) = http::get(dp.internal(), "/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("rig_config_snapshot_info{version=\""))
        .and_then(|rest| rest.split('"').next())
        .expect("a version in effect")
        .to_owned()
}

fn event_route_yaml(name: &str, topic: &str, event_type: &str) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: {name}\nspec:\n  source:\n    kafka:\n      topics: [{topic}]\n  events:\n    - type: {event_type}\n      extractors:\n        - field: name\n          eventPointer: /data/name\n"
    )
}

fn proxy_route_yaml(name: &str, path_regex: &str, target: SocketAddr) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata:\n  name: {name}\nspec:\n  endpoints:\n    - id: get\n      method: GET\n      pathRegex: '{path_regex}'\n  target:\n    kind: Http\n    url: http://{target}\n"
    )
}

/// `GET path` on the data plane's inbound port: (status, body).
async fn get(dp: &DataPlane, path: &str) -> (u16, String) {
    http::get(dp.inbound(), path).await.expect("request")
}

/// Wait until `GET path` answers `status` with a body containing `body` on every data plane.
async fn wait_answer(dps: &[DataPlane], path: &str, status: u16, body: &str) {
    for dp in dps {
        let what = format!("GET {path} → {status} {body:?} on {}", dp.inbound());
        let addr = dp.inbound();
        wait_until(&what, T, || async move {
            let (got, text) = http::get(addr, path).await.ok()?;
            (got == status && text.contains(body)).then_some(())
        })
        .await;
    }
}

async fn subscribe(dp: &DataPlane, subscriptions: &serde_json::Value) -> SseClient {
    let path = format!(
        "/_rig/v1/connection/sse?subscriptions={}",
        http::form_encode(&subscriptions.to_string())
    );
    sse::open_greeted(dp.inbound(), &path, &[], T)
        .await
        .expect("SSE connect")
        .0
}

/// Produce `event_type` events to `topic` every 20 ms (the route's consumer starts at the latest
/// offset once its topic is assigned, so the first events may precede it) until every client got
/// one; returns, per client, the time from `since` to its first event, and that event.
async fn deliver(
    env: &Env,
    topic: &str,
    event_type: &str,
    clients: &mut [SseClient],
    since: tokio::time::Instant,
) -> Vec<(Duration, serde_json::Value)> {
    let p = producer(env);
    let (topic_owned, type_owned) = (topic.to_owned(), event_type.to_owned());
    let pacer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            // Another name first: the route's extractor must filter it out for `joe`'s client.
            produce(&p, &topic_owned, &type_owned, "bob").await;
            produce(&p, &topic_owned, &type_owned, "joe").await;
        }
    });
    let waits = clients.iter_mut().map(|client| async move {
        let seen = client
            .until(T, |e| e.event == event_type)
            .await
            .expect("an event through the route");
        let at = since.elapsed();
        (at, seen.last().expect("one event").json())
    });
    let got = futures::future::join_all(waits).await;
    pacer.abort();
    got
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reach_both_data_planes_follow_changes_and_bad_objects_leave_them_serving() {
    let cluster = Cluster::start().await;
    let env = &cluster.env;
    let greetings = unique_name("cs-greetings");
    let latency_topics: Vec<String> = (0..20)
        .map(|i| unique_name(&format!("cs-lat{i}")))
        .collect();
    let mut topics = latency_topics.clone();
    topics.push(greetings.clone());
    create_topics(env, &topics).await;
    let (books_a, books_b) = (backend("books-a").await, backend("books-b").await);
    // dp-1 has its own `EXTRACTORS` (RIG's variable), defining `alert.name` elsewhere than the
    // `alerts` EventRoute below does: a snapshot the operator accepts and dp-1 cannot use.
    let dps = cluster
        .start_dataplanes(&[(
            1,
            "EXTRACTORS",
            r#"{"alert":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/who"}}}}"#,
        )])
        .await;

    // An EventRoute: its events reach a subscriber on each data plane, filtered by its extractor.
    let mut clients = Vec::new();
    for dp in &dps {
        let subs = serde_json::json!([{"eventType": "greeting", "oneOf": [{"name": "joe"}]}]);
        clients.push(subscribe(dp, &subs).await);
    }
    cluster.apply(&event_route_yaml("greetings", &greetings, "greeting"));
    let got = deliver(
        env,
        &greetings,
        "greeting",
        &mut clients,
        tokio::time::Instant::now(),
    )
    .await;
    for (_, event) in &got {
        assert_eq!(
            event["data"]["name"], "joe",
            "bob's events are filtered out by the route's extractor: {event}"
        );
    }
    // The data planes' report Leases drive the route's status: programmed on both pods, ready.
    let status = cluster
        .wait_status("eventroute/greetings", |s| {
            s.starts_with("2/2 True Programmed True")
        })
        .await;
    assert!(status.ends_with("2/2 pods"), "{status}");

    // A ProxyRoute: answers on both, follows a change, 404 after deletion.
    assert_eq!(get(&dps[0], "/books/1").await.0, 404, "no route yet");
    cluster.apply(&proxy_route_yaml("books", "/books/(.*)", books_a));
    wait_answer(&dps, "/books/1", 200, "books-a /books/1").await;
    cluster.apply(&proxy_route_yaml("books", "/books/(.*)", books_b));
    wait_answer(&dps, "/books/2", 200, "books-b /books/2").await;

    // An invalid object (a regex that does not compile): the operator leaves it out with a
    // reason; the data planes keep the previous configuration.
    let rejected_before: Vec<f64> = futures::future::join_all(
        dps.iter()
            .map(|dp| dp.metric("rig_config_snapshots_total{outcome=\"rejected\"}")),
    )
    .await;
    cluster.apply(&proxy_route_yaml("broken", "/broken/(", books_a));
    let reason = wait_until("the bad ProxyRoute to be Accepted=False", T, || async {
        let out = kube_env::kubectl_ok(
            env,
            &[
                "get", "-n", &cluster.ns, "proxyroute", "broken", "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status} {.status.conditions[?(@.type==\"Accepted\")].reason}",
            ],
            None,
        )
        .ok()?;
        out.starts_with("False ").then_some(out)
    })
    .await;
    assert!(reason.contains("InvalidPathRegex"), "{reason}");
    // A valid change after it still arrives: the snapshot without the bad object is in effect.
    cluster.apply(&proxy_route_yaml("books", "/books/(.*)", books_a));
    wait_answer(&dps, "/books/3", 200, "books-a /books/3").await;
    for (dp, before) in dps.iter().zip(&rejected_before) {
        assert_eq!(
            get(dp, "/broken/x").await.0,
            404,
            "the bad route is not served"
        );
        assert_eq!(
            dp.metric("rig_config_snapshots_total{outcome=\"rejected\"}")
                .await,
            *before,
            "the operator's snapshots stay valid: nothing for the data plane to reject"
        );
    }

    // A snapshot one data plane cannot compile: dp-1 rejects it whole and keeps serving its
    // previous version; dp-0 moves on. Once the cause is removed, dp-1 applies what follows (the
    // deletion below).
    let rejected = "rig_config_snapshots_total{outcome=\"rejected\"}";
    let dp1_rejected = dps[1].metric(rejected).await;
    let (v0, v1) = (version_of(&dps[0]).await, version_of(&dps[1]).await);
    assert_eq!(v0, v1, "both run the same version");
    cluster.apply(&event_route_yaml("alerts", &greetings, "alert"));
    wait_until("dp-1 to reject the snapshot", T, || async {
        (dps[1].metric(rejected).await > dp1_rejected).then_some(())
    })
    .await;
    wait_until("dp-0 to apply the snapshot", T, || async {
        (version_of(&dps[0]).await != v0).then_some(())
    })
    .await;
    assert_eq!(version_of(&dps[1]).await, v1, "dp-1 keeps its version");
    // The rejection reaches the route's status, with dp-1's reason.
    let status = cluster
        .wait_status("eventroute/alerts", |s| {
            s.starts_with("1/2 False Rejected False")
        })
        .await;
    assert!(status.contains("dp-1"), "{status}");
    assert_eq!(dps[0].metric(rejected).await, 0.0);
    wait_answer(&dps[1..], "/books/4", 200, "books-a /books/4").await;
    cluster.delete("eventroute/alerts");
    wait_until("both data planes on one version again", T, || async {
        let (a, b) = (version_of(&dps[0]).await, version_of(&dps[1]).await);
        // The content is the one before `alerts` again: so is the version.
        (a == b && b == v1).then_some(())
    })
    .await;

    cluster.delete("proxyroute/books");
    wait_answer(&dps, "/books/5", 404, "").await;
    // The EventRoute still works after all these changes.
    let got = deliver(
        env,
        &greetings,
        "greeting",
        &mut clients,
        tokio::time::Instant::now(),
    )
    .await;
    assert_eq!(got.len(), 2);

    // Measured, not asserted: EventRoute create → first event delivered on both data planes.
    let routes = Api::<EventRoute>::namespaced(cluster.client.clone(), &cluster.ns);
    let mut both = Vec::new();
    let mut per_dp = Vec::new();
    for (i, topic) in latency_topics.iter().enumerate() {
        let event_type = format!("lat{i}");
        let mut clients = Vec::new();
        for dp in &dps {
            clients.push(subscribe(dp, &serde_json::json!([{"eventType": event_type}])).await);
        }
        let route: EventRoute =
            serde_yaml::from_str(&event_route_yaml(&format!("lat-{i}"), topic, &event_type))
                .expect("route");
        let start = tokio::time::Instant::now();
        routes
            .create(&PostParams::default(), &route)
            .await
            .expect("create EventRoute");
        let got = deliver(env, topic, &event_type, &mut clients, start).await;
        per_dp.extend(got.iter().map(|(at, _)| *at));
        both.push(got.iter().map(|(at, _)| *at).max().expect("two"));
    }
    both.sort();
    per_dp.sort();
    eprintln!(
        "EventRoute create → first event on both data planes, {} routes: p50 {:?}, p99 {:?}, max {:?} (per data plane: p50 {:?}, p99 {:?})",
        both.len(),
        percentile(&both, 0.5),
        percentile(&both, 0.99),
        both.last().expect("some"),
        percentile(&per_dp, 0.5),
        percentile(&per_dp, 0.99),
    );

    // Measured, not asserted: ProxyRoute create → the route answers on both data planes (the
    // configuration in effect, with no Kafka in the path). Polled every 5 ms.
    let proxy_routes = Api::<ProxyRoute>::namespaced(cluster.client.clone(), &cluster.ns);
    let mut effective = Vec::new();
    for i in 0..20 {
        let route: ProxyRoute = serde_yaml::from_str(&proxy_route_yaml(
            &format!("lat-p{i}"),
            &format!("/lat{i}/(.*)"),
            books_a,
        ))
        .expect("route");
        let start = tokio::time::Instant::now();
        proxy_routes
            .create(&PostParams::default(), &route)
            .await
            .expect("create ProxyRoute");
        let path = format!("/lat{i}/x");
        let mut pending: Vec<&DataPlane> = dps.iter().collect();
        while !pending.is_empty() {
            assert!(
                start.elapsed() < T,
                "ProxyRoute lat-p{i} not effective within {T:?}"
            );
            let mut still = Vec::new();
            for dp in pending {
                if get(dp, &path).await.0 != 200 {
                    still.push(dp);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        effective.push(start.elapsed());
    }
    effective.sort();
    eprintln!(
        "ProxyRoute create → answering on both data planes, {} routes: p50 {:?}, p99 {:?}, max {:?}",
        effective.len(),
        percentile(&effective, 0.5),
        percentile(&effective, 0.99),
        effective.last().expect("some"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_planes_serve_without_operators_restart_from_the_cache_and_do_not_reload() {
    let mut cluster = Cluster::start().await;
    let books = backend("books").await;
    let mut dps = cluster.start_dataplanes(&[]).await;
    cluster.apply(&proxy_route_yaml("books", "/books/(.*)", books));
    wait_answer(&dps, "/books/1", 200, "books /books/1").await;
    // The version every data plane runs, from the operator's stream.
    let mut stream = cluster.operators[0]
        .stream(None, Protocol::Http2)
        .await
        .expect("stream");
    let version = stream
        .snapshot_where(T, |s| s.proxy_routes.iter().any(|r| r.name == "books"))
        .await
        .expect("the snapshot with the route")
        .version;
    drop(stream);
    let info = format!("rig_config_snapshot_info{{version=\"{version}\"}}");
    for dp in &dps {
        let what = format!("{} to run {version}", dp.internal());
        wait_until(&what, T, || async {
            (dp.metric(&info).await == 1.0).then_some(())
        })
        .await;
    }
    let applied = "rig_config_snapshots_total{outcome=\"applied\"}";
    let applied_before = dps[0].metric(applied).await;
    assert!(applied_before >= 1.0);

    // Both operators stop: the data planes notice and keep serving.
    let operator_configs: Vec<OperatorConfig> =
        cluster.operators.iter().map(|o| o.config.clone()).collect();
    for op in cluster.operators.drain(..) {
        op.stop().await.expect("operator stops");
    }
    for dp in &dps {
        let what = format!("{} to notice the operator is gone", dp.internal());
        wait_until(&what, T, || async {
            (dp.metric("rig_operator_connected").await == 0.0).then_some(())
        })
        .await;
        assert_eq!(
            http::get(dp.internal(), "/readyz").await.expect("readyz").0,
            200
        );
    }
    wait_answer(&dps, "/books/2", 200, "books /books/2").await;

    // A data plane restarted while the operators are down serves its on-disk snapshot at once.
    let dp1 = dps.pop().expect("dp-1");
    let config = dp1.stop().await.expect("dp-1 stops");
    let dp1 = DataPlane::start(config).await.expect("dp-1 restarts");
    // Ready from the last-known-good snapshot, with no operator (once its Kafka consumer has
    // reached the broker, which readiness also requires).
    wait_ready(&dp1).await;
    assert_eq!(
        get(&dp1, "/books/3").await,
        (200, "books /books/3".to_owned())
    );
    assert_eq!(dp1.metric(&info).await, 1.0);
    assert_eq!(
        dp1.metric("rig_config_snapshots_total{outcome=\"cached\"}")
            .await,
        1.0
    );
    assert_eq!(dp1.metric("rig_operator_connected").await, 0.0);
    dps.push(dp1);

    // A new data plane with no cache and no operator is alive but not ready.
    let fresh = DataPlane::start(cluster.dataplane_config("dp-2", operator_configs[0].stream))
        .await
        .expect("dp-2 starts");
    assert_eq!(
        http::get(fresh.internal(), "/healthz")
            .await
            .expect("healthz")
            .0,
        200
    );
    let (status, text) = http::get(fresh.internal(), "/readyz")
        .await
        .expect("readyz");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no configuration"), "{text}");
    assert_eq!(get(&fresh, "/books/4").await.0, 404);

    // The operators come back: same version, so nobody reloads; the new pod gets its first config.
    for config in operator_configs {
        cluster.operators.push(
            Operator::start(&cluster.env, config)
                .await
                .expect("operator restarts"),
        );
    }
    wait_ready(&fresh).await;
    wait_answer(
        std::slice::from_ref(&fresh),
        "/books/5",
        200,
        "books /books/5",
    )
    .await;
    for dp in &dps {
        let what = format!("{} to reconnect", dp.internal());
        wait_until(&what, T, || async {
            (dp.metric("rig_operator_connected").await == 1.0).then_some(())
        })
        .await;
    }
    // A client that runs the version gets only heartbeats: the restarted replicas agree on it.
    // Waiting for one heartbeat also gives the data planes' streams time to deliver a snapshot,
    // had there been one.
    for op in &cluster.operators {
        let mut stream = op
            .stream(Some(&version), Protocol::Http2)
            .await
            .expect("stream");
        match stream.next(T).await.expect("a message") {
            StreamMessage::Heartbeat { version: v } => {
                assert_eq!(v.as_deref(), Some(version.as_str()))
            }
            StreamMessage::Snapshot(s) => {
                panic!("the version changed: {} → {}", version, s.version)
            }
        }
    }
    assert_eq!(
        dps[0].metric(applied).await,
        applied_before,
        "dp-0 did not reload"
    );
    assert_eq!(
        dps[1].metric(applied).await,
        0.0,
        "dp-1 (from the cache) did not reload"
    );
    for dp in &dps {
        assert_eq!(dp.metric(&info).await, 1.0);
    }
    wait_answer(&dps, "/books/6", 200, "books /books/6").await;
}

#[test]
fn cluster_mode_refuses_manifests() {
    let out = std::process::Command::new(dataplane::binary().expect("binary"))
        .env("RIG_BIND_ADDRESS", "127.0.0.1")
        .env(
            "INBOUND_PORT",
            dataplane::free_addr().expect("port").port().to_string(),
        )
        .env(
            "API_HTTP_PORT",
            dataplane::free_addr().expect("port").port().to_string(),
        )
        .env("RIG_OPERATOR_URL", "http://127.0.0.1:1")
        .env("RIG_MANIFESTS", std::env::temp_dir())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RIG_MANIFESTS and RIG_OPERATOR_URL are both set"),
        "{stderr}"
    );
}

/// The access rules of `EventRoute`s (`rig_e2e::access`, the scenario standalone mode runs too)
/// hold on both data planes once the operator streams them; an escaping `pathRegex` is refused by
/// the operator and never reaches a data plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_route_access_rules_hold_on_every_data_plane() {
    let cluster = Cluster::start().await;
    let (check, log) = rig_e2e::access::check_service().await;
    let sealed = unique_name("acc-sealed");
    create_topics(&cluster.env, std::slice::from_ref(&sealed)).await;
    let dps = cluster
        .start_dataplanes(&[
            (0, "JWT_SECRET_KEY", rig_e2e::access::SECRET),
            (1, "JWT_SECRET_KEY", rig_e2e::access::SECRET),
        ])
        .await;
    cluster.apply(&rig_e2e::access::manifests(check, &sealed));
    for name in ["secured", "sealed", "external"] {
        cluster
            .wait_status(&format!("eventroute/{name}"), |s| s.starts_with("2/2 True"))
            .await;
    }
    for dp in &dps {
        rig_e2e::access::prove(dp.inbound(), dp.internal(), &log).await;
    }

    let backend = backend("escaped").await;
    cluster.apply(&proxy_route_yaml("escape", "/public)|(/admin/.*", backend));
    let reason = wait_until("the escaping ProxyRoute to be Accepted=False", T, || async {
        let out = kube_env::kubectl_ok(
            &cluster.env,
            &[
                "get", "-n", &cluster.ns, "proxyroute", "escape", "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status} {.status.conditions[?(@.type==\"Accepted\")].reason}",
            ],
            None,
        )
        .ok()?;
        out.starts_with("False ").then_some(out)
    })
    .await;
    assert!(reason.contains("InvalidPathRegex"), "{reason}");
    for dp in &dps {
        for path in ["/publicXYZ", "/x/admin/y"] {
            assert_eq!(get(dp, path).await.0, 404, "{path}");
        }
    }
}
