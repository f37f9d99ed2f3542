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

/// A Kafka broker of a test's own (`e2e/env/kafka.sh` with a private run directory), so stopping
/// it for an outage disturbs no other test; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PrivateBroker {
    run: std::path::PathBuf,
}

impl PrivateBroker {
    /// Start one (installing Kafka from the cache if needed) and wait until it answers.
    pub fn up() -> Self {
        let run = std::env::temp_dir().join(crate::unique_name("rig-broker"));
        std::fs::create_dir_all(&run).expect("run dir");
        let broker = Self { run };
        broker.kafka_sh("up");
        broker
    }

    /// Run `kafka.sh <verb>` on it: `stop` (data and address kept), `start` (back on the same
    /// address). Fails the test when the script fails.
    pub fn kafka_sh(&self, verb: &str) {
        let status = std::process::Command::new("bash")
            .arg(crate::repo_root().join("e2e/env/kafka.sh"))
            .arg(verb)
            .env("RIG_RUN", &self.run)
            .status()
            .expect("kafka.sh runs");
        assert!(status.success(), "kafka.sh {verb} failed");
    }

    /// Its bootstrap address.
    pub fn brokers(&self) -> String {
        crate::Env::from_file(&self.run.join("env"))
            .expect("env file")
            .kafka_brokers()
            .expect("KAFKA_BROKERS")
            .to_owned()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(crate::repo_root().join("e2e/env/kafka.sh"))
            .arg("down")
            .env("RIG_RUN", &self.run)
            .status();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}
