//! Kafka-protocol brokers for the demo, the tests and the benchmarks: librdkafka's mock
//! cluster embedded in the process (the demo needs nothing installed), and [`TestBroker`],
//! either that or a real tansu broker process, with its topics created. The mock
//! cluster's handle is not `Send`, so it lives on a thread of its own until dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context;
use rdkafka::mocking::MockCluster;

pub struct EmbeddedKafka {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts one mock broker with the given `(topic, partitions)` created.
    pub fn start<S: AsRef<str>>(topics: &[(S, i32)]) -> anyhow::Result<Self> {
        let topics: Vec<(String, i32)> = topics
            .iter()
            .map(|(t, p)| (t.as_ref().to_owned(), *p))
            .collect();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(topic, *partitions, 1) {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Keep the cluster alive until the owner drops us.
                let _ = stop_rx.recv();
                drop(cluster);
            })?;
        let bootstrap = ready_rx.recv().context("embedded broker thread died")??;
        Ok(Self {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `host:port` of the broker.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which Kafka-protocol broker a test or benchmark runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// librdkafka's mock cluster, inside this process.
    Mock,
    /// A real broker process: tansu (installed into the cache when missing).
    Tansu,
}

/// A running broker of either kind with its topics created.
pub enum TestBroker {
    Mock(EmbeddedKafka),
    Tansu {
        server: recsys_testkit::TansuServer,
        bootstrap: String,
    },
}

impl TestBroker {
    /// Starts a broker of `kind` with the given `(topic, partitions)` created. On tansu the
    /// topics of the item-vector contract are created compacted, as in production (tansu's
    /// memory storage never compacts; see docs/ARCHITECTURE.md).
    pub async fn start<S: AsRef<str>>(
        kind: BrokerKind,
        topics: &[(S, i32)],
    ) -> anyhow::Result<Self> {
        match kind {
            BrokerKind::Mock => Ok(Self::Mock(EmbeddedKafka::start(topics)?)),
            BrokerKind::Tansu => {
                let server =
                    tokio::task::spawn_blocking(recsys_testkit::TansuServer::start).await??;
                let bootstrap = server.bootstrap_servers();
                create_topics(&bootstrap, topics).await?;
                Ok(Self::Tansu { server, bootstrap })
            }
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        match self {
            Self::Mock(m) => m.bootstrap_servers(),
            Self::Tansu { bootstrap, .. } => bootstrap,
        }
    }

    /// The `[kafka]` table clients of this broker run with. On tansu every produced batch
    /// holds one record: tansu 0.6.0 answers a partition's end offset (ListOffsets,
    /// latest) with its last batch's base offset + 1, so end offsets (snapshot positions,
    /// the archive's catch-up target) are exact there only with one-record batches.
    pub fn kafka_config(&self) -> recsys_schemas::KafkaConfig {
        match self {
            Self::Mock(_) => recsys_schemas::KafkaConfig::default(),
            Self::Tansu { .. } => {
                recsys_schemas::KafkaConfig::from_pairs([("batch.num.messages", "1")])
            }
        }
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            Self::Mock(_) => BrokerKind::Mock,
            Self::Tansu { .. } => BrokerKind::Tansu,
        }
    }
}

/// Creates `topics` through the admin API and waits until the broker lists them.
pub async fn create_topics<S: AsRef<str>>(
    brokers: &str,
    topics: &[(S, i32)],
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use recsys_schemas::contract::{ITEM_VECTORS_TOPIC, ITEMS_TOPIC, POPULAR_TOPIC};
    use recsys_schemas::{KafkaClient, KafkaConfig};

    let admin: AdminClient<DefaultClientContext> = KafkaConfig::default()
        .properties(KafkaClient::Admin, brokers, None)
        .into_iter()
        .collect::<rdkafka::ClientConfig>()
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            let name = name.as_ref();
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if [ITEM_VECTORS_TOPIC, POPULAR_TOPIC, ITEMS_TOPIC].contains(&name) {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await? {
        if let Err((topic, code)) = result {
            anyhow::bail!("creating topic {topic}: {code}");
        }
    }
    let wanted: Vec<&str> = topics.iter().map(|(t, _)| t.as_ref()).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let md = admin
            .inner()
            .fetch_metadata(None, std::time::Duration::from_secs(5))?;
        let listed: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
        if wanted.iter().all(|t| listed.contains(t)) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "topics {wanted:?} not listed by the broker (it lists {listed:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
