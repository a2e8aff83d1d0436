//! The Redis user-vector store: the trainer's write half and serving's read half agree,
//! against a real redis-server.

use recsys_serving::{RedisUserVectorStore, StoreError, UserVectorStore};
use recsys_trainer::sink::{RedisUserVectorSink, UserUpdate, UserVectorSink};

use recsys::redis_server::RedisServer;

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
    writer
        .publish(
            7,
            &[UserUpdate {
                user_id: "alice".into(),
                vector: v.clone(),
                new_items: vec!["a".into(), "b".into()],
            }],
        )
        .await
        .unwrap();
    writer
        .publish(
            7,
            &[UserUpdate {
                user_id: "alice".into(),
                vector: v.clone(),
                new_items: vec!["c".into(), "d".into()],
            }],
        )
        .await
        .unwrap();

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
    // A repeated item moves to the front instead of taking a second slot.
    writer
        .publish(
            7,
            &[UserUpdate {
                user_id: "alice".into(),
                vector: vec![0.0; 4],
                new_items: vec!["c".into(), "e".into(), "c".into()],
            }],
        )
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
        Err(StoreError::Corrupt(_))
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
    assert!(matches!(lookup, Err(StoreError::Unavailable(_))));
}
