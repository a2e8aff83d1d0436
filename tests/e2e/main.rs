//! End-to-end tests: the real Kafka protocol and a real redis-server started on a free
//! loopback port. The pipeline, crash, archive and follow tests run one body against two
//! brokers ([`on_both_brokers!`]): librdkafka's mock cluster, and a real tansu broker
//! process (installed into `~/.cache/recsys` when missing).

/// Two tests from one body `async fn(BrokerKind)` of the invoking module: `NAME::mock` on librdkafka's mock
/// cluster and `NAME::tansu` on a real tansu broker.
macro_rules! on_both_brokers {
    ($(#[$doc:meta])* $name:ident => $body:ident) => {
        $(#[$doc])*
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mock() {
                super::$body(recsys::embedded::BrokerKind::Mock).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tansu() {
                super::$body(recsys::embedded::BrokerKind::Tansu).await
            }
        }
    };
}

mod api;
mod archive;
mod crash;
mod follow;
mod generations;
mod health;
mod pipeline;
mod redis_store;
mod replay;

use std::net::SocketAddr;

use recsys::allinone::topics;
use recsys::config::Config;
use recsys::demo::produce;
use recsys::embedded::{BrokerKind, TestBroker};
use recsys_engine::synth::{SynthConfig, SynthData};

/// A broker of `kind` with the default topics (2 event partitions) and `synth`'s training
/// stream produced into `events`, plus 5 malformed messages (3 broken, 2 out of bounds). Returns the broker, the data
/// and the number of messages sent.
async fn broker_with_stream(
    kind: BrokerKind,
    synth: SynthConfig,
) -> (TestBroker, SynthData, usize) {
    let kafka = TestBroker::start(kind, &topics(&Config::default(), 2))
        .await
        .unwrap();
    let data = synth.generate().unwrap();
    let sent = {
        let (brokers, data) = (kafka.bootstrap_servers().to_owned(), data.clone());
        let kafka_cfg = kafka.kafka_config();
        tokio::task::spawn_blocking(move || produce(&kafka_cfg, &brokers, "events", &data, 5, None))
            .await
            .unwrap()
            .unwrap()
    };
    (kafka, data, sent)
}

/// `TCP_NODELAY` of each of this process's TCP connections whose (local, peer) addresses
/// `pick` accepts: read from the open descriptors (`/proc/self/fd`), so it sees the
/// sockets that libraries (redis-rs, actix) open and never hand out.
#[allow(unsafe_code)]
fn nodelay_of_connections(pick: impl Fn(SocketAddr, SocketAddr) -> bool) -> Vec<bool> {
    use std::os::fd::FromRawFd;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` was open a moment ago; `ManuallyDrop` never closes it, and only
        // getsockname, getpeername and getsockopt are called on it, which fail harmlessly
        // (and are skipped) if another thread closed it meanwhile or it is not TCP.
        let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr())
            && pick(local, peer)
            && let Ok(nodelay) = stream.nodelay()
        {
            found.push(nodelay);
        }
    }
    found
}
