//! An embedded Kafka-protocol broker: librdkafka's mock cluster, so the demo and the tests
//! exercise the real client code path with nothing installed. The cluster handle is not
//! `Send`, so it lives on a thread of its own until this value is dropped.

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
