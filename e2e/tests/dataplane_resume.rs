//! Lossless reconnect across a data-plane restart: the client resumes with `Last-Event-ID` and ends
//! with every event exactly once, in order, although events kept being produced while the data
//! plane was down (they come from Kafka, the window of the new process being empty). A position
//! older than what can be replayed yields `rig.connection.gap` first.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::sse::{self, SseClient};
use rig_e2e::{Env, http, unique_name, wait_until};

const T: Duration = Duration::from_secs(30);
const EVENTS: i64 = 300;
const PARTITIONS: i64 = 2;

fn subscriptions_query() -> String {
    "subscriptions=%5B%7B%22eventType%22%3A%22tick%22%7D%5D".to_owned()
}

/// POST a `tick` event numbered `i` (CloudEvent id `<prefix><i>`) to `addr`; it must be accepted.
async fn post_tick(addr: std::net::SocketAddr, prefix: &str, i: i64) {
    let body = serde_json::json!({
        "specversion": "1.0", "type": "tick", "source": "/e2e", "id": format!("{prefix}{i}"), "data": {"i": i}
    })
    .to_string();
    let (status, _, answer) = http::post(
        addr,
        "/_rig/v1/events",
        "application/cloudevents+json",
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 202, "{answer}");
}

async fn wait_assigned(dp: &DataPlane) {
    wait_until("partitions assigned", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= PARTITIONS as f64).then_some(())
    })
    .await;
}

/// Read `tick` events into `seen` (partition -> numbers) until `done` says stop; returns the last
/// resume token and whether a gap event arrived.
async fn read_ticks(
    client: &mut SseClient,
    seen: &mut BTreeMap<i64, Vec<i64>>,
    mut done: impl FnMut(&BTreeMap<i64, Vec<i64>>) -> bool,
) -> (Option<String>, bool) {
    let mut last = None;
    let mut gap = false;
    while !done(seen) {
        let Some(event) = client.next(T).await.expect("read") else {
            break;
        };
        match event.event.as_str() {
            "tick" => {
                let i = event.json()["data"]["i"].as_i64().expect("i");
                seen.entry(i % PARTITIONS).or_default().push(i);
                last = event.id.clone();
            }
            "rig.connection.gap" => gap = true,
            _ => {}
        }
    }
    (last, gap)
}

/// How the data plane learns the topic.
#[derive(Clone, Copy, Debug)]
enum Named {
    /// RIG's `KAFKA_SOURCE_TOPICS`.
    Env,
    /// An `EventRoute` (the cluster-mode way), here from a standalone manifest.
    EventRoute,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_producing_loses_and_duplicates_nothing() {
    restart_while_producing(Named::Env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resume_is_lossless_for_event_route_topics_too() {
    restart_while_producing(Named::EventRoute).await;
}

async fn restart_while_producing(named: Named) {
    let env = Env::load().expect("env");
    let brokers = env.kafka_brokers().expect("kafka").to_owned();
    let topic = unique_name("resume");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS as i32,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", &brokers)
        .env("RIG_TOKEN_KEY", "resume-test-key-0123456789");
    let config = match named {
        Named::Env => config.env("KAFKA_SOURCE_TOPICS", &topic),
        Named::EventRoute => {
            let dir = std::env::temp_dir().join(unique_name("rig-resume-manifests"));
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(
                dir.join("ticks.yaml"),
                format!(
                    "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: ticks\nspec:\n  source:\n    kafka:\n      topics: [{topic}]\n  events:\n    - type: tick\n"
                ),
            )
            .expect("manifest");
            config
                .env("KAFKA_SOURCE_TOPICS", "")
                .env("RIG_MANIFESTS", dir.to_str().expect("utf8"))
        }
    };
    let dp = DataPlane::start(config).await.expect("start");
    wait_assigned(&dp).await;
    let path = format!("/_rig/v1/connection/sse?{}", subscriptions_query());
    let mut client = sse::open(dp.inbound(), &path, &[]).await.expect("connect");

    // Produce continuously, one event every few milliseconds, across both partitions.
    let producer_topic = topic.clone();
    let producing = tokio::spawn(async move {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .create()
            .expect("producer");
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for i in 0..EVENTS {
            pace.tick().await;
            let payload = serde_json::json!({
                "specversion": "1.0", "type": "tick", "source": "/e2e", "id": format!("t{i}"),
                "data": {"i": i}
            })
            .to_string();
            // Partition by number, so the expected per-partition order is known.
            producer
                .send(
                    FutureRecord::to(&producer_topic)
                        .partition((i % PARTITIONS) as i32)
                        .key("k")
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .expect("delivered");
        }
    });

    let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let (last, gap) = read_ticks(&mut client, &mut seen, |s| {
        s.values().map(Vec::len).sum::<usize>() >= 40
    })
    .await;
    assert!(!gap);
    let last = last.expect("a resume token");
    drop(client);

    // Restart on the same ports while the producer keeps going.
    let config = dp.stop().await.expect("stop");
    let dp = DataPlane::start(config).await.expect("restart");
    let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &last)])
        .await
        .expect("reconnect");
    let (_, gap) = read_ticks(&mut client, &mut seen, |s| {
        s.values().map(Vec::len).sum::<usize>() >= EVENTS as usize
    })
    .await;
    producing.await.expect("producer");
    assert!(
        !gap,
        "{named:?}: everything missed was still in Kafka (read back at start): no gap"
    );

    for (partition, numbers) in &seen {
        let expected: Vec<i64> = (0..EVENTS)
            .filter(|i| i % PARTITIONS == *partition)
            .collect();
        assert_eq!(
            numbers, &expected,
            "{named:?}, partition {partition}: every event once, in order"
        );
    }
    assert!(dp.metric("rig_replay_hits_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_beyond_the_window_gets_a_gap_event_then_what_is_left() {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_REPLAY_WINDOW", "3");
    let dp = DataPlane::start(config).await.expect("start");
    let path = format!("/_rig/v1/connection/sse?{}", subscriptions_query());
    let mut client = sse::open(dp.inbound(), &path, &[]).await.expect("connect");
    let post = |i: i64| post_tick(dp.inbound(), "h", i);
    post(0).await;
    let mut seen = BTreeMap::new();
    let (last, _) = read_ticks(&mut client, &mut seen, |s| !s.is_empty()).await;
    drop(client);
    for i in 1..=10 {
        post(i).await;
    }
    let last = last.expect("token");
    let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &last)])
        .await
        .expect("reconnect");
    let events = client
        .until(T, |e| e.event == "tick" && e.json()["data"]["i"] == 10)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "rig.connection.create",
            "rig.subscriptions_set",
            "rig.connection.gap",
            "tick",
            "tick",
            "tick"
        ],
        "gap first, then the three events the window still holds"
    );
    let numbers: Vec<i64> = events[3..]
        .iter()
        .map(|e| e.json()["data"]["i"].as_i64().expect("i"))
        .collect();
    assert_eq!(numbers, vec![8, 9, 10]);
    assert_eq!(dp.metric("rig_replay_misses_total").await, 1.0);
}

/// HTTP-published events live in one run of one process: a client resuming after a restart (same
/// pod name and key) with a token that names them gets `rig.connection.gap` first, never a silent
/// loss; a client whose token predates every HTTP event gets all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_of_a_previous_run_are_a_gap_not_a_silent_loss() {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("POD_NAME", "resume-pod")
        .env("RIG_TOKEN_KEY", "resume-test-key-0123456789");
    let dp = DataPlane::start(config).await.expect("start");
    let path = format!("/_rig/v1/connection/sse?{}", subscriptions_query());
    let post = |addr: std::net::SocketAddr, i: i64| post_tick(addr, "r", i);
    // A client connected before any event: its greeting token names no HTTP stream yet.
    let mut early = sse::open(dp.inbound(), &path, &[]).await.expect("connect");
    let create = early.next(T).await.expect("read").expect("greeting");
    let early_token = create.id.clone().expect("a token");
    drop(early);
    for i in 1..=3 {
        post(dp.inbound(), i).await;
    }
    let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &early_token)])
        .await
        .expect("reconnect");
    let events = client
        .until(T, |e| e.event == "tick" && e.json()["data"]["i"] == 3)
        .await
        .expect("every event published since");
    assert!(events.iter().all(|e| e.event != "rig.connection.gap"));
    let last = events.last().and_then(|e| e.id.clone()).expect("token");
    drop(client);

    let config = dp.stop().await.expect("stop");
    let dp = DataPlane::start(config).await.expect("restart");
    for i in 4..=5 {
        post(dp.inbound(), i).await;
    }
    let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &last)])
        .await
        .expect("reconnect after the restart");
    let events = client
        .until(T, |e| e.event == "rig.connection.gap")
        .await
        .expect("a gap: the previous run's events are not here");
    assert_eq!(events.last().expect("gap").event, "rig.connection.gap");
}

/// A replay far larger than the connection's queue is served as the client reads (not queued at
/// once, not a slow-consumer close), in order, and events published while it catches up follow
/// it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_the_queue_is_served_as_the_client_reads() {
    const MISSED: i64 = 400;
    const DURING: i64 = 100;
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_REPLAY_WINDOW", "1000")
        .env("RIG_CONNECTION_QUEUE", "8");
    let dp = DataPlane::start(config).await.expect("start");
    let post = |i: i64| post_tick(dp.inbound(), "q", i);
    let path = format!("/_rig/v1/connection/sse?{}", subscriptions_query());
    let mut client = sse::open(dp.inbound(), &path, &[]).await.expect("connect");
    post(0).await;
    let mut seen = BTreeMap::new();
    let (last, _) = read_ticks(&mut client, &mut seen, |s| !s.is_empty()).await;
    drop(client);
    for i in 1..=MISSED {
        post(i).await;
    }
    let last = last.expect("token");
    let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &last)])
        .await
        .expect("reconnect");
    // Publish more while the client is still catching up.
    let addr = dp.inbound();
    let publishing = tokio::spawn(async move {
        for i in MISSED + 1..=MISSED + DURING {
            post_tick(addr, "q", i).await;
        }
    });
    let mut numbers = Vec::new();
    let mut gap = false;
    while numbers.last() != Some(&(MISSED + DURING)) {
        let event = client.next(T).await.expect("read").expect("not closed");
        match event.event.as_str() {
            "tick" => numbers.push(event.json()["data"]["i"].as_i64().expect("i")),
            "rig.connection.gap" => gap = true,
            _ => {}
        }
        if numbers.len() % 50 == 0 {
            // A slow reader: the replay waits for it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    publishing.await.expect("publisher");
    assert!(!gap);
    assert_eq!(numbers, (1..=MISSED + DURING).collect::<Vec<_>>());
    assert_eq!(dp.metric("rig_queue_drops_total").await, 0.0);
}

/// A resume token the data plane did not sign with its `RIG_TOKEN_KEY` — edited, signed by another
/// deployment's key, or unsigned — is not understood: the client gets `rig.connection.gap` first
/// and nothing of what the token claims is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_resume_tokens_get_a_gap_and_nothing_else() {
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("RIG_TOKEN_KEY", "resume-test-key-0123456789"),
    )
    .await
    .expect("start");
    let other = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("RIG_TOKEN_KEY", "another-deployments-key-98765"),
    )
    .await
    .expect("start the other deployment");
    let path = format!("/_rig/v1/connection/sse?{}", subscriptions_query());
    let greeting_token = |addr| {
        let path = path.clone();
        async move {
            let mut client = sse::open(addr, &path, &[]).await.expect("connect");
            let create = client.next(T).await.expect("read").expect("greeting");
            create.id.expect("a token")
        }
    };
    let genuine = greeting_token(dp.inbound()).await;
    let foreign = greeting_token(other.inbound()).await;
    // Events the genuine token would replay.
    for i in 0..3 {
        post_tick(dp.inbound(), "f", i).await;
    }
    // The genuine token replays them, without a gap.
    let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &genuine)])
        .await
        .expect("resume");
    let events = client
        .until(T, |e| e.event == "tick" && e.json()["data"]["i"] == 2)
        .await
        .expect("replayed");
    assert!(events.iter().all(|e| e.event != "rig.connection.gap"));
    drop(client);

    // An edited body keeps the signature of the original: refused.
    let (body, tag) = genuine.rsplit_once('~').expect("signed token");
    let edited = format!("{}0~{tag}", body.trim_end_matches(char::is_numeric));
    let unsigned = format!("1~{}", body.trim_start_matches("2~"));
    for (what, token) in [
        ("edited", edited),
        ("foreign", foreign),
        ("unsigned", unsigned),
    ] {
        let mut client = sse::open(dp.inbound(), &path, &[("last-event-id", &token)])
            .await
            .expect("connect");
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(client.next(T).await.expect("read").expect("event").event);
        }
        assert_eq!(
            seen,
            [
                "rig.connection.create",
                "rig.subscriptions_set",
                "rig.connection.gap"
            ],
            "{what} token"
        );
        // Nothing is replayed for it: the next event is a new one.
        post_tick(dp.inbound(), &format!("{what}-"), 100).await;
        let next = client.next(T).await.expect("read").expect("event");
        assert_eq!(
            next.json()["data"]["i"],
            100,
            "{what} token: nothing replayed"
        );
    }
    assert_eq!(dp.metric("rig_replay_misses_total").await, 3.0);
}
