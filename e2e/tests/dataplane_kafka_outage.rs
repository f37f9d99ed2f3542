//! A broker outage: the data plane keeps serving its connections while Kafka is down and, once the
//! broker is back on the same address, forwards new events again by itself (no restart).
//!
//! The test runs its own broker (`e2e/env/kafka.sh` with a private run directory), so stopping it
//! disturbs no other test.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::kafka::PrivateBroker;
use rig_e2e::{http, sse, unique_name, wait_until};

const T: Duration = Duration::from_secs(90);

async fn produce(brokers: &str, topic: &str, id: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let payload = serde_json::json!({
        "specversion": "1.0", "type": "tick", "source": "/e2e", "id": id
    })
    .to_string();
    producer
        .send(
            FutureRecord::to(topic).key("k").payload(&payload),
            Duration::from_secs(60),
        )
        .await
        .expect("delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_recovers_from_a_broker_outage_by_itself() {
    let broker = PrivateBroker::up();
    let brokers = broker.brokers();
    let topic = unique_name("outage");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    drop(admin);

    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", &brokers)
        .env("KAFKA_SOURCE_TOPICS", &topic);
    let dp = DataPlane::start(config).await.expect("start");
    wait_until("partition assigned", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= 1.0).then_some(())
    })
    .await;
    let mut client = sse::open(
        dp.inbound(),
        "/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22tick%22%7D%5D",
        &[],
    )
    .await
    .expect("connect");

    produce(&brokers, &topic, "before").await;
    let got = client
        .until(T, |e| e.event == "tick")
        .await
        .expect("before");
    assert_eq!(got.last().expect("event").json()["id"], "before");

    broker.kafka_sh("stop");
    // The data plane keeps serving while Kafka is away, and says it cannot measure its lag (the
    // last value stays) and the consumer cannot reach the broker.
    assert_eq!(
        http::get(dp.internal(), "/health").await.expect("health").0,
        200
    );
    wait_until("the lag is marked stale", T, || async {
        (dp.metric("rig_kafka_consumer_lag_stale").await == 1.0).then_some(())
    })
    .await;
    wait_until("the consumer is unhealthy", T, || async {
        (dp.metric("rig_task_healthy{task=\"kafka_consumer\"}").await == 0.0).then_some(())
    })
    .await;
    broker.kafka_sh("start");

    produce(&brokers, &topic, "after").await;
    let got = client
        .until(T, |e| e.event == "tick")
        .await
        .expect("after the outage");
    assert_eq!(got.last().expect("event").json()["id"], "after");
    wait_until("the lag is measured again", T, || async {
        (dp.metric("rig_kafka_consumer_lag_stale").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_keeps_the_process_unready_until_events_can_flow() {
    let broker = PrivateBroker::up();
    let brokers = broker.brokers();
    let topic = unique_name("late");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    drop(admin);
    broker.kafka_sh("stop");

    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", &brokers)
        .env("KAFKA_SOURCE_TOPICS", &topic);
    let dp = DataPlane::start(config)
        .await
        .expect("start without a broker");
    // Alive, but not ready: the consumer cannot reach the broker.
    assert_eq!(
        http::get(dp.internal(), "/health").await.expect("health").0,
        200
    );
    let (status, body) = http::get(dp.internal(), "/readyz").await.expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka_consumer"), "{body}");
    assert_eq!(
        dp.metric("rig_task_healthy{task=\"kafka_consumer\"}").await,
        0.0
    );

    broker.kafka_sh("start");
    wait_until("ready once the broker answers", T, || async {
        let (status, _) = http::get(dp.internal(), "/readyz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    wait_until("partition assigned", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= 1.0).then_some(())
    })
    .await;
    let mut client = sse::open(
        dp.inbound(),
        "/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22tick%22%7D%5D",
        &[],
    )
    .await
    .expect("connect");
    produce(&brokers, &topic, "first").await;
    let got = client
        .until(T, |e| e.event == "tick")
        .await
        .expect("events flow without a restart");
    assert_eq!(got.last().expect("event").json()["id"], "first");
}
