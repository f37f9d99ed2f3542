//! `rig-bench responder`: the Kafka side of the sync-over-async benchmark (`e2e/bench/proxy.sh`).
//!
//! It creates the request and response topics when missing, reads every partition of the
//! request topic from its beginning (the topics are fresh per run) and answers each request
//! event at once with a correlated response on the response topic: headers `rig-correlation`
//! (the event's `rig.correlation`) and `rig-response-code: 200`, a small JSON body. It prints
//! `ready` on stdout once it is assigned and its producer has the response topic's metadata,
//! then runs until SIGTERM or SIGINT and prints its counters on stderr.
//!
//! Only `rig.correlation` is parsed (borrowed, the rest of the event skipped), and responses are
//! enqueued without waiting for each acknowledgement, so the responder costs little next to the
//! data plane and the broker it measures. Its clients are tuned for latency: the consumer's
//! `fetch.wait.max.ms` only bounds an empty fetch (the broker answers a waiting fetch as soon as
//! a message arrives), the producer sends at once (`linger.ms=0`, `acks=1`), Nagle is off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::opt;

/// What the responder needs.
#[derive(Debug, Clone)]
pub struct ResponderArgs {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic the data plane produces requests to.
    pub requests: String,
    /// The topic the data plane reads responses from.
    pub responses: String,
    /// Partitions of each topic when created here.
    pub partitions: i32,
}

impl ResponderArgs {
    /// From `--brokers --requests --responses [--partitions 1]`.
    pub fn parse(o: &BTreeMap<String, String>) -> Result<Self> {
        Ok(Self {
            brokers: o.get("brokers").context("--brokers")?.clone(),
            requests: o.get("requests").context("--requests")?.clone(),
            responses: o.get("responses").context("--responses")?.clone(),
            partitions: opt(o, "partitions", 1)?,
        })
    }
}

/// The part of a request event the responder reads.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    rig: Rig<'a>,
}

#[derive(Deserialize)]
struct Rig<'a> {
    #[serde(borrow)]
    correlation: &'a str,
}

/// The body of every response.
const BODY: &str = r#"{"status":"done"}"#;

/// Counters printed at the end.
#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    failed: AtomicU64,
    unreadable: AtomicU64,
}

/// Run the responder (see the module docs).
pub async fn run(args: ResponderArgs) -> Result<()> {
    create_topics(&args).await?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        // Required by librdkafka for a consumer; the partitions are assigned, never joined.
        .set("group.id", rig_e2e::unique_name("rig-bench-responder"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .set("socket.nagle.disable", "true")
        .create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..args.partitions {
        list.add_partition_offset(&args.requests, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "0")
        .set("acks", "1")
        .set("socket.nagle.disable", "true")
        .create()?;
    // Metadata of the response topic before `ready`: the first response is not delayed by it.
    let p = producer.clone();
    let responses = args.responses.clone();
    tokio::task::spawn_blocking(move || {
        p.client()
            .fetch_metadata(Some(&responses), Duration::from_secs(10))
    })
    .await??;
    println!("ready");

    let counters = Arc::new(Counters::default());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            message = consumer.recv() => match message {
                Ok(m) => answer(&producer, &args.responses, m.payload().unwrap_or_default(), &counters),
                Err(error) => eprintln!("rig-bench responder: consumer error: {error}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    eprintln!(
        "rig-bench responder: answered {}, failed {}, unreadable {}",
        counters.answered.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed),
        counters.unreadable.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Enqueue the correlated response to one request event; its acknowledgement is counted by a
/// task of its own.
fn answer(producer: &FutureProducer, topic: &str, payload: &[u8], counters: &Arc<Counters>) {
    let Ok(request) = serde_json::from_slice::<Request<'_>>(payload) else {
        counters.unreadable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "rig-correlation",
            value: Some(request.rig.correlation),
        })
        .insert(Header {
            key: "rig-response-code",
            value: Some("200"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    let record = FutureRecord::<(), str>::to(topic)
        .payload(BODY)
        .headers(headers);
    match producer.send_result(record) {
        Ok(delivery) => {
            let counters = counters.clone();
            tokio::spawn(async move {
                let counter = match delivery.await {
                    Ok(Ok(_)) => &counters.answered,
                    _ => &counters.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
        Err((error, _)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("rig-bench responder: produce failed: {error}");
        }
    }
}

/// Create both topics; one that exists already is fine.
async fn create_topics(args: &ResponderArgs) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let topics = [
        NewTopic::new(&args.requests, args.partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&args.responses, args.partitions, TopicReplication::Fixed(1)),
    ];
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating {topic}: {code}"),
        }
    }
    Ok(())
}
