use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use tokio::time::Instant;

use super::RateLimit;
use super::gcra::Gcra;
use crate::clock::{self, Epoch};
use crate::error::{ConfigError, RateLimited};
use crate::event::Listeners;
use crate::registry::{Fork, Instance};
use crate::validate;

/// What every service of one rate-limit layer shares: one limiter.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) count: u32,
    pub(crate) per: Duration,
    pub(crate) epoch: Epoch,
    pub(crate) gcra: Gcra,
    /// The longest wait, in nanoseconds: 0 in the rejecting mode.
    pub(crate) max_wait: u64,
    pub(crate) listeners: Listeners,
}

impl Shared {
    /// The error of a refused call of `cost` cells.
    #[cold]
    pub(crate) fn rejection(&self, cost: u32, retry_after: Duration) -> RateLimited {
        RateLimited::new(
            self.name.clone(),
            self.listeners.key().cloned(),
            self.count,
            self.per,
            self.gcra.burst(),
            cost,
            retry_after,
        )
    }
}

/// How many cells a request costs; see [`RateLimitBuilder::cost`].
pub trait Cost<Req> {
    /// The request's cost, in cells (calls at the configured rate).
    fn cost(&self, req: &Req) -> u32;
}

/// Every request costs 1: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct One;

impl<Req> Cost<Req> for One {
    #[inline]
    fn cost(&self, _: &Req) -> u32 {
        1
    }
}

/// A cost computed by a closure; made by [`RateLimitBuilder::cost`].
pub struct CostFn<F>(Arc<F>);

impl<F> Clone for CostFn<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> fmt::Debug for CostFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CostFn")
    }
}

impl<Req, F: Fn(&Req) -> u32> Cost<Req> for CostFn<F> {
    #[inline]
    fn cost(&self, req: &Req) -> u32 {
        (self.0)(req)
    }
}

/// Applies a [`RateLimit`] to a service.
///
/// One layer is one limiter: every service it wraps and every clone of them
/// draw from the same cells (tower's `RateLimit` gives each clone a limiter
/// of its own, tower#794).
///
/// Made by [`RateLimitLayer::builder`]; see the [module docs](super).
pub struct RateLimitLayer<C = One> {
    shared: Arc<Shared>,
    cost: C,
}

impl<C: Clone> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<C> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.shared.name)
            .field("count", &self.shared.count)
            .field("per", &self.shared.per)
            .field("burst", &self.shared.gcra.burst())
            .field("max_wait", &Duration::from_nanos(self.shared.max_wait))
            .finish()
    }
}

impl RateLimitLayer {
    /// Starts configuring a rate limiter.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder::default()
    }
}

/// A snapshot of a rate limiter, from [`RateLimitLayer::metrics`] (and, for
/// each key of a [keyed](crate::keyed) layer, from its handle's
/// [`instances`](crate::keyed::KeyedHandle::instances)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitMetrics {
    /// The cells a call could take at once now (a call waiting for its
    /// turn has taken its cells already).
    pub available: u32,
    /// The most cells at once.
    pub burst: u32,
}

impl<C> RateLimitLayer<C> {
    /// A snapshot of the limiter's state now.
    pub fn metrics(&self) -> RateLimitMetrics {
        let shared = &self.shared;
        let (available, _) = shared.gcra.available(shared.epoch.nanos_now());
        RateLimitMetrics {
            available,
            burst: shared.gcra.burst(),
        }
    }
}

/// A [keyed](crate::keyed) layer makes one limiter per key from this one.
impl<C> Instance for RateLimitLayer<C>
where
    C: Clone + Send + Sync + 'static,
{
    type Snapshot = RateLimitMetrics;

    /// A limiter with this one's rate, burst, maximum wait and listeners,
    /// and every cell free.
    fn fork(&self, fork: &Fork) -> Self {
        let shared = &self.shared;
        Self {
            shared: Arc::new(Shared {
                name: shared.name.clone(),
                count: shared.count,
                per: shared.per,
                epoch: Epoch::now(),
                gcra: Gcra::new(shared.gcra.interval(), shared.gcra.burst()),
                max_wait: shared.max_wait,
                listeners: shared.listeners.for_key(fork.key().clone()),
            }),
            cost: self.cost.clone(),
        }
    }

    /// Services and waiting calls hold the limiter.
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// Every cell is free again.
    fn is_fresh(&self, now: Instant) -> bool {
        let shared = &self.shared;
        shared.gcra.available(shared.epoch.nanos_at(now)).1
    }

    fn snapshot(&self) -> RateLimitMetrics {
        self.metrics()
    }
}

impl<S, C: Clone> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> RateLimit<S, C> {
        RateLimit::from_shared(inner, self.shared.clone(), self.cost.clone())
    }
}

/// Configures a [`RateLimitLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"rate_limiter"` |
/// | [`rate`](Self::rate) | none: `build` refuses a limiter without a rate |
/// | [`burst`](Self::burst) | the rate's count, as governor's: `rate(100, 1s)` admits 100 calls at once from rest |
/// | [`cost`](Self::cost) | 1 per request |
/// | [`max_wait`](Self::max_wait) | none: a call over the rate is rejected at once |
#[must_use = "a builder does nothing until `build` is called"]
pub struct RateLimitBuilder<C = One> {
    name: Arc<str>,
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    max_wait: Option<Duration>,
    cost: C,
    listeners: Listeners,
    /// A setting [`settings`](RateLimitBuilder::settings) could not apply.
    refused: Option<ConfigError>,
}

impl Default for RateLimitBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("rate_limiter"),
            rate: None,
            burst: None,
            max_wait: None,
            cost: One,
            listeners: Listeners::default(),
            refused: None,
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RateLimitBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("name", &self.name)
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("max_wait", &self.max_wait)
            .field("cost", &self.cost)
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl<C> RateLimitBuilder<C> {
    /// Records a setting that [`settings`](Self::settings) could not
    /// apply; `build` returns the first such error before any other check.
    pub(crate) fn refuse(mut self, error: ConfigError) -> Self {
        self.refused.get_or_insert(error);
        self
    }

    crate::event::name_and_listeners!(
        "rate limiter",
        "The name carried by this limiter's events and rejections."
    );

    /// At most `count` calls per `per`, on average: one cell every
    /// `per / count` (the emission interval, rounded down to a whole
    /// nanosecond, as governor does). Required.
    pub fn rate(mut self, count: u32, per: Duration) -> Self {
        self.rate = Some((count, per));
        self
    }

    /// At most `burst` cells at once, from rest (at least 1; by default the
    /// rate's count). A request that costs more than the burst can never
    /// pass: it is rejected at once, and its
    /// [`RateLimited::retry_after`] is [`Duration::MAX`].
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Waits up to `wait` for a call over the rate to conform, instead of
    /// rejecting it at once. The call reserves its cells as it is made, so
    /// waiting calls go in the order they were made; a call that would
    /// wait longer is rejected at once, without waiting and without
    /// reserving anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::error::{BoxError, ErrorKind};
    /// use palisade::rate_limit::RateLimitLayer;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limiter = RateLimitLayer::builder()
    ///     .rate(10, Duration::from_secs(1))
    ///     .burst(1)
    ///     .max_wait(Duration::from_millis(150))
    ///     .build()
    ///     .unwrap();
    /// let svc = limiter.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// let start = Instant::now();
    /// let first = svc.clone().oneshot(1); // due at once
    /// let second = svc.clone().oneshot(2); // reserves the cell due at 100 ms
    /// let third = svc.clone().oneshot(3); // would wait 200 ms: rejected now
    /// let (first, second, third) = tokio::join!(first, second, third);
    /// assert_eq!((first.unwrap(), second.unwrap()), (1, 2));
    /// assert_eq!(ErrorKind::of(&third.unwrap_err()), ErrorKind::RateLimited);
    /// assert_eq!(start.elapsed(), Duration::from_millis(100));
    /// # }
    /// ```
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// How many cells each request costs (by default 1): a request of cost
    /// 5 uses what 5 requests of cost 1 would. A cost of 0 always passes
    /// and uses nothing.
    pub fn cost<Req, F>(self, cost: F) -> RateLimitBuilder<CostFn<F>>
    where
        F: Fn(&Req) -> u32 + Send + Sync + 'static,
    {
        RateLimitBuilder {
            name: self.name,
            rate: self.rate,
            burst: self.burst,
            max_wait: self.max_wait,
            cost: CostFn(Arc::new(cost)),
            listeners: self.listeners,
            refused: self.refused,
        }
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// No rate, a rate of zero calls or over a zero or unrepresentable
    /// duration, a rate above one call per nanosecond, a burst of zero or
    /// one whose span (burst × interval) is longer than about 584 years, a
    /// zero or unrepresentable maximum wait.
    pub fn build(self) -> Result<RateLimitLayer<C>, ConfigError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        let Some((count, per)) = self.rate else {
            return Err(ConfigError::new(
                "rate",
                "must be set: call `rate(count, per)`",
            ));
        };
        validate::within("rate", count, 1..=u32::MAX)?;
        validate::positive("rate", per)?;
        let interval = clock::nanos(per) / u64::from(count);
        if interval == 0 {
            return Err(ConfigError::new(
                "rate",
                format!("{count} per {per:?} is more than one call per nanosecond"),
            ));
        }
        let burst = self.burst.unwrap_or(count);
        validate::within("burst", burst, 1..=u32::MAX)?;
        if interval.checked_mul(u64::from(burst)).is_none() {
            return Err(ConfigError::new(
                "burst",
                format!("{burst} cells of {per:?} / {count} span more than about 584 years"),
            ));
        }
        let max_wait = match self.max_wait {
            Some(wait) => {
                validate::positive("max_wait", wait)?;
                clock::nanos(wait)
            }
            None => 0,
        };
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                name: self.name,
                count,
                per,
                epoch: Epoch::now(),
                gcra: Gcra::new(interval, burst),
                max_wait,
                listeners: self.listeners,
            }),
            cost: self.cost,
        })
    }
}
