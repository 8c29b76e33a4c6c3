//! Putting the layers together: [`ServiceBuilderExt`] and the preset stack,
//! [`Resilience`], whose parts are slots by role.
//!
//! # The recommended order
//!
//! Outermost first, as `ServiceBuilder` lists layers:
//!
//! ```text
//! fallback → total timeout → repeat (retry or hedge) → circuit breaker → rate limit
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
//! * **Hedge**, in the retry's place (one or the other: the hedge's
//!   fallback mode is a retry without a backoff): inside the total
//!   timeout, which bounds the whole hedged call, and outside the breaker,
//!   the limits and the per-attempt timeout, so that each copy is judged,
//!   limited and timed on its own, and a loser cancelled is counted by
//!   the breaker as neither success nor failure. This is Polly's place for
//!   it and .NET's standard hedging handler's (total timeout, hedging,
//!   then per endpoint rate limiter, breaker and attempt timeout).
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
//!
//! # One clock reading per call
//!
//! The parts that need the time a call starts (the timeouts, the retry
//! budget, a breaker that times slow calls, a rate limiter, an adaptive
//! limit, a throttle) share one reading of the clock in the preset,
//! instead of reading it each (about 22 ns a reading on the machine of
//! BENCHMARKS.md): the built stack is a [`SharedReading`] whose `call`
//! lends it to the parts below for the length of that `call`. Nothing but
//! the preset's own parts runs in that time. The service the preset wraps
//! is called through an [`OwnReading`], and reads the clock itself, as does
//! any layer it calls; so is a layer given whole to a slot (a
//! [`GivenWhole`](part::GivenWhole)), which may do anything in its `call`,
//! and the parts below it share a reading of their own, taken after it.
//! A later attempt, made by the retry from its future, reads the clock
//! anew. A deadline thus runs from the preset's `call`, earlier than the
//! part's own by what the parts above it did in theirs: nanoseconds, or
//! the rare short wait for the retry budget's lock (taken by a request
//! once per tenth of the budget's `ttl` on each thread); a user's code
//! between them is never counted
//! (`a_presets_shared_reading_stops_at_the_service_it_wraps`,
//! `the_parts_below_a_layer_given_whole_read_the_clock_after_it`).

mod ext;
pub mod part;
mod reading;
mod standard;

pub use self::ext::ServiceBuilderExt;
pub use self::reading::{OwnReading, SharedReading};
#[cfg(feature = "tonic")]
pub use self::standard::GrpcStack;
#[cfg(feature = "http")]
pub use self::standard::HttpStack;

use std::time::Duration;

use tower::Layer;
use tower::layer::util::Identity;

use self::part::{Open, Part, Ready, SetTimeout, role};
use crate::classify::DefaultClassifier;
use crate::error::ConfigError;
use crate::event::{Listener, Listeners};
use crate::fallback::{FallbackBuilder, FallbackLayer};

/// The preset stack: fallback → total timeout → repeat → circuit breaker →
/// rate limit → concurrency → per-attempt timeout, each slot optional, from
/// one builder that gives one classifier to every part that judges
/// outcomes. See the [module docs](self) for why that order.
///
/// Start from [`builder`](Self::builder) (every slot empty), or from a
/// standard stack for your protocol, [`http`](Self::http) or
/// [`grpc`](Self::grpc), whose parts are set and can each be adjusted.
///
/// # Examples
///
/// ```
/// use palisade::Resilience;
/// use palisade::error::BoxError;
/// use palisade::fallback::from_sync_fn;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let stack = Resilience::builder()
///     .fallback(from_sync_fn(|_| Ok("cached")))
///     .total_timeout(Duration::from_secs(2))
///     .retry(|retry| retry.max_attempts(3))
///     .circuit_breaker(|breaker| breaker.name("items"))
///     .bulkhead(|bulkhead| bulkhead.max_concurrent(64))
///     .attempt_timeout(Duration::from_millis(300))
///     .build()?;
///
/// let down = service_fn(|_: ()| async { Err::<&str, BoxError>("down".into()) });
/// assert_eq!(stack.layer(down).oneshot(()).await?, "cached");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Resilience;

impl Resilience {
    /// Starts a preset with every slot empty and the
    /// [`DefaultClassifier`] (every `Err` is a failure); fill the slots you
    /// want. An empty slot is tower's `Identity` layer: it costs nothing
    /// at all.
    pub fn builder() -> ResilienceBuilder {
        ResilienceBuilder::default()
    }
}

/// Declares the preset's slots, outermost first, once: the builder, the
/// layer, a setter per slot, `build` and the order in which `layer` nests
/// them all follow from this list, so a new slot is one line here (and its
/// typed setters below).
macro_rules! slots {
    ($($(#[$doc:meta])* $slot:ident: $T:ident, $set:ident, $fill:ident, $label:literal;)*) => {
        /// Builds a [`ResilienceLayer`]: the stack's classifier `C`, and a
        /// part in each slot (empty, a builder validated by
        /// [`build`](Self::build), or a layer given whole). The type records
        /// which slots are filled, so an empty one leaves no trace in the
        /// service.
        #[derive(Debug, Clone)]
        #[must_use = "a builder does nothing until `build` is called"]
        pub struct ResilienceBuilder<C = DefaultClassifier, $($T = Identity),*> {
            classifier: C,
            listeners: Listeners,
            $($slot: $T,)*
        }

        impl Default for ResilienceBuilder {
            fn default() -> Self {
                Self {
                    classifier: DefaultClassifier,
                    listeners: Listeners::default(),
                    $($slot: Identity::new(),)*
                }
            }
        }

        /// The preset stack as one layer; made by [`ResilienceBuilder::build`].
        /// Each slot's layer can be read back (for its handle, say).
        #[derive(Debug, Clone)]
        pub struct ResilienceLayer<$($T = Identity),*> {
            $($slot: $T,)*
        }

        impl<$($T),*> ResilienceLayer<$($T),*> {
            $(
                #[doc = concat!("The layer in the ", $label, " slot.")]
                pub fn $slot(&self) -> &$T {
                    &self.$slot
                }
            )*
        }

        impl<C, $($T: Part),*> ResilienceBuilder<C, $($T),*> {
            /// Validates every part and makes the layer.
            ///
            /// # Errors
            /// The first part whose configuration cannot work, the parts
            /// checked outermost first, with the slot named in the error
            /// ([`ConfigError::part`]).
            // The preset's parts are its type: naming them is the point.
            #[allow(clippy::type_complexity)]
            pub fn build(self) -> Result<ResilienceLayer<$($T::Layer),*>, ConfigError> {
                let listeners = self.listeners;
                Ok(ResilienceLayer {
                    $($slot: {
                        let name = self.$slot.name().unwrap_or($label);
                        listeners
                            .iter()
                            .fold(self.$slot, |part, listener| part.listen(listener))
                            .build()
                            .map_err(|e| e.in_part(name))?
                    },)*
                })
            }
        }

        slots!(@setters [] [$($(#[$doc])* $slot: $T, $set, $fill;)*] [$($T),*]);
    };
    // One setter per slot: the slots before it and after it keep their
    // parts and types, its own takes the new part.
    (@setters [$($done:ident: $DT:ident),*] [] [$($All:ident),*]) => {};
    (@setters
        [$($done:ident: $DT:ident),*]
        [$(#[$doc:meta])* $slot:ident: $T:ident, $set:ident, $fill:ident; $($(#[$rdoc:meta])* $rest:ident: $RT:ident, $rset:ident, $rfill:ident;)*]
        [$($All:ident),*]
    ) => {
        impl<C, $($All),*> ResilienceBuilder<C, $($All),*> {
            $(#[$doc])*
            pub fn $set<X>(self, layer: X) -> ResilienceBuilder<C, $($DT,)* Ready<X> $(, $RT)*> {
                self.$fill(|_, _| Ready(layer))
            }

            /// Replaces this slot's part with what `make` returns from the
            /// old one and the stack's classifier; every other slot keeps
            /// its part.
            fn $fill<P>(self, make: impl FnOnce($T, &C) -> P) -> ResilienceBuilder<C, $($DT,)* P $(, $RT)*> {
                let $slot = make(self.$slot, &self.classifier);
                ResilienceBuilder {
                    classifier: self.classifier,
                    listeners: self.listeners,
                    $($done: self.$done,)*
                    $slot,
                    $($rest: self.$rest,)*
                }
            }
        }
        slots!(@setters
            [$($done: $DT,)* $slot: $T]
            [$($(#[$rdoc])* $rest: $RT, $rset, $rfill;)*]
            [$($All),*]
        );
    };
}

slots! {
    /// Fills the respond slot, outermost, with any layer, given whole: it
    /// turns the stack's rejections into what the protocol's callers
    /// expect (the gRPC stack puts
    /// `respond::GrpcRejectionLayer` here).
    respond: RS, respond_slot, fill_respond, "respond";
    /// Fills the fallback slot with any layer, given whole: it answers
    /// what fails in the end. [`fallback`](Self::fallback) takes palisade's.
    fallback: F, fallback_slot, fill_fallback, "fallback";
    /// Fills the total-timeout slot with any layer, given whole: it bounds
    /// the whole call, retries and backoffs included. See
    /// [`total_timeout`](Self::total_timeout).
    total_timeout: TT, total_timeout_slot, fill_total_timeout, "total_timeout";
    /// Fills the repeat slot with any layer, given whole: what sends a call
    /// more than once (a retry or a hedge). See [`retry`](Self::retry) and
    /// [`hedge`](Self::hedge).
    repeat: R, repeat_slot, fill_repeat, "retry";
    /// Fills the circuit-breaker slot with any layer, given whole. See
    /// [`circuit_breaker`](Self::circuit_breaker) and
    /// [`throttle`](Self::throttle).
    circuit_breaker: CB, circuit_breaker_slot, fill_circuit_breaker, "circuit_breaker";
    /// Fills the rate-limit slot, inside the breaker and the repeat, with
    /// any layer, given whole: every attempt spends the rate. See
    /// [`rate_limit`](Self::rate_limit).
    rate_limit: RL, rate_limit_slot, fill_rate_limit, "rate_limit";
    /// Fills the concurrency slot with any layer, given whole: what bounds
    /// the calls in flight. See [`bulkhead`](Self::bulkhead) and
    /// [`adaptive_limit`](Self::adaptive_limit).
    concurrency: CC, concurrency_slot, fill_concurrency, "bulkhead";
    /// Fills the per-attempt timeout slot, innermost, with any layer, given
    /// whole. See [`attempt_timeout`](Self::attempt_timeout).
    attempt_timeout: AT, attempt_timeout_slot, fill_attempt_timeout, "attempt_timeout";
}

/// The stack's classifier: given to every part that judges outcomes.
impl<C, RS, TT, RL, CC, AT> ResilienceBuilder<C, RS, Identity, TT, Identity, Identity, RL, CC, AT> {
    /// The classifier that every part that judges outcomes gets (the
    /// retry or the hedge, the circuit breaker and the fallback): one
    /// decision, in one place, of what a failure is.
    ///
    /// The classifier must judge what each part sees: the breaker the
    /// results of the service below it (its own error type), the retry and
    /// the fallback those of the layers below them (`BoxError`). The
    /// built-in classifiers are generic over the error; a
    /// [`classify_fn`](crate::classify::classify_fn) over one error type
    /// serves only a service whose error is `BoxError`. It sets nothing
    /// else: the retry still copies requests by `Clone` (a
    /// `reqwest::Request` needs `.retry(|retry|
    /// retry.requests(ReqwestRequests))`; the standard stacks set it).
    ///
    /// Set it before those parts: a part takes the stack's classifier when
    /// its setter fills the slot, and this method is not there once one of
    /// them is filled (so no part can be left with another classifier
    /// unnoticed). A part's own classifier still overrides it:
    /// `.retry(|retry| retry.classifier(mine))`.
    ///
    /// ```
    /// use palisade::Resilience;
    /// use palisade::classify::{Outcome, classify_fn};
    /// use palisade::error::BoxError;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // A service whose answer 503 is a failure, though it comes as `Ok`.
    /// let busy = classify_fn(|result: &Result<u16, BoxError>| match result {
    ///     Ok(503) | Err(_) => Outcome::Failure,
    ///     Ok(_) => Outcome::Success,
    /// });
    /// let stack = Resilience::builder()
    ///     .classifier(busy)
    ///     .retry(|retry| retry.max_attempts(2).no_budget())
    ///     .circuit_breaker(|breaker| breaker.name("numbers"))
    ///     .build()?;
    /// let svc = stack.layer(service_fn(|_: ()| async { Ok::<u16, BoxError>(503) }));
    /// assert_eq!(svc.oneshot(()).await?, 503); // retried once, then handed back
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Too late, once a part that judges outcomes is in:
    ///
    /// ```compile_fail
    /// use palisade::Resilience;
    /// use palisade::classify::DefaultClassifier;
    ///
    /// let late = Resilience::builder()
    ///     .retry(|retry| retry)
    ///     .classifier(DefaultClassifier); // no method `classifier` here
    /// ```
    pub fn classifier<C2>(
        self,
        classifier: C2,
    ) -> ResilienceBuilder<C2, RS, Identity, TT, Identity, Identity, RL, CC, AT> {
        ResilienceBuilder {
            classifier,
            listeners: self.listeners,
            respond: self.respond,
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            repeat: self.repeat,
            circuit_breaker: self.circuit_breaker,
            rate_limit: self.rate_limit,
            concurrency: self.concurrency,
            attempt_timeout: self.attempt_timeout,
        }
    }
}

/// palisade's layers, each in its slot by name, each adjusted through its
/// own builder.
impl<C, RS, F, TT, R, CB, RL, CC, AT> ResilienceBuilder<C, RS, F, TT, R, CB, RL, CC, AT> {
    /// Registers `listener` on every one of palisade's parts in the stack,
    /// the ones set before this call and after it alike (it is applied
    /// when the stack is built): one event stream for the whole stack, each
    /// event still carrying its layer's name. A layer given whole through a
    /// `*_slot` setter keeps its own listeners.
    ///
    /// ```
    /// use palisade::Resilience;
    /// use palisade::error::BoxError;
    /// use palisade::event::Event;
    /// use std::sync::{Arc, Mutex};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let stack = Resilience::builder()
    ///     .on_event(move |event: &Event<'_>| log.lock().unwrap().push(event.name().to_string()))
    ///     .retry(|retry| retry.name("orders"))
    ///     .bulkhead(|bulkhead| bulkhead.name("pool"))
    ///     .build()?;
    /// let svc = stack.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    /// svc.oneshot(()).await?;
    /// let seen = seen.lock().unwrap();
    /// assert!(seen.iter().any(|name| name == "orders"));
    /// assert!(seen.iter().any(|name| name == "pool"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_event(mut self, listener: impl Listener) -> Self {
        self.listeners.push(std::sync::Arc::new(listener));
        self
    }

    /// The outermost of palisade's parts: answers what fails in the end,
    /// from `handler` (see [`FallbackLayer::builder`]), judging failures
    /// with the stack's classifier.
    pub fn fallback<H>(
        self,
        handler: H,
    ) -> ResilienceBuilder<C, RS, FallbackBuilder<H, C>, TT, R, CB, RL, CC, AT>
    where
        C: Clone,
    {
        self.fallback_with(handler, |fallback| fallback)
    }

    /// [`fallback`](Self::fallback), adjusted by `configure`: say
    /// `|fallback| fallback.only_on(ErrorKind::CircuitOpen)`.
    pub fn fallback_with<H, P>(
        self,
        handler: H,
        configure: impl FnOnce(FallbackBuilder<H, C>) -> P,
    ) -> ResilienceBuilder<C, RS, P, TT, R, CB, RL, CC, AT>
    where
        C: Clone,
    {
        self.fill_fallback(|_, classifier| {
            configure(FallbackLayer::builder(handler).classifier(classifier.clone()))
        })
    }

    /// Bounds the whole call, retries and backoffs included, to `timeout`.
    /// The timeout is named `"total"` (its events and its
    /// [`Elapsed`](crate::error::Elapsed) say so) unless the slot's
    /// builder was named otherwise.
    #[allow(clippy::type_complexity)] // the preset's parts are its type
    pub fn total_timeout(
        self,
        timeout: Duration,
    ) -> ResilienceBuilder<C, RS, F, <TT as Open<role::TotalTimeout, C>>::Builder, R, CB, RL, CC, AT>
    where
        TT: Open<role::TotalTimeout, C>,
        TT::Builder: SetTimeout,
    {
        self.total_timeout_with(|total| total.set_timeout(timeout))
    }

    /// Adjusts the total timeout through its builder: say
    /// `|total| total.timeout(Duration::from_secs(5)).cover_body()`.
    pub fn total_timeout_with<P>(
        self,
        configure: impl FnOnce(<TT as Open<role::TotalTimeout, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, P, R, CB, RL, CC, AT>
    where
        TT: Open<role::TotalTimeout, C>,
    {
        self.fill_total_timeout(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Retries failed attempts (the repeat slot), configured by `configure`
    /// from the slot's builder: a fresh [`RetryBuilder`](crate::retry::RetryBuilder) holding the
    /// stack's classifier if the slot was empty, or the builder the
    /// standard stack set, with everything it set.
    pub fn retry<P>(
        self,
        configure: impl FnOnce(<R as Open<role::Retry, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, P, CB, RL, CC, AT>
    where
        R: Open<role::Retry, C>,
    {
        self.fill_repeat(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Hedges slow calls (the repeat slot, in the retry's place: see
    /// [where hedging goes](crate::hedge#where-it-goes-in-a-stack)),
    /// configured by `configure` from the slot's builder: a fresh
    /// [`HedgeBuilder`](crate::hedge::HedgeBuilder) holding the stack's
    /// classifier if the slot was empty; in a standard stack, whose repeat
    /// slot holds a retry, a hedge with that retry's classifier, request
    /// copying and budget, which replaces the retry.
    ///
    /// ```
    /// use palisade::Resilience;
    /// use std::time::Duration;
    ///
    /// let stack = Resilience::http()
    ///     .hedge(|hedge| hedge.max_attempts(3).delay_percentile(95.0, 100, Duration::from_secs(10)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(stack.repeat().budget().is_some(), true);
    /// ```
    pub fn hedge<P>(
        self,
        configure: impl FnOnce(<R as Open<role::Hedge, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, P, CB, RL, CC, AT>
    where
        R: Open<role::Hedge, C>,
    {
        self.fill_repeat(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Stops calling a failing service, configured by `configure` from the
    /// slot's builder: a fresh [`CircuitBreakerBuilder`](crate::circuit_breaker::CircuitBreakerBuilder) holding the stack's
    /// classifier if the slot was empty, or the standard stack's.
    pub fn circuit_breaker<P>(
        self,
        configure: impl FnOnce(<CB as Open<role::CircuitBreaker, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, R, P, RL, CC, AT>
    where
        CB: Open<role::CircuitBreaker, C>,
    {
        self.fill_circuit_breaker(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Rejects calls locally while the service fails (the circuit-breaker
    /// slot, in the breaker's place), configured by `configure` from a
    /// fresh [`ThrottleBuilder`](crate::adaptive::ThrottleBuilder) holding
    /// the stack's classifier: SRE's client-side adaptive throttling, which
    /// sheds a share of calls that grows as the service accepts fewer of
    /// them, where a breaker sheds all or nothing. On a standard stack it
    /// replaces the breaker. Inside the retry, so each attempt is counted
    /// and may be turned away.
    ///
    /// ```
    /// use palisade::Resilience;
    ///
    /// let stack = Resilience::http().throttle(|throttle| throttle.name("search").k(1.5)).build().unwrap();
    /// assert_eq!(stack.circuit_breaker().handle().name(), "search");
    /// ```
    pub fn throttle<P>(
        self,
        configure: impl FnOnce(<CB as Open<role::Throttle, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, R, P, RL, CC, AT>
    where
        CB: Open<role::Throttle, C>,
    {
        self.fill_circuit_breaker(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Bounds the rate of attempts (the rate-limit slot), configured by
    /// `configure` from the slot's
    /// [`RateLimitBuilder`](crate::rate_limit::RateLimitBuilder), which has
    /// no rate until one is set: `.rate_limit(|limit| limit.rate(100,
    /// Duration::from_secs(1)))`. Inside the breaker, so a call the breaker
    /// rejects spends nothing, and inside the retry, so every attempt does.
    pub fn rate_limit<P>(
        self,
        configure: impl FnOnce(<RL as Open<role::RateLimit, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, R, CB, P, CC, AT>
    where
        RL: Open<role::RateLimit, C>,
    {
        self.fill_rate_limit(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Bounds the calls in flight (the concurrency slot), configured by
    /// `configure` from the slot's [`BulkheadBuilder`](crate::bulkhead::BulkheadBuilder): until the response
    /// head, or with [`cover_body`](crate::bulkhead::BulkheadBuilder::cover_body) until its
    /// body ends.
    pub fn bulkhead<P>(
        self,
        configure: impl FnOnce(<CC as Open<role::Bulkhead, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, R, CB, RL, P, AT>
    where
        CC: Open<role::Bulkhead, C>,
    {
        self.fill_concurrency(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Bounds the calls in flight with a limit that moves (the concurrency
    /// slot, in the bulkhead's place), configured by `configure` from a
    /// fresh [`AdaptiveLimitBuilder`](crate::adaptive::AdaptiveLimitBuilder)
    /// holding the stack's classifier. On a standard stack it replaces the
    /// bulkhead. Inside the retry and the breaker, outside the per-attempt
    /// timeout: each attempt is a sample, and an attempt cut off by the
    /// timeout is a failure the algorithm backs off from.
    ///
    /// ```
    /// use palisade::Resilience;
    /// use palisade::adaptive::Gradient2;
    ///
    /// let stack = Resilience::http()
    ///     .adaptive_limit(|limit| limit.name("inventory").algorithm(Gradient2::default()))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(stack.concurrency().handle().limit(), 20);
    /// ```
    pub fn adaptive_limit<P>(
        self,
        configure: impl FnOnce(<CC as Open<role::AdaptiveLimit, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, R, CB, RL, P, AT>
    where
        CC: Open<role::AdaptiveLimit, C>,
    {
        self.fill_concurrency(|slot, classifier| configure(slot.open(classifier)))
    }

    /// Bounds each attempt to `timeout`. The timeout is named `"attempt"`
    /// unless the slot's builder was named otherwise.
    #[allow(clippy::type_complexity)] // the preset's parts are its type
    pub fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ResilienceBuilder<
        C,
        RS,
        F,
        TT,
        R,
        CB,
        RL,
        CC,
        <AT as Open<role::AttemptTimeout, C>>::Builder,
    >
    where
        AT: Open<role::AttemptTimeout, C>,
        AT::Builder: SetTimeout,
    {
        self.attempt_timeout_with(|attempt| attempt.set_timeout(timeout))
    }

    /// Adjusts the per-attempt timeout through its builder.
    pub fn attempt_timeout_with<P>(
        self,
        configure: impl FnOnce(<AT as Open<role::AttemptTimeout, C>>::Builder) -> P,
    ) -> ResilienceBuilder<C, RS, F, TT, R, CB, RL, CC, P>
    where
        AT: Open<role::AttemptTimeout, C>,
    {
        self.fill_attempt_timeout(|slot, classifier| configure(slot.open(classifier)))
    }
}

impl<S, RS, F, TT, R, CB, RL, CC, AT> Layer<S> for ResilienceLayer<RS, F, TT, R, CB, RL, CC, AT>
where
    AT: Layer<OwnReading<S>>,
    CC: Layer<AT::Service>,
    RL: Layer<CC::Service>,
    CB: Layer<RL::Service>,
    R: Layer<CB::Service>,
    TT: Layer<R::Service>,
    F: Layer<TT::Service>,
    RS: Layer<F::Service>,
{
    type Service = SharedReading<RS::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        let attempted = self.attempt_timeout.layer(OwnReading::new(inner));
        let bounded = self.concurrency.layer(attempted);
        let limited = self.rate_limit.layer(bounded);
        let broken = self.circuit_breaker.layer(limited);
        let repeated = self.repeat.layer(broken);
        let timed = self.total_timeout.layer(repeated);
        let fallen_back = self.fallback.layer(timed);
        SharedReading::new(self.respond.layer(fallen_back))
    }
}
