//! The keyed layer, the breaker's `eject_when_open`, `TooManyKeys`, event keys,
//! `MetricsEvents::key_label` and the new `metrics()` snapshots, tested from
//! the rendered documentation alone. Each test quotes the sentence it checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{BreakerEvent, CircuitBreakerLayer, CircuitState};
use palisade::error::{BoxError, BulkheadFull, CircuitOpen, ErrorKind, RateLimited, TooManyKeys};
use palisade::event::{Event, MetricsEvents, TracingEvents};
use palisade::keyed::{
    Eviction, Fork, Header, HeaderKey, HostAndPort, HostPort, Instance, KeySource, KeyedEvent,
    KeyedHandle, KeyedLayer, MAX_KEYS, WhenFull,
};
use palisade::rate_limit::RateLimitLayer;
use palisade::respond::{HttpRejectionLayer, to_response, to_status};
use palisade::retry::{RetryEvent, RetryLayer, RetryReason};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

// ---------------------------------------------------------------------------
// An allocation counter (per thread), for the "allocates nothing" promises.

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations_in<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCATIONS.with(|n| n.get()))
}

// ---------------------------------------------------------------------------
// Helpers.

type Req = &'static str;

/// What a listener saw of one event.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    key: Option<String>,
    text: String,
    keyed: Option<KeyedEvent>,
    breaker: Option<BreakerEvent>,
    retry_reason: Option<RetryReason>,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn listener(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.0.clone();
        move |e: &Event<'_>| {
            let retry_reason = match e.kind::<RetryEvent>() {
                Some(RetryEvent::Retry { reason, .. }) => Some(*reason),
                _ => None,
            };
            log.lock().unwrap().push(Seen {
                name: e.name().to_string(),
                key: e.key().map(str::to_string),
                text: e.to_string(),
                keyed: e.kind::<KeyedEvent>().copied(),
                breaker: e.kind::<BreakerEvent>().copied(),
                retry_reason,
            })
        }
    }
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    fn keyed(&self) -> Vec<(Option<String>, KeyedEvent)> {
        self.all()
            .into_iter()
            .filter_map(|s| s.keyed.map(|k| (s.key, k)))
            .collect()
    }
    fn evictions(&self) -> Vec<(String, Eviction)> {
        self.keyed()
            .into_iter()
            .filter_map(|(key, e)| match e {
                KeyedEvent::InstanceEvicted { reason, .. } => {
                    Some((key.unwrap_or_default(), reason))
                }
                _ => None,
            })
            .collect()
    }
}

fn echo() -> impl Service<Req, Response = Req, Error = BoxError, Future: Send> + Clone + Send + Sync
{
    service_fn(|r: Req| async move { Ok::<_, BoxError>(r) })
}

/// Blocks calls whose request is `key` until the gate has a permit.
fn gated(
    gate: Arc<Semaphore>,
    key: Req,
) -> impl Service<Req, Response = Req, Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(move |r: Req| {
        let gate = gate.clone();
        async move {
            if r == key {
                gate.acquire().await.unwrap().forget();
            }
            Ok::<_, BoxError>(r)
        }
    })
}

/// `(key, fail)`: fails when asked to.
fn flaky()
-> impl Service<(Req, bool), Response = Req, Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(|(k, fail): (Req, bool)| async move {
        if fail {
            Err::<Req, BoxError>(format!("{k} failed").into())
        } else {
            Ok(k)
        }
    })
}

/// An endpoint: fails every call when `fails`, counting calls.
fn endpoint(
    fails: bool,
    calls: Arc<AtomicU32>,
) -> impl Service<Req, Response = Req, Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(move |r: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if fails {
                Err::<Req, BoxError>("endpoint down".into())
            } else {
                Ok(r)
            }
        }
    })
}

fn failing_or_not()
-> impl Service<bool, Response = (), Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    })
}

fn http_ok()
-> impl Service<http::Request<()>, Response = (), Error = BoxError, Future: Send> + Clone + Send + Sync
{
    service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>(()) })
}

fn reqwest_ok()
-> impl Service<reqwest::Request, Response = (), Error = BoxError, Future: Send> + Clone + Send + Sync
{
    service_fn(|_: reqwest::Request| async { Ok::<_, BoxError>(()) })
}

fn get(uri: &str) -> http::Request<()> {
    http::Request::get(uri).body(()).unwrap()
}

fn breaker(name: &'static str) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder().name(name).build().unwrap()
}

fn keys_of<X: KeySource, I: Instance>(handle: &KeyedHandle<X, I>) -> BTreeSet<String> {
    handle
        .instances()
        .into_iter()
        .map(|(k, _)| k.to_string())
        .collect()
}

fn noop_cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// Calls a service whose call finishes at once, without a runtime's help.
fn drive<S: Service<R>, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error> {
    let mut cx = noop_cx();
    match svc.poll_ready(&mut cx) {
        Poll::Ready(r) => r?,
        Poll::Pending => panic!("not ready"),
    }
    let mut fut = pin!(svc.call(req));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("the call did not finish at once"),
    }
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------
// The module's example.

// Module docs, §Examples: "A breaker per host: one host failing opens its own breaker only."
#[tokio::test(start_paused = true)]
async fn module_example_breaker_per_host() {
    let per_host = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("hosts")
            .consecutive_failures(3)
            .build()
            .unwrap(),
    )
    .key_source(HostAndPort)
    .max_keys(1_000)
    .build()
    .unwrap();
    let handle = per_host.handle();

    let client = per_host.layer(service_fn(|req: http::Request<()>| async move {
        match req.uri().host() {
            Some("bad.example") => Err::<&str, BoxError>("connection reset".into()),
            _ => Ok("ok"),
        }
    }));

    for _ in 0..3 {
        let _ = client.clone().oneshot(get("http://bad.example/")).await;
    }
    let err = client
        .clone()
        .oneshot(get("http://bad.example/"))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(
        err.to_string(),
        r#"circuit breaker "hosts" for key "bad.example:80" is open; it may admit calls again in 30s"#
    );
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!((open.name(), open.key()), ("hosts", Some("bad.example:80")));
    assert_eq!(
        client
            .clone()
            .oneshot(get("http://good.example/"))
            .await
            .unwrap(),
        "ok"
    );

    let bad = handle.get(&HostPort::new("bad.example", 80)).unwrap();
    assert_eq!(bad.handle().state(), CircuitState::Open);
    assert_eq!(handle.len(), 2);
}

// ---------------------------------------------------------------------------
// Keys from a closure; instances are forks of the template.

// Module docs: "it takes a key from each request, and sends the call through that key's
// instance, a fork of the template layer with the same settings and a state of its own."
// KeyedLayer::builder: "The template itself serves no call."
#[tokio::test(start_paused = true)]
async fn closure_keys_get_instances_of_their_own_with_the_template_settings() {
    let template = RateLimitLayer::builder()
        .name("api")
        .rate(1, Duration::from_secs(60))
        .burst(1)
        .build()
        .unwrap();
    let keyed = KeyedLayer::builder(template.clone())
        .key(|t: &Req| *t)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());

    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a");
    let err = svc.clone().oneshot("a").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    assert_eq!(
        svc.clone().oneshot("b").await.unwrap(),
        "b",
        "b has a limit of its own"
    );

    assert_eq!(handle.len(), 2);
    for (key, snapshot) in handle.instances() {
        assert_eq!((snapshot.available, snapshot.burst), (0, 1), "key {key}");
    }
    let t = template.metrics();
    assert_eq!(
        (t.available, t.burst),
        (1, 1),
        "the template served no call"
    );
}

// KeyedLayer: "One layer is one registry: every service it wraps and every clone of them
// share its instances." Keyed::clone: "A clone shares the instances."
#[tokio::test(start_paused = true)]
async fn services_of_one_layer_share_its_instances() {
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .rate(1, Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .build()
    .unwrap();
    let first = keyed.layer(echo());
    let second = keyed.layer(echo());
    first.clone().oneshot("a").await.unwrap();
    let err = second.clone().oneshot("a").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    let err = first.clone().clone().oneshot("a").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    assert_eq!(keyed.handle().len(), 1);
}

// Instance trait: "or a layer of your own whose state lives behind one Arc";
// Fork::key: "The key, as it displays"; Instance::fork: "A new instance with this one's
// settings and a fresh state, for the key in fork."
#[tokio::test(start_paused = true)]
async fn a_layer_of_your_own_is_forked_per_key_with_the_key_as_it_displays() {
    #[derive(Clone, Default)]
    struct Tally {
        calls: Arc<AtomicU64>,
        forks: Arc<Mutex<Vec<String>>>,
    }
    impl Instance for Tally {
        type Snapshot = u64;
        fn fork(&self, fork: &Fork) -> Self {
            self.forks.lock().unwrap().push(fork.key().to_string());
            Tally {
                calls: Arc::default(),
                forks: self.forks.clone(),
            }
        }
        fn in_use(&self) -> bool {
            Arc::strong_count(&self.calls) > 1
        }
        fn is_fresh(&self, _: tokio::time::Instant) -> bool {
            self.calls.load(Ordering::Relaxed) == 0
        }
        fn snapshot(&self) -> u64 {
            self.calls.load(Ordering::Relaxed)
        }
    }
    #[derive(Clone)]
    struct TallySvc<S> {
        inner: S,
        calls: Arc<AtomicU64>,
    }
    impl<S> Layer<S> for Tally {
        type Service = TallySvc<S>;
        fn layer(&self, inner: S) -> TallySvc<S> {
            TallySvc {
                inner,
                calls: self.calls.clone(),
            }
        }
    }
    impl<S: Service<R>, R> Service<R> for TallySvc<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }
        fn call(&mut self, req: R) -> S::Future {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.call(req)
        }
    }

    let template = Tally::default();
    let keyed = KeyedLayer::builder(template.clone())
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    svc.clone().oneshot(get("http://A.Example/")).await.unwrap();
    svc.clone()
        .oneshot(get("http://a.example/x"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(get("https://b.example/"))
        .await
        .unwrap();

    assert_eq!(
        *template.forks.lock().unwrap(),
        ["a.example:80", "b.example:443"]
    );
    let mut listing: Vec<(String, u64)> = handle
        .instances()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    listing.sort();
    assert_eq!(
        listing,
        [
            ("a.example:80".to_string(), 2),
            ("b.example:443".to_string(), 1)
        ]
    );
    assert_eq!(
        template.calls.load(Ordering::Relaxed),
        0,
        "the template serves no call"
    );
}

// ---------------------------------------------------------------------------
// HostAndPort.

// HostAndPort: "For an http::Request, the URI's host and port, the port defaulting to the
// scheme's (80, 443)". HostPort::port: "the URI's, or its scheme's default".
#[tokio::test(start_paused = true)]
async fn host_and_port_takes_the_uri_port_or_the_scheme_default() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    for uri in [
        "http://a.example/",
        "https://a.example/",
        "http://a.example:8080/x",
        "https://a.example:443/y",
        "http://a.example:80/z",
    ] {
        svc.clone().oneshot(get(uri)).await.unwrap();
    }
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from([
            "a.example:80".into(),
            "a.example:443".into(),
            "a.example:8080".into()
        ])
    );
    let https = handle.get(&HostPort::new("a.example", 443)).unwrap();
    assert_eq!(https.handle().metrics().calls, 2);
    let http = handle.get(&HostPort::new("a.example", 80)).unwrap();
    assert_eq!(http.handle().metrics().calls, 2);
    for (key, _) in handle.instances() {
        assert_eq!(key.host(), "a.example");
        assert!([80, 443, 8080].contains(&key.port()));
    }
}

// HostPort: "The host is kept in lower case (host names are case-insensitive)";
// HostAndPort: "the host is compared in place, ignoring case";
// HostPort::new: "The key of host (any case) and port."
#[tokio::test(start_paused = true)]
async fn host_and_port_ignores_the_case_of_the_host() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    svc.clone()
        .oneshot(get("http://API.Example.COM/"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(get("http://Api.EXAMPLE.com/"))
        .await
        .unwrap();

    assert_eq!(handle.len(), 1);
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from(["api.example.com:80".to_string()])
    );
    let key = HostPort::new("API.example.COM", 80);
    assert_eq!(key.host(), "api.example.com");
    assert_eq!(key, HostPort::new("api.example.com", 80));
    assert_eq!(key.to_string(), "api.example.com:80");
    assert_eq!(handle.get(&key).unwrap().handle().metrics().calls, 3);
}

// HostAndPort: "for a request whose URI has no host (on a server, or inside a tonic
// Channel), the Host header's".
#[tokio::test(start_paused = true)]
async fn host_and_port_falls_back_to_the_host_header() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    let with_host = |uri: &str, host: &str| {
        http::Request::get(uri)
            .header(http::header::HOST, host)
            .body(())
            .unwrap()
    };
    svc.clone()
        .oneshot(with_host("/path", "Backend.Local:9000"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(with_host("/other", "backend.local:9000"))
        .await
        .unwrap();
    // A URI with a host wins over the header.
    svc.clone()
        .oneshot(with_host("http://uri.example/", "header.example:1234"))
        .await
        .unwrap();
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from([
            "backend.local:9000".to_string(),
            "uri.example:80".to_string()
        ])
    );
    assert_eq!(
        handle
            .get(&HostPort::new("backend.local", 9000))
            .unwrap()
            .handle()
            .metrics()
            .calls,
        2
    );
}

// HostPort::port: "The port: the URI's, or its scheme's default (80 for http, 443 for
// https); 0 when neither says." A Host header without a port, on a URI without scheme.
#[tokio::test(start_paused = true)]
async fn host_header_without_a_port_has_port_zero() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    let req = http::Request::get("/path")
        .header(http::header::HOST, "svc.local")
        .body(())
        .unwrap();
    svc.clone().oneshot(req).await.unwrap();
    let keys: Vec<HostPort> = handle.instances().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].host(), keys[0].port()), ("svc.local", 0));
}

// HostAndPort: "A request that names no host has the key (no host):0, shared by all such
// requests." HostPort::host: "empty for a request that named none".
#[tokio::test(start_paused = true)]
async fn requests_without_a_host_share_the_no_host_key() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    svc.clone().oneshot(get("/a")).await.unwrap();
    svc.clone().oneshot(get("/b")).await.unwrap();
    let listing = handle.instances();
    assert_eq!(listing.len(), 1);
    let (key, metrics) = &listing[0];
    assert_eq!(key.to_string(), "(no host):0");
    assert_eq!((key.host(), key.port()), ("", 0));
    assert_eq!(metrics.calls, 2);
}

// HostPort: "it displays as host:port ([::1]:8080 for an IPv6 address)".
#[tokio::test(start_paused = true)]
async fn an_ipv6_host_displays_in_brackets() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    svc.clone()
        .oneshot(get("http://[::1]:8080/"))
        .await
        .unwrap();
    assert_eq!(keys_of(&handle), BTreeSet::from(["[::1]:8080".to_string()]));
}

// HostAndPort: "For a reqwest::Request (feature reqwest), its URL's host and port."
#[tokio::test(start_paused = true)]
async fn host_and_port_keys_reqwest_requests() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key_source(HostAndPort)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(reqwest_ok());
    let req = |url: &str| reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
    svc.clone()
        .oneshot(req("https://Example.COM/x"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(req("https://example.com/y"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(req("http://example.com:8080/"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(req("http://example.com/"))
        .await
        .unwrap();
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from([
            "example.com:443".to_string(),
            "example.com:8080".to_string(),
            "example.com:80".to_string()
        ])
    );
    assert_eq!(
        handle
            .get(&HostPort::new("example.com", 443))
            .unwrap()
            .handle()
            .metrics()
            .calls,
        2
    );
}

// ---------------------------------------------------------------------------
// Header.

// Header: "Keys requests by the value of one header"; "Requests without the header share
// one key, which displays as (none)". HeaderKey::new / value.
#[tokio::test(start_paused = true)]
async fn header_keys_by_value_and_absence_shares_the_none_key() {
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .name("per-tenant")
            .rate(1, Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .key_source(Header::new(http::HeaderName::from_static("x-tenant")))
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    let req = |tenant: Option<&str>| {
        let mut b = http::Request::get("http://api.example/");
        if let Some(t) = tenant {
            b = b.header("x-tenant", t);
        }
        b.body(()).unwrap()
    };
    svc.clone().oneshot(req(Some("acme"))).await.unwrap();
    svc.clone().oneshot(req(Some("globex"))).await.unwrap();
    svc.clone().oneshot(req(None)).await.unwrap();
    let err = svc.clone().oneshot(req(None)).await.unwrap_err();
    let limited = err
        .downcast_ref::<RateLimited>()
        .expect("the no-header key's limit is spent");
    assert_eq!(limited.key(), Some("(none)"));

    assert_eq!(
        keys_of(&handle),
        BTreeSet::from([
            "acme".to_string(),
            "globex".to_string(),
            "(none)".to_string()
        ])
    );
    assert_eq!(HeaderKey::new(None).to_string(), "(none)");
    assert_eq!(HeaderKey::new(None).value(), None);
    assert_eq!(HeaderKey::new(Some(b"acme")).value(), Some(&b"acme"[..]));
    assert!(handle.get(&HeaderKey::new(Some(b"acme"))).is_some());
    assert!(handle.get(&HeaderKey::new(None)).is_some());
    assert!(handle.get(&HeaderKey::new(Some(b"initech"))).is_none());
}

// Header: "a value that is not text displays with its bytes escaped."
#[tokio::test(start_paused = true)]
async fn a_header_value_that_is_not_text_displays_escaped() {
    let keyed = KeyedLayer::builder(breaker("b"))
        .key_source(Header::new(http::HeaderName::from_static("x-client")))
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(http_ok());
    let value = http::HeaderValue::from_bytes(&[b'a', 0xff, b'b']).unwrap();
    let req = http::Request::get("http://x/")
        .header("x-client", value)
        .body(())
        .unwrap();
    svc.clone().oneshot(req).await.unwrap();
    let listing = handle.instances();
    assert_eq!(listing.len(), 1);
    let shown = listing[0].0.to_string();
    assert_eq!(listing[0].0.value(), Some(&[b'a', 0xff, b'b'][..]));
    assert!(
        !shown.contains('\u{fffd}'),
        "escaped, not replaced: {shown}"
    );
    assert!(shown.starts_with('a') && shown.ends_with('b'), "{shown}");
    assert!(
        shown.to_ascii_lowercase().contains("ff"),
        "the byte is shown escaped: {shown}"
    );
}

// KeyOf<reqwest::Request> for Header (feature reqwest).
#[tokio::test(start_paused = true)]
async fn header_keys_reqwest_requests() {
    let keyed = KeyedLayer::builder(breaker("b"))
        .key_source(Header::new(http::HeaderName::from_static("x-tenant")))
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(reqwest_ok());
    let mut req = reqwest::Request::new(reqwest::Method::GET, "http://x.example/".parse().unwrap());
    req.headers_mut()
        .insert("x-tenant", http::HeaderValue::from_static("acme"));
    svc.clone().oneshot(req).await.unwrap();
    let plain = reqwest::Request::new(reqwest::Method::GET, "http://x.example/".parse().unwrap());
    svc.clone().oneshot(plain).await.unwrap();
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from(["acme".to_string(), "(none)".to_string()])
    );
}

// ---------------------------------------------------------------------------
// WhenFull policies and the bound.

// WhenFull::EvictLeastRecentlyUsed: "The least recently used instance that is not in use
// goes, and the key gets a new one: the layer keeps serving every key, and what the
// evicted instance knew (an open breaker, a spent limit) is forgotten. The default."
// (With one place, the only instance is the least recently used; the order among several
// is checked by evict_lru_evicts_the_least_recently_used_key.)
#[tokio::test(start_paused = true)]
async fn by_default_an_instance_goes_for_a_new_key_and_is_forgotten() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("hosts")
            .consecutive_failures(1)
            .build()
            .unwrap(),
    )
    .key(|r: &(Req, bool)| r.0)
    .max_keys(1)
    .on_event(log.listener())
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(flaky());

    svc.clone().oneshot(("a", true)).await.unwrap_err();
    assert_eq!(
        handle.get(&"a").unwrap().handle().state(),
        CircuitState::Open
    );
    let err = svc.clone().oneshot(("a", false)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(
        svc.clone().oneshot(("b", false)).await.unwrap(),
        "b",
        "the layer keeps serving"
    );
    assert_eq!(keys_of(&handle), BTreeSet::from(["b".to_string()]));
    assert_eq!(
        log.evictions(),
        [("a".to_string(), Eviction::LeastRecentlyUsed)]
    );
    let evicted = log.keyed().into_iter().find_map(|(_, e)| match e {
        KeyedEvent::InstanceEvicted { reason, keys } => Some((reason, keys)),
        _ => None,
    });
    assert!(
        matches!(evicted, Some((Eviction::LeastRecentlyUsed, 0 | 1))),
        "{evicted:?}"
    );

    // a's open breaker was forgotten: a new, closed one answers.
    assert_eq!(svc.clone().oneshot(("a", false)).await.unwrap(), "a");
    assert_eq!(
        handle.get(&"a").unwrap().handle().state(),
        CircuitState::Closed
    );
    assert_eq!(handle.len(), 1);
}

// TooManyKeys docs example, and WhenFull::Reject: "The call is refused with TooManyKeys:
// no state is forgotten, and keys past the maximum get nothing until room is made."
// Message: `keyed layer "tenants" holds its maximum of 2 keys and none can go; no
// instance for key "c"`.
#[tokio::test(start_paused = true)]
async fn reject_refuses_new_keys_and_forgets_nothing() {
    let log = Log::default();
    let per_tenant = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(60))
        .build()
        .unwrap();
    let keyed = KeyedLayer::builder(per_tenant)
        .name("tenants")
        .key(|tenant: &Req| *tenant)
        .max_keys(2)
        .when_full(WhenFull::Reject)
        .on_event(log.listener())
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    svc.clone().oneshot("b").await.unwrap();
    let err = svc.clone().oneshot("c").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);
    assert!(ErrorKind::TooManyKeys.is_rejection());
    let refused = err.downcast_ref::<TooManyKeys>().unwrap();
    assert_eq!(
        (refused.name(), refused.key(), refused.max_keys()),
        ("tenants", "c", 2)
    );
    assert_eq!(
        err.to_string(),
        r#"keyed layer "tenants" holds its maximum of 2 keys and none can go; no instance for key "c""#
    );
    // Nothing forgotten: a's limit is still spent.
    let err = svc.clone().oneshot("a").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    assert!(log.evictions().is_empty());
    // KeyedEvent::Rejected: "A call's key found no room, and the call was refused".
    let rejected: Vec<_> = log
        .all()
        .into_iter()
        .filter(|s| s.keyed == Some(KeyedEvent::Rejected))
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (rejected[0].name.as_str(), rejected[0].key.as_deref()),
        ("tenants", Some("c"))
    );
}

// WhenFull::Share: "The call goes through one instance shared by every key that finds no
// room (made with the layer, with the key (shared)): no state is forgotten and no call
// refused, but the keys past the maximum share one limit."
// KeyedHandle::shared_instance; KeyedLayer::instance: TooManyKeys "(and its policy is
// not WhenFull::Share)".
#[tokio::test(start_paused = true)]
async fn share_sends_keys_without_room_through_one_shared_instance() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .name("api")
            .rate(1, Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .name("tenants")
    .key(|t: &Req| *t)
    .max_keys(1)
    .when_full(WhenFull::Share)
    .on_event(log.listener())
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    assert_eq!(
        svc.clone().oneshot("b").await.unwrap(),
        "b",
        "no call refused"
    );
    let err = svc.clone().oneshot("c").await.unwrap_err();
    let limited = err
        .downcast_ref::<RateLimited>()
        .expect("b and c share one limit");
    assert_eq!(limited.key(), Some("(shared)"));
    assert!(err.to_string().contains("(shared)"), "{err}");
    let err = svc.clone().oneshot("a").await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().key(), Some("a"));

    assert_eq!(handle.len(), 1);
    assert_eq!(keys_of(&handle), BTreeSet::from(["a".to_string()]));
    let shared = handle
        .shared_instance()
        .expect("a shared instance with Share");
    assert_eq!(shared.metrics().available, 0);
    let shared_calls: Vec<_> = log
        .keyed()
        .into_iter()
        .filter(|(_, e)| *e == KeyedEvent::Shared)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(shared_calls, [Some("b".to_string()), Some("c".to_string())]);
    assert!(!log.keyed().iter().any(|(_, e)| *e == KeyedEvent::Rejected));
    // As a call with that key would find it: the shared one.
    let z = keyed.instance(&"z").expect("Share: no TooManyKeys");
    assert_eq!(z.metrics().available, 0);
}

// KeyedHandle::shared_instance: "The instance every key without room shares, with
// WhenFull::Share." (None otherwise.)
#[tokio::test(start_paused = true)]
async fn there_is_no_shared_instance_without_share() {
    for policy in [WhenFull::EvictLeastRecentlyUsed, WhenFull::Reject] {
        let keyed = KeyedLayer::builder(breaker("b"))
            .key(|t: &Req| *t)
            .when_full(policy)
            .build()
            .unwrap();
        assert!(keyed.handle().shared_instance().is_none(), "{policy:?}");
    }
    assert_eq!(WhenFull::default(), WhenFull::EvictLeastRecentlyUsed);
}

// WhenFull::EvictLeastRecentlyUsed: "If every instance is in use, the call is refused as
// with Reject." Module docs: "An instance that something holds (a call in flight through
// it, ...) never goes".
#[tokio::test(start_paused = true)]
async fn evict_lru_refuses_when_every_instance_is_in_use() {
    let gate = Arc::new(Semaphore::new(0));
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().name("db").build().unwrap())
        .key(|t: &Req| *t)
        .max_keys(1)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(gated(gate.clone(), "a"));
    let a = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let listing = handle.instances();
    assert_eq!(listing.len(), 1);
    assert_eq!((listing[0].0, listing[0].1.in_flight), ("a", 1));

    let err = svc.clone().oneshot("b").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);
    let refused = err.downcast_ref::<TooManyKeys>().unwrap();
    assert_eq!(
        (refused.name(), refused.key(), refused.max_keys()),
        ("keyed", "b", 1)
    );

    gate.add_permits(1);
    assert_eq!(a.await.unwrap().unwrap(), "a");
    assert_eq!(
        svc.clone().oneshot("b").await.unwrap(),
        "b",
        "room once a's call ended"
    );
}

// WhenFull: "Whatever the policy, an instance in use ... never goes, and an idle or fresh
// one goes first." Eviction::Fresh: "Its state was that of a new instance".
#[tokio::test(start_paused = true)]
async fn a_fresh_instance_makes_room_even_under_reject() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().build().unwrap())
        .key(|t: &Req| *t)
        .max_keys(1)
        .when_full(WhenFull::Reject)
        .on_event(log.listener())
        .build()
        .unwrap();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap(); // a's bulkhead is idle again: fresh
    assert_eq!(svc.clone().oneshot("b").await.unwrap(), "b");
    assert_eq!(svc.clone().oneshot("c").await.unwrap(), "c");
    assert!(!log.keyed().iter().any(|(_, e)| *e == KeyedEvent::Rejected));
    let evicted = log.evictions();
    assert!(
        evicted.contains(&("a".to_string(), Eviction::Fresh)),
        "{evicted:?}"
    );
    assert!(
        evicted.contains(&("b".to_string(), Eviction::Fresh)),
        "{evicted:?}"
    );
}

// Module docs: "The layer holds at most max_keys instances, however many distinct keys
// come". KeyedEvent::InstanceCreated { keys }: "How many keys the layer holds now."
#[tokio::test(start_paused = true)]
async fn the_registry_never_holds_more_than_max_keys() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(breaker("b"))
        .key(|n: &u32| *n)
        .max_keys(10)
        .on_event(log.listener())
        .build()
        .unwrap();
    let handle = keyed.handle();
    assert_eq!(handle.max_keys(), 10);
    let svc = keyed.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    for n in 0..1_000u32 {
        svc.clone().oneshot(n).await.unwrap();
        assert!(handle.len() <= 10, "after key {n}: {}", handle.len());
    }
    assert_eq!(
        handle.len(),
        10,
        "breakers with calls are not fresh: none goes by itself"
    );
    let created = log
        .keyed()
        .into_iter()
        .filter_map(|(_, e)| match e {
            KeyedEvent::InstanceCreated { keys } => Some(keys),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(created.len(), 1_000);
    assert!(created.iter().all(|k| *k <= 10));
    assert_eq!(&created[..3], [1, 2, 3]);
}

// ---------------------------------------------------------------------------
// Idle timeout and evict_idle.

// KeyedBuilder::idle_timeout: "An instance not used for this long goes, if nothing holds
// it." KeyedHandle::evict_idle: "Lets go every instance that nothing holds and that is
// idle ... returns how many went." Eviction::Idle.
#[tokio::test(start_paused = true)]
async fn evict_idle_lets_instances_unused_for_the_idle_timeout_go() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(breaker("b"))
        .key(|t: &Req| *t)
        .idle_timeout(Duration::from_secs(10))
        .on_event(log.listener())
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    svc.clone().oneshot("b").await.unwrap();
    assert_eq!(handle.evict_idle(), 0, "neither idle nor fresh yet");
    tokio::time::sleep(Duration::from_secs(5)).await;
    svc.clone().oneshot("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await; // b unused for 11 s, a for 6 s
    assert_eq!(handle.evict_idle(), 1);
    assert_eq!(keys_of(&handle), BTreeSet::from(["a".to_string()]));
    assert_eq!(log.evictions(), [("b".to_string(), Eviction::Idle)]);
    let evicted_keys: Vec<usize> = log
        .keyed()
        .into_iter()
        .filter_map(|(_, e)| match e {
            KeyedEvent::InstanceEvicted { keys, .. } => Some(keys),
            _ => None,
        })
        .collect();
    assert_eq!(evicted_keys, [1], "keys: how many keys the layer holds now");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(handle.evict_idle(), 1);
    assert!(handle.is_empty());
}

// WhenFull: "an idle or fresh one goes first" — an idle instance makes room for a new key
// even under Reject.
#[tokio::test(start_paused = true)]
async fn an_idle_instance_makes_room_for_a_new_key() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(breaker("b"))
        .key(|t: &Req| *t)
        .max_keys(1)
        .when_full(WhenFull::Reject)
        .idle_timeout(Duration::from_secs(10))
        .on_event(log.listener())
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    let err = svc.clone().oneshot("b").await.unwrap_err();
    assert_eq!(
        ErrorKind::of(&err),
        ErrorKind::TooManyKeys,
        "a is neither idle nor fresh yet"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(svc.clone().oneshot("b").await.unwrap(), "b");
    assert_eq!(keys_of(&handle), BTreeSet::from(["b".to_string()]));
    assert_eq!(log.evictions(), [("a".to_string(), Eviction::Idle)]);
}

// Module docs: "An instance that something holds (a call in flight through it, a response
// body holding its permit, a handle) never goes".
#[tokio::test(start_paused = true)]
async fn an_instance_with_a_call_in_flight_never_goes_even_when_idle() {
    let gate = Arc::new(Semaphore::new(0));
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().build().unwrap())
        .key(|t: &Req| *t)
        .max_keys(1)
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(gated(gate.clone(), "a"));
    let a = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(handle.evict_idle(), 0);
    assert_eq!(handle.len(), 1);
    let err = svc.clone().oneshot("b").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);
    gate.add_permits(1);
    a.await.unwrap().unwrap();
    assert_eq!(handle.evict_idle(), 1);
    assert!(handle.is_empty());
}

// Module docs: "a response body holding its permit" holds the instance; BulkheadLayer as
// Instance: "Services, permits (in a future or a body) and queued calls hold the bulkhead."
#[tokio::test(start_paused = true)]
async fn a_response_body_holding_its_permit_holds_the_instance() {
    use http_body_util::{BodyExt, Full};
    let keyed = KeyedLayer::builder(
        BulkheadLayer::builder()
            .max_concurrent(2)
            .cover_body()
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .idle_timeout(Duration::from_secs(1))
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(service_fn(|_: Req| async {
        Ok::<_, BoxError>(http::Response::new(Full::new(&b"hello"[..])))
    }));
    let response = svc.clone().oneshot("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(handle.evict_idle(), 0, "the body holds a's permit");
    let listing = handle.instances();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].1.in_flight, 1);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    assert_eq!(handle.evict_idle(), 1);
    assert!(handle.is_empty());
}

// Module docs: an instance can go when "its state is back to that of a new one (a limiter
// that has filled up again ...)". RateLimitLayer as Instance, is_fresh: "Every cell is
// free again."
#[tokio::test(start_paused = true)]
async fn a_limiter_that_filled_up_again_is_fresh_and_goes() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .rate(1, Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .on_event(log.listener())
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    assert_eq!(handle.evict_idle(), 0, "its cell is spent");
    assert_eq!(handle.len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handle.evict_idle(), 1);
    assert!(handle.is_empty());
    assert_eq!(log.evictions(), [("a".to_string(), Eviction::Fresh)]);
}

// ---------------------------------------------------------------------------
// KeyedHandle and KeyedLayer::instance.

// KeyedHandle: name, len, is_empty, max_keys; KeyedBuilder defaults: name "keyed",
// max_keys 10 000; "clones share the layer". MAX_KEYS = 2_147_483_648.
#[tokio::test(start_paused = true)]
async fn handle_reads_the_layer() {
    let keyed = KeyedLayer::builder(breaker("b"))
        .key(|t: &Req| *t)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let clone = handle.clone();
    assert_eq!(handle.name(), "keyed");
    assert_eq!(handle.max_keys(), 10_000);
    assert!(handle.is_empty());
    assert_eq!(handle.len(), 0);
    assert!(handle.ejection().is_none(), "no max_ejection_percent");
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    assert!(!clone.is_empty());
    assert_eq!(clone.len(), 1);
    assert!(handle.get(&"a").is_some());
    assert!(handle.get(&"zzz").is_none());
    assert_eq!(MAX_KEYS, 2_147_483_648);

    let named = KeyedLayer::builder(breaker("b"))
        .name("per-host")
        .key(|t: &Req| *t)
        .build()
        .unwrap();
    assert_eq!(named.handle().name(), "per-host");
}

// KeyedHandle::instances: "Every key with its instance's state (for a breaker its
// CircuitMetrics, for a bulkhead its BulkheadMetrics, for a limiter its RateLimitMetrics)".
// BulkheadLayer fork: "A bulkhead with this one's limits (its limit as it is now, if a
// handle moved it)".
#[tokio::test(start_paused = true)]
async fn instances_list_each_keys_state() {
    let gate = Arc::new(Semaphore::new(0));
    let template = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(1)
        .build()
        .unwrap();
    template.handle().set_max_concurrent(2).unwrap();
    let keyed = KeyedLayer::builder(template)
        .key(|t: &Req| *t)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(gated(gate.clone(), "a"));
    let a1 = tokio::spawn(svc.clone().oneshot("a"));
    let a2 = tokio::spawn(svc.clone().oneshot("a"));
    let a3 = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let listing = handle.instances();
    assert_eq!(listing.len(), 1);
    let m = listing[0].1;
    assert_eq!((m.in_flight, m.queued, m.max_concurrent), (2, 1, 2));
    gate.add_permits(3);
    for t in [a1, a2, a3] {
        t.await.unwrap().unwrap();
    }
    let held = keyed.instance(&"a").unwrap();
    let m = held.metrics();
    assert_eq!((m.in_flight, m.queued, m.max_concurrent), (0, 0, 2));
}

// KeyedLayer::instance: "The instance of key, made if need be, as a call with that key
// would find it"; KeyedHandle::get: "for a breaker, say, its handle() to force it open".
#[tokio::test(start_paused = true)]
async fn instance_and_get_return_the_instance_calls_go_through() {
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key(|t: &Req| *t)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let a = keyed.instance(&"a").unwrap();
    assert_eq!(handle.len(), 1, "made if need be");
    a.handle().force_open();
    let svc = keyed.layer(echo());
    let err = svc.clone().oneshot("a").await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!((open.name(), open.key()), ("hosts", Some("a")));
    assert!(
        err.to_string()
            .starts_with(r#"circuit breaker "hosts" for key "a" "#),
        "the message names the key: {err}"
    );
    handle.get(&"a").unwrap().handle().reset();
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a");
    assert_eq!(a.handle().metrics().calls, 1, "the same breaker");
}

// KeyedLayer::instance: "The instance (and every service made from it) holds its place in
// the registry while it is alive." Errors: "TooManyKeys when the layer has no room".
// KeyedHandle::get: "An instance held stays in the layer until it is let go."
#[tokio::test(start_paused = true)]
async fn a_held_instance_keeps_its_place() {
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().build().unwrap())
        .name("tenants")
        .key(|t: &Req| *t)
        .max_keys(1)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let held = keyed.instance(&"a").unwrap(); // fresh, but held
    assert_eq!(handle.evict_idle(), 0);
    let refused = keyed.instance(&"b").unwrap_err();
    assert_eq!(
        (refused.name(), refused.key(), refused.max_keys()),
        ("tenants", "b", 1)
    );
    let svc = keyed.layer(echo());
    let err = svc.clone().oneshot("b").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);

    // A service made from the instance holds it too.
    let endpoint = held.layer(echo());
    drop(held);
    assert_eq!(handle.evict_idle(), 0, "the service made from it holds it");
    assert_eq!(
        ErrorKind::of(&svc.clone().oneshot("b").await.unwrap_err()),
        ErrorKind::TooManyKeys
    );
    drop(endpoint);
    assert_eq!(svc.clone().oneshot("b").await.unwrap(), "b");

    // The same through get: under the default policy a breaker with calls in its window
    // would go for a new key, unless a handle's get holds it.
    let keyed = KeyedLayer::builder(breaker("hosts"))
        .key(|t: &Req| *t)
        .max_keys(1)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("x").await.unwrap();
    let held_x = handle.get(&"x").unwrap();
    assert_eq!(
        ErrorKind::of(&svc.clone().oneshot("y").await.unwrap_err()),
        ErrorKind::TooManyKeys
    );
    assert_eq!(keys_of(&handle), BTreeSet::from(["x".to_string()]));
    drop(held_x);
    assert_eq!(
        svc.clone().oneshot("y").await.unwrap(),
        "y",
        "x let go: it goes for y"
    );
    assert_eq!(keys_of(&handle), BTreeSet::from(["y".to_string()]));
}

// ---------------------------------------------------------------------------
// Events.

// Module docs: "Each instance's events carry its key (Event::key) ... instances keep the
// template's name. The layer's own KeyedEvents tell of instances made and evicted".
// Event Display: "The pattern's sentence, then the key of a keyed instance:
// circuit `hosts`: Closed -> Open (...); key `10.0.0.7:8080`".
#[tokio::test(start_paused = true)]
async fn events_carry_the_key_and_the_right_names() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("hosts")
            .on_event(log.listener())
            .build()
            .unwrap(),
    )
    .name("per-host")
    .key(|t: &Req| *t)
    .on_event(log.listener())
    .build()
    .unwrap();
    let handle = keyed.handle();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    svc.clone().oneshot("b").await.unwrap();

    let created: Vec<_> = log
        .all()
        .into_iter()
        .filter_map(|s| match s.keyed {
            Some(KeyedEvent::InstanceCreated { keys }) => Some((s.name, s.key, keys)),
            _ => None,
        })
        .collect();
    assert_eq!(
        created,
        [
            ("per-host".to_string(), Some("a".to_string()), 1),
            ("per-host".to_string(), Some("b".to_string()), 2)
        ]
    );
    let finished: Vec<_> = log
        .all()
        .into_iter()
        .filter(|s| matches!(s.breaker, Some(BreakerEvent::CallFinished { .. })))
        .map(|s| (s.name, s.key))
        .collect();
    assert_eq!(
        finished,
        [
            ("hosts".to_string(), Some("a".to_string())),
            ("hosts".to_string(), Some("b".to_string()))
        ]
    );

    handle.get(&"a").unwrap().handle().force_open();
    let last = log.all().pop().unwrap();
    assert_eq!(last.key.as_deref(), Some("a"));
    assert_eq!(
        last.text,
        "circuit `hosts`: Closed -> ForcedOpen (set by hand); key `a`"
    );

    // A layer that is not a keyed layer's instance: no key.
    let plain_log = Log::default();
    let plain = CircuitBreakerLayer::builder()
        .name("db")
        .on_event(plain_log.listener())
        .build()
        .unwrap();
    plain.handle().force_open();
    let seen = plain_log.all();
    assert_eq!(seen[0].key, None);
    assert_eq!(
        seen[0].text,
        "circuit `db`: Closed -> ForcedOpen (set by hand)"
    );
}

// Event::new / with_key / key / name / shared_name / kind: "The same event, in the instance
// of key of a keyed layer."
#[test]
fn event_with_key_reads_back() {
    let name: Arc<str> = Arc::from("tenants");
    let what = KeyedEvent::Rejected;
    let event = Event::new(&name, &what);
    assert_eq!(event.key(), None);
    assert_eq!(event.name(), "tenants");
    let event = event.with_key("c");
    assert_eq!(event.key(), Some("c"));
    assert_eq!(event.name(), "tenants");
    assert!(Arc::ptr_eq(event.shared_name(), &name));
    assert_eq!(event.kind::<KeyedEvent>(), Some(&KeyedEvent::Rejected));
    assert!(event.kind::<BreakerEvent>().is_none());
    let text = event.to_string();
    assert!(text.contains("tenants"), "{text}");
    assert!(text.ends_with("; key `c`"), "{text}");
    assert!(!KeyedEvent::Rejected.to_string().contains("tenants"));
}

// Eviction::ALL "Every reason, in declaration order"; as_str "in snake case, as a metric
// label value" (metrics table: fresh idle least_recently_used). RetryReason::as_str:
// too_many_keys.
#[test]
fn eviction_reasons_as_label_values() {
    assert_eq!(
        Eviction::ALL,
        [Eviction::Fresh, Eviction::Idle, Eviction::LeastRecentlyUsed]
    );
    let labels: Vec<&str> = Eviction::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(labels, ["fresh", "idle", "least_recently_used"]);
    assert_eq!(RetryReason::TooManyKeys.as_str(), "too_many_keys");
    assert!(RetryReason::ALL.contains(&RetryReason::TooManyKeys));
}

// TracingEvents: "the event of a keyed layer's instance is emitted inside a span
// palisade.keyed with a key field"; "every event has a layer field with the layer's name".
#[test]
fn tracing_events_of_an_instance_are_inside_a_keyed_span() {
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};

    #[derive(Default)]
    struct Fields(Vec<(String, String)>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((
                field.name().to_string(),
                format!("{value:?}").trim_matches('"').to_string(),
            ));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }
    #[derive(Clone, Debug)]
    struct SpanSeen {
        name: String,
        fields: Vec<(String, String)>,
    }
    #[derive(Clone, Debug)]
    struct EventSeen {
        target: String,
        fields: Vec<(String, String)>,
        spans: Vec<SpanSeen>,
    }
    #[derive(Clone, Default)]
    struct Capture {
        spans: Arc<Mutex<Vec<SpanSeen>>>,
        stack: Arc<Mutex<Vec<u64>>>,
        events: Arc<Mutex<Vec<EventSeen>>>,
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let mut f = Fields::default();
            attrs.record(&mut f);
            let mut spans = self.spans.lock().unwrap();
            spans.push(SpanSeen {
                name: attrs.metadata().name().to_string(),
                fields: f.0,
            });
            Id::from_u64(spans.len() as u64)
        }
        fn record(&self, id: &Id, values: &Record<'_>) {
            let mut f = Fields::default();
            values.record(&mut f);
            self.spans.lock().unwrap()[id.into_u64() as usize - 1]
                .fields
                .extend(f.0);
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut f = Fields::default();
            event.record(&mut f);
            let spans = self.spans.lock().unwrap();
            let ids: Vec<u64> = match event.parent() {
                Some(id) => vec![id.into_u64()],
                None if event.is_contextual() => self.stack.lock().unwrap().clone(),
                None => vec![],
            };
            let on = ids.iter().map(|i| spans[*i as usize - 1].clone()).collect();
            self.events.lock().unwrap().push(EventSeen {
                target: event.metadata().target().to_string(),
                fields: f.0,
                spans: on,
            });
        }
        fn enter(&self, id: &Id) {
            self.stack.lock().unwrap().push(id.into_u64());
        }
        fn exit(&self, _: &Id) {
            self.stack.lock().unwrap().pop();
        }
    }

    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let keyed = KeyedLayer::builder(
            CircuitBreakerLayer::builder()
                .name("hosts")
                .on_event(TracingEvents)
                .build()
                .unwrap(),
        )
        .key_source(HostAndPort)
        .build()
        .unwrap();
        let a = keyed.instance(&HostPort::new("10.0.0.7", 8080)).unwrap();
        a.handle().force_open();
    });
    let events = capture.events.lock().unwrap().clone();
    let ours: Vec<&EventSeen> = events.iter().filter(|e| e.target == "palisade").collect();
    assert!(!ours.is_empty(), "no palisade event: {events:?}");
    for e in ours {
        assert!(
            e.fields.iter().any(|(k, v)| k == "layer" && v == "hosts"),
            "layer field: {e:?}"
        );
        let span = e.spans.iter().find(|s| s.name == "palisade.keyed");
        let span = span.unwrap_or_else(|| panic!("not inside a palisade.keyed span: {e:?}"));
        assert!(
            span.fields
                .iter()
                .any(|(k, v)| k == "key" && v == "10.0.0.7:8080"),
            "key field: {span:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Rejections name the key.

// RateLimited::key / BulkheadFull::key: "The key of the limiter [bulkhead] that refused the
// call, when it is one of a keyed layer's ...; the message then names it."
#[tokio::test(start_paused = true)]
async fn rate_limiter_and_bulkhead_rejections_name_their_key() {
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .name("api")
            .rate(10, Duration::from_secs(1))
            .burst(1)
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .build()
    .unwrap();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("tenant-42").await.unwrap();
    let err = svc.clone().oneshot("tenant-42").await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!((limited.name(), limited.key()), ("api", Some("tenant-42")));
    assert_eq!(limited.retry_after(), Duration::from_millis(100));
    let text = err.to_string();
    assert!(
        text.contains(r#""api""#) && text.contains("tenant-42"),
        "{text}"
    );

    let gate = Arc::new(Semaphore::new(0));
    let keyed = KeyedLayer::builder(
        BulkheadLayer::builder()
            .name("db")
            .max_concurrent(1)
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .build()
    .unwrap();
    let svc = keyed.layer(gated(gate.clone(), "shard-1"));
    let first = tokio::spawn(svc.clone().oneshot("shard-1"));
    settle().await;
    let err = svc.clone().oneshot("shard-1").await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.name(), full.key(), full.max_concurrent()),
        ("db", Some("shard-1"), 1)
    );
    let text = err.to_string();
    assert!(
        text.contains(r#""db""#) && text.contains("shard-1"),
        "{text}"
    );
    assert_eq!(
        svc.clone().oneshot("shard-2").await.unwrap(),
        "shard-2",
        "a bulkhead of its own"
    );
    gate.add_permits(1);
    first.await.unwrap().unwrap();
}

// CircuitOpen::key / RateLimited::key: the key only "when it is one of a keyed layer's"
// breakers / limiters; otherwise None, and the messages stay as documented.
#[tokio::test(start_paused = true)]
async fn unkeyed_rejections_have_no_key() {
    let breaker = CircuitBreakerLayer::builder()
        .name("payments")
        .build()
        .unwrap();
    breaker.handle().force_open();
    let err = breaker.layer(echo()).oneshot("x").await.unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().key(), None);
    assert_eq!(
        err.to_string(),
        r#"circuit breaker "payments" is held open by hand"#
    );

    let limiter = RateLimitLayer::builder()
        .name("api")
        .rate(10, Duration::from_secs(1))
        .burst(2)
        .build()
        .unwrap();
    let svc = limiter.layer(echo());
    svc.clone().oneshot("1").await.unwrap();
    svc.clone().oneshot("2").await.unwrap();
    let err = svc.clone().oneshot("3").await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().key(), None);
    assert_eq!(
        err.to_string(),
        r#"rate limiter "api" is over its rate of 10 per 1s (burst 2); retry after 100ms"#
    );
}

// ---------------------------------------------------------------------------
// Configuration errors.

// KeyedBuilder::build, Errors: "a maximum of 0 keys or more than MAX_KEYS, a zero or
// unrepresentable idle timeout, an ejection percentage of 0 or above 100."
// ConfigError: "Names the offending parameter and says why".
#[test]
fn build_refuses_what_cannot_work_and_names_the_parameter() {
    let b = || KeyedLayer::builder(breaker("b")).key(|t: &Req| *t);
    let cases = [
        ("max_keys", b().max_keys(0).build().unwrap_err()),
        ("max_keys", b().max_keys(MAX_KEYS + 1).build().unwrap_err()),
        (
            "idle_timeout",
            b().idle_timeout(Duration::ZERO).build().unwrap_err(),
        ),
        (
            "idle_timeout",
            b().idle_timeout(Duration::MAX).build().unwrap_err(),
        ),
        (
            "max_ejection_percent",
            b().max_ejection_percent(0).build().unwrap_err(),
        ),
        (
            "max_ejection_percent",
            b().max_ejection_percent(101).build().unwrap_err(),
        ),
    ];
    for (parameter, err) in cases {
        assert_eq!(err.parameter(), parameter, "{err}");
        assert!(!err.reason().is_empty());
        assert!(err.to_string().contains(parameter), "{err}");
    }
    assert!(b().max_keys(1).build().is_ok());
    assert!(b().max_ejection_percent(1).build().is_ok());
    assert!(b().max_ejection_percent(100).build().is_ok());
    assert!(b().idle_timeout(Duration::from_nanos(1)).build().is_ok());
}

// KeyedBuilder::max_keys: "(1 to MAX_KEYS)": the largest is accepted, and the registry is
// "bounded in memory" (what is built stays small until keys come).
#[test]
fn max_keys_accepts_max_keys() {
    let (layer, _) = allocations_in(|| {
        KeyedLayer::builder(breaker("b"))
            .key(|t: &Req| *t)
            .max_keys(MAX_KEYS)
            .build()
    });
    let layer = layer.unwrap();
    assert_eq!(layer.handle().max_keys(), MAX_KEYS);
}

// ---------------------------------------------------------------------------
// eject_when_open.

// CircuitBreakerBuilder::eject_when_open example, and CircuitMetrics::ejected: "Whether the
// breaker is ejected from its load balancer now". "a breaker alone is a set of one, always
// ejected when open".
#[tokio::test(start_paused = true)]
async fn a_breaker_alone_is_ejected_while_open_and_woken_when_the_wait_ends() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .eject_when_open()
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(failing_or_not());
    assert!(!handle.metrics().ejected);
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(handle.metrics().ejected);
    assert!(
        svc.poll_ready(&mut noop_cx()).is_pending(),
        "ejected: pick another endpoint"
    );

    // "they are woken when the open wait ends (the next caller then takes a probe)"
    let waiter = tokio::spawn(async move {
        svc.ready().await.unwrap();
        let r = svc.call(false).await;
        (svc, r)
    });
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(!waiter.is_finished(), "still open at 29 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert!(waiter.is_finished(), "woken when the 30 s wait ended");
    let (_svc, r) = waiter.await.unwrap();
    r.unwrap();
}

// eject_when_open: "or the breaker is set by hand" (woken); example: force_open ejects,
// reset readmits.
#[tokio::test(start_paused = true)]
async fn a_breaker_set_by_hand_wakes_its_ejected_callers() {
    let breaker = CircuitBreakerLayer::builder()
        .eject_when_open()
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(failing_or_not());
    assert!(svc.poll_ready(&mut noop_cx()).is_ready());
    handle.force_open();
    assert!(svc.poll_ready(&mut noop_cx()).is_pending());
    assert!(handle.metrics().ejected);
    let waiter = tokio::spawn(async move {
        svc.ready().await.unwrap();
        svc.call(false).await
    });
    settle().await;
    assert!(!waiter.is_finished());
    handle.reset();
    settle().await;
    assert!(waiter.is_finished(), "woken when reset by hand");
    waiter.await.unwrap().unwrap();
    assert!(!handle.metrics().ejected);
}

// Without eject_when_open: circuit_breaker §Readiness "an open breaker never parks its
// caller": poll_ready ready, call fails with CircuitOpen; ejected stays false.
#[tokio::test(start_paused = true)]
async fn without_eject_an_open_breaker_answers_circuit_open() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(failing_or_not());
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(svc.poll_ready(&mut noop_cx()).is_ready());
    let err = svc.call(false).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert!(!handle.metrics().ejected);
}

// KeyedBuilder::max_ejection_percent: "at most this percentage of this layer's breakers
// (1 to 100) are ejected at once ... A breaker that opens past the cap stays in: its calls
// fail at once with CircuitOpen until it closes." EjectionCount fields.
#[tokio::test(start_paused = true)]
async fn max_ejection_percent_caps_the_ejected_breakers() {
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("endpoints")
            .consecutive_failures(1)
            .eject_when_open()
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .max_ejection_percent(50)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let keys = ["e1", "e2", "e3", "e4"];
    let breakers: Vec<CircuitBreakerLayer> =
        keys.iter().map(|k| keyed.instance(k).unwrap()).collect();
    let mut endpoints: Vec<_> = breakers.iter().map(|b| b.layer(failing_or_not())).collect();

    let count = handle.ejection().expect("with max_ejection_percent");
    assert_eq!(
        (count.ejected, count.breakers, count.max_percent),
        (0, 4, 50)
    );

    for i in 0..2 {
        endpoints[i]
            .ready()
            .await
            .unwrap()
            .call(true)
            .await
            .unwrap_err();
        assert!(
            endpoints[i].poll_ready(&mut noop_cx()).is_pending(),
            "{} ejected",
            keys[i]
        );
        assert!(breakers[i].handle().metrics().ejected);
    }
    endpoints[2]
        .ready()
        .await
        .unwrap()
        .call(true)
        .await
        .unwrap_err();
    assert_eq!(breakers[2].handle().state(), CircuitState::Open);
    assert!(
        endpoints[2].poll_ready(&mut noop_cx()).is_ready(),
        "past the cap: stays in"
    );
    let err = endpoints[2].call(false).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().key(), Some("e3"));
    assert!(!breakers[2].handle().metrics().ejected);

    let count = handle.ejection().unwrap();
    assert_eq!(
        (count.ejected, count.breakers, count.max_percent),
        (2, 4, 50)
    );
    let ejected_in_listing = handle.instances().iter().filter(|(_, m)| m.ejected).count();
    assert_eq!(ejected_in_listing, 2);
}

// max_ejection_percent: "The test is made before each ejection, so one breaker can always
// be ejected."
#[tokio::test(start_paused = true)]
async fn one_breaker_can_always_be_ejected() {
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .eject_when_open()
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .max_ejection_percent(10)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let breakers: Vec<CircuitBreakerLayer> = ["e1", "e2", "e3", "e4"]
        .iter()
        .map(|k| keyed.instance(k).unwrap())
        .collect();
    let mut endpoints: Vec<_> = breakers.iter().map(|b| b.layer(failing_or_not())).collect();
    endpoints[0]
        .ready()
        .await
        .unwrap()
        .call(true)
        .await
        .unwrap_err();
    assert!(
        endpoints[0].poll_ready(&mut noop_cx()).is_pending(),
        "10% of 4, yet one goes"
    );
    endpoints[1]
        .ready()
        .await
        .unwrap()
        .call(true)
        .await
        .unwrap_err();
    assert!(endpoints[1].poll_ready(&mut noop_cx()).is_ready());
    assert_eq!(
        ErrorKind::of(&endpoints[1].call(false).await.unwrap_err()),
        ErrorKind::CircuitOpen
    );
    assert_eq!(handle.ejection().unwrap().ejected, 1);
}

// Module docs §Load balancing: "take each endpoint's breaker with KeyedLayer::instance and
// build its service with it; a breaker built with eject_when_open reports Pending from
// poll_ready while open, so that the balancer picks another endpoint".
#[tokio::test(start_paused = true)]
async fn a_p2c_balancer_skips_the_ejected_endpoint() {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::Constant;

    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("endpoints")
            .consecutive_failures(1)
            .eject_when_open()
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .max_ejection_percent(50)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let good_calls = Arc::new(AtomicU32::new(0));
    let bad_calls = Arc::new(AtomicU32::new(0));
    let good = keyed
        .instance(&"good")
        .unwrap()
        .layer(endpoint(false, good_calls.clone()));
    let bad_breaker = keyed.instance(&"bad").unwrap();
    let bad = bad_breaker.layer(endpoint(true, bad_calls.clone()));
    let mut balancer = Balance::new(ServiceList::new(vec![
        Constant::new(good, 1u32),
        Constant::new(bad, 1u32),
    ]));

    let mut tries = 0;
    while bad_breaker.handle().state() != CircuitState::Open {
        tries += 1;
        assert!(tries < 200, "the balancer never picked the bad endpoint");
        let _ = balancer.ready().await.unwrap().call("req").await;
    }
    assert!(bad_breaker.handle().metrics().ejected);
    let bad_before = bad_calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        let answer = balancer.ready().await.unwrap().call("req").await;
        assert_eq!(
            answer.unwrap(),
            "req",
            "every call goes to the healthy endpoint"
        );
    }
    assert_eq!(bad_calls.load(Ordering::SeqCst), bad_before);
    assert_eq!(handle.ejection().unwrap().ejected, 1);
}

// ---------------------------------------------------------------------------
// respond.

// respond table: "TooManyKeys | RESOURCE_EXHAUSTED | 503, with Retry-After as for a full
// bulkhead"; to_status: "The message is the rejection's Display, and the rejection is the
// status's source, so ErrorKind::of_dyn still finds it."
#[tokio::test(start_paused = true)]
async fn too_many_keys_becomes_503_and_resource_exhausted() {
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .rate(1, Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .name("tenants")
    .key(|t: &Req| *t)
    .max_keys(1)
    .when_full(WhenFull::Reject)
    .build()
    .unwrap();
    let svc = keyed.layer(echo());
    svc.clone().oneshot("a").await.unwrap();
    let err = svc.clone().oneshot("b").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);

    let res = to_response::<String>(&*err).expect("a rejection");
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");

    let busy = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::from_secs(7))
        .build()
        .unwrap();
    let res = busy.to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()[http::header::RETRY_AFTER],
        "7",
        "as for a full bulkhead"
    );

    let silent = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::ZERO)
        .build()
        .unwrap();
    let res = silent.to_response::<String>(&*err).unwrap();
    assert!(
        res.headers().get(http::header::RETRY_AFTER).is_none(),
        "zero: no Retry-After"
    );

    let status = to_status(&*err).expect("a rejection");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), err.to_string());
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::TooManyKeys);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

// A real HTTP server: HostAndPort on a server keys by the Host header; HttpRejectionLayer
// answers RateLimited with 429 and TooManyKeys with 503 + Retry-After: 1.
#[tokio::test]
async fn an_axum_server_keys_by_host_header_and_answers_rejections() {
    use axum::{Router, routing::get as route_get};
    let limiter = RateLimitLayer::builder()
        .name("per-host")
        .rate(1, Duration::from_secs(3600))
        .build()
        .unwrap();
    let keyed = KeyedLayer::builder(limiter)
        .name("hosts")
        .key_source(HostAndPort)
        .max_keys(2)
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    let handle = keyed.handle();
    let app = Router::new()
        .route("/", route_get(|| async { "hello" }))
        .layer(
            ServiceBuilder::new()
                .layer(HttpRejectionLayer::new())
                .layer(keyed),
        );
    let addr = serve(app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |host: &'static str| {
        client
            .get(format!("http://{addr}/"))
            .header(reqwest::header::HOST, host)
            .send()
    };

    let r = send("Tenant-A.example:8080").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
    let r = send("tenant-a.example:8080").await.unwrap();
    assert_eq!(
        r.status(),
        429,
        "the same host, case aside: its limit is spent"
    );
    assert!(r.headers().get(reqwest::header::RETRY_AFTER).is_some());
    let r = send("tenant-b.example:80").await.unwrap();
    assert_eq!(r.status(), 200);
    let r = send("tenant-c.example:80").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()[reqwest::header::RETRY_AFTER], "1");
    assert_eq!(
        keys_of(&handle),
        BTreeSet::from([
            "tenant-a.example:8080".to_string(),
            "tenant-b.example:80".to_string()
        ])
    );
}

// A real HTTP client: reqwest through a breaker per host; a dead host's breaker opens and
// names the key, the live host is unaffected.
#[tokio::test]
async fn a_reqwest_client_gets_a_breaker_per_host() {
    use axum::{Router, routing::get as route_get};
    let good = serve(Router::new().route("/", route_get(|| async { "ok" }))).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .name("hosts")
            .consecutive_failures(2)
            .build()
            .unwrap(),
    )
    .key_source(HostAndPort)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let svc = keyed.layer(client);
    let req = |addr: SocketAddr| {
        reqwest::Request::new(
            reqwest::Method::GET,
            format!("http://{addr}/").parse().unwrap(),
        )
    };
    for _ in 0..2 {
        let err = svc.clone().oneshot(req(dead)).await.unwrap_err();
        assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    }
    let err = svc.clone().oneshot(req(dead)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    let expected = format!(
        r#"circuit breaker "hosts" for key "127.0.0.1:{}" is open; it may admit calls again in "#,
        dead.port()
    );
    assert!(err.to_string().starts_with(&expected), "{err}");

    let res = svc.clone().oneshot(req(good)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
    let good_breaker = handle
        .get(&HostPort::new("127.0.0.1", good.port()))
        .unwrap();
    assert_eq!(good_breaker.handle().state(), CircuitState::Closed);
    let dead_breaker = handle
        .get(&HostPort::new("127.0.0.1", dead.port()))
        .unwrap();
    assert_eq!(dead_breaker.handle().state(), CircuitState::Open);
}

// ---------------------------------------------------------------------------
// Retry of TooManyKeys.

// RetryBuilder::retry_on: "TooManyKeys: a keyed layer below had no room for the request's
// key; retried after the backoff's delay." RetryReason::TooManyKeys.
#[tokio::test(start_paused = true)]
async fn a_retry_retries_too_many_keys_when_asked() {
    let log = Log::default();
    let keyed = KeyedLayer::builder(BulkheadLayer::builder().build().unwrap())
        .key(|t: &Req| *t)
        .max_keys(1)
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    let held = keyed.instance(&"a").unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .retry_on(ErrorKind::TooManyKeys)
        .no_budget()
        .on_event(log.listener())
        .build()
        .unwrap();
    let svc = retry.layer(keyed.layer(echo()));
    let err = svc.clone().oneshot("b").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);
    let reasons: Vec<RetryReason> = log
        .all()
        .into_iter()
        .filter_map(|s| s.retry_reason)
        .collect();
    assert_eq!(
        reasons,
        [RetryReason::TooManyKeys, RetryReason::TooManyKeys]
    );
    drop(held);
    assert_eq!(svc.clone().oneshot("b").await.unwrap(), "b");
}

// ---------------------------------------------------------------------------
// Readiness.

// Module docs §Readiness: "poll_ready is the inner service's. The key is known only at
// call ... and drives the instance's own readiness (a bulkhead's queue, a breaker's
// admission) from its future".
#[tokio::test(start_paused = true)]
async fn readiness_is_the_inner_services_and_the_call_waits_in_its_keys_queue() {
    #[derive(Clone)]
    struct NeverReady;
    impl Service<Req> for NeverReady {
        type Response = Req;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Req, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Pending
        }
        fn call(&mut self, r: Req) -> Self::Future {
            std::future::ready(Ok(r))
        }
    }
    let keyed = KeyedLayer::builder(
        BulkheadLayer::builder()
            .max_concurrent(1)
            .max_queue(1)
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let mut never = keyed.layer(NeverReady);
    assert!(never.poll_ready(&mut noop_cx()).is_pending());

    let gate = Arc::new(Semaphore::new(0));
    let mut svc = keyed.layer(gated(gate.clone(), "a"));
    let a1 = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let a2 = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    assert!(
        svc.poll_ready(&mut noop_cx()).is_ready(),
        "a's full bulkhead is not the layer's"
    );
    let a = handle.get(&"a").unwrap().metrics();
    assert_eq!((a.in_flight, a.queued), (1, 1));
    assert_eq!(svc.clone().oneshot("b").await.unwrap(), "b");
    assert!(!a2.is_finished(), "queued behind a1");
    gate.add_permits(2);
    a1.await.unwrap().unwrap();
    a2.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------
// metrics() snapshots.

// RateLimitLayer::metrics: "A snapshot of the limiter's state now"; RateLimitMetrics
// available: "The cells a call could take at once now (a call waiting for its turn has
// taken its cells already)"; burst: "The most cells at once."
#[tokio::test(start_paused = true)]
async fn rate_limit_metrics_snapshot() {
    let limiter = RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1))
        .burst(3)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let m = limiter.metrics();
    assert_eq!((m.available, m.burst), (3, 3));
    let svc = limiter.layer(echo());
    for _ in 0..3 {
        svc.clone().oneshot("x").await.unwrap();
    }
    assert_eq!(limiter.metrics().available, 0);
    let waiting = tokio::spawn(svc.clone().oneshot("w"));
    settle().await;
    assert!(!waiting.is_finished());
    assert_eq!(
        limiter.metrics().available,
        0,
        "the waiting call took its cell"
    );
    waiting.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(limiter.metrics().available, 3, "filled up again");
}

// BulkheadLayer::metrics: "A snapshot of the bulkhead's counts now": in_flight, queued,
// max_concurrent.
#[tokio::test(start_paused = true)]
async fn bulkhead_metrics_snapshot() {
    let gate = Arc::new(Semaphore::new(0));
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(2)
        .build()
        .unwrap();
    let m = bulkhead.metrics();
    assert_eq!((m.in_flight, m.queued, m.max_concurrent), (0, 0, 1));
    let svc = bulkhead.layer(gated(gate.clone(), "x"));
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot("x")))
        .collect();
    settle().await;
    let m = bulkhead.metrics();
    assert_eq!((m.in_flight, m.queued, m.max_concurrent), (1, 2, 1));
    bulkhead.handle().set_max_concurrent(5).unwrap();
    settle().await;
    let m = bulkhead.metrics();
    assert_eq!((m.in_flight, m.queued, m.max_concurrent), (3, 0, 5));
    gate.add_permits(3);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let m = bulkhead.metrics();
    assert_eq!((m.in_flight, m.queued), (0, 0));
}

// ---------------------------------------------------------------------------
// Metrics through the metrics facade.

fn render_with_recorder<T>(f: impl Future<Output = T>) -> (T, String) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || rt.block_on(f));
    (out, handle.render())
}

/// The samples of `name` whose labels include every one of `labels`, summed; None if none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        // The docs say Prometheus's exporter adds `_total` to counters; accept both
        // spellings here (prometheus_scrape_adds_total_to_counters checks the promise).
        let base = name.strip_suffix("_total").unwrap_or(name);
        if (n != name && n != base)
            || !labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    found
}

// event::metrics, Keyed instances: "every key of a layer named hosts counts in
// palisade.layer.name="hosts", so the series do not grow with the keys."
#[test]
fn by_default_every_key_counts_in_the_layers_series() {
    let ((), text) = render_with_recorder(async {
        let keyed = KeyedLayer::builder(
            CircuitBreakerLayer::builder()
                .name("hosts")
                .on_event(MetricsEvents::new())
                .build()
                .unwrap(),
        )
        .key_source(HostAndPort)
        .build()
        .unwrap();
        let svc = keyed.layer(http_ok());
        for host in ["a.example", "b.example", "c.example"] {
            for _ in 0..2 {
                svc.clone()
                    .oneshot(get(&format!("http://{host}/")))
                    .await
                    .unwrap();
            }
        }
    });
    let calls = sample(
        &text,
        "palisade_circuit_breaker_calls_total",
        &[
            ("palisade_layer_name", "hosts"),
            ("palisade_circuit_breaker_outcome", "success"),
            ("palisade_circuit_breaker_slow", "false"),
        ],
    );
    assert_eq!(calls, Some(6.0), "{text}");
    let series = text
        .lines()
        .filter(|l| {
            l.starts_with("palisade_circuit_breaker_calls_total{")
                || l.starts_with("palisade_circuit_breaker_calls{")
        })
        .count();
    assert_eq!(series, 1, "one series for every key: {text}");
    assert!(!text.contains("palisade_key"), "{text}");
    assert!(!text.contains("a.example"), "{text}");
}

// MetricsEvents::key_label: "Labels the metrics of a keyed layer's instances with
// palisade.key, whose value is what label makes of the instance's key, or other where it
// returns None."
#[test]
fn key_label_labels_instances_by_a_bounded_mapping() {
    let ((), text) = render_with_recorder(async {
        let known = ["api.internal:443", "auth.internal:443"];
        let listener = MetricsEvents::new()
            .key_label(move |key| known.iter().find(|k| **k == key).map(|k| (*k).into()));
        let keyed = KeyedLayer::builder(
            CircuitBreakerLayer::builder()
                .name("hosts")
                .on_event(listener)
                .build()
                .unwrap(),
        )
        .key_source(HostAndPort)
        .build()
        .unwrap();
        let svc = keyed.layer(http_ok());
        for uri in [
            "https://api.internal/",
            "https://API.internal/x",
            "https://auth.internal/",
            "http://random-1.example/",
            "http://random-2.example/",
            "http://random-3.example/",
        ] {
            svc.clone().oneshot(get(uri)).await.unwrap();
        }
    });
    let calls = |key: &str| {
        sample(
            &text,
            "palisade_circuit_breaker_calls_total",
            &[
                ("palisade_layer_name", "hosts"),
                ("palisade_circuit_breaker_outcome", "success"),
                ("palisade_key", key),
            ],
        )
    };
    assert_eq!(calls("api.internal:443"), Some(2.0), "{text}");
    assert_eq!(calls("auth.internal:443"), Some(1.0), "{text}");
    assert_eq!(calls("other"), Some(3.0), "{text}");
    assert!(!text.contains("random-1"), "{text}");
}

// event::metrics table: palisade.keyed.keys (gauge), palisade.keyed.instances_created,
// palisade.keyed.evictions (palisade.keyed.eviction_reason), palisade.keyed.rejected_calls,
// palisade.keyed.shared_calls, all with palisade.layer.name.
#[test]
fn the_keyed_layers_own_metrics() {
    let ((), text) = render_with_recorder(async {
        let limiter = || {
            RateLimitLayer::builder()
                .rate(1, Duration::from_secs(60))
                .build()
                .unwrap()
        };
        let rejecting = KeyedLayer::builder(limiter())
            .name("rejecting")
            .key(|t: &Req| *t)
            .max_keys(2)
            .when_full(WhenFull::Reject)
            .on_event(MetricsEvents::new())
            .build()
            .unwrap();
        let svc = rejecting.layer(echo());
        for t in ["a", "b", "c", "d"] {
            let _ = svc.clone().oneshot(t).await;
        }
        let sharing = KeyedLayer::builder(limiter())
            .name("sharing")
            .key(|t: &Req| *t)
            .max_keys(1)
            .when_full(WhenFull::Share)
            .on_event(MetricsEvents::new())
            .build()
            .unwrap();
        let svc = sharing.layer(echo());
        for t in ["a", "b", "c"] {
            let _ = svc.clone().oneshot(t).await;
        }
        let evicting = KeyedLayer::builder(breaker("b"))
            .name("evicting")
            .key(|t: &Req| *t)
            .max_keys(1)
            .on_event(MetricsEvents::new())
            .build()
            .unwrap();
        let svc = evicting.layer(echo());
        for t in ["a", "b", "c"] {
            svc.clone().oneshot(t).await.unwrap();
        }
    });
    let v = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        v(
            "palisade_keyed_instances_created_total",
            &[("palisade_layer_name", "rejecting")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(
            "palisade_keyed_keys",
            &[("palisade_layer_name", "rejecting")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(
            "palisade_keyed_rejected_calls_total",
            &[("palisade_layer_name", "rejecting")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(
            "palisade_keyed_shared_calls_total",
            &[("palisade_layer_name", "sharing")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(
            "palisade_keyed_instances_created_total",
            &[("palisade_layer_name", "evicting")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        v(
            "palisade_keyed_keys",
            &[("palisade_layer_name", "evicting")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(
            "palisade_keyed_evictions_total",
            &[
                ("palisade_layer_name", "evicting"),
                ("palisade_keyed_eviction_reason", "least_recently_used")
            ]
        ),
        Some(2.0),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Cost.

// Module docs: "The built-in sources find the instance without building an owned key, so a
// call whose key has an instance allocates nothing." §Cost: "No allocation once the key has
// an instance".
#[test]
fn calls_whose_key_has_an_instance_allocate_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let by_host = KeyedLayer::builder(breaker("hosts"))
            .key_source(HostAndPort)
            .build()
            .unwrap();
        let mut svc = by_host.layer(http_ok());
        for _ in 0..3 {
            drive(&mut svc, get("http://api.example:8080/")).unwrap();
        }
        let requests: Vec<_> = (0..20).map(|_| get("http://API.example:8080/x")).collect();
        let ((), n) = allocations_in(|| {
            for r in requests {
                drive(&mut svc, r).unwrap();
            }
        });
        assert_eq!(n, 0, "HostAndPort: allocations for 20 calls");
        assert_eq!(by_host.handle().len(), 1);

        let by_header = KeyedLayer::builder(
            RateLimitLayer::builder()
                .rate(1_000_000, Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .key_source(Header::new(http::HeaderName::from_static("x-tenant")))
        .build()
        .unwrap();
        let mut svc = by_header.layer(http_ok());
        let req = || {
            http::Request::get("http://x/")
                .header("x-tenant", "acme")
                .body(())
                .unwrap()
        };
        for _ in 0..3 {
            drive(&mut svc, req()).unwrap();
        }
        let requests: Vec<_> = (0..20).map(|_| req()).collect();
        let ((), n) = allocations_in(|| {
            for r in requests {
                drive(&mut svc, r).unwrap();
            }
        });
        assert_eq!(n, 0, "Header: allocations for 20 calls");
    });
}

// ---------------------------------------------------------------------------
// Findings of the docs-only pass (each failed before its fix; kept as tests).

// Module docs: "room is needed for a new key and the WhenFull policy says so (by default,
// the least recently used goes)"; WhenFull::EvictLeastRecentlyUsed: "The least recently
// used instance that is not in use goes"; Eviction::LeastRecentlyUsed: "it was the least
// recently used instance that could go."
#[tokio::test(start_paused = true)]
async fn evict_lru_evicts_the_least_recently_used_key() {
    for max in [2u32, 3, 10] {
        let log = Log::default();
        let keyed = KeyedLayer::builder(breaker("b"))
            .key(|n: &u32| *n)
            .max_keys(max as usize)
            .on_event(log.listener())
            .build()
            .unwrap();
        let svc = keyed.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
        for n in 0..3 * max {
            svc.clone().oneshot(n).await.unwrap();
        }
        // Every breaker has a call in its window (not fresh), none is in use: each new
        // key evicts the oldest one.
        let expected: Vec<(String, Eviction)> = (0..2 * max)
            .map(|n| (n.to_string(), Eviction::LeastRecentlyUsed))
            .collect();
        assert_eq!(log.evictions(), expected, "max_keys({max})");
        assert_eq!(
            keys_of(&keyed.handle()),
            (2 * max..3 * max)
                .map(|n| n.to_string())
                .collect::<BTreeSet<_>>(),
            "max_keys({max})"
        );
    }
}

// CircuitMetrics::ejected: "Whether the breaker is ejected from its load balancer now";
// eject_when_open: ejected "While open" (and while half-open with every probe out). Once
// the wait ended and the half-open breaker admits probes, its poll_ready is Ready: it is
// not ejected, yet the snapshot says it is.
#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_admitting_probes_is_not_ejected() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .eject_when_open()
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(failing_or_not());
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(handle.metrics().ejected);
    tokio::time::sleep(Duration::from_secs(31)).await;
    svc.ready().await.unwrap().call(false).await.unwrap(); // one probe of five, succeeded
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert!(
        svc.poll_ready(&mut noop_cx()).is_ready(),
        "admits the next probe"
    );
    assert!(!handle.metrics().ejected, "{:?}", handle.metrics());
}

// max_ejection_percent: "at most this percentage of this layer's breakers ... are ejected
// at once"; EjectionCount::ejected: "Breakers ejected now." A breaker back in service
// (half-open, admitting probes) should not hold the only ejection place.
#[tokio::test(start_paused = true)]
async fn a_breaker_back_in_service_frees_its_ejection_place() {
    let keyed = KeyedLayer::builder(
        CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .eject_when_open()
            .build()
            .unwrap(),
    )
    .key(|t: &Req| *t)
    .max_ejection_percent(25)
    .build()
    .unwrap();
    let handle = keyed.handle();
    let breakers: Vec<CircuitBreakerLayer> = ["e1", "e2", "e3", "e4"]
        .iter()
        .map(|k| keyed.instance(k).unwrap())
        .collect();
    let mut endpoints: Vec<_> = breakers.iter().map(|b| b.layer(failing_or_not())).collect();
    endpoints[0]
        .ready()
        .await
        .unwrap()
        .call(true)
        .await
        .unwrap_err();
    assert!(endpoints[0].poll_ready(&mut noop_cx()).is_pending());
    tokio::time::sleep(Duration::from_secs(31)).await;
    endpoints[0]
        .ready()
        .await
        .unwrap()
        .call(false)
        .await
        .unwrap(); // a probe
    assert_eq!(breakers[0].handle().state(), CircuitState::HalfOpen);
    assert!(
        endpoints[0].poll_ready(&mut noop_cx()).is_ready(),
        "e1 is back in service"
    );
    assert_eq!(
        handle.ejection().unwrap().ejected,
        0,
        "{:?}",
        handle.ejection()
    );
    endpoints[1]
        .ready()
        .await
        .unwrap()
        .call(true)
        .await
        .unwrap_err();
    assert!(
        endpoints[1].poll_ready(&mut noop_cx()).is_pending(),
        "e2 takes the free place"
    );
}

// event::metrics: "an exporter adds what its format wants: Prometheus's adds _total to
// counters and turns dots into underscores, so palisade.retry.attempts is scraped as
// palisade_retry_attempts_total" (with the crate's own dev-dependency exporter).
// (The docs were corrected: the exporter adds `_total` with its recommended naming, as
// examples/metrics.rs sets it up.)
#[test]
fn prometheus_scrape_adds_total_to_counters() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_recommended_naming(true)
        .build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let keyed = KeyedLayer::builder(breaker("b"))
                .name("tenants")
                .key(|t: &Req| *t)
                .on_event(MetricsEvents::new())
                .build()
                .unwrap();
            keyed.layer(echo()).oneshot("a").await.unwrap();
        })
    });
    let text = handle.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("palisade_keyed_instances_created_total{")),
        "{text}"
    );
}
