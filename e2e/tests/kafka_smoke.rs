//! The Kafka of the test environment is a real broker: topics can be created, and 1,000 messages
//! produced with rdkafka come back through a consumer group.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::{Env, unique_name};

const MESSAGES: usize = 1_000;
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_round_trip_through_a_consumer_group() {
    let env = Env::load().expect("test environment");
    let brokers = env.kafka_brokers().expect("kafka");
    let topic = unique_name("smoke");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    assert!(
        created.iter().all(Result::is_ok),
        "topic creation: {created:?}"
    );

    // Idempotence: Kafka keeps the order per partition across retries only for an idempotent
    // producer (a first batch to a new topic's partition may be retried while later ones land).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let deliveries = (0..MESSAGES).map(|i| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let key = format!("k{}", i % 7);
            let payload = i.to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    let results = futures::future::join_all(deliveries).await;
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} deliveries failed: {:?}",
        failed.len(),
        failed.first()
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");

    // Per key, the produced order must survive (same key -> same partition -> ordered).
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut count = 0;
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while count < MESSAGES {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {count} of {MESSAGES} messages consumed before the deadline")
            })
            .expect("consumer stream ended");
        let msg = next.expect("consumer error");
        let key = String::from_utf8_lossy(msg.key().expect("key")).into_owned();
        let value: usize = std::str::from_utf8(msg.payload().expect("payload"))
            .expect("utf8")
            .parse()
            .expect("number");
        seen.entry(key).or_default().push(value);
        count += 1;
    }

    let mut all: Vec<usize> = seen.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every message exactly once"
    );
    for (key, values) in &seen {
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "order kept for key {key}: {values:?}"
        );
    }
}
