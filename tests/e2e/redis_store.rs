//! The Redis user-vector store: the trainer's write half and serving's read half agree,
//! against a real redis-server.

use recsys_serving::{RedisUserVectorStore, ServingError, UserVectorStore};
use recsys_trainer::sink::{RedisUserVectorSink, UserUpdate, UserVectorSink};

use recsys_testkit::RedisServer;

/// One user's update as the trainer publishes it.
fn update(user: &str, vector: &[f32], new_items: &[&str]) -> UserUpdate {
    UserUpdate {
        user_id: user.into(),
        vector: vector.to_vec(),
        new_items: new_items.iter().map(|item| item.to_string()).collect(),
    }
}

/// Publishes `update` in `generation` through a sink of its own (histories capped at 3),
/// as the trainer does.
async fn publish_one(url: &str, generation: u64, update: UserUpdate) {
    RedisUserVectorSink::connect(url, 3600, 3)
        .await
        .unwrap()
        .publish(generation, &[update])
        .await
        .unwrap();
}

#[tokio::test]
async fn round_trip_generations_history_and_ttl() {
    let redis = RedisServer::start();
    let writer = RedisUserVectorSink::connect(&redis.url(), 3600, 3)
        .await
        .unwrap();
    let reader = RedisUserVectorStore::connect(&redis.url(), std::time::Duration::from_millis(500))
        .await
        .unwrap();

    let v = vec![0.25f32, -1.5, 3.0e-7, 42.0];
    for items in [["a", "b"], ["c", "d"]] {
        writer
            .publish(7, &[update("alice", &v, &items)])
            .await
            .unwrap();
    }

    let rec = reader.get(7, "alice", 100).await.unwrap();
    assert_eq!(
        rec.vector,
        Some(v),
        "vector must survive the byte encoding exactly"
    );
    assert_eq!(
        rec.recent,
        vec!["d", "c", "b"],
        "newest first, capped at history_len"
    );
    assert_eq!(
        reader.get(7, "alice", 2).await.unwrap().recent,
        vec!["d", "c"]
    );
    assert!(
        reader.get(7, "alice", 0).await.unwrap().recent.is_empty(),
        "none asked for, none read (LRANGE 0 -1 would be the whole list)"
    );
    // A repeated item moves to the front instead of taking a second slot.
    writer
        .publish(7, &[update("alice", &[0.0; 4], &["c", "e", "c"])])
        .await
        .unwrap();
    assert_eq!(
        reader.get(7, "alice", 100).await.unwrap().recent,
        vec!["c", "e", "d"]
    );
    assert_eq!(
        reader.get(8, "alice", 10).await.unwrap().vector,
        None,
        "other generation"
    );
    let nobody = reader.get(7, "nobody", 10).await.unwrap();
    assert_eq!((nobody.vector, nobody.recent.len()), (None, 0));

    // Both halves send each command at once: with Nagle's algorithm (redis-rs's default)
    // a lookup written while the previous one is unanswered waits for that answer.
    let to_redis = crate::nodelay_of_connections(|_, peer| peer.port() == redis.port);
    assert!(
        to_redis.len() >= 2 && to_redis.iter().all(|&on| on),
        "TCP_NODELAY of the connections to redis (writer's and reader's): {to_redis:?}"
    );

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("u:7:alice")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

    // A value that is not whole f32s is reported as corrupt, not as a vector.
    let _: () = redis::cmd("SET")
        .arg("u:7:bob")
        .arg(vec![1u8, 2, 3])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        reader.get(7, "bob", 10).await,
        Err(ServingError::StoreCorrupt(_))
    ));
}

#[tokio::test]
async fn unreachable_redis_is_an_error_not_a_hang() {
    let redis = RedisServer::start();
    let reader = RedisUserVectorStore::connect(&redis.url(), std::time::Duration::from_millis(500))
        .await
        .unwrap();
    drop(redis);
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.get(1, "alice", 10),
    )
    .await
    .expect("lookup must not hang");
    assert!(matches!(lookup, Err(ServingError::StoreUnavailable(_))));
}

/// Each thread looks users up over a connection of its own; when Redis goes away and
/// comes back, every thread replaces its broken connection and reads again.
#[test]
fn every_thread_reconnects_after_redis_returns() {
    let redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let main = rt();
    let reader = std::sync::Arc::new(
        main.block_on(RedisUserVectorStore::connect(
            &url,
            std::time::Duration::from_millis(500),
        ))
        .unwrap(),
    );
    let publish =
        |url: String| rt().block_on(publish_one(&url, 1, update("alice", &[1.0, 2.0], &[])));
    publish(url.clone());
    // Three "workers", each with its own event loop, like actix's.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<bool>>();
            let reader = reader.clone();
            std::thread::spawn(move || {
                let rt = rt();
                for reply in rx {
                    let found = rt
                        .block_on(reader.get(1, "alice", 10))
                        .map(|r| r.vector == Some(vec![1.0, 2.0]))
                        .unwrap_or(false);
                    reply.send(found).unwrap();
                }
            });
            tx
        })
        .collect();
    let ask = |w: &std::sync::mpsc::Sender<std::sync::mpsc::Sender<bool>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        w.send(tx).unwrap();
        rx.recv().unwrap()
    };
    assert!(workers.iter().all(&ask), "every worker reads");
    drop(redis);
    assert!(
        workers.iter().all(|w| !ask(w)),
        "no worker reads while Redis is gone"
    );
    let _redis = RedisServer::start_on(port);
    publish(url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for w in &workers {
        while !ask(w) {
            assert!(
                std::time::Instant::now() < deadline,
                "a worker never reconnected"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// A publish of 1,000 users with 500 history items each (one pipeline of about half a
/// million commands) gets the sink's own 5 s budget. redis-rs's default reply timeout of
/// 500 ms cuts it short ("timed out") on the 2-core development machine.
#[tokio::test]
async fn a_large_publish_is_not_cut_short_by_the_clients_default_timeout() {
    let redis = RedisServer::start();
    let writer = RedisUserVectorSink::connect(&redis.url(), 3600, 500)
        .await
        .unwrap();
    let updates: Vec<UserUpdate> = (0..1_000)
        .map(|u| UserUpdate {
            user_id: format!("u{u}"),
            vector: vec![u as f32; 64],
            new_items: (0..500).map(|j| format!("i{}", u * 7 + j)).collect(),
        })
        .collect();
    let started = std::time::Instant::now();
    writer.publish(1, &updates).await.unwrap();
    eprintln!(
        "1,000 users x 500 items published in {:?}",
        started.elapsed()
    );
    let reader = RedisUserVectorStore::connect(&redis.url(), std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let last = reader.get(1, "u999", 500).await.unwrap();
    assert_eq!(last.recent.len(), 500);
    assert_eq!(
        last.recent.iter().next(),
        Some(format!("i{}", 999 * 7 + 499).as_str()),
        "newest first"
    );
}

/// A Redis that restarts while a worker is idle costs that worker no fallback: the first
/// lookup after it finds its idle connection broken and reads over a new one at once.
#[test]
fn a_restart_while_idle_costs_no_fallback() {
    let redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let publish =
        |url: &str| rt.block_on(publish_one(url, 1, update("alice", &[1.0, 2.0], &["i1"])));
    publish(&url);
    let reader = rt
        .block_on(RedisUserVectorStore::connect(
            &url,
            std::time::Duration::from_millis(500),
        ))
        .unwrap();
    let read = || rt.block_on(reader.get(1, "alice", 10));
    assert_eq!(read().unwrap().recent, ["i1"], "a connection is now idle");
    drop(redis);
    let _redis = RedisServer::start_on(port);
    publish(&url);
    let again = read().expect("the broken idle connection is replaced within the lookup");
    assert_eq!(again.vector, Some(vec![1.0, 2.0]));
    assert_eq!(again.recent, ["i1"]);
}

/// Lookups in flight together on one event loop (an HTTP worker's concurrent requests)
/// each get their own user's answer, however their connections are shared out.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_lookups_on_one_thread_get_their_own_answers() {
    let redis = RedisServer::start();
    let writer = RedisUserVectorSink::connect(&redis.url(), 3600, 5)
        .await
        .unwrap();
    let updates: Vec<UserUpdate> = (0..200)
        .map(|u| UserUpdate {
            user_id: format!("user{u}"),
            vector: vec![u as f32; 3],
            new_items: (0..(u % 4)).map(|i| format!("item{u}-{i}")).collect(),
        })
        .collect();
    writer.publish(2, &updates).await.unwrap();
    let reader = std::sync::Arc::new(
        RedisUserVectorStore::connect(&redis.url(), std::time::Duration::from_secs(5))
            .await
            .unwrap(),
    );
    for round in 0..3 {
        // Tasks of this one thread's event loop, all asking before any is answered.
        let mut lookups = tokio::task::JoinSet::new();
        for (u, update) in updates.iter().enumerate() {
            let (reader, user) = (reader.clone(), update.user_id.clone());
            lookups.spawn(async move { (u, reader.get(2, &user, 10).await) });
        }
        while let Some(joined) = lookups.join_next().await {
            let (u, answer) = joined.unwrap();
            let record = answer.unwrap();
            let mut want = updates[u].new_items.clone();
            want.reverse();
            assert_eq!(
                record.vector,
                Some(vec![u as f32; 3]),
                "user {u}, round {round}"
            );
            assert_eq!(record.recent, want, "user {u}, round {round}");
        }
    }
}

/// `redis+unix://` URLs: serving reads a Redis on the same host over its Unix socket.
#[tokio::test]
async fn the_store_reads_over_a_unix_socket() {
    let redis = RedisServer::start();
    publish_one(&redis.url(), 4, update("carol", &[0.5, -0.5], &["x", "y"])).await;
    let url = redis.socket_url();
    assert!(url.starts_with("redis+unix://"), "{url}");
    let reader = RedisUserVectorStore::connect(&url, std::time::Duration::from_millis(500))
        .await
        .unwrap();
    let record = reader.get(4, "carol", 10).await.unwrap();
    assert_eq!(record.vector, Some(vec![0.5, -0.5]));
    assert_eq!(record.recent, ["y", "x"]);
}

/// `rediss://` against a redis-server that speaks only TLS and requires a client
/// certificate, with a CA the test made: both halves round-trip a user through it with
/// the configured CA and client certificate, and are refused without the certificate or
/// when trusting only the system's roots.
#[tokio::test]
async fn rediss_round_trip_with_own_ca_and_client_certificate() {
    use recsys_schemas::config::TlsPem;
    use std::time::Duration;

    let redis = RedisServer::start_tls();
    let files = redis.tls.clone().unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let tls = TlsPem::load(
        "store",
        &path(&files.ca),
        &path(&files.client_cert),
        &path(&files.client_key),
    )
    .unwrap();
    let url = redis.tls_url();
    let writer = RedisUserVectorSink::connect_tls(&url, &tls, 3600, 5)
        .await
        .unwrap();
    writer
        .publish(3, &[update("carol", &[1.0, 2.0], &["x", "y"])])
        .await
        .unwrap();
    let reader = RedisUserVectorStore::connect_tls(&url, &tls, Duration::from_secs(2))
        .await
        .unwrap();
    let rec = reader.get(3, "carol", 10).await.unwrap();
    assert_eq!(rec.vector, Some(vec![1.0, 2.0]));
    assert_eq!(rec.recent, vec!["y", "x"]);

    // Under TLS 1.3 the server's refusal of a missing certificate arrives after the
    // handshake, so it shows on the first exchange if not at connect.
    let no_client = TlsPem {
        client: None,
        ..tls.clone()
    };
    let refused =
        match RedisUserVectorStore::connect_tls(&url, &no_client, Duration::from_secs(2)).await {
            Err(_) => true,
            Ok(reader) => reader.get(3, "carol", 10).await.is_err(),
        };
    assert!(refused, "the server requires a client certificate");
    assert!(
        RedisUserVectorStore::connect(&url, Duration::from_secs(2))
            .await
            .is_err(),
        "the system's roots do not know the test's CA"
    );
}
