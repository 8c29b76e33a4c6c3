//! A circuit breaker: stop calling a service that is failing, give it time
//! to recover, then probe it carefully.
//!
//! # States
//!
//! * **Closed**: calls go through; their outcomes (from the shared
//!   [`Classify`](crate::classify::Classify)er) fill a sliding window.
//!   The breaker trips to Open when, once the window holds
//!   [`minimum_calls`](CircuitBreakerBuilder::minimum_calls),
//!   the failure rate reaches [`failure_rate_threshold`](CircuitBreakerBuilder::failure_rate_threshold)
//!   or the slow-call rate (calls longer than [`slow_call_duration`](CircuitBreakerBuilder::slow_call_duration),
//!   whatever their outcome) reaches [`slow_call_rate_threshold`](CircuitBreakerBuilder::slow_call_rate_threshold);
//!   or, however few calls the window holds, when the last
//!   [`consecutive_failures`](CircuitBreakerBuilder::consecutive_failures) calls all failed.
//!   An [`Ignored`](crate::classify::Outcome::Ignored) outcome counts neither way.
//! * **Open**: every call fails at once with [`CircuitOpen`],
//!   which says how long until the breaker may admit a call again; the inner
//!   service is not touched. After [`wait_duration`](CircuitBreakerBuilder::wait_duration)
//!   (or the next delay of [`wait_backoff`](CircuitBreakerBuilder::wait_backoff), which grows
//!   with each re-open and starts over once the breaker closes), the first
//!   call moves the breaker to HalfOpen. No timer task is involved.
//! * **HalfOpen**: [`half_open_calls`](CircuitBreakerBuilder::half_open_calls) probe
//!   calls go through; others are rejected as if open. Once all probes
//!   finished, the breaker closes (with an empty window) if their failure and
//!   slow-call rates are below the thresholds, else opens again. A probe whose
//!   future is dropped (cancelled, or timed out by a layer above), or whose
//!   outcome is `Ignored`, gives its permit back; a half-open stay whose
//!   probes are all still out after
//!   [`max_half_open_duration`](CircuitBreakerBuilder::max_half_open_duration)
//!   ends by opening again: the breaker is never stuck half-open.
//! * Set by hand through a [`CircuitBreakerHandle`]: **ForcedOpen** (rejects
//!   everything), **Disabled** (admits everything, records nothing),
//!   **MetricsOnly** (records and emits the "rate exceeded" events, never
//!   opens). [`reset`](CircuitBreakerHandle::reset) closes it again.
//!
//! Every transition starts a new generation; the outcome of a call that
//! began in an earlier generation is dropped, so a slow call admitted before
//! the breaker opened cannot close or re-open it later.
//!
//! # When a call ends
//!
//! A call's outcome is recorded when it is known. For most classifiers
//! that is the response head (or the error). A gRPC answer usually carries
//! its status in the trailers: with [`GrpcClassifier`](crate::classify::GrpcClassifier)
//! over `http::Response`, a head without `grpc-status` leaves the call
//! open, and the response body (a [`StatusBody`](crate::classify::StatusBody))
//! records it when the trailers arrive, the body ends without them, fails,
//! or is dropped (dropped: `Ignored` by default). Its window entry and a
//! probe's permit end then. The slow-call timing stops at the response
//! head: a long stream is not a slow call. How a classifier says which is
//! the [`Settle`] trait; a classifier of your own
//! that judges at the head needs one empty `impl JudgesAtHead`.
//!
//! # Windows
//!
//! [`count_window(n)`](CircuitBreakerBuilder::count_window) judges the last
//! `n` calls; [`time_window(t)`](CircuitBreakerBuilder::time_window) the
//! calls that finished in the last `t`, in buckets of 100 ms on tokio's
//! monotonic clock. Both are O(1) per call and lock-free: what leaves the
//! window is subtracted from running totals.
//!
//! # Cost
//!
//! A call through a closed breaker takes no lock and allocates nothing: an
//! atomic load of the state word at admission, and at the end a few atomic
//! operations on the window. The clock is read only when a time window or
//! slow-call detection needs it. The response future holds one `Arc` clone of
//! the breaker, because it records the outcome after the service call has
//! returned; a disabled breaker skips even that.
//!
//! # Readiness
//!
//! `poll_ready` decides admission. An admitted call (closed, or holding a
//! probe permit) then waits for the inner service's `poll_ready`. A refused
//! call does not poll the inner service at all: `poll_ready` returns ready at
//! once and the following `call` returns a future that fails immediately
//! with `CircuitOpen`. So an open breaker never parks its caller, however
//! unready the service behind it. `call` checks the state again and rejects
//! if the breaker opened in between; a probe permit taken in `poll_ready` and
//! never used is given back when the service is dropped.
//!
//! # Order
//!
//! Put the breaker inside a retry (so each attempt counts, and a retry can
//! see `CircuitOpen` at once) and outside a per-attempt timeout (so a
//! timeout counts as a failure).
//!
//! # Examples
//!
//! ```
//! use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
//! use palisade::error::{BoxError, ErrorKind};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("inventory")
//!     .count_window(10)
//!     .minimum_calls(4)
//!     .failure_rate_threshold(0.5)
//!     .wait_duration(Duration::from_secs(5))
//!     .build()
//!     .expect("a valid configuration");
//! let handle = breaker.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err::<&str, BoxError>("down".into()) } else { Ok("ok") }
//!     }));
//!
//! for fail in [false, true, true, true] {
//!     let _ = svc.ready().await.unwrap().call(fail).await;
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//!
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
//! # }
//! ```

mod config;
mod eject;
mod event;
mod future;
mod handle;
mod layer;
mod metrics;
mod settings;
mod state;
mod window;
mod word;

pub use self::config::{
    CircuitBreakerBuilder, MAX_COUNT_WINDOW, MAX_HALF_OPEN_CALLS, MAX_TIME_BUCKETS,
};
pub use self::event::BreakerEvent;
pub use self::future::{CallGuard, ResponseFuture};
pub use self::handle::CircuitBreakerHandle;
pub use self::layer::CircuitBreakerLayer;
pub use self::settings::CircuitBreakerSettings;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
use tower::Service;

use self::layer::Shared;
use self::state::Admission;
use crate::BoxError;
use crate::classify::{DefaultClassifier, Settle};
use crate::error::CircuitOpen;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CircuitState {
    /// Calls go through and are recorded.
    Closed = 0,
    /// Calls are rejected until the wait is over.
    Open = 1,
    /// A limited number of probe calls go through.
    HalfOpen = 2,
    /// Set by hand: every call is rejected.
    ForcedOpen = 3,
    /// Set by hand: every call goes through, nothing is recorded.
    Disabled = 4,
    /// Set by hand: every call goes through and is recorded; the breaker
    /// never opens.
    MetricsOnly = 5,
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The failure rate reached its threshold.
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// The open wait was over and a call arrived.
    WaitElapsed,
    /// Every probe finished and their rates were below the thresholds.
    ProbesSucceeded,
    /// Every probe finished and a rate reached its threshold.
    ProbesFailed,
    /// Set through a [`CircuitBreakerHandle`].
    Manual,
    /// Half-open for longer than
    /// [`max_half_open_duration`](CircuitBreakerBuilder::max_half_open_duration)
    /// with every probe still out.
    HalfOpenTimeout,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionReason::FailureRate => "failure rate reached its threshold",
            TransitionReason::SlowCallRate => "slow-call rate reached its threshold",
            TransitionReason::ConsecutiveFailures => "too many consecutive failures",
            TransitionReason::WaitElapsed => "open wait elapsed",
            TransitionReason::ProbesSucceeded => "probes succeeded",
            TransitionReason::ProbesFailed => "probes failed",
            TransitionReason::Manual => "set by hand",
            TransitionReason::HalfOpenTimeout => "probes outstayed the half-open limit",
        })
    }
}

/// A snapshot of a breaker, from [`CircuitBreakerHandle::metrics`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CircuitMetrics {
    /// The state.
    pub state: CircuitState,
    /// Calls in the window (half-open: the probes that finished).
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls (whatever their outcome).
    pub slow_calls: u64,
    /// `failures / calls`, 0 when the window is empty.
    pub failure_rate: f64,
    /// `slow_calls / calls`, 0 when the window is empty.
    pub slow_call_rate: f64,
    /// Failures in a row, up to the last success.
    pub consecutive_failures: u32,
    /// Calls rejected since the breaker was built.
    pub not_permitted: u64,
    /// While open: how long until a probe may go through.
    pub open_remaining: Duration,
    /// While half-open: probes admitted and not yet finished.
    pub probes_in_flight: u32,
    /// Whether the breaker is ejected from its load balancer now: open (or
    /// forced open) with [`eject_when_open`](CircuitBreakerBuilder::eject_when_open),
    /// within its set's cap. False while half-open.
    pub ejected: bool,
}

/// What `poll_ready` decided for the next `call`. The common case, a closed
/// breaker's admission, is a plain word; the rare ones are boxed, so the
/// service stays small and cheap to move.
enum Ready<C> {
    Undecided,
    Admitted(Admission),
    Rare(Box<RareReady<C>>),
}

enum RareReady<C> {
    Probe(CallGuard<C>),
    Rejected(CircuitOpen),
    /// Ejected from a load balancer: `poll_ready` is parked, with a timer
    /// for the end of the open wait (none when held open by hand).
    Parked(Option<Pin<Box<Sleep>>>),
}

/// A service guarded by a circuit breaker; see the [module docs](self).
///
/// Its error is [`BoxError`]: the inner service's error, unchanged, or a
/// [`CircuitOpen`].
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
    ready: Ready<C>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self {
            inner,
            shared,
            ready: Ready::Undecided,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to this service's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle
    where
        C: Send + Sync + 'static,
    {
        CircuitBreakerHandle::new(self.shared.clone())
    }

    #[inline]
    fn decide(&self) -> Ready<C> {
        match self.shared.core.admit() {
            Ok(admission) if !admission.is_probe() => Ready::Admitted(admission),
            Ok(admission) => Ready::Rare(Box::new(RareReady::Probe(CallGuard::new(
                self.shared.clone(),
                admission,
            )))),
            Err(open) => Ready::Rare(Box::new(RareReady::Rejected(open))),
        }
    }

    /// Whether the decision of the last `poll_ready` must be made again:
    /// none was made, it was a refusal (which must not stick once the
    /// breaker admits again), or the breaker has moved since (an admission
    /// kept from a closed breaker must not make an open one wait for its
    /// service).
    #[inline]
    fn must_decide(&self) -> bool {
        match &self.ready {
            Ready::Undecided => true,
            Ready::Rare(rare)
                if matches!(**rare, RareReady::Rejected(_) | RareReady::Parked(_)) =>
            {
                true
            }
            _ => self.is_stale(),
        }
    }

    /// Whether an admission (closed, or a probe) was made under a state
    /// the breaker has since left.
    #[inline]
    fn is_stale(&self) -> bool {
        match &self.ready {
            Ready::Admitted(admission) => self.shared.core.load() != admission.0,
            Ready::Rare(rare) => match &**rare {
                RareReady::Probe(guard) => self.shared.core.load() != guard.admission.0,
                RareReady::Rejected(_) | RareReady::Parked(_) => false,
            },
            Ready::Undecided => false,
        }
    }

    /// Whether this service holds an admission (closed, or a probe) made
    /// under the breaker's current state.
    fn holds_admission(&self) -> bool {
        let admitted = match &self.ready {
            Ready::Admitted(_) => true,
            Ready::Rare(rare) => matches!(**rare, RareReady::Probe(_)),
            Ready::Undecided => false,
        };
        admitted && !self.is_stale()
    }

    fn is_rejected(&self) -> bool {
        matches!(&self.ready, Ready::Rare(rare) if matches!(**rare, RareReady::Rejected(_)))
    }

    /// For a breaker that ejects itself: parks the caller while the
    /// breaker is ejected and would refuse a call, until the open wait
    /// ends or a transition (or a probe given back) wakes it.
    #[cold]
    fn poll_ejected(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let core = &self.shared.core;
        while let Some(until) = core.park(cx.waker()) {
            let timer = match std::mem::replace(&mut self.ready, Ready::Undecided) {
                Ready::Rare(rare) => match *rare {
                    RareReady::Parked(timer) => timer,
                    _ => None,
                },
                _ => None,
            };
            let Some(until) = until else {
                // Held open by hand: only a transition ends it.
                self.ready = Ready::Rare(Box::new(RareReady::Parked(None)));
                return Poll::Pending;
            };
            let deadline = core.instant_at(until);
            let mut timer = match timer {
                Some(mut timer) => {
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => Box::pin(tokio::time::sleep_until(deadline)),
            };
            let fired = timer.as_mut().poll(cx).is_ready();
            self.ready = Ready::Rare(Box::new(RareReady::Parked(Some(timer))));
            if !fired {
                return Poll::Pending;
            }
        }
        if matches!(&self.ready, Ready::Rare(rare) if matches!(**rare, RareReady::Parked(_))) {
            self.ready = Ready::Undecided;
        }
        Poll::Ready(())
    }
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    /// A clone shares the breaker but not a pending admission.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("name", self.shared.core.name())
            .field("state", &self.shared.core.load().state())
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Settle<S::Response, S::Error>,
{
    type Response = C::Response<CallGuard<C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An admission still good (a probe this service holds, say) goes
        // ahead; only a caller that would be refused is parked.
        if self.shared.core.eject.is_some()
            && !self.holds_admission()
            && self.poll_ejected(cx).is_pending()
        {
            return Poll::Pending;
        }
        if self.must_decide() {
            // A stale probe's guard is dropped here, which gives its permit
            // back (to a stay that has already ended: a no-op).
            self.ready = self.decide();
            if self.is_rejected() {
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The breaker moved since `poll_ready` (it opened, or was forced
        // open under a probe): decide again.
        if self.is_stale() {
            self.ready = self.decide();
        }
        let ready = std::mem::replace(&mut self.ready, Ready::Undecided);
        let mut guard = match ready {
            Ready::Admitted(admission) if !admission.records() => None,
            Ready::Admitted(admission) => Some(CallGuard::new(self.shared.clone(), admission)),
            Ready::Rare(rare) => match *rare {
                RareReady::Probe(guard) => Some(guard),
                RareReady::Rejected(open) => return ResponseFuture::rejected(open),
                RareReady::Parked(_) => {
                    panic!("CircuitBreaker::call without a successful poll_ready")
                }
            },
            Ready::Undecided => panic!("CircuitBreaker::call without a successful poll_ready"),
        };
        if let Some(guard) = &mut guard
            && self.shared.core.needs_start_time()
        {
            guard.started = Some(crate::clock::call_time());
        }
        ResponseFuture::called(self.inner.call(req), guard)
    }
}
