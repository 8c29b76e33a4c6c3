//! The errors palisade's layers return, and how to tell them apart.
//!
//! Every layer's `Error` is [`BoxError`], as in tower, so palisade's layers stack
//! with tower's own and with tonic. The inner service's error passes through
//! unchanged; each rejection that a layer produces itself is a public type of its
//! own: [`CircuitOpen`], [`BulkheadFull`], [`RateLimited`], [`ConcurrencyLimited`],
//! [`Throttled`], [`TooManyKeys`] and [`Elapsed`]. Each message names
//! the layer (its `name`) and the limit that was hit, and the same facts
//! can be read through the type's accessors.
//! [`ErrorKind::of`] tells which one an error is by its type, never by its text.
//!
//! Builders return [`ConfigError`] for a configuration that cannot work.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The error type of every palisade layer: any error, boxed, as in tower.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Which layer refused a call: its name, and the key of the instance
/// when the layer is one of a [keyed](crate::keyed) layer's instances.
/// Displays as `"name"` or `"name" for key "key"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Who {
    name: Arc<str>,
    key: Option<Arc<str>>,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.name)?;
        match &self.key {
            Some(key) => write!(f, " for key {:?}", &**key),
            None => Ok(()),
        }
    }
}

/// A circuit breaker refused the call without sending it to the inner service.
///
/// Carries the breaker's name and how long until the breaker may let a call
/// through again: zero when a half-open breaker's probes are all out (one
/// may finish any moment), [`Duration::MAX`] when it is forced open by hand.
/// Its message is one of
///
/// * `circuit breaker "payments" is open; it may admit calls again in 1.5s`
/// * `circuit breaker "payments" is half-open and every probe is out; it
///   may admit a call when one finishes`
/// * `circuit breaker "payments" is held open by hand`
///
/// # Examples
///
/// ```
/// use palisade::circuit_breaker::CircuitBreakerLayer;
/// use palisade::error::{BoxError, CircuitOpen};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let breaker = CircuitBreakerLayer::builder().name("payments").build().unwrap();
/// breaker.handle().force_open();
/// let svc = breaker.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// let err = svc.oneshot(()).await.unwrap_err();
/// let open = err.downcast_ref::<CircuitOpen>().unwrap();
/// assert_eq!(open.name(), "payments");
/// assert_eq!(err.to_string(), r#"circuit breaker "payments" is held open by hand"#);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    who: Who,
    retry_after: Duration,
}

impl CircuitOpen {
    pub(crate) fn new(name: Arc<str>, key: Option<Arc<str>>, retry_after: Duration) -> Self {
        Self {
            who: Who { name, key },
            retry_after,
        }
    }

    /// The name given to the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.who.name
    }

    /// The key of the breaker that refused the call, when it is one of a
    /// [keyed](crate::keyed) layer's breakers (one per host, say); the
    /// message then names it: `circuit breaker "hosts" for key
    /// "10.0.0.7:8080" is open; ...`.
    pub fn key(&self) -> Option<&str> {
        self.who.key.as_deref()
    }

    /// How long until the breaker may admit a call again: zero when a
    /// half-open breaker has every probe out, [`Duration::MAX`] when it is
    /// held open by hand.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = &self.who;
        if self.retry_after == Duration::MAX {
            write!(f, "circuit breaker {who} is held open by hand")
        } else if self.retry_after.is_zero() {
            write!(
                f,
                "circuit breaker {who} is half-open and every probe is out; \
                 it may admit a call when one finishes"
            )
        } else {
            write!(
                f,
                "circuit breaker {who} is open; it may admit calls again in {:?}",
                self.retry_after
            )
        }
    }
}

impl StdError for CircuitOpen {}

/// A bulkhead refused the call: all its permits were taken and its queue was
/// full, or the call waited in the queue for its longest wait without
/// getting a permit.
///
/// Carries the bulkhead's name and limits, and how long the call waited,
/// so that the message says which bulkhead and which limit.
///
/// # Examples
///
/// ```
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::error::{BoxError, BulkheadFull};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bulkhead = BulkheadLayer::builder().name("inventory").max_concurrent(1).build().unwrap();
/// let svc = bulkhead.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// let mut holder = svc.clone();
/// holder.ready().await.unwrap(); // holds the only permit
/// let err = svc.oneshot(()).await.unwrap_err();
/// let full = err.downcast_ref::<BulkheadFull>().unwrap();
/// assert_eq!((full.name(), full.max_concurrent(), full.waited()), ("inventory", 1, None));
/// assert_eq!(err.to_string(), r#"bulkhead "inventory" is full: 1 in flight, no queue"#);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    who: Who,
    max_concurrent: u32,
    max_queue: u32,
    waited: Option<Duration>,
}

impl BulkheadFull {
    pub(crate) fn new(
        name: Arc<str>,
        key: Option<Arc<str>>,
        max_concurrent: u32,
        max_queue: u32,
        waited: Option<Duration>,
    ) -> Self {
        Self {
            who: Who { name, key },
            max_concurrent,
            max_queue,
            waited,
        }
    }

    /// The name given to the bulkhead that refused the call.
    pub fn name(&self) -> &str {
        &self.who.name
    }

    /// The key of the bulkhead that refused the call, when it is one of a
    /// [keyed](crate::keyed) layer's bulkheads; the message then names it:
    /// `bulkhead "per-host" for key "10.0.0.7:8080" is full: 4 in flight,
    /// no queue`.
    pub fn key(&self) -> Option<&str> {
        self.who.key.as_deref()
    }

    /// The bulkhead's limit of calls in flight when it refused the call
    /// (it may have been moved since: see
    /// [`set_max_concurrent`](crate::bulkhead::BulkheadHandle::set_max_concurrent)).
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// How many calls the bulkhead's queue holds.
    pub fn max_queue(&self) -> u32 {
        self.max_queue
    }

    /// `None` if the call was refused at once (every permit and queue
    /// place taken); the bulkhead's
    /// [`max_wait`](crate::bulkhead::BulkheadBuilder::max_wait) if the call
    /// waited that long in the queue without getting a permit.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, in_flight) = (&self.who, self.max_concurrent);
        match (self.waited, self.max_queue) {
            (Some(waited), _) => write!(
                f,
                "bulkhead {who} is full: {in_flight} in flight, \
                 gave up after waiting {waited:?} in the queue"
            ),
            (None, 0) => write!(f, "bulkhead {who} is full: {in_flight} in flight, no queue"),
            (None, queued) => write!(
                f,
                "bulkhead {who} is full: {in_flight} in flight, {queued} queued"
            ),
        }
    }
}

impl StdError for BulkheadFull {}

/// A rate limiter refused the call: its cost would take the limiter over
/// its rate (or, in the waiting mode, would wait longer than the maximum),
/// or it is above the limiter's burst and can never pass.
///
/// Carries the limiter's name and rate, and how long until the call's cost
/// would conform: [`Duration::MAX`] for a cost above the burst. Its message
/// is one of
///
/// * `rate limiter "api" is over its rate of 100 per 1s (burst 10); retry
///   after 35ms`
/// * `rate limiter "api" cannot admit a call of cost 20: its burst is 10`
///
/// # Examples
///
/// ```
/// use palisade::error::{BoxError, RateLimited};
/// use palisade::rate_limit::RateLimitLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = RateLimitLayer::builder()
///     .name("api")
///     .rate(100, Duration::from_secs(1))
///     .burst(10)
///     .cost(|cells: &u32| *cells)
///     .build()
///     .unwrap();
/// let svc = limiter.layer(service_fn(|_: u32| async { Ok::<_, BoxError>(()) }));
/// let err = svc.oneshot(20).await.unwrap_err();
/// let limited = err.downcast_ref::<RateLimited>().unwrap();
/// assert_eq!((limited.name(), limited.retry_after()), ("api", Duration::MAX));
/// assert_eq!(err.to_string(), r#"rate limiter "api" cannot admit a call of cost 20: its burst is 10"#);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    who: Who,
    count: u32,
    per: Duration,
    burst: u32,
    cost: u32,
    retry_after: Duration,
}

impl RateLimited {
    pub(crate) fn new(
        name: Arc<str>,
        key: Option<Arc<str>>,
        count: u32,
        per: Duration,
        burst: u32,
        cost: u32,
        retry_after: Duration,
    ) -> Self {
        Self {
            who: Who { name, key },
            count,
            per,
            burst,
            cost,
            retry_after,
        }
    }

    /// The name given to the rate limiter that refused the call.
    pub fn name(&self) -> &str {
        &self.who.name
    }

    /// The key of the limiter that refused the call, when it is one of a
    /// [keyed](crate::keyed) layer's limiters (one per tenant, say); the
    /// message then names it: `rate limiter "tenants" for key "acme" is
    /// over its rate of 10 per 1s (burst 10); retry after 100ms`.
    pub fn key(&self) -> Option<&str> {
        self.who.key.as_deref()
    }

    /// How long until the refused call's cost would conform, if no other
    /// call takes the cells first; [`Duration::MAX`] if its cost is above
    /// the burst, and it never will.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The refused call's cost, in cells.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The limiter's burst: the most cells admitted at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The limiter's rate: `count` calls per `per`.
    pub fn rate(&self) -> (u32, Duration) {
        (self.count, self.per)
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, burst) = (&self.who, self.burst);
        if self.retry_after == Duration::MAX {
            write!(
                f,
                "rate limiter {who} cannot admit a call of cost {}: its burst is {burst}",
                self.cost
            )
        } else {
            write!(
                f,
                "rate limiter {who} is over its rate of {} per {:?} (burst {burst}); \
                 retry after {:?}",
                self.count, self.per, self.retry_after
            )
        }
    }
}

impl StdError for RateLimited {}

/// A [keyed](crate::keyed) layer refused the call: the request's key has
/// no instance yet, the layer holds its maximum number of keys, and none of
/// their instances may go (each is in use, or, unless the layer evicts the
/// least recently used, neither fresh nor idle). Made only when the layer's
/// [`when_full`](crate::keyed::KeyedBuilder::when_full) policy is
/// [`Reject`](crate::keyed::WhenFull::Reject), or when every instance is in
/// use.
///
/// Its message: `keyed layer "tenants" holds its maximum of 2 keys and none
/// can go; no instance for key "c"`.
///
/// # Examples
///
/// ```
/// use palisade::error::{BoxError, ErrorKind, TooManyKeys};
/// use palisade::keyed::{KeyedLayer, WhenFull};
/// use palisade::rate_limit::RateLimitLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let per_tenant = RateLimitLayer::builder().rate(1, Duration::from_secs(60)).build().unwrap();
/// let keyed = KeyedLayer::builder(per_tenant)
///     .name("tenants")
///     .key(|tenant: &&'static str| *tenant)
///     .max_keys(2)
///     .when_full(WhenFull::Reject)
///     .build()
///     .unwrap();
/// let svc = keyed.layer(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
/// svc.clone().oneshot("a").await.unwrap();
/// svc.clone().oneshot("b").await.unwrap();
/// let err = svc.oneshot("c").await.unwrap_err();
/// assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys);
/// let refused = err.downcast_ref::<TooManyKeys>().unwrap();
/// assert_eq!((refused.name(), refused.key(), refused.max_keys()), ("tenants", "c", 2));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyKeys {
    name: Arc<str>,
    key: Arc<str>,
    max_keys: usize,
}

impl TooManyKeys {
    pub(crate) fn new(name: Arc<str>, key: Arc<str>, max_keys: usize) -> Self {
        Self {
            name,
            key,
            max_keys,
        }
    }

    /// The name given to the keyed layer that refused the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request's key, as it displays.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The most keys the layer holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

impl fmt::Display for TooManyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keyed layer {:?} holds its maximum of {} keys and none can go; no instance for key {:?}",
            &*self.name, self.max_keys, &*self.key
        )
    }
}

impl StdError for TooManyKeys {}

/// An [adaptive limit](crate::adaptive::AdaptiveLimitLayer) refused the
/// call: as many calls as its limit allows were in flight and its queue
/// was full, or the call waited in the queue for the maximum wait.
///
/// Carries the limit's name, the limit when it refused the call (the
/// algorithm moves it), and the wait. Its message is one of
///
/// * `adaptive limit "inventory" is reached: 12 in flight, no queue`
/// * `adaptive limit "inventory" is reached: 12 in flight, 50 queued`
/// * `adaptive limit "inventory" is reached: 12 in flight, gave up after
///   waiting 100ms in the queue`
///
/// # Examples
///
/// ```
/// use palisade::adaptive::{AdaptiveLimitLayer, Aimd};
/// use palisade::error::{BoxError, ConcurrencyLimited};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let one = Aimd::builder().initial_limit(1).min_limit(1).build().unwrap();
/// let limit = AdaptiveLimitLayer::builder().name("inventory").algorithm(one).build().unwrap();
/// let svc = limit.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// let mut holder = svc.clone();
/// holder.ready().await.unwrap(); // holds the only permit
/// let err = svc.oneshot(()).await.unwrap_err();
/// let limited = err.downcast_ref::<ConcurrencyLimited>().unwrap();
/// assert_eq!((limited.name(), limited.limit(), limited.waited()), ("inventory", 1, None));
/// assert_eq!(err.to_string(), r#"adaptive limit "inventory" is reached: 1 in flight, no queue"#);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyLimited {
    who: Who,
    limit: u32,
    max_queue: u32,
    waited: Option<Duration>,
}

impl ConcurrencyLimited {
    pub(crate) fn new(
        name: Arc<str>,
        key: Option<Arc<str>>,
        limit: u32,
        max_queue: u32,
        waited: Option<Duration>,
    ) -> Self {
        Self {
            who: Who { name, key },
            limit,
            max_queue,
            waited,
        }
    }

    /// The name given to the adaptive limit that refused the call.
    pub fn name(&self) -> &str {
        &self.who.name
    }

    /// The key of the limit that refused the call, when it is one of a
    /// [keyed](crate::keyed) layer's instances.
    pub fn key(&self) -> Option<&str> {
        self.who.key.as_deref()
    }

    /// The limit when the call was refused.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How many calls the limit's queue holds.
    pub fn max_queue(&self) -> u32 {
        self.max_queue
    }

    /// `None` if the call was refused at once; the limit's
    /// [`max_wait`](crate::adaptive::AdaptiveLimitBuilder::max_wait) if it
    /// waited that long in the queue without getting a permit.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }
}

impl fmt::Display for ConcurrencyLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, limit) = (&self.who, self.limit);
        match (self.waited, self.max_queue) {
            (Some(waited), _) => write!(
                f,
                "adaptive limit {who} is reached: {limit} in flight, \
                 gave up after waiting {waited:?} in the queue"
            ),
            (None, 0) => write!(
                f,
                "adaptive limit {who} is reached: {limit} in flight, no queue"
            ),
            (None, queued) => write!(
                f,
                "adaptive limit {who} is reached: {limit} in flight, {queued} queued"
            ),
        }
    }
}

impl StdError for ConcurrencyLimited {}

/// A [throttle](crate::adaptive::ThrottleLayer) rejected the call locally:
/// the service has been accepting too few of the requests in the
/// throttle's window, and this call fell in the share it turns away.
///
/// Carries the throttle's name, the share it was rejecting and the counts
/// it came from. Its message: `throttle "search" rejected the call
/// locally: 40 of 120 requests accepted in the last 120s, so it rejects
/// 33.1% of calls`.
///
/// # Examples
///
/// ```
/// use palisade::adaptive::ThrottleLayer;
/// use palisade::error::{BoxError, Throttled};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let throttle = ThrottleLayer::builder().name("search").min_answered(0).seed(1).build().unwrap();
/// let svc = throttle.layer(service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
/// let err = loop {
///     let err = svc.clone().oneshot(()).await.unwrap_err();
///     if err.is::<Throttled>() {
///         break err;
///     }
/// };
/// let throttled = err.downcast_ref::<Throttled>().unwrap();
/// assert_eq!(throttled.name(), "search");
/// assert_eq!(throttled.accepts(), 0);
/// assert!(throttled.probability() > 0.0 && throttled.probability() < 1.0);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    who: Who,
    probability: f64,
    requests: u64,
    accepts: u64,
    window: Duration,
}

impl Throttled {
    pub(crate) fn new(
        name: Arc<str>,
        key: Option<Arc<str>>,
        probability: f64,
        requests: u64,
        accepts: u64,
        window: Duration,
    ) -> Self {
        Self {
            who: Who { name, key },
            probability,
            requests,
            accepts,
            window,
        }
    }

    /// The name given to the throttle that rejected the call.
    pub fn name(&self) -> &str {
        &self.who.name
    }

    /// The key of the throttle that rejected the call, when it is one of a
    /// [keyed](crate::keyed) layer's instances.
    pub fn key(&self) -> Option<&str> {
        self.who.key.as_deref()
    }

    /// The share of calls the throttle was rejecting, in (0, 1).
    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// The requests in the throttle's window before this one.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The requests in the window that the service accepted.
    pub fn accepts(&self) -> u64 {
        self.accepts
    }

    /// How far back the throttle counts.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "throttle {} rejected the call locally: {} of {} requests accepted in the last {:?}, \
             so it rejects {:.1}% of calls",
            self.who,
            self.accepts,
            self.requests,
            self.window,
            self.probability * 100.0
        )
    }
}

impl StdError for Throttled {}

/// A call did not finish within its time limit: a
/// [`TimeoutLayer`](crate::timeout::TimeoutLayer)'s, or a retry's
/// [`deadline`](crate::retry::RetryBuilder::deadline).
///
/// Carries the layer's name and the limit.
///
/// # Examples
///
/// ```
/// use palisade::error::{BoxError, Elapsed};
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let timeout = TimeoutLayer::builder()
///     .name("per-attempt")
///     .timeout(Duration::from_millis(250))
///     .build()
///     .unwrap();
/// let svc = timeout.layer(service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>()));
/// let err = svc.oneshot(()).await.unwrap_err();
/// let elapsed = err.downcast_ref::<Elapsed>().unwrap();
/// assert_eq!((elapsed.name(), elapsed.timeout()), ("per-attempt", Duration::from_millis(250)));
/// assert_eq!(err.to_string(), r#"timeout "per-attempt" elapsed after 250ms"#);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    name: Arc<str>,
    timeout: Duration,
    by: ElapsedBy,
}

/// Which kind of layer's limit passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElapsedBy {
    Timeout,
    RetryDeadline,
}

impl Elapsed {
    /// A timeout layer's limit passed.
    pub(crate) fn by_timeout(name: Arc<str>, timeout: Duration) -> Self {
        Self {
            name,
            timeout,
            by: ElapsedBy::Timeout,
        }
    }

    /// A retry's deadline passed before its next attempt could start.
    pub(crate) fn retry_deadline(name: Arc<str>, deadline: Duration) -> Self {
        Self {
            name,
            timeout: deadline,
            by: ElapsedBy::RetryDeadline,
        }
    }

    /// The name given to the layer whose limit passed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit that passed: the timeout layer's timeout, or the retry's
    /// deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &*self.name;
        match self.by {
            ElapsedBy::Timeout => write!(f, "timeout {name:?} elapsed after {:?}", self.timeout),
            ElapsedBy::RetryDeadline => write!(
                f,
                "deadline of retry {name:?} elapsed after {:?}",
                self.timeout
            ),
        }
    }
}

impl StdError for Elapsed {}

/// Which kind of error a [`BoxError`] from a palisade stack is.
///
/// # Examples
///
/// ```
/// use palisade::error::{BoxError, ErrorKind};
///
/// let err: BoxError = "connection reset".into();
/// assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`CircuitOpen`] rejection.
    CircuitOpen,
    /// A [`BulkheadFull`] rejection.
    BulkheadFull,
    /// A [`RateLimited`] rejection.
    RateLimited,
    /// A [`TooManyKeys`] rejection.
    TooManyKeys,
    /// A [`ConcurrencyLimited`] rejection.
    ConcurrencyLimited,
    /// A [`Throttled`] rejection.
    Throttled,
    /// An [`Elapsed`] timeout.
    Elapsed,
    /// Any other error: the inner service's own, passed through unchanged.
    Inner,
}

impl ErrorKind {
    /// Tells which kind `err` is, by its type.
    ///
    /// The error itself is looked at first, then its chain of
    /// [`source`](StdError::source)s, so that a rejection wrapped by a client
    /// library (tonic turns a transport error into a `Status` whose source is
    /// the original error) is still recognised.
    pub fn of(err: &BoxError) -> ErrorKind {
        Self::of_dyn(&**err)
    }

    /// Like [`ErrorKind::of`], for an error behind any reference.
    pub fn of_dyn(err: &(dyn StdError + 'static)) -> ErrorKind {
        let mut current = Some(err);
        while let Some(e) = current {
            if e.is::<CircuitOpen>() {
                return ErrorKind::CircuitOpen;
            }
            if e.is::<BulkheadFull>() {
                return ErrorKind::BulkheadFull;
            }
            if e.is::<RateLimited>() {
                return ErrorKind::RateLimited;
            }
            if e.is::<TooManyKeys>() {
                return ErrorKind::TooManyKeys;
            }
            if e.is::<ConcurrencyLimited>() {
                return ErrorKind::ConcurrencyLimited;
            }
            if e.is::<Throttled>() {
                return ErrorKind::Throttled;
            }
            if e.is::<Elapsed>() {
                return ErrorKind::Elapsed;
            }
            current = e.source();
        }
        ErrorKind::Inner
    }

    /// Whether this kind is a rejection made by a palisade layer rather than
    /// an error of the inner service.
    pub fn is_rejection(self) -> bool {
        !matches!(self, ErrorKind::Inner)
    }
}

/// A set of [`ErrorKind`]s: which errors a fallback handles
/// ([`only_on`](crate::fallback::FallbackBuilder::only_on)) and which
/// rejections a retry sends again
/// ([`retry_on`](crate::retry::RetryBuilder::retry_on)). One bit per kind:
/// `Copy`, and a membership test is a mask.
///
/// # Examples
///
/// ```
/// use palisade::error::{ErrorKind, ErrorKinds};
///
/// let kinds = ErrorKinds::from([ErrorKind::CircuitOpen, ErrorKind::BulkheadFull]);
/// assert!(kinds.contains(ErrorKind::BulkheadFull));
/// assert!(!kinds.contains(ErrorKind::Elapsed));
/// assert!(kinds.with(ErrorKind::Elapsed).contains(ErrorKind::Elapsed));
/// assert!(ErrorKinds::NONE.is_empty());
/// ```
///
/// `ErrorKinds::default()` is the empty set, [`ErrorKinds::NONE`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ErrorKinds(u8);

impl ErrorKinds {
    /// No kind.
    pub const NONE: Self = Self(0);

    const fn bit(kind: ErrorKind) -> u8 {
        1 << match kind {
            ErrorKind::CircuitOpen => 0,
            ErrorKind::BulkheadFull => 1,
            ErrorKind::Elapsed => 2,
            ErrorKind::Inner => 3,
            ErrorKind::RateLimited => 4,
            ErrorKind::TooManyKeys => 5,
            ErrorKind::ConcurrencyLimited => 6,
            ErrorKind::Throttled => 7,
        }
    }

    /// This set and `kind`.
    #[must_use]
    pub const fn with(self, kind: ErrorKind) -> Self {
        Self(self.0 | Self::bit(kind))
    }

    /// This set without `kind`.
    #[must_use]
    pub const fn without(self, kind: ErrorKind) -> Self {
        Self(self.0 & !Self::bit(kind))
    }

    /// Whether `kind` is in the set.
    #[inline]
    pub const fn contains(self, kind: ErrorKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set.
    pub fn iter(self) -> impl Iterator<Item = ErrorKind> {
        [
            ErrorKind::CircuitOpen,
            ErrorKind::BulkheadFull,
            ErrorKind::RateLimited,
            ErrorKind::TooManyKeys,
            ErrorKind::ConcurrencyLimited,
            ErrorKind::Throttled,
            ErrorKind::Elapsed,
            ErrorKind::Inner,
        ]
        .into_iter()
        .filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for ErrorKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl From<ErrorKind> for ErrorKinds {
    fn from(kind: ErrorKind) -> Self {
        Self::NONE.with(kind)
    }
}

impl<const N: usize> From<[ErrorKind; N]> for ErrorKinds {
    fn from(kinds: [ErrorKind; N]) -> Self {
        kinds.into_iter().collect()
    }
}

impl FromIterator<ErrorKind> for ErrorKinds {
    fn from_iter<I: IntoIterator<Item = ErrorKind>>(kinds: I) -> Self {
        kinds.into_iter().fold(Self::NONE, Self::with)
    }
}

/// A builder was given a configuration that cannot work.
///
/// Names the offending parameter and says why, so the message can be shown
/// as is. An error found in a [configuration document](crate::config) also
/// says where, as a dotted path from the document's root
/// ([`path`](Self::path)):
///
/// ```text
/// invalid `instances.inventory.circuit_breaker.failure_rate_threshold`: must be a fraction in (0, 1], got 1.5
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    part: Option<&'static str>,
    parameter: &'static str,
    reason: String,
    /// Where the settings came from, outermost first (`instances`,
    /// `inventory`, `circuit_breaker`); empty for a builder's own error.
    at: Vec<String>,
}

impl ConfigError {
    pub(crate) fn new(parameter: &'static str, reason: impl Into<String>) -> Self {
        Self {
            part: None,
            parameter,
            reason: reason.into(),
            at: Vec::new(),
        }
    }

    /// The same error, said of the preset's part `part` (the first part
    /// named stays: it is the innermost).
    pub(crate) fn in_part(mut self, part: &'static str) -> Self {
        self.part.get_or_insert(part);
        self
    }

    /// The same error, found under `key` of a settings document: keys are
    /// added from the innermost out.
    pub(crate) fn under(mut self, key: impl Into<String>) -> Self {
        self.at.insert(0, key.into());
        self
    }

    /// The preset's part whose parameter was refused, when the error came
    /// from [`ResilienceBuilder::build`](crate::preset::ResilienceBuilder::build):
    /// one of `"respond"`, `"fallback"`, `"total_timeout"`, `"retry"`,
    /// `"hedge"`, `"circuit_breaker"`, `"throttle"`, `"rate_limit"`,
    /// `"bulkhead"`, `"adaptive_limit"` and `"attempt_timeout"` (the
    /// setters' names).
    pub fn part(&self) -> Option<&'static str> {
        self.part
    }

    /// The name of the parameter that was refused.
    pub fn parameter(&self) -> &'static str {
        self.parameter
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Where the refused value is: the keys that lead to it from the root
    /// of a [configuration document](crate::config) or settings struct,
    /// joined by dots, the parameter last
    /// (`instances.inventory.retry.backoff.max_delay`); for a builder's own
    /// error, the part (if any) and the parameter (`circuit_breaker.minimum_calls`).
    pub fn path(&self) -> String {
        let mut path = String::new();
        for key in &self.at {
            path.push_str(key);
            path.push('.');
        }
        if let (true, Some(part)) = (self.at.is_empty(), self.part) {
            path.push_str(part);
            path.push('.');
        }
        path.push_str(self.parameter);
        path
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.path(), self.reason)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn kinds_are_told_apart_by_type() {
        let cases: Vec<(BoxError, ErrorKind)> = vec![
            (
                Box::new(CircuitOpen::new("db".into(), None, Duration::from_secs(1))),
                ErrorKind::CircuitOpen,
            ),
            (
                Box::new(BulkheadFull::new("db".into(), None, 4, 0, None)),
                ErrorKind::BulkheadFull,
            ),
            (
                Box::new(RateLimited::new(
                    "db".into(),
                    None,
                    100,
                    Duration::from_secs(1),
                    10,
                    1,
                    Duration::from_millis(35),
                )),
                ErrorKind::RateLimited,
            ),
            (
                Box::new(TooManyKeys::new("db".into(), "k".into(), 10)),
                ErrorKind::TooManyKeys,
            ),
            (
                Box::new(ConcurrencyLimited::new("db".into(), None, 4, 0, None)),
                ErrorKind::ConcurrencyLimited,
            ),
            (
                Box::new(Throttled::new(
                    "db".into(),
                    None,
                    0.5,
                    10,
                    2,
                    Duration::from_secs(120),
                )),
                ErrorKind::Throttled,
            ),
            (
                Box::new(Elapsed::by_timeout("db".into(), Duration::from_secs(1))),
                ErrorKind::Elapsed,
            ),
            ("circuit breaker is open".into(), ErrorKind::Inner),
        ];
        for (err, kind) in cases {
            assert_eq!(ErrorKind::of(&err), kind, "{err}");
            assert_eq!(kind.is_rejection(), kind != ErrorKind::Inner);
        }
    }

    #[test]
    fn kind_is_found_through_the_source_chain() {
        let inner: BoxError = Box::new(Elapsed::by_timeout("t".into(), Duration::from_secs(1)));
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(inner))));
        assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    }

    /// Issue 14, item 6: every rejection says which layer and which
    /// limit, in one quoting style.
    #[test]
    fn messages_name_the_layer_and_the_limit() {
        let open = CircuitOpen::new("payments".into(), None, Duration::from_millis(1500));
        assert_eq!(open.name(), "payments");
        assert_eq!(open.retry_after(), Duration::from_millis(1500));
        let cases: Vec<(Box<dyn StdError>, &str)> = vec![
            (
                Box::new(open),
                r#"circuit breaker "payments" is open; it may admit calls again in 1.5s"#,
            ),
            (
                Box::new(CircuitOpen::new("payments".into(), None, Duration::ZERO)),
                r#"circuit breaker "payments" is half-open and every probe is out; it may admit a call when one finishes"#,
            ),
            (
                Box::new(CircuitOpen::new("payments".into(), None, Duration::MAX)),
                r#"circuit breaker "payments" is held open by hand"#,
            ),
            (
                Box::new(BulkheadFull::new("inventory".into(), None, 32, 16, None)),
                r#"bulkhead "inventory" is full: 32 in flight, 16 queued"#,
            ),
            (
                Box::new(BulkheadFull::new("inventory".into(), None, 32, 0, None)),
                r#"bulkhead "inventory" is full: 32 in flight, no queue"#,
            ),
            (
                Box::new(BulkheadFull::new(
                    "inventory".into(),
                    None,
                    32,
                    16,
                    Some(Duration::from_millis(50)),
                )),
                r#"bulkhead "inventory" is full: 32 in flight, gave up after waiting 50ms in the queue"#,
            ),
            (
                Box::new(Elapsed::by_timeout(
                    "per-attempt".into(),
                    Duration::from_millis(250),
                )),
                r#"timeout "per-attempt" elapsed after 250ms"#,
            ),
            (
                Box::new(Elapsed::retry_deadline(
                    "payments".into(),
                    Duration::from_secs(10),
                )),
                r#"deadline of retry "payments" elapsed after 10s"#,
            ),
            (
                Box::new(TooManyKeys::new("tenants".into(), "c".into(), 2)),
                r#"keyed layer "tenants" holds its maximum of 2 keys and none can go; no instance for key "c""#,
            ),
            (
                Box::new(ConcurrencyLimited::new(
                    "inventory".into(),
                    None,
                    12,
                    0,
                    None,
                )),
                r#"adaptive limit "inventory" is reached: 12 in flight, no queue"#,
            ),
            (
                Box::new(ConcurrencyLimited::new(
                    "inventory".into(),
                    None,
                    12,
                    50,
                    None,
                )),
                r#"adaptive limit "inventory" is reached: 12 in flight, 50 queued"#,
            ),
            (
                Box::new(ConcurrencyLimited::new(
                    "inventory".into(),
                    Some("a".into()),
                    12,
                    50,
                    Some(Duration::from_millis(100)),
                )),
                r#"adaptive limit "inventory" for key "a" is reached: 12 in flight, gave up after waiting 100ms in the queue"#,
            ),
            (
                Box::new(Throttled::new(
                    "search".into(),
                    None,
                    40.0 / 121.0,
                    120,
                    40,
                    Duration::from_secs(120),
                )),
                r#"throttle "search" rejected the call locally: 40 of 120 requests accepted in the last 120s, so it rejects 33.1% of calls"#,
            ),
            (
                Box::new(ConfigError::new("max_attempts", "must be at least 1")),
                "invalid `max_attempts`: must be at least 1",
            ),
        ];
        for (err, message) in cases {
            assert_eq!(err.to_string(), message);
        }
    }

    /// Issue 15: a keyed layer's instance names its key in its rejections.
    #[test]
    fn a_keyed_instance_names_its_key() {
        let key = || Some(Arc::from("10.0.0.7:8080"));
        let open = CircuitOpen::new("hosts".into(), key(), Duration::from_secs(2));
        assert_eq!((open.name(), open.key()), ("hosts", Some("10.0.0.7:8080")));
        assert_eq!(
            open.to_string(),
            r#"circuit breaker "hosts" for key "10.0.0.7:8080" is open; it may admit calls again in 2s"#
        );
        let full = BulkheadFull::new("hosts".into(), key(), 4, 0, None);
        assert_eq!(full.key(), Some("10.0.0.7:8080"));
        assert_eq!(
            full.to_string(),
            r#"bulkhead "hosts" for key "10.0.0.7:8080" is full: 4 in flight, no queue"#
        );
        let limited = RateLimited::new(
            "tenants".into(),
            Some(Arc::from("acme")),
            10,
            Duration::from_secs(1),
            10,
            1,
            Duration::from_millis(100),
        );
        assert_eq!(limited.key(), Some("acme"));
        assert_eq!(
            limited.to_string(),
            r#"rate limiter "tenants" for key "acme" is over its rate of 10 per 1s (burst 10); retry after 100ms"#
        );
        let plain = CircuitOpen::new("db".into(), None, Duration::MAX);
        assert_eq!(plain.key(), None);
    }

    #[test]
    fn accessors_give_the_limits() {
        let full = BulkheadFull::new(
            "inventory".into(),
            None,
            32,
            16,
            Some(Duration::from_millis(50)),
        );
        assert_eq!(full.name(), "inventory");
        assert_eq!((full.max_concurrent(), full.max_queue()), (32, 16));
        assert_eq!(full.waited(), Some(Duration::from_millis(50)));
        let elapsed = Elapsed::retry_deadline("payments".into(), Duration::from_secs(10));
        assert_eq!(elapsed.name(), "payments");
        assert_eq!(elapsed.timeout(), Duration::from_secs(10));
    }

    #[test]
    fn a_name_is_quoted_as_written_or_escaped() {
        let err = Elapsed::by_timeout("say \"hi\"".into(), Duration::from_secs(1));
        assert_eq!(err.to_string(), r#"timeout "say \"hi\"" elapsed after 1s"#);
    }
}
