//! Topics on the test Kafka (or any broker the test started): created through the admin API,
//! one replica, failing the test with the broker's answer when a topic cannot be made.

use anyhow::{Context, Result, ensure};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Create `names` with `partitions` partitions each on `brokers`.
pub async fn create_topics(brokers: &str, names: &[&str], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("Kafka admin client")?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .context("creating topics")?;
    ensure!(results.iter().all(Result::is_ok), "{results:?}");
    Ok(())
}

/// A new topic named after `prefix` ([`crate::unique_name`]) with `partitions` partitions.
pub async fn new_topic(brokers: &str, prefix: &str, partitions: i32) -> Result<String> {
    let name = crate::unique_name(prefix);
    create_topics(brokers, &[&name], partitions).await?;
    Ok(name)
}
