//! The keyed layer through its public API: an instance per key against
//! real servers (a breaker per host in front of reqwest, a limiter per
//! tenant in front of an axum router), the bound on instances under a
//! million keys, the policies when full, idle eviction, cancellation,
//! events and metrics that carry the key, and a multi-thread stress test.

#[path = "support/http_server.rs"]
mod http_server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use http_server::{Reply, Server};
use palisade::backoff::Backoff;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::HttpClassifier;
use palisade::error::{BoxError, CircuitOpen, ErrorKind, RateLimited, TooManyKeys};
use palisade::event::{Event, MetricsEvents};
use palisade::keyed::{Fork, Header, HostAndPort, HostPort, Instance, KeyedLayer, WhenFull};
use palisade::rate_limit::RateLimitLayer;
use palisade::respond::HttpRejectionLayer;
use palisade::retry::{RetryEvent, RetryLayer, RetryReason};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

fn get_req(url: &str) -> reqwest::Request {
    reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap())
}

/// A reqwest client with no timer of its own to move paused time, and no
/// proxy from the environment.
fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(None)
        .build()
        .unwrap()
}

/// An event as `(key, sentence)`.
type Line = (Option<String>, String);

/// Events of a layer.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Line>>>);

impl Log {
    fn listener(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.0.clone();
        move |event: &Event<'_>| {
            log.lock()
                .unwrap()
                .push((event.key().map(str::to_string), event.to_string()));
        }
    }

    fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }

    fn containing(&self, text: &str) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|(_, line)| line.contains(text))
            .collect()
    }
}

/// A breaker per host in front of a real reqwest client: the failing
/// host's breaker opens, the healthy host keeps being called, and the
/// refusal names the host.
#[tokio::test(start_paused = true)]
async fn a_breaker_per_host_keeps_the_healthy_host_in() {
    let bad = Server::start(vec![], Reply::status(503)).await;
    let good = Server::start(vec![], Reply::status(200)).await;
    let log = Log::default();
    let per_host = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("hosts")
            .classifier(HttpClassifier::new())
            .consecutive_failures(3)
            .wait_duration(Duration::from_secs(10))
            .on_event(log.listener())
            .build()
            .unwrap(),
    )
    .name("per-host")
    .key_source(HostAndPort)
    .build()
    .unwrap();
    let handle = per_host.handle();
    let client = per_host.layer(reqwest_client());

    for _ in 0..3 {
        let res = client
            .clone()
            .oneshot(get_req(&bad.url("/")))
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        let res = client
            .clone()
            .oneshot(get_req(&good.url("/")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let err = client
        .clone()
        .oneshot(get_req(&bad.url("/")))
        .await
        .unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("refused by the bad host's breaker");
    let bad_key = bad
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert_eq!(open.key(), Some(bad_key.as_str()));
    assert_eq!(
        err.to_string(),
        format!(
            r#"circuit breaker "hosts" for key "{bad_key}" is open; it may admit calls again in 10s"#
        )
    );
    assert_eq!(
        bad.seen().len(),
        3,
        "the open breaker kept the fourth call home"
    );
    for _ in 0..5 {
        let res = client
            .clone()
            .oneshot(get_req(&good.url("/")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(good.seen().len(), 8);

    let mut states: Vec<(String, CircuitState)> = handle
        .instances()
        .into_iter()
        .map(|(key, metrics)| (key.to_string(), metrics.state))
        .collect();
    states.sort_by_key(|(_, state)| *state as u8);
    let good_key = good
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert_eq!(
        states,
        [
            (good_key.clone(), CircuitState::Closed),
            (bad_key.clone(), CircuitState::Open)
        ]
    );
    let opened = log.containing("Closed -> Open");
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].0.as_deref(),
        Some(bad_key.as_str()),
        "the event carries its key"
    );
    assert!(
        opened[0].1.ends_with(&format!("; key `{bad_key}`")),
        "{:?}",
        opened[0]
    );
    let port: u16 = bad_key.rsplit(':').next().unwrap().parse().unwrap();
    let bad_breaker = handle.get(&HostPort::new("127.0.0.1", port)).unwrap();
    assert_eq!(bad_breaker.handle().state(), CircuitState::Open);
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// On a server: a rate limiter per tenant (the `x-tenant` header) in front
/// of an axum router. A tenant over its rate gets 429 with `Retry-After`;
/// the other tenant is not slowed down by it.
#[tokio::test(start_paused = true)]
async fn a_limiter_per_tenant_on_an_axum_server() {
    let per_tenant = KeyedLayer::builder(
        RateLimitLayer::builder()
            .name("tenants")
            .rate(2, Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .key_source(Header::new(http::HeaderName::from_static("x-tenant")))
    .max_keys(100)
    .build()
    .unwrap();
    let handle = per_tenant.handle();
    let app = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(HttpRejectionLayer::new())
            .layer(per_tenant),
    );
    let addr = serve(app).await;
    let client = reqwest_client();
    let call = |tenant: &'static str| {
        client
            .get(format!("http://{addr}/"))
            .header("x-tenant", tenant)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(call("acme").await.unwrap().status(), 200);
    }
    let limited = call("acme").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "5");
    for _ in 0..2 {
        assert_eq!(
            call("globex").await.unwrap().status(),
            200,
            "another tenant"
        );
    }
    assert_eq!(call("globex").await.unwrap().status(), 429);
    let mut keys: Vec<(String, u32)> = handle
        .instances()
        .into_iter()
        .map(|(key, metrics)| (key.to_string(), metrics.available))
        .collect();
    keys.sort();
    assert_eq!(keys, [("acme".into(), 0), ("globex".into(), 0)]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        call("acme").await.unwrap().status(),
        200,
        "a cell came back"
    );
}

/// Counts the instances of a layer of its own that are alive: what a
/// keyed layer holds, and anything still held elsewhere.
#[derive(Clone)]
struct Census {
    alive: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    token: Option<Arc<Token>>,
}

struct Token(Arc<AtomicUsize>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Census {
    fn new() -> Self {
        Self {
            alive: Arc::default(),
            most: Arc::default(),
            token: None,
        }
    }
}

impl Instance for Census {
    type Snapshot = ();

    fn fork(&self, _: &Fork) -> Self {
        let alive = self.alive.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(alive, SeqCst);
        Self {
            alive: self.alive.clone(),
            most: self.most.clone(),
            token: Some(Arc::new(Token(self.alive.clone()))),
        }
    }

    fn in_use(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| Arc::strong_count(t) > 1)
    }

    fn is_fresh(&self, _: Instant) -> bool {
        false
    }

    fn snapshot(&self) {}
}

impl<S> Layer<S> for Census {
    type Service = CensusService<S>;

    fn layer(&self, inner: S) -> CensusService<S> {
        CensusService {
            inner,
            _held: self.token.clone(),
        }
    }
}

#[derive(Clone)]
struct CensusService<S> {
    inner: S,
    _held: Option<Arc<Token>>,
}

impl<S: Service<u64>> Service<u64> for CensusService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: u64) -> S::Future {
        self.inner.call(req)
    }
}

fn ready_now<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("not ready at once"),
    }
}

/// Issue 15: an adversary sending 10^6 distinct keys to a layer of at most
/// 10^4 cannot make it hold, or keep alive, more than 10^4 instances
/// (for each policy). A count, not a timing.
#[test]
fn a_million_distinct_keys_leave_at_most_ten_thousand_instances_alive() {
    for policy in [
        WhenFull::EvictLeastRecentlyUsed,
        WhenFull::Reject,
        WhenFull::Share,
    ] {
        let census = Census::new();
        let keyed = KeyedLayer::builder(census.clone())
            .key(|n: &u64| *n)
            .max_keys(10_000)
            .when_full(policy)
            .build()
            .unwrap();
        let handle = keyed.handle();
        let mut svc = keyed.layer(service_fn(|n: u64| {
            std::future::ready(Ok::<_, BoxError>(n))
        }));
        let mut cx = Context::from_waker(Waker::noop());
        let (mut served, mut refused) = (0u64, 0u64);
        for key in 0..1_000_000u64 {
            assert!(svc.poll_ready(&mut cx).is_ready());
            match ready_now(svc.call(key)) {
                Ok(_) => served += 1,
                Err(err) => {
                    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);
                    refused += 1;
                }
            }
            if key % 1024 == 0 {
                assert!(handle.len() <= 10_000);
            }
        }
        let shared = usize::from(policy == WhenFull::Share);
        assert_eq!(handle.len(), 10_000, "{policy:?}");
        assert!(
            census.most.load(SeqCst) <= 10_000 + shared,
            "{policy:?}: {} alive at once",
            census.most.load(SeqCst)
        );
        assert_eq!(census.alive.load(SeqCst), 10_000 + shared, "{policy:?}");
        match policy {
            WhenFull::Reject => assert_eq!((served, refused), (10_000, 990_000)),
            _ => assert_eq!((served, refused), (1_000_000, 0)),
        }
    }
}

/// Idle instances go when new keys come, and all at once on request; the
/// events say which and why.
#[tokio::test(start_paused = true)]
async fn idle_instances_go() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .count_window(10)
            .build()
            .unwrap(),
    )
    .name("idle")
    .key(|n: &u64| *n)
    .idle_timeout(Duration::from_secs(60))
    .on_event(log.listener())
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
    for key in 0..4 {
        svc.clone().oneshot(key).await.unwrap();
    }
    assert_eq!(handle.len(), 4);
    tokio::time::sleep(Duration::from_secs(30)).await;
    svc.clone().oneshot(0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    // 1, 2 and 3 are 61 s idle, 0 is 31 s: a new key sweeps those of its
    // shard, and `evict_idle` the rest.
    svc.clone().oneshot(100).await.unwrap();
    let swept = log.containing("instance evicted: it was idle");
    assert_eq!(handle.evict_idle() + swept.len(), 3);
    let mut keys: Vec<u64> = handle.instances().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, [0, 100]);
    let mut evicted: Vec<String> = log
        .containing("it was idle")
        .into_iter()
        .map(|(key, _)| key.unwrap())
        .collect();
    evicted.sort();
    assert_eq!(evicted, ["1", "2", "3"]);
    assert_eq!(
        log.containing("instance created").len(),
        5,
        "{:?}",
        log.lines()
    );
}

/// When full: `Reject` refuses with `TooManyKeys`, `Share` sends the call
/// through the shared instance, the default evicts the least recently used.
#[tokio::test(start_paused = true)]
async fn when_full_each_policy_does_what_it_says() {
    let limiter = || {
        RateLimitLayer::builder()
            .name("tenants")
            .rate(1, Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let inner = service_fn(|t: &'static str| async move { Ok::<_, BoxError>(t) });

    let log = Log::default();
    let reject = KeyedLayer::builder(limiter())
        .name("reject")
        .key(|t: &&'static str| *t)
        .max_keys(2)
        .when_full(WhenFull::Reject)
        .on_event(log.listener())
        .build()
        .unwrap()
        .layer(inner);
    reject.clone().oneshot("a").await.unwrap();
    reject.clone().oneshot("b").await.unwrap();
    let err = reject.clone().oneshot("c").await.unwrap_err();
    let refused = err.downcast_ref::<TooManyKeys>().unwrap();
    assert_eq!(
        (refused.name(), refused.key(), refused.max_keys()),
        ("reject", "c", 2)
    );
    assert_eq!(
        log.containing("call rejected"),
        [(
            Some("c".to_string()),
            "keyed `reject`: call rejected: no room for its key; key `c`".to_string()
        )]
    );
    // Once a's limiter is full again (fresh), c takes its place.
    tokio::time::sleep(Duration::from_secs(60)).await;
    reject.clone().oneshot("c").await.unwrap();
    assert_eq!(
        log.containing("evicted").len(),
        1,
        "one fresh instance went: {:?}",
        log.lines()
    );

    let share = KeyedLayer::builder(limiter())
        .key(|t: &&'static str| *t)
        .max_keys(1)
        .when_full(WhenFull::Share)
        .build()
        .unwrap();
    let handle = share.handle();
    let share = share.layer(inner);
    share.clone().oneshot("a").await.unwrap();
    share.clone().oneshot("b").await.unwrap(); // the shared limiter's one cell
    let err = share.clone().oneshot("c").await.unwrap_err();
    let limited = err
        .downcast_ref::<RateLimited>()
        .expect("the shared limiter is spent");
    assert_eq!(limited.key(), Some("(shared)"));
    assert_eq!(handle.shared_instance().unwrap().metrics().available, 0);
    assert_eq!(handle.len(), 1);

    let lru = KeyedLayer::builder(limiter())
        .key(|t: &&'static str| *t)
        .max_keys(1)
        .build()
        .unwrap();
    let handle = lru.handle();
    let lru = lru.layer(inner);
    lru.clone().oneshot("a").await.unwrap();
    assert!(
        lru.clone().oneshot("a").await.is_err(),
        "a's one cell is spent"
    );
    lru.clone().oneshot("b").await.unwrap();
    lru.clone().oneshot("a").await.unwrap(); // a's spent limiter was forgotten
    assert_eq!(handle.len(), 1);
}

/// An instance a call holds is never evicted: with one key's bulkhead in
/// use, a second key finds no room even under the LRU policy; once the
/// call is done, the idle bulkhead (fresh) makes room.
#[tokio::test(start_paused = true)]
async fn an_instance_in_use_keeps_its_place() {
    let keyed = KeyedLayer::builder(
        BulkheadLayer::builder()
            .name("per-key")
            .max_concurrent(1)
            .build()
            .unwrap(),
    )
    .key(|k: &u64| *k)
    .max_keys(1)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    let svc = keyed.layer(service_fn(move |k: u64| {
        let gate = opened.clone();
        async move {
            if k == 1 {
                gate.notified().await;
            }
            Ok::<_, BoxError>(k)
        }
    }));
    let held = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert_eq!(handle.instances()[0].1.in_flight, 1);
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);
    assert_eq!(
        err.to_string(),
        r#"bulkhead "per-key" for key "1" is full: 1 in flight, no queue"#
    );
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(
        ErrorKind::of(&err),
        ErrorKind::TooManyKeys,
        "1's bulkhead is in use"
    );
    gate.notify_one();
    assert_eq!(held.await.unwrap().unwrap(), 1);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(handle.instances().len(), 1);
}

/// Calls dropped while queued in their key's bulkhead give their places
/// back: nothing leaks, and the idle bulkhead can go.
#[tokio::test(start_paused = true)]
async fn cancelled_calls_leave_nothing_behind() {
    let keyed = KeyedLayer::builder(
        BulkheadLayer::builder()
            .max_concurrent(1)
            .max_queue(8)
            .build()
            .unwrap(),
    )
    .key(|k: &u64| *k % 2)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(service_fn(|k: u64| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(k)
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut futures: Vec<_> = (0..10).map(|k| Box::pin(svc.clone().oneshot(k))).collect();
    for future in &mut futures {
        assert!(future.as_mut().poll(&mut cx).is_pending());
    }
    let busy: Vec<(u32, u32)> = handle
        .instances()
        .into_iter()
        .map(|(_, m)| (m.in_flight, m.queued))
        .collect();
    assert_eq!(busy, [(1, 4), (1, 4)]);
    drop(futures);
    for (_, metrics) in handle.instances() {
        assert_eq!((metrics.in_flight, metrics.queued), (0, 0));
    }
    assert_eq!(
        handle.evict_idle(),
        2,
        "both bulkheads are fresh and unheld"
    );
    assert!(handle.is_empty());
}

/// Metrics of keyed instances count in their layer's series by default,
/// and by key only through `key_label`, whose values bound the series.
#[test]
fn metrics_label_keys_only_when_asked_and_as_mapped() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_recommended_naming(true)
        .build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let limiter = |name: &'static str, listener: MetricsEvents| {
                RateLimitLayer::builder()
                    .name(name)
                    .rate(1, Duration::from_secs(60))
                    .on_event(listener)
                    .build()
                    .unwrap()
            };
            let plain = KeyedLayer::builder(limiter("plain", MetricsEvents::new()))
                .key(|t: &&'static str| *t)
                .on_event(MetricsEvents::new())
                .build()
                .unwrap()
                .layer(service_fn(
                    |t: &'static str| async move { Ok::<_, BoxError>(t) },
                ));
            let labelled =
                MetricsEvents::new().key_label(|key| (key == "gold").then(|| "gold".into()));
            let by_key = KeyedLayer::builder(limiter("by_key", labelled))
                .key(|t: &&'static str| *t)
                .build()
                .unwrap()
                .layer(service_fn(
                    |t: &'static str| async move { Ok::<_, BoxError>(t) },
                ));
            for tenant in ["gold", "a", "b", "gold", "a", "b"] {
                let _ = plain.clone().oneshot(tenant).await;
                let _ = by_key.clone().oneshot(tenant).await;
            }
        })
    });
    let text = handle.render();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "palisade_rate_limiter_rejected_calls_total{palisade_layer_name=\"plain\",palisade_rate_limiter_rejection_reason=\"over_rate\"} 3",
        "palisade_rate_limiter_rejected_calls_total{palisade_layer_name=\"by_key\",palisade_key=\"gold\",palisade_rate_limiter_rejection_reason=\"over_rate\"} 1",
        "palisade_rate_limiter_rejected_calls_total{palisade_layer_name=\"by_key\",palisade_key=\"other\",palisade_rate_limiter_rejection_reason=\"over_rate\"} 2",
        "palisade_keyed_instances_created_total{palisade_layer_name=\"keyed\"} 3",
        "palisade_keyed_keys{palisade_layer_name=\"keyed\"} 3",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(
        !text.contains("palisade_key=\"a\""),
        "keys outside the mapping get no series: {text}"
    );
}

/// A keyed layer's refusal is answered as the protocols expect: 503 with
/// `Retry-After`, `RESOURCE_EXHAUSTED`.
#[test]
fn too_many_keys_is_answered_as_load_shedding() {
    let err: BoxError = Box::new(
        ready_now(async {
            let keyed = KeyedLayer::builder(Census::new())
                .key(|n: &u64| *n)
                .max_keys(1)
                .when_full(WhenFull::Reject)
                .build()
                .unwrap();
            let svc = keyed.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
            svc.clone().oneshot(1).await.unwrap();
            svc.oneshot(2).await.unwrap_err()
        })
        .downcast::<TooManyKeys>()
        .map(|e| *e)
        .unwrap(),
    );
    let res = palisade::respond::to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let status = palisade::respond::to_status(&*err).unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("no instance for key \"2\""));
}

/// A retry asked to retry `TooManyKeys` does so after its backoff, and
/// says why.
#[tokio::test(start_paused = true)]
async fn a_retry_can_wait_for_room() {
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().max_concurrent(4).build().unwrap())
        .key(|n: &u64| *n)
        .max_keys(1)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
    svc.clone().oneshot(1).await.unwrap();
    let held = handle.get(&1).unwrap(); // holds key 1's place
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .backoff(
            Backoff::constant(100 * MS)
                .jitter(palisade::backoff::Jitter::None)
                .build()
                .unwrap(),
        )
        .retry_on(ErrorKind::TooManyKeys)
        .no_budget()
        .on_event(move |event: &Event<'_>| {
            if let Some(RetryEvent::Retry { reason, .. }) = event.kind() {
                seen.lock().unwrap().push(*reason);
            }
        })
        .build()
        .unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(50 * MS).await;
        drop(held);
    });
    let start = Instant::now();
    assert_eq!(retry.layer(svc).oneshot(2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(*reasons.lock().unwrap(), [RetryReason::TooManyKeys]);
}

/// Counts each key's calls in flight, and the most seen. (Returned as an
/// `impl Service` with its error named: a closure's `BoxError` inferred
/// inside a spawned task trips rustc's "implementation of `From` is not
/// general enough".)
fn counting(
    counts: Arc<Vec<AtomicUsize>>,
    highest: Arc<AtomicUsize>,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |n: u64| {
        let (counts, highest) = (counts.clone(), highest.clone());
        async move {
            let key = (n % 50) as usize;
            let now = counts[key].fetch_add(1, SeqCst) + 1;
            highest.fetch_max(now, SeqCst);
            tokio::task::yield_now().await;
            counts[key].fetch_sub(1, SeqCst);
            Ok::<_, BoxError>(n)
        }
    })
}

/// Many tasks on two worker threads, 50 keys over a layer of 8, each key's
/// bulkhead of 2: whatever the interleaving, no key ever has more than 2
/// calls in its inner service (an instance replaced while in use would let
/// a third in), and the layer never holds more than 8 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_contention_a_key_never_has_two_bulkheads() {
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().max_concurrent(2).build().unwrap())
        .key(|n: &u64| *n % 50)
        .max_keys(8)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let in_flight: Arc<Vec<AtomicUsize>> = Arc::new((0..50).map(|_| AtomicUsize::new(0)).collect());
    let most = Arc::new(AtomicUsize::new(0));
    let (counts, highest) = (in_flight.clone(), most.clone());
    let svc = keyed.layer(counting(counts, highest));
    let served = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let svc = svc.clone();
            let (handle, served) = (handle.clone(), served.clone());
            tokio::spawn(async move {
                for i in 0..2_000u64 {
                    match svc.clone().oneshot(t * 7 + i * 13).await {
                        Ok(_) => {
                            served.fetch_add(1, SeqCst);
                        }
                        Err(err) => assert!(matches!(
                            ErrorKind::of(&err),
                            ErrorKind::TooManyKeys | ErrorKind::BulkheadFull
                        )),
                    }
                    assert!(handle.len() <= 8);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        most.load(SeqCst) <= 2,
        "a key had {} calls in",
        most.load(SeqCst)
    );
    assert!(served.load(SeqCst) > 0);
    assert!(handle.len() <= 8);
}

/// Events of a keyed breaker's instance carry the key, as do the layer's
/// own; a breaker's state transition reads with its key.
#[tokio::test(start_paused = true)]
async fn events_carry_the_key() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("b")
            .on_event(log.listener())
            .build()
            .unwrap(),
    )
    .name("k")
    .key(|s: &String| s.clone())
    .on_event(log.listener())
    .build()
    .unwrap();
    let instance = keyed.instance(&"db-1".to_string()).unwrap();
    instance.handle().force_open();
    assert_eq!(
        log.lines(),
        [
            (
                Some("db-1".to_string()),
                "keyed `k`: instance created (1 keys); key `db-1`".to_string()
            ),
            (
                Some("db-1".to_string()),
                "circuit `b`: Closed -> ForcedOpen (set by hand); key `db-1`".to_string()
            ),
        ]
    );
}

/// The layer's types say what they are when debugged.
#[tokio::test(start_paused = true)]
async fn keyed_types_debug_as_what_they_hold() {
    let builder = KeyedLayer::builder(BulkheadLayer::builder().max_concurrent(1).build().unwrap())
        .name("k")
        .key(|n: &u64| *n)
        .max_keys(10);
    assert_eq!(
        format!("{builder:?}"),
        "KeyedBuilder { name: \"k\", max_keys: 10, idle_timeout: None, \
         when_full: EvictLeastRecentlyUsed, max_ejection_percent: None, listeners: 0 listener(s) }"
    );
    let keyed = builder.build().unwrap();
    assert_eq!(
        format!("{keyed:?}"),
        "KeyedLayer { name: \"k\", registry: Registry { len: 0, max: 10, shards: 1, \
         idle: None, evict_lru: true }, when_full: EvictLeastRecentlyUsed }"
    );
    let handle = keyed.handle();
    let mut svc = keyed.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
    assert!(
        format!("{svc:?}").starts_with("Keyed { inner: ServiceFn"),
        "{svc:?}"
    );
    assert!(format!("{svc:?}").ends_with("name: \"k\" }"), "{svc:?}");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let called = svc.call(1);
    assert_eq!(format!("{called:?}"), "ResponseFuture { kind: \"called\" }");
    // The key's bulkhead is full while `called` holds its permit.
    assert!(svc.poll_ready(&mut cx).is_ready());
    let refused = svc.call(1);
    assert_eq!(
        format!("{refused:?}"),
        "ResponseFuture { kind: \"called\" }"
    );
    assert_eq!(
        format!("{handle:?}"),
        "KeyedHandle { name: \"k\", keys: 1, max_keys: 10 }"
    );
    drop((called, refused));
    let full = KeyedLayer::builder(BulkheadLayer::builder().build().unwrap())
        .key(|n: &u64| *n)
        .max_keys(1)
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    let _held = full.instance(&1).unwrap();
    let mut svc = full.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
    assert!(svc.poll_ready(&mut cx).is_ready());
    assert_eq!(
        format!("{:?}", svc.call(2)),
        "ResponseFuture { kind: \"failed\" }"
    );
}
