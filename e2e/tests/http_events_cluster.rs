//! Events published over HTTP reach subscribers on every pod (issue 13): with Kafka configured, an
//! event `POST`ed to any data plane is produced to Kafka and delivered by every data plane's
//! consumer — SSE, WebSocket and long-polling, exactly once, in per-key order, beside events
//! produced directly to Kafka; a restarted pod's clients resume them losslessly; a broker that is
//! down answers 503 and nothing is delivered for the refused event.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::clients::{self, Poller};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::kafka::{self, PrivateBroker};
use rig_e2e::sse::{self, SseClient};
use rig_e2e::{Env, http, unique_name, wait_until};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(60);
const KEYS: u64 = 4;
const SUBS: &str = "subscriptions=%5B%7B%22eventType%22%3A%22tick%22%7D%5D";
const KEY: &str = "http-events-cluster-key-0123456789";

fn tick(source: &str, i: u64) -> String {
    serde_json::json!({
        "specversion": "1.0", "type": "tick", "source": "/e2e", "id": format!("{source}-{i}"),
        "partitionkey": format!("k{}", i % KEYS), "data": {"src": source, "i": i}
    })
    .to_string()
}

async fn post(addr: std::net::SocketAddr, body: String) -> (u16, String) {
    let (status, _, text) = http::post(
        addr,
        "/_rig/v1/events",
        "application/cloudevents+json",
        body,
    )
    .await
    .expect("post");
    (status, text)
}

/// What one subscriber received: (source, number) in arrival order.
#[derive(Debug, Default)]
struct Received(Vec<(String, u64)>);

impl Received {
    fn add(&mut self, event: &Value) {
        if event["type"] == "tick" {
            let src = event["data"]["src"].as_str().unwrap_or_default().to_owned();
            let i = event["data"]["i"].as_u64().expect("i");
            self.0.push((src, i));
        }
    }

    fn count(&self, src: &str) -> usize {
        self.0.iter().filter(|(s, _)| s == src).count()
    }

    /// Every expected event exactly once, and per source and key in publication order.
    fn assert_complete(&self, who: &str, expected: &[(&str, u64)]) {
        let mut seen = BTreeSet::new();
        for item in &self.0 {
            assert!(seen.insert(item.clone()), "{who}: {item:?} twice");
        }
        for (src, n) in expected {
            for i in 0..*n {
                assert!(
                    seen.contains(&(src.to_string(), i)),
                    "{who}: {src}-{i} missing"
                );
            }
            assert_eq!(self.count(src), *n as usize, "{who}: {src}");
        }
        let mut per_key: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
        for (src, i) in &self.0 {
            per_key.entry((src.clone(), i % KEYS)).or_default().push(*i);
        }
        for ((src, key), numbers) in per_key {
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "{who}: {src} key k{key} out of order: {numbers:?}"
            );
        }
    }
}

async fn sse_until(client: &mut SseClient, got: &mut Received, done: impl Fn(&Received) -> bool) {
    while !done(got) {
        let event = client.next(T).await.expect("read").expect("stream open");
        got.add(&event.json());
    }
}

async fn ws_until(ws: &mut clients::Ws, got: &mut Received, done: impl Fn(&Received) -> bool) {
    while !done(got) {
        let message = tokio::time::timeout(T, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("valid");
        if let Message::Text(text) = message {
            got.add(&serde_json::from_str(text.as_str()).expect("json"));
        }
    }
}

async fn poll_until(poller: &mut Poller, got: &mut Received, done: impl Fn(&Received) -> bool) {
    let deadline = tokio::time::Instant::now() + 2 * T;
    while !done(got) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "long-polling: {} so far",
            got.0.len()
        );
        let (status, body) = poller.get().await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("poll JSON");
        for event in answer["events"].as_array().expect("events") {
            got.add(event);
        }
    }
}

fn dataplane(brokers: &str, pod: &str) -> DataPlaneConfig {
    DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", brokers)
        .env("RIG_TOKEN_KEY", KEY)
        .env("POD_NAME", pod)
}

async fn assigned(dp: &DataPlane, partitions: f64) {
    wait_until("partitions assigned", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= partitions).then_some(())
    })
    .await;
}

/// 1,000 events POSTed alternately to two data planes, 200 produced directly to Kafka in between:
/// SSE, WebSocket and long-polling subscribers on both pods get all of them once, in per-key order.
/// The route names the topic of its HTTP-published events (`source.http.topic`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_reach_every_pod_through_the_route_topic() {
    const HTTP: u64 = 1000;
    const DIRECT: u64 = 200;
    let env = Env::load().expect("env");
    let brokers = env.kafka_brokers().expect("kafka").to_owned();
    let direct = unique_name("direct");
    let posted = unique_name("posted");
    kafka::create_topics(&brokers, &[&direct, &posted], 3)
        .await
        .expect("topics");
    let dir = std::env::temp_dir().join(unique_name("rig-http-events"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("ticks.yaml"),
        format!(
            "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: ticks\nspec:\n  source:\n    kafka:\n      topics: [{direct}]\n    http:\n      topic: {posted}\n  events:\n    - type: tick\n"
        ),
    )
    .expect("manifest");
    let manifests = dir.to_str().expect("utf8");
    let dp0 = DataPlane::start(
        dataplane(&brokers, "pod-0")
            .env("KAFKA_SOURCE_TOPICS", "")
            .env("RIG_MANIFESTS", manifests),
    )
    .await
    .expect("dp0");
    let dp1 = DataPlane::start(
        dataplane(&brokers, "pod-1")
            .env("KAFKA_SOURCE_TOPICS", "")
            .env("RIG_MANIFESTS", manifests),
    )
    .await
    .expect("dp1");
    assigned(&dp0, 6.0).await;
    assigned(&dp1, 6.0).await;

    // Every subscriber reads while the events are published (a long-polling client polls all
    // along: its buffer between polls is bounded).
    let all = |r: &Received| r.0.len() >= (HTTP + DIRECT) as usize;
    let path = format!("/_rig/v1/connection/sse?{SUBS}");
    let mut readers = Vec::new();
    for (name, addr) in [("0", dp0.inbound()), ("1", dp1.inbound())] {
        let mut sse = sse::open(addr, &path, &[]).await.expect("sse");
        readers.push(tokio::spawn(async move {
            let mut got = Received::default();
            sse_until(&mut sse, &mut got, all).await;
            (format!("sse{name}"), got)
        }));
        let mut ws = clients::ws_subscribed(addr, SUBS).await;
        readers.push(tokio::spawn(async move {
            let mut got = Received::default();
            ws_until(&mut ws, &mut got, all).await;
            (format!("ws{name}"), got)
        }));
        let mut lp = Poller::open(addr, SUBS).await;
        readers.push(tokio::spawn(async move {
            let mut got = Received::default();
            poll_until(&mut lp, &mut got, all).await;
            (format!("lp{name}"), got)
        }));
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut kafka_sent = 0;
    for i in 0..HTTP {
        let pod = if i % 2 == 0 { &dp0 } else { &dp1 };
        let (status, body) = post(pod.inbound(), tick("http", i)).await;
        assert_eq!(status, 202, "{body}");
        if i % 5 == 0 {
            let key = format!("k{}", kafka_sent % KEYS);
            producer
                .send(
                    FutureRecord::to(&direct)
                        .key(&key)
                        .payload(&tick("kafka", kafka_sent)),
                    Duration::from_secs(30),
                )
                .await
                .expect("delivered");
            kafka_sent += 1;
        }
    }
    assert_eq!(kafka_sent, DIRECT);
    let expected = [("http", HTTP), ("kafka", DIRECT)];
    for reader in readers {
        let (name, got) = reader.await.expect("reader");
        got.assert_complete(&name, &expected);
    }
    for dp in [&dp0, &dp1] {
        assert_eq!(
            dp.metric("rig_http_events_published_total{result=\"acknowledged\"}")
                .await,
            (HTTP / 2) as f64
        );
    }
}

/// A data plane restarted while events are POSTed to the other one: its SSE client resumes with
/// `Last-Event-ID` and ends with every HTTP-published event exactly once. The topic is the
/// default (`RIG_HTTP_EVENTS_TOPIC` unset: the first `KAFKA_SOURCE_TOPICS` topic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pods_clients_resume_http_events_exactly_once() {
    const EVENTS: u64 = 300;
    let env = Env::load().expect("env");
    let brokers = env.kafka_brokers().expect("kafka").to_owned();
    let topic = unique_name("restart");
    kafka::create_topics(&brokers, &[&topic], 2)
        .await
        .expect("topic");
    let dp0 = DataPlane::start(dataplane(&brokers, "pod-0").env("KAFKA_SOURCE_TOPICS", &topic))
        .await
        .expect("dp0");
    let dp1 = DataPlane::start(dataplane(&brokers, "pod-1").env("KAFKA_SOURCE_TOPICS", &topic))
        .await
        .expect("dp1");
    assigned(&dp0, 2.0).await;
    assigned(&dp1, 2.0).await;
    let path = format!("/_rig/v1/connection/sse?{SUBS}");
    let mut client = sse::open(dp1.inbound(), &path, &[]).await.expect("connect");

    let addr = dp0.inbound();
    let publishing = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for i in 0..EVENTS {
            pace.tick().await;
            let (status, body) = post(addr, tick("http", i)).await;
            assert_eq!(status, 202, "{body}");
        }
    });
    let mut got = Received::default();
    let mut last = None;
    while got.0.len() < 50 {
        let event = client.next(T).await.expect("read").expect("open");
        got.add(&event.json());
        if event.event == "tick" {
            last = event.id.clone();
        }
    }
    drop(client);
    let config = dp1.stop().await.expect("stop");
    let dp1 = DataPlane::start(config).await.expect("restart");
    let last = last.expect("a resume token");
    let mut client = sse::open(dp1.inbound(), &path, &[("last-event-id", &last)])
        .await
        .expect("reconnect");
    let mut gap = false;
    while got.0.len() < EVENTS as usize {
        let event = client.next(T).await.expect("read").expect("open");
        gap |= event.event == "rig.connection.gap";
        got.add(&event.json());
    }
    publishing.await.expect("publisher");
    assert!(!gap, "everything was in Kafka: no gap");
    got.assert_complete("restarted pod's client", &[("http", EVENTS)]);
}

/// A broker that is down: POST answers 503 with a message and the event never reaches anyone; the
/// broker back, POST answers 202 again without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_refuses_with_503_and_delivers_nothing_for_it() {
    let broker = PrivateBroker::up();
    let brokers = broker.brokers();
    let topic = unique_name("down");
    kafka::create_topics(&brokers, &[&topic], 1)
        .await
        .expect("topic");
    let dp = DataPlane::start(
        dataplane(&brokers, "pod-0")
            .env("KAFKA_SOURCE_TOPICS", &topic)
            .env("RIG_PUBLISH_TIMEOUT_MS", "2000"),
    )
    .await
    .expect("start");
    assigned(&dp, 1.0).await;
    let path = format!("/_rig/v1/connection/sse?{SUBS}");
    let mut client = sse::open(dp.inbound(), &path, &[]).await.expect("connect");
    let mut got = Received::default();
    assert_eq!(post(dp.inbound(), tick("http", 0)).await.0, 202);
    sse_until(&mut client, &mut got, |r| r.count("http") == 1).await;

    broker.kafka_sh("stop");
    let (status, body) = post(dp.inbound(), tick("refused", 0)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Kafka did not acknowledge"), "{body}");
    assert!(
        dp.metric("rig_http_events_published_total{result=\"failed\"}")
            .await
            >= 1.0
    );
    broker.kafka_sh("start");
    // Back without a restart (the producer reconnects by itself; bounded).
    let mut n = 1;
    wait_until("POST accepted again", T, || {
        let addr = dp.inbound();
        let body = tick("http", n);
        n += 1;
        async move { (post(addr, body).await.0 == 202).then_some(()) }
    })
    .await;
    let last = n - 1;
    sse_until(&mut client, &mut got, |r| {
        r.0.iter().any(|(s, i)| s == "http" && *i == last)
    })
    .await;
    assert_eq!(
        got.count("refused"),
        0,
        "the refused event was delivered: {got:?}"
    );
}

/// A keyed HTTP-published event goes to RIG's partition for its key (`murmur3_x86_32(key) mod n`),
/// where RIG put events of that key: "hello" hashes to 0x248bfa47, partition 6 of 7 (librdkafka's
/// default CRC32 rule would pick 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_events_go_to_rigs_partition_for_their_key() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let env = Env::load().expect("env");
    let brokers = env.kafka_brokers().expect("kafka").to_owned();
    let topic = unique_name("keyed");
    kafka::create_topics(&brokers, &[&topic], 7)
        .await
        .expect("topic");
    let dp = DataPlane::start(dataplane(&brokers, "pod-0").env("KAFKA_SOURCE_TOPICS", &topic))
        .await
        .expect("start");
    assigned(&dp, 7.0).await;
    let body = serde_json::json!({
        "specversion": "1.0", "type": "tick", "source": "/e2e", "id": "keyed-1",
        "partitionkey": "hello", "data": {"src": "http", "i": 0}
    })
    .to_string();
    assert_eq!(post(dp.inbound(), body).await.0, 202);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique_name("keyed-reader"))
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..7 {
        list.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let partition = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + T;
        while std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
                return Some(message.partition());
            }
        }
        None
    })
    .await
    .expect("reader")
    .expect("the event in Kafka");
    assert_eq!(partition, 6);
}
