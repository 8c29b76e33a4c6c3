use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use tokio::time::Instant;

use super::{Bulkhead, BulkheadHandle};
use crate::cover::{self, Head};
use crate::error::{BulkheadFull, ConfigError};
use crate::event::Listeners;
use crate::registry::{Fork, Instance};
use crate::semaphore::Semaphore;
use crate::validate;

/// What every service of one bulkhead layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// The limit it was made with (a handle may move it since).
    pub(crate) configured: u32,
    pub(crate) max_queue: u32,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) semaphore: Semaphore,
    pub(crate) listeners: Listeners,
}

impl Shared {
    /// The error of a refused call: the bulkhead's name and limits, and how
    /// long the call waited if it did.
    #[cold]
    pub(crate) fn rejection(&self, after_wait: bool) -> BulkheadFull {
        BulkheadFull::new(
            self.name.clone(),
            self.listeners.key().cloned(),
            self.semaphore.limit(),
            self.max_queue,
            if after_wait { self.max_wait } else { None },
        )
    }

    /// Tells listeners how many calls are in flight now.
    #[inline]
    pub(crate) fn report_in_flight(&self) {
        self.listeners
            .emit(&self.name, || super::BulkheadEvent::InFlight {
                in_flight: self.semaphore.in_use(),
            });
    }
}

/// Applies a [`Bulkhead`] to a service.
///
/// One layer is one bulkhead: every service it wraps and every clone of them
/// draw from the same permits and queue. (tower's `ConcurrencyLimitLayer`
/// makes a new semaphore for each `layer()` call; this one does not.)
///
/// `M` is the part of the call the permit covers: the call up to the
/// response head ([`Head`], the default), or also the response body
/// ([`cover::Body`], made by [`BulkheadBuilder::cover_body`]).
///
/// Made by [`BulkheadLayer::builder`]; see the [module docs](super).
pub struct BulkheadLayer<M = Head> {
    shared: Arc<Shared>,
    _mode: PhantomData<fn() -> M>,
}

impl<M> Clone for BulkheadLayer<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for BulkheadLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("name", &self.shared.name)
            .field("max_concurrent", &self.shared.semaphore.limit())
            .field("max_queue", &self.shared.max_queue)
            .field("max_wait", &self.shared.max_wait)
            .field("covers", &cover::name::<M>())
            .finish()
    }
}

impl BulkheadLayer {
    /// Starts configuring a bulkhead.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder::default()
    }
}

impl<M> BulkheadLayer<M> {
    /// A handle to read this bulkhead's counts.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(self.shared.clone())
    }
}

/// A snapshot of a bulkhead, from [`BulkheadLayer::metrics`] (and, for
/// each key of a [keyed](crate::keyed) layer, from its handle's
/// [`instances`](crate::keyed::KeyedHandle::instances)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadMetrics {
    /// Calls holding a permit.
    pub in_flight: u32,
    /// Calls waiting in the queue.
    pub queued: u32,
    /// The most calls in flight at once.
    pub max_concurrent: u32,
}

impl<M> BulkheadLayer<M> {
    /// A snapshot of the bulkhead's counts now.
    pub fn metrics(&self) -> BulkheadMetrics {
        let semaphore = &self.shared.semaphore;
        BulkheadMetrics {
            in_flight: semaphore.in_use(),
            queued: semaphore.queued(),
            max_concurrent: semaphore.limit(),
        }
    }
}

/// A [keyed](crate::keyed) layer makes one bulkhead per key from this one.
impl<M: 'static> Instance for BulkheadLayer<M> {
    type Snapshot = BulkheadMetrics;

    /// A bulkhead with this one's limits (its limit as it is now, if a
    /// handle moved it) and listeners, and no call in flight.
    fn fork(&self, fork: &Fork) -> Self {
        let shared = &self.shared;
        let limit = shared.semaphore.limit();
        Self {
            shared: Arc::new(Shared {
                name: shared.name.clone(),
                configured: limit,
                max_queue: shared.max_queue,
                max_wait: shared.max_wait,
                semaphore: Semaphore::new(limit, shared.max_queue, shared.max_wait),
                listeners: shared.listeners.for_key(fork.key().clone()),
            }),
            _mode: PhantomData,
        }
    }

    /// Services, permits (in a future or a body) and queued calls hold the
    /// bulkhead.
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// No call in flight or queued, and the limit it was made with.
    fn is_fresh(&self, _: Instant) -> bool {
        let semaphore = &self.shared.semaphore;
        semaphore.in_use() == 0
            && semaphore.queued() == 0
            && semaphore.limit() == self.shared.configured
    }

    fn snapshot(&self) -> BulkheadMetrics {
        self.metrics()
    }
}

impl<S, M> Layer<S> for BulkheadLayer<M> {
    type Service = Bulkhead<S, M>;

    fn layer(&self, inner: S) -> Bulkhead<S, M> {
        Bulkhead::from_shared(inner, self.shared.clone())
    }
}

/// The most calls a bulkhead may admit or queue.
pub const MAX_BULKHEAD_PERMITS: u32 = Semaphore::MAX_PERMITS;

/// Configures a [`BulkheadLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"bulkhead"` |
/// | [`max_concurrent`](Self::max_concurrent) | 100 |
/// | [`max_queue`](Self::max_queue) | 0: a call that finds every permit taken is refused at once |
/// | [`max_wait`](Self::max_wait) | none: a queued call waits until a permit frees up (bound it with a timeout above, or here) |
/// | [`cover_body`](Self::cover_body) | not set: the permit is given back when the response head arrives |
#[must_use = "a builder does nothing until `build` is called"]
pub struct BulkheadBuilder<M = Head> {
    name: Arc<str>,
    max_concurrent: u32,
    max_queue: u32,
    max_wait: Option<Duration>,
    listeners: Listeners,
    _mode: PhantomData<fn() -> M>,
}

impl Default for BulkheadBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("bulkhead"),
            max_concurrent: 100,
            max_queue: 0,
            max_wait: None,
            listeners: Listeners::default(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for BulkheadBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadBuilder")
            .field("name", &self.name)
            .field("max_concurrent", &self.max_concurrent)
            .field("max_queue", &self.max_queue)
            .field("max_wait", &self.max_wait)
            .field("listeners", &self.listeners)
            .field("covers", &cover::name::<M>())
            .finish()
    }
}

impl BulkheadBuilder {
    /// Holds each call's permit until its `http::Response` body ends or is
    /// dropped, not only until the response head arrives (feature `http`).
    ///
    /// The service's responses become `http::Response<`[`ResponseBody<B>`](super::ResponseBody)`>`:
    /// the body holds the permit and gives it back as soon as it reports
    /// [`is_end_stream`](http_body::Body::is_end_stream), yields its last
    /// frame or an error, or is dropped. A response whose body is empty
    /// gives the permit back with the head. A call that fails gives it back
    /// with its error, as in the default mode. See
    /// [which part of a call a layer covers](crate::cover).
    ///
    /// Without this, a bulkhead of N admits N calls at once, but not N
    /// bodies: a caller that got its head may stream its body for as long
    /// as it likes while the permit serves the next call.
    ///
    /// # Examples
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use palisade::BoxError;
    /// use palisade::bulkhead::BulkheadLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = BulkheadLayer::builder().max_concurrent(2).cover_body().build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|_: ()| async {
    ///     Ok::<_, BoxError>(http::Response::new(Full::new(&b"hello"[..])))
    /// }));
    ///
    /// let response = svc.oneshot(()).await?;
    /// assert_eq!(handle.in_flight(), 1, "the body holds the permit");
    /// let body = response.into_body().collect().await?.to_bytes();
    /// assert_eq!(&body[..], b"hello");
    /// assert_eq!(handle.in_flight(), 0, "given back when the body ended");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "http")]
    pub fn cover_body(self) -> BulkheadBuilder<cover::Body> {
        BulkheadBuilder {
            name: self.name,
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            listeners: self.listeners,
            _mode: PhantomData,
        }
    }
}

impl<M> BulkheadBuilder<M> {
    crate::event::name_and_listeners!("bulkhead", "The name carried by this bulkhead's events.");

    /// At most this many calls in flight at once (1 to 2^30).
    pub fn max_concurrent(mut self, calls: u32) -> Self {
        self.max_concurrent = calls;
        self
    }

    /// At most this many calls waiting for a permit, first come first served
    /// (0 to 2^30).
    pub fn max_queue(mut self, calls: u32) -> Self {
        self.max_queue = calls;
        self
    }

    /// A queued call waits at most this long, then fails with
    /// [`BulkheadFull`](crate::error::BulkheadFull).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// Zero or more than 2^30 concurrent calls, a queue longer than 2^30, a
    /// zero or unrepresentable maximum wait, a maximum wait without a queue.
    pub fn build(self) -> Result<BulkheadLayer<M>, ConfigError> {
        validate::within(
            "max_concurrent",
            self.max_concurrent,
            1..=MAX_BULKHEAD_PERMITS,
        )?;
        validate::within("max_queue", self.max_queue, 0..=MAX_BULKHEAD_PERMITS)?;
        if let Some(wait) = self.max_wait {
            validate::positive("max_wait", wait)?;
            if self.max_queue == 0 {
                return Err(ConfigError::new(
                    "max_wait",
                    "has no effect without a queue; set max_queue too",
                ));
            }
        }
        Ok(BulkheadLayer {
            shared: Arc::new(Shared {
                name: self.name,
                configured: self.max_concurrent,
                max_queue: self.max_queue,
                max_wait: self.max_wait,
                semaphore: Semaphore::new(self.max_concurrent, self.max_queue, self.max_wait),
                listeners: self.listeners,
            }),
            _mode: PhantomData,
        })
    }
}
