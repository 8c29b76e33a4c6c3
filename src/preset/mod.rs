//! Putting the layers together: [`ServiceBuilderExt`] and the preset stack,
//! [`Resilience`], whose parts are slots by role.
//!
//! # The recommended order
//!
//! Outermost first, as `ServiceBuilder` lists layers:
//!
//! ```text
//! fallback → total timeout → repeat (retry) → circuit breaker → rate limit
//!          → concurrency (bulkhead) → per-attempt timeout → service
//! ```
//!
//! * **Fallback** outermost: it sees the final outcome, after every retry
//!   and timeout, and is the caller's last answer.
//! * **Total timeout** outside the retry: it bounds what the caller waits,
//!   backoffs included.
//! * **Retry** outside the breaker: each attempt passes the breaker, so an
//!   open breaker stops a retry at once (`CircuitOpen` is not retried by
//!   default), and every attempt is counted.
//! * **Circuit breaker** outside the rate limit and the bulkhead: a call the
//!   breaker rejects never spends the rate or takes a bulkhead place; and a
//!   `BulkheadFull` (our own overload, not the service's) is classified by
//!   the breaker like any error, so give the breaker a classifier that
//!   ignores it if that matters to you.
//! * **Rate limit** inside the repeat: every attempt, retries included,
//!   spends the rate (Resilience4j's order: retry, breaker, rate limiter,
//!   time limiter, bulkhead). Any tower layer fits the slot.
//! * **Bulkhead** outside the per-attempt timeout: the attempt's clock runs
//!   only once the call holds a place, so waiting in the bulkhead's queue
//!   does not eat the attempt's time (the total timeout still bounds it).
//! * **Per-attempt timeout** innermost: a hung attempt is cut off, the
//!   breaker counts it as a failure (and as slow), and the retry may try
//!   again.

mod ext;

pub use self::ext::ServiceBuilderExt;

use tower::Layer;
use tower::layer::util::Identity;

use crate::bulkhead::BulkheadLayer;
use crate::circuit_breaker::CircuitBreakerLayer;
use crate::fallback::FallbackLayer;
use crate::retry::RetryLayer;
use crate::timeout::TimeoutLayer;

/// The preset stack: fallback → total timeout → repeat → circuit breaker →
/// rate limit → concurrency → per-attempt timeout, each slot optional, from
/// one builder. See the [module docs](self) for why that order.
///
/// # Examples
///
/// ```
/// use palisade::Resilience;
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::circuit_breaker::CircuitBreakerLayer;
/// use palisade::error::BoxError;
/// use palisade::fallback::{FallbackLayer, from_sync_fn};
/// use palisade::retry::RetryLayer;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let stack = Resilience::builder()
///     .fallback(FallbackLayer::builder(from_sync_fn(|_| Ok("cached"))).build().unwrap())
///     .total_timeout(TimeoutLayer::new(Duration::from_secs(2)).unwrap())
///     .retry(RetryLayer::builder().max_attempts(3).build().unwrap())
///     .circuit_breaker(CircuitBreakerLayer::builder().build().unwrap())
///     .bulkhead(BulkheadLayer::builder().max_concurrent(64).build().unwrap())
///     .attempt_timeout(TimeoutLayer::new(Duration::from_millis(300)).unwrap())
///     .build();
///
/// let down = service_fn(|_: ()| async { Err::<&str, BoxError>("down".into()) });
/// assert_eq!(stack.layer(down).oneshot(()).await.unwrap(), "cached");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Resilience;

impl Resilience {
    /// Starts a preset with every slot empty; fill the ones you want. An
    /// empty slot is tower's `Identity` layer: it costs nothing at all.
    pub fn builder() -> ResilienceBuilder {
        ResilienceBuilder::default()
    }
}

/// Declares the preset's slots, outermost first, once: the builder, the
/// layer, a setter per slot and the order in which `layer` nests them all
/// follow from this list, so a new slot is one line here (and its typed
/// setters below).
macro_rules! slots {
    ($($(#[$doc:meta])* $slot:ident: $T:ident, $set:ident;)*) => {
        /// Builds a [`ResilienceLayer`]; each slot is optional, and each
        /// part was validated by its own builder. The type records which
        /// slots are filled, so an empty one leaves no trace in the service.
        #[derive(Debug, Clone, Default)]
        #[must_use = "a builder does nothing until `build` is called"]
        pub struct ResilienceBuilder<$($T = Identity),*> {
            $($slot: $T,)*
        }

        /// The preset stack as one layer; made by [`Resilience::builder`].
        #[derive(Debug, Clone)]
        pub struct ResilienceLayer<$($T = Identity),*> {
            $($slot: $T,)*
        }

        impl<$($T),*> ResilienceBuilder<$($T),*> {
            /// Makes the layer.
            pub fn build(self) -> ResilienceLayer<$($T),*> {
                ResilienceLayer { $($slot: self.$slot,)* }
            }
        }

        slots!(@setters [] [$($(#[$doc])* $slot: $T, $set;)*] [$($T),*]);
    };
    // One setter per slot: the slots before it and after it keep their
    // parts and types, its own takes the new part.
    (@setters [$($done:ident: $DT:ident),*] [] [$($All:ident),*]) => {};
    (@setters
        [$($done:ident: $DT:ident),*]
        [$(#[$doc:meta])* $slot:ident: $T:ident, $set:ident; $($(#[$rdoc:meta])* $rest:ident: $RT:ident, $rset:ident;)*]
        [$($All:ident),*]
    ) => {
        impl<$($All),*> ResilienceBuilder<$($All),*> {
            $(#[$doc])*
            pub fn $set<X>(self, layer: X) -> ResilienceBuilder<$($DT,)* X $(, $RT)*> {
                ResilienceBuilder {
                    $($done: self.$done,)*
                    $slot: layer,
                    $($rest: self.$rest,)*
                }
            }
        }
        slots!(@setters
            [$($done: $DT,)* $slot: $T]
            [$($(#[$rdoc])* $rest: $RT, $rset;)*]
            [$($All),*]
        );
    };
}

slots! {
    /// Fills the fallback slot, outermost: it answers what fails in the
    /// end. Any layer fits; [`fallback`](Self::fallback) takes palisade's.
    fallback: F, fallback_slot;
    /// Fills the total-timeout slot: it bounds the whole call, retries and
    /// backoffs included. Any layer fits; see
    /// [`total_timeout`](Self::total_timeout).
    total_timeout: TT, total_timeout_slot;
    /// Fills the repeat slot: what sends a call more than once (a retry;
    /// hedging when it comes). Any layer fits; see [`retry`](Self::retry).
    repeat: R, repeat_slot;
    /// Fills the circuit-breaker slot. Any layer fits; see
    /// [`circuit_breaker`](Self::circuit_breaker).
    circuit_breaker: CB, circuit_breaker_slot;
    /// Fills the rate-limit slot, inside the breaker and the repeat: every
    /// attempt spends the rate. Any tower layer fits.
    rate_limit: RL, rate_limit_slot;
    /// Fills the concurrency slot: what bounds the calls in flight (a
    /// bulkhead; an adaptive limit when it comes). Any layer fits; see
    /// [`bulkhead`](Self::bulkhead).
    concurrency: CC, concurrency_slot;
    /// Fills the per-attempt timeout slot, innermost. Any layer fits; see
    /// [`attempt_timeout`](Self::attempt_timeout).
    attempt_timeout: AT, attempt_timeout_slot;
}

/// palisade's layers, each in its slot by name.
impl<F, TT, R, CB, RL, CC, AT> ResilienceBuilder<F, TT, R, CB, RL, CC, AT> {
    /// The outermost part: answers what fails in the end.
    pub fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ResilienceBuilder<FallbackLayer<H, C, K>, TT, R, CB, RL, CC, AT> {
        self.fallback_slot(layer)
    }

    /// Bounds the whole call, retries and backoffs included.
    pub fn total_timeout<M>(
        self,
        layer: TimeoutLayer<M>,
    ) -> ResilienceBuilder<F, TimeoutLayer<M>, R, CB, RL, CC, AT> {
        self.total_timeout_slot(layer)
    }

    /// Retries failed attempts (the repeat slot).
    pub fn retry<C, B, K>(
        self,
        layer: RetryLayer<C, B, K>,
    ) -> ResilienceBuilder<F, TT, RetryLayer<C, B, K>, CB, RL, CC, AT> {
        self.repeat_slot(layer)
    }

    /// Stops calling a failing service.
    pub fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ResilienceBuilder<F, TT, R, CircuitBreakerLayer<C>, RL, CC, AT> {
        self.circuit_breaker_slot(layer)
    }

    /// Bounds the calls in flight (the concurrency slot), until the
    /// response head, or with
    /// [`cover_body`](crate::bulkhead::BulkheadBuilder::cover_body) until
    /// its body ends.
    pub fn bulkhead<M>(
        self,
        layer: BulkheadLayer<M>,
    ) -> ResilienceBuilder<F, TT, R, CB, RL, BulkheadLayer<M>, AT> {
        self.concurrency_slot(layer)
    }

    /// Bounds each attempt.
    pub fn attempt_timeout<M>(
        self,
        layer: TimeoutLayer<M>,
    ) -> ResilienceBuilder<F, TT, R, CB, RL, CC, TimeoutLayer<M>> {
        self.attempt_timeout_slot(layer)
    }
}

impl<S, F, TT, R, CB, RL, CC, AT> Layer<S> for ResilienceLayer<F, TT, R, CB, RL, CC, AT>
where
    AT: Layer<S>,
    CC: Layer<AT::Service>,
    RL: Layer<CC::Service>,
    CB: Layer<RL::Service>,
    R: Layer<CB::Service>,
    TT: Layer<R::Service>,
    F: Layer<TT::Service>,
{
    type Service = F::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let attempted = self.attempt_timeout.layer(inner);
        let bounded = self.concurrency.layer(attempted);
        let limited = self.rate_limit.layer(bounded);
        let broken = self.circuit_breaker.layer(limited);
        let repeated = self.repeat.layer(broken);
        let timed = self.total_timeout.layer(repeated);
        self.fallback.layer(timed)
    }
}
