//! End-to-end tests: the real Kafka protocol (librdkafka's mock cluster) and a real
//! redis-server started on a free loopback port.

mod api;
mod archive;
mod crash;
mod follow;
mod generations;
mod pipeline;
mod redis_store;

use recsys::allinone::topics;
use recsys::config::Config;
use recsys::demo::produce;
use recsys::embedded::EmbeddedKafka;
use recsys_engine::synth::{SynthConfig, SynthData};

/// An embedded broker with the default topics (2 event partitions) and `synth`'s training
/// stream produced into `events`, plus 3 malformed messages. Returns the broker, the data
/// and the number of messages sent.
async fn broker_with_stream(synth: SynthConfig) -> (EmbeddedKafka, SynthData, usize) {
    let kafka = EmbeddedKafka::start(&topics(&Config::default(), 2)).unwrap();
    let data = synth.generate().unwrap();
    let sent = {
        let (brokers, data) = (kafka.bootstrap_servers().to_owned(), data.clone());
        tokio::task::spawn_blocking(move || produce(&brokers, "events", &data, 3, None))
            .await
            .unwrap()
            .unwrap()
    };
    (kafka, data, sent)
}
