//! The HTTP API of a replica, endpoint by endpoint, against a real redis-server and the
//! embedded broker: normal cases, every bad input, auth, limits, metrics, and a Redis
//! outage in the middle.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use recsys::embedded::EmbeddedKafka;
use recsys_index::IndexConfig;
use recsys_schemas::KafkaConfig;
use recsys_serving::{
    AppState, AuthConfig, CatalogHolder, FollowStatus, KafkaEventSink, RedisUserVectorStore,
    ServingConfig,
};
use recsys_testkit::{HttpClient, Response};
use recsys_trainer::sink::{RedisUserVectorSink, UserUpdate, UserVectorSink};
use serde_json::Value;

use recsys_testkit::RedisServer;

const READ: &str = "read-key-0123456789abcdef";
const WRITE: &str = "write-key-0123456789abcdef";

/// Items i0..i49; item i has the unit vector at angle i, so neighbours are close in i.
fn items() -> Vec<(String, Vec<f32>)> {
    (0..50)
        .map(|i| {
            let a = i as f32 * 0.06;
            (format!("i{i}"), vec![a.cos(), a.sin(), 0.0, 0.0])
        })
        .collect()
}

struct Api {
    addr: std::net::SocketAddr,
    server: actix_web::dev::ServerHandle,
}

impl Api {
    /// Starts the API of `state` on the current runtime.
    fn start(state: AppState) -> Arc<Self> {
        let (server, addr) = recsys_serving::start(state).unwrap();
        let api = Arc::new(Self {
            addr,
            server: server.handle(),
        });
        tokio::spawn(server);
        api
    }

    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&[u8]>) -> Response {
        let mut http = HttpClient::connect(self.addr).unwrap();
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        http.request_with(method, path, &headers, body).unwrap()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = self.call("GET", path, Some(READ), None);
        (r.status, r.json().unwrap_or(Value::Null))
    }
}

fn assert_metrics_have(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_bad_inputs_auth_limits_and_a_redis_outage() {
    let redis = RedisServer::start();
    let kafka = EmbeddedKafka::start(&[("events", 1)]).unwrap();
    let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
    catalog.apply_items(1, items()).unwrap();
    catalog
        .set_popular(
            1,
            vec![("i3".into(), 1.0), ("i4".into(), 0.5), ("i5".into(), 0.2)],
        )
        .unwrap();
    let even = (0..50)
        .step_by(2)
        .map(|i| (format!("i{i}"), vec!["even".to_owned()]))
        .collect();
    catalog.set_categories(1, even).unwrap();
    let writer = RedisUserVectorSink::connect(&redis.url(), 3600, 100)
        .await
        .unwrap();
    let alice = UserUpdate {
        user_id: "alice".into(),
        vector: vec![1.0, 0.0, 0.0, 0.0],
        new_items: vec!["i0".into()],
    };
    writer
        .publish(1, std::slice::from_ref(&alice))
        .await
        .unwrap();
    let reader = RedisUserVectorStore::connect(&redis.url(), Duration::from_millis(100))
        .await
        .unwrap();
    let follow = Arc::new(FollowStatus::default());
    follow.set_ready();
    let cfg = ServingConfig {
        bind: "127.0.0.1:0".into(),
        workers: 1,
        max_body_bytes: 4096,
        events_per_s_per_key: 1.0,
        events_burst: 5.0,
        max_events_per_request: 5,
        store_timeout_ms: 200,
        auth: AuthConfig {
            read: vec![READ.into()],
            write: vec![WRITE.into()],
            admin: vec![],
        },
        ..ServingConfig::default()
    };
    let sink =
        KafkaEventSink::new(&KafkaConfig::default(), kafka.bootstrap_servers(), "events").unwrap();
    let state = AppState::new(catalog.clone(), Arc::new(reader), cfg, follow)
        .unwrap()
        .with_events(Arc::new(sink));
    let api = Api::start(state);

    let a = api.clone();
    blocking(move || {
        // Personal: nearest to alice's vector, her seen item i0 excluded, sorted.
        let (s, body) = a.get("/v1/users/alice/recommendations?k=3");
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["source"], "personal");
        assert_eq!(body["fallback"], false);
        assert_eq!(body["model_generation"], 1);
        let ids: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["i1", "i2", "i3"]);
        // The server's side of a connection sends each response at once (TCP_NODELAY).
        let mut http = HttpClient::connect(a.addr).unwrap();
        assert_eq!(http.request_with("GET", "/healthz", &[], None).unwrap().status, 200);
        let accepted = crate::nodelay_of_connections(|local, _| local.port() == a.addr.port());
        assert!(!accepted.is_empty() && accepted.iter().all(|&on| on), "server side: {accepted:?}");
        drop(http);
        // exclude
        let (_, body) = a.get("/v1/users/alice/recommendations?k=2&exclude=i1,i2");
        assert_eq!(body["items"][0]["item_id"], "i3");
        // Unknown user: 200, popular.
        let (s, body) = a.get("/v1/users/nobody/recommendations?k=2");
        assert_eq!((s, body["source"].as_str()), (200, Some("popular")));
        assert_eq!(body["items"][0]["item_id"], "i3");
        // Similar items exclude the item itself; unknown item 404.
        let (s, body) = a.get("/v1/items/i10/similar?k=2");
        assert_eq!(s, 200, "{body}");
        let ids: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap()).collect();
        assert!(ids.len() == 2 && ids.iter().all(|i| ["i9", "i11"].contains(i)), "{body}");
        assert_eq!(a.get("/v1/items/nope/similar").0, 404);
        // Popular.
        let (s, body) = a.get("/v1/popular?k=2");
        assert_eq!(s, 200);
        assert_eq!(body["items"].as_array().unwrap().len(), 2);
        // category= filters every list, digging deeper into the index when needed.
        let ids = |body: &Value| -> Vec<String> {
            body["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap().to_owned()).collect()
        };
        let (_, body) = a.get("/v1/users/alice/recommendations?k=3&category=even");
        assert_eq!(ids(&body), ["i2", "i4", "i6"], "{body}");
        let (_, body) = a.get("/v1/popular?k=5&category=even");
        assert_eq!(ids(&body), ["i4"]);
        let (_, body) = a.get("/v1/items/i10/similar?k=2&category=even");
        let mut got = ids(&body);
        got.sort();
        assert_eq!(got, ["i12", "i8"]);
        let (s, body) = a.get("/v1/popular?category=nothing");
        assert_eq!((s, body["items"].as_array().unwrap().len()), (200, 0));
        // Batch.
        let r = a.call(
            "POST",
            "/v1/recommendations",
            Some(READ),
            Some(br#"{"user_ids":["alice","nobody"],"k":2}"#),
        );
        assert_eq!(r.status, 200);
        let body = r.json().unwrap();
        assert_eq!(body["results"][0]["source"], "personal");
        assert_eq!(body["results"][1]["source"], "popular");

        // Bad inputs, each a 4xx with a JSON reason.
        for (path, status, needle) in [
            ("/v1/users/alice/recommendations?k=abc", 400, "k must be"),
            ("/v1/users/alice/recommendations?k=0", 400, "k must be"),
            ("/v1/users/alice/recommendations?k=101", 400, "k must be"),
            ("/v1/nothing-here", 404, "no route"),
        ] {
            let (s, body) = a.get(path);
            assert_eq!(s, status, "{path}: {body}");
            assert!(body["error"].as_str().unwrap().contains(needle), "{path}: {body}");
        }
        for (body, status, needle) in [
            (&br#"{"user_ids":[],"k":2}"#[..], 400, "user_ids"),
            (br#"{"user_ids":["a"],"k":0}"#, 400, "k must be"),
            (br#"{"users":["a"]}"#, 400, "invalid JSON body"),
        ] {
            let r = a.call("POST", "/v1/recommendations", Some(READ), Some(body));
            assert_eq!(r.status, status);
            assert!(r.json().unwrap()["error"].as_str().unwrap().contains(needle));
        }

        // Auth: none, wrong, and a read key on a write endpoint.
        let r = a.call("GET", "/v1/popular", None, None);
        assert_eq!(r.status, 401);
        assert!(r.json().unwrap()["error"].as_str().unwrap().contains("API key"));
        assert_eq!(a.call("GET", "/v1/popular", Some("wrong-key-0123456789abc"), None).status, 401);
        let event = br#"{"user_id":"bob","item_id":"i7","kind":"click"}"#;
        assert_eq!(a.call("POST", "/v1/events", Some(READ), Some(event)).status, 403);
        // Probes and metrics are open.
        assert_eq!(a.call("GET", "/healthz", None, None).status, 200);
        assert_eq!(a.call("GET", "/readyz", None, None).status, 200);

        // Events: accepted, malformed (400 naming the field), too large (413), rate limit.
        let r = a.call("POST", "/v1/events", Some(WRITE), Some(event));
        assert_eq!((r.status, r.json().unwrap()["accepted"].as_u64()), (202, Some(1)));
        let r = a.call(
            "POST",
            "/v1/events",
            Some(WRITE),
            Some(br#"[{"user_id":"bob","item_id":"i1"},{"user_id":"","item_id":"i2"}]"#),
        );
        assert_eq!(r.status, 400);
        let err = r.json().unwrap()["error"].as_str().unwrap().to_owned();
        assert!(err.contains("events[1]") && err.contains("user_id"), "{err}");
        // One event may not reach beyond itself: no far-future time, no huge weight.
        for (bad, field) in [
            (&br#"{"user_id":"bob","item_id":"i1","ts":99999999999999999}"#[..], "ts"),
            (br#"{"user_id":"bob","item_id":"i1","ts":1767225}"#, "ts"),
            (br#"{"user_id":"bob","item_id":"i1","weight":1e30}"#, "weight"),
            (br#"{"user_id":"bob","item_id":"i1","weight":0}"#, "weight"),
        ] {
            let r = a.call("POST", "/v1/events", Some(WRITE), Some(bad));
            assert_eq!(r.status, 400);
            let err = r.json().unwrap()["error"].as_str().unwrap().to_owned();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
        let big = vec![b' '; 5000];
        let r = a.call("POST", "/v1/events", Some(WRITE), Some(&big));
        assert_eq!(r.status, 413);
        assert!(r.json().unwrap()["error"].as_str().unwrap().contains("larger than"));
        let four = br#"[{"user_id":"c","item_id":"i1"},{"user_id":"c","item_id":"i2"},{"user_id":"c","item_id":"i3"},{"user_id":"c","item_id":"i4"}]"#;
        assert_eq!(a.call("POST", "/v1/events", Some(WRITE), Some(four)).status, 202);
        let r = a.call("POST", "/v1/events", Some(WRITE), Some(event));
        assert_eq!(r.status, 429, "burst of 5 used up");
        assert!(r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("retry-after")));
    })
    .await;

    // The accepted events are on the topic, keyed by user.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", "api-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["events"]).unwrap();
    let mut keys = Vec::new();
    while keys.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("accepted events reach the topic")
            .unwrap();
        keys.push(String::from_utf8_lossy(m.key().unwrap()).into_owned());
    }
    assert_eq!(keys, ["bob", "c", "c", "c", "c"]);

    // Redis goes away: answers keep coming, from fallbacks, flagged.
    let port = redis.port;
    drop(redis);
    let a = api.clone();
    blocking(move || {
        for _ in 0..5 {
            let (s, body) = a.get("/v1/users/alice/recommendations?k=3");
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["fallback"], true, "{body}");
            assert_eq!(body["source"], "popular");
        }
    })
    .await;
    // Redis is back (empty); the trainer republishes; personal answers return.
    let redis = RedisServer::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if writer
            .publish(1, std::slice::from_ref(&alice))
            .await
            .is_ok()
        {
            let a = api.clone();
            let (_, body) = blocking(move || a.get("/v1/users/alice/recommendations?k=3")).await;
            if body["source"] == "personal" && body["fallback"] == false {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "personal answers never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let a = api.clone();
    let text = blocking(move || {
        let r = a.call("GET", "/metrics", None, None);
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    })
    .await;
    assert_metrics_have(
        &text,
        &[
            "recsys_http_requests_total{route=\"/v1/users/{user_id}/recommendations\",method=\"GET\",status=\"200\"}",
            "recsys_http_request_duration_seconds_bucket{route=\"/v1/popular\"",
            "recsys_fallbacks_total{cause=",
            "recsys_rate_limited_total 1",
            "recsys_events_accepted_total 5",
            "recsys_index_items 50",
            "recsys_model_generation 1",
        ],
    );
    api.server.stop(true).await;
    drop(redis);
}

/// Random values a client might send: empty, huge, negative, odd characters.
fn nasty(rng: &mut rand::rngs::StdRng) -> String {
    use rand::RngExt;
    const POOL: [&str; 14] = [
        "",
        "0",
        "-1",
        "1",
        "10",
        "100",
        "101",
        "99999999999999999999",
        "1.5",
        "abc",
        "%00",
        "%E2%82%AC",
        "a,b,,c",
        "%20%20",
    ];
    match rng.random_range(0..3) {
        0 => POOL[rng.random_range(0..POOL.len())].to_owned(),
        1 => (0..rng.random_range(0..300))
            .map(|_| format!("%{:02X}", rng.random_range(0u8..=255)))
            .collect(),
        _ => (0..rng.random_range(1..20))
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect(),
    }
}

fn random_json(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
    use rand::RngExt;
    match rng.random_range(0..if depth > 2 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::from(rng.random_range(-1e12..1e12f64)),
        2 => Value::from(nasty(rng)),
        3 => Value::from(rng.random_range(0..2) == 1),
        4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "user_id", "item_id", "user_ids", "k", "exclude", "weight", "ts", "kind", "x",
            ];
            Value::Object(
                (0..rng.random_range(0..5))
                    .map(|_| {
                        (
                            keys[rng.random_range(0..keys.len())].to_owned(),
                            random_json(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// Every operation of the served OpenAPI document, called with random path parameters,
/// query values and bodies, with and without a key: never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_from_the_openapi_document_never_get_a_5xx() {
    use rand::{RngExt, SeedableRng};
    let kafka = EmbeddedKafka::start(&[("events", 1)]).unwrap();
    let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
    catalog.apply_items(1, items()).unwrap();
    let follow = Arc::new(FollowStatus::default());
    follow.set_ready();
    let cfg = ServingConfig {
        bind: "127.0.0.1:0".into(),
        workers: 1,
        auth: AuthConfig {
            read: vec![READ.into()],
            write: vec![WRITE.into()],
            admin: vec![],
        },
        ..ServingConfig::default()
    };
    let store = Arc::new(recsys_index::store::MemoryUserStore::new());
    let sink =
        KafkaEventSink::new(&KafkaConfig::default(), kafka.bootstrap_servers(), "events").unwrap();
    let state = AppState::new(catalog, store, cfg, follow)
        .unwrap()
        .with_events(Arc::new(sink));
    let api = Api::start(state);
    let handle = api.server.clone();
    blocking(move || {
        let doc = api.call("GET", "/openapi.json", None, None).json().unwrap();
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 8, "{doc}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut calls = 0;
        for (template, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                for _ in 0..40 {
                    let mut path = template.clone();
                    let mut query = Vec::new();
                    for p in op["parameters"].as_array().into_iter().flatten() {
                        let name = p["name"].as_str().unwrap();
                        match p["in"].as_str() {
                            Some("path") => {
                                path = path.replace(&format!("{{{name}}}"), &nasty(&mut rng))
                            }
                            Some("query") if rng.random_range(0..2) == 1 => {
                                query.push(format!("{name}={}", nasty(&mut rng)))
                            }
                            _ => {}
                        }
                    }
                    if !query.is_empty() {
                        path = format!("{path}?{}", query.join("&"));
                    }
                    let body = op
                        .get("requestBody")
                        .map(|_| serde_json::to_vec(&random_json(&mut rng, 0)).unwrap());
                    let key =
                        [None, Some(READ), Some(WRITE), Some("nonsense")][rng.random_range(0..4)];
                    let r = api.call(&method.to_uppercase(), &path, key, body.as_deref());
                    assert!(
                        r.status < 500,
                        "{method} {path} -> {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                    if r.status >= 400 {
                        assert!(
                            r.json().is_ok_and(|b| b["error"].is_string()),
                            "{method} {path}: non-JSON error"
                        );
                    }
                    calls += 1;
                }
            }
        }
        assert!(calls >= 8 * 40);
    })
    .await;
    handle.stop(true).await;
}

/// A user store whose lookups wait until released: requests stay in flight.
struct Stalled {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl recsys_serving::UserVectorStore for Stalled {
    async fn get(
        &self,
        _generation: u64,
        _user_id: &str,
        _max_recent: usize,
    ) -> Result<recsys_index::store::UserRecord, recsys_serving::ServingError> {
        let _ = self.entered.send(());
        let _permit = self.release.acquire().await;
        Ok(Default::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_bound_answers_503_and_metrics_label_every_route() {
    let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
    catalog.apply_items(1, items()).unwrap();
    let (entered, mut in_store) = tokio::sync::mpsc::unbounded_channel();
    let store = Arc::new(Stalled {
        entered,
        release: tokio::sync::Semaphore::new(0),
    });
    let follow = Arc::new(FollowStatus::default());
    follow.set_ready();
    let cfg = ServingConfig {
        bind: "127.0.0.1:0".into(),
        workers: 1,
        max_in_flight: 1,
        store_timeout_ms: 30_000,
        ..ServingConfig::default()
    };
    let state = AppState::new(catalog, store.clone(), cfg, follow).unwrap();
    let api = Api::start(state);

    // The first request holds the only slot while its lookup waits.
    let a = api.clone();
    let held = tokio::task::spawn_blocking(move || a.get("/v1/users/u1/recommendations"));
    tokio::time::timeout(Duration::from_secs(10), in_store.recv())
        .await
        .expect("the first request reached the store");
    let a = api.clone();
    blocking(move || {
        let r = a.call("GET", "/v1/users/u2/recommendations", None, None);
        assert_eq!(r.status, 503);
        assert!(
            r.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        );
        assert!(
            r.json().unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("in flight")
        );
        // Probes stay open while the API is full.
        assert_eq!(a.call("GET", "/healthz", None, None).status, 200);
    })
    .await;
    store.release.add_permits(1);
    let (status, body) = held.await.unwrap();
    assert_eq!((status, body["source"].as_str()), (200, Some("popular")));

    let a = api.clone();
    let text = blocking(move || {
        assert_eq!(a.call("GET", "/v1/nothing-here", None, None).status, 404);
        assert_eq!(a.call("DELETE", "/v1/popular", None, None).status, 405);
        String::from_utf8(a.call("GET", "/metrics", None, None).body).unwrap()
    })
    .await;
    assert_metrics_have(
        &text,
        &[
            "recsys_http_requests_total{route=\"/v1/users/{user_id}/recommendations\",method=\"GET\",status=\"200\"} 1",
            "recsys_http_requests_total{route=\"/v1/users/{user_id}/recommendations\",method=\"GET\",status=\"503\"} 1",
            "recsys_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
            "recsys_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
            "recsys_http_requests_total{route=\"/v1/popular\",method=\"DELETE\",status=\"405\"} 1",
            "recsys_in_flight_rejected_total 1",
            "recsys_answers_total{source=\"popular\"} 1",
            "recsys_answers_total{source=\"personal\"} 0",
            // The one answer looked its user up; a popular answer searches nothing.
            "recsys_store_lookup_duration_seconds_count 1\n",
            "recsys_search_duration_seconds_count 0\n",
        ],
    );
    api.server.stop(true).await;
}
