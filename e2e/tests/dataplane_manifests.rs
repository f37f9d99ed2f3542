//! Standalone mode: the data plane reads `EventRoute` manifests (the YAML users `kubectl apply`)
//! from a folder, consumes their topics with their extractors, reloads them when they change, keeps
//! the previous configuration when a change is invalid, and refuses to start on invalid ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::kafka;
use rig_e2e::sse::{self, SseClient};
use rig_e2e::{Env, unique_name, wait_until};

const T: Duration = Duration::from_secs(30);

fn route(name: &str, topics: &[&str], event_type: &str) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: {name}\nspec:\n  source:\n    kafka:\n      topics: [{}]\n  events:\n    - type: {event_type}\n      extractors:\n        - field: name\n          eventPointer: /data/name\n",
        topics.join(", ")
    )
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("rig-manifests"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn create_topics(env: &Env, names: &[&str]) {
    kafka::create_topics(env.kafka_brokers().expect("kafka"), names, 1)
        .await
        .expect("create topics");
}

async fn produce(env: &Env, topic: &str, event_type: &str, name: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", env.kafka_brokers().expect("kafka"))
        .create()
        .expect("producer");
    let payload = serde_json::json!({
        "specversion": "1.0", "type": event_type, "source": "/e2e", "id": unique_name("e"),
        "data": {"name": name}
    })
    .to_string();
    producer
        .send(
            FutureRecord::to(topic).key("k").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .expect("delivered");
}

async fn subscribe(dp: &DataPlane, subs: &str) -> SseClient {
    let query: String = subs
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut client = sse::open(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?subscriptions={query}"),
        &[],
    )
    .await
    .expect("connect");
    for _ in 0..2 {
        client.next(T).await.expect("greeting").expect("event");
    }
    client
}

async fn next_of(client: &mut SseClient, event_type: &str) -> serde_json::Value {
    let events = client
        .until(T, |e| e.event == event_type)
        .await
        .expect("event");
    events.last().expect("one").json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_manifests_are_applied_reloaded_and_bad_changes_rejected() {
    let env = Env::load().expect("env");
    let t1 = unique_name("m1");
    let t2 = unique_name("m2");
    create_topics(&env, &[&t1, &t2]).await;
    let dir = temp_dir();
    std::fs::write(
        dir.join("greetings.yaml"),
        route("greetings", &[&t1], "greeting"),
    )
    .expect("write");

    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", env.kafka_brokers().expect("kafka"))
        .env("KAFKA_SOURCE_TOPICS", "")
        .env("RIG_MANIFESTS", dir.to_str().expect("utf8"));
    let dp = DataPlane::start(config).await.expect("start");
    wait_until("the route's topic is consumed", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= 1.0).then_some(())
    })
    .await;

    // The route's extractor makes `name` constrainable.
    let mut joe = subscribe(
        &dp,
        r#"[{"eventType":"greeting","oneOf":[{"name":"joe"}]}]"#,
    )
    .await;
    produce(&env, &t1, "greeting", "bob").await;
    produce(&env, &t1, "greeting", "joe").await;
    let got = next_of(&mut joe, "greeting").await;
    assert_eq!(
        got["data"]["name"], "joe",
        "bob's event is filtered out by the route's extractor"
    );

    // Add a second route with another topic: reloaded without a restart.
    std::fs::write(dir.join("alerts.yaml"), route("alerts", &[&t2], "alert")).expect("write");
    wait_until("the new topic is consumed", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= 2.0).then_some(())
    })
    .await;
    assert!(dp.metric("rig_config_reloads_total").await >= 1.0);
    let mut alerts = subscribe(&dp, r#"[{"eventType":"alert"}]"#).await;
    produce(&env, &t2, "alert", "x").await;
    assert_eq!(next_of(&mut alerts, "alert").await["type"], "alert");

    // An invalid change is rejected whole; the previous routes keep working.
    std::fs::write(
        dir.join("broken.yaml"),
        "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata: {name: b}\nspec: {sauce: 1}\n",
    )
    .expect("write");
    wait_until("the bad change is rejected", T, || async {
        (dp.metric("rig_config_reload_failures_total").await >= 1.0).then_some(())
    })
    .await;
    produce(&env, &t2, "alert", "still").await;
    assert_eq!(next_of(&mut alerts, "alert").await["data"]["name"], "still");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_manifests_at_start_stop_the_process_with_the_reason() {
    let dir = temp_dir();
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata: {name: b}\nspec: {sauce: 1}\n",
    )
    .expect("write");
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
        .env("RIG_MANIFESTS", dir.as_path())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("document 1"),
        "{stderr}"
    );
    assert!(Path::new(&dir).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A route naming a topic that does not exist yet: the first events produced once it is created
/// reach subscribers (its partitions start at their beginning, not at the end the consumer finds
/// a few seconds later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_after_start_is_read_from_its_first_event() {
    let env = Env::load().expect("env");
    let topic = unique_name("late");
    let dir = temp_dir();
    std::fs::write(dir.join("late.yaml"), route("late", &[&topic], "late")).expect("write");
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", env.kafka_brokers().expect("kafka"))
        .env("KAFKA_SOURCE_TOPICS", "")
        .env("RIG_MANIFESTS", dir.to_str().expect("utf8"));
    let dp = DataPlane::start(config).await.expect("start");
    wait_until("the consumer has looked at the topic", T, || async {
        let (status, _) = rig_e2e::http::get(dp.internal(), "/readyz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    let mut client = subscribe(&dp, r#"[{"eventType":"late"}]"#).await;
    assert_eq!(dp.metric("rig_kafka_assigned_partitions").await, 0.0);
    create_topics(&env, &[&topic]).await;
    // Produced right away, before the consumer's next look assigns the partition.
    produce(&env, &topic, "late", "first").await;
    assert_eq!(next_of(&mut client, "late").await["data"]["name"], "first");
    let _ = std::fs::remove_dir_all(&dir);
}
