//! The event stream: what the layers did, as it happens.
//!
//! Every layer's builder takes listeners ([`on_event`](crate::circuit_breaker::CircuitBreakerBuilder::on_event));
//! each listener sees every [`Event`] of that layer, synchronously, on the
//! task that caused it. Events borrow their data, so emitting one allocates
//! nothing, and with no listener registered nothing is built at all.
//!
//! A listener must be quick and must not block: it runs inside the call.
//! Forward to a channel if you need to do more.
//!
//! Ready-made listeners: [`TracingEvents`] (feature `tracing`) and
//! [`MetricsEvents`] (feature `metrics`).
//!
//! # Examples
//!
//! ```
//! use palisade::event::{Event, Listener};
//! use std::sync::{Arc, Mutex};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! let listener = move |event: &Event<'_>| log.lock().unwrap().push(event.to_string());
//! listener.on_event(&Event::CallRejected { name: "db", retry_after: std::time::Duration::ZERO });
//! assert_eq!(seen.lock().unwrap().len(), 1);
//! ```

#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "tracing")]
mod tracing;

#[cfg(feature = "metrics")]
pub use self::metrics::MetricsEvents;
#[cfg(feature = "tracing")]
pub use self::tracing::TracingEvents;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::circuit_breaker::{CircuitState, TransitionReason};

/// Something that happened in a layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A circuit breaker changed state.
    StateTransition {
        /// The breaker's name.
        name: &'a str,
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
        /// Why.
        reason: TransitionReason,
    },
    /// A circuit breaker refused a call.
    CallRejected {
        /// The breaker's name.
        name: &'a str,
        /// How long until it may admit a call again.
        retry_after: Duration,
    },
    /// A breaker's failure rate reached its threshold (emitted once per
    /// crossing; in `MetricsOnly` state this is all that happens).
    FailureRateExceeded {
        /// The breaker's name.
        name: &'a str,
        /// The failure rate over the window, in `[0, 1]`.
        rate: f64,
        /// The configured threshold.
        threshold: f64,
    },
    /// A circuit breaker saw a call finish (emitted only when someone
    /// listens; metrics count calls by outcome from it).
    CallFinished {
        /// The breaker's name.
        name: &'a str,
        /// How the classifier judged it.
        outcome: crate::classify::Outcome,
        /// Whether it took longer than the slow-call duration.
        slow: bool,
    },
    /// A bulkhead's number of calls in flight changed.
    BulkheadInFlight {
        /// The bulkhead's name.
        name: &'a str,
        /// Calls holding a permit now.
        in_flight: u32,
    },
    /// A bulkhead refused a call.
    BulkheadRejected {
        /// The bulkhead's name.
        name: &'a str,
        /// `true` if the call waited in the queue until its maximum wait
        /// expired; `false` if every permit and queue place was taken.
        timed_out_in_queue: bool,
    },
    /// A retry layer sent an attempt (the first included).
    Attempt {
        /// The retry layer's name.
        name: &'a str,
        /// The attempt's number, from 1.
        attempt: u32,
    },
    /// A retry layer will send another attempt after `delay`.
    Retry {
        /// The retry layer's name.
        name: &'a str,
        /// The number of the attempt that failed, from 1.
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// What the failed attempt came to.
        reason: RetryReason,
        /// Whether `delay` is the server's hint rather than the backoff's.
        hinted: bool,
    },
    /// A retry was wanted, but the retry budget had none left.
    RetryBudgetExhausted {
        /// The retry layer's name.
        name: &'a str,
        /// The number of the attempt that failed, from 1.
        attempt: u32,
    },
    /// A retry layer returned a failure without retrying further.
    GaveUp {
        /// The retry layer's name.
        name: &'a str,
        /// How many attempts were made.
        attempts: u32,
        /// Why no further attempt was made.
        reason: GiveUpReason,
    },
    /// A fallback answered a failed call.
    FellBack {
        /// The fallback layer's name.
        name: &'a str,
        /// The kind of the error it answered, if the failure was an error.
        kind: Option<crate::error::ErrorKind>,
    },
    /// A call ran out of time.
    TimedOut {
        /// The timeout layer's name.
        name: &'a str,
        /// The limit it reached.
        after: Duration,
    },
    /// A breaker's slow-call rate reached its threshold (once per crossing).
    SlowCallRateExceeded {
        /// The breaker's name.
        name: &'a str,
        /// The slow-call rate over the window, in `[0, 1]`.
        rate: f64,
        /// The configured threshold.
        threshold: f64,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::StateTransition {
                name,
                from,
                to,
                reason,
            } => write!(f, "circuit `{name}`: {from:?} -> {to:?} ({reason})"),
            Event::CallRejected { name, retry_after } if *retry_after == Duration::MAX => {
                write!(f, "circuit `{name}`: call rejected, held open by hand")
            }
            Event::CallRejected { name, retry_after } => {
                write!(
                    f,
                    "circuit `{name}`: call rejected, retry in {retry_after:?}"
                )
            }
            Event::FailureRateExceeded {
                name,
                rate,
                threshold,
            } => write!(
                f,
                "circuit `{name}`: failure rate {:.1}% reached threshold {:.1}%",
                rate * 100.0,
                threshold * 100.0
            ),
            Event::CallFinished {
                name,
                outcome,
                slow,
            } => write!(
                f,
                "circuit `{name}`: call finished, {outcome:?}{}",
                if *slow { " (slow)" } else { "" }
            ),
            Event::BulkheadInFlight { name, in_flight } => {
                write!(f, "bulkhead `{name}`: {in_flight} in flight")
            }
            Event::BulkheadRejected {
                name,
                timed_out_in_queue,
            } => {
                if *timed_out_in_queue {
                    write!(
                        f,
                        "bulkhead `{name}`: call rejected after waiting in the queue"
                    )
                } else {
                    write!(f, "bulkhead `{name}`: call rejected, bulkhead full")
                }
            }
            Event::Attempt { name, attempt } => write!(f, "retry `{name}`: attempt {attempt}"),
            Event::Retry {
                name,
                attempt,
                delay,
                reason,
                hinted,
            } => write!(
                f,
                "retry `{name}`: attempt {attempt} {reason}; retrying in {delay:?}{}",
                if *hinted { " (server hint)" } else { "" }
            ),
            Event::RetryBudgetExhausted { name, attempt } => write!(
                f,
                "retry `{name}`: attempt {attempt} failed, retry budget exhausted"
            ),
            Event::GaveUp {
                name,
                attempts,
                reason,
            } => write!(
                f,
                "retry `{name}`: gave up after {attempts} attempt(s): {reason}"
            ),
            Event::FellBack { name, kind } => match kind {
                Some(kind) => write!(f, "fallback `{name}`: answered a failure ({kind:?})"),
                None => write!(f, "fallback `{name}`: answered a failed response"),
            },
            Event::TimedOut { name, after } => write!(f, "`{name}`: timed out after {after:?}"),
            Event::SlowCallRateExceeded {
                name,
                rate,
                threshold,
            } => write!(
                f,
                "circuit `{name}`: slow-call rate {:.1}% reached threshold {:.1}%",
                rate * 100.0,
                threshold * 100.0
            ),
        }
    }
}

/// What a failed attempt came to, in a [`Event::Retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The classifier judged it a failure.
    Failure,
    /// A timeout below cut it off.
    Timeout,
    /// A circuit breaker below refused it.
    CircuitOpen,
    /// A bulkhead below refused it.
    BulkheadFull,
    /// The connection failed before the request left: it is sent again
    /// whatever its method.
    NotSent,
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetryReason::Failure => "failed",
            RetryReason::Timeout => "timed out",
            RetryReason::CircuitOpen => "was refused by an open circuit",
            RetryReason::BulkheadFull => "was refused by a full bulkhead",
            RetryReason::NotSent => "never reached the server",
        })
    }
}

/// Why a retry layer stopped, in a [`Event::GaveUp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// Every allowed attempt was made.
    MaxAttempts,
    /// The next attempt would have started past the deadline.
    Deadline,
    /// The server said not to retry (a negative `grpc-retry-pushback-ms`).
    ServerSaidNo,
    /// The server (or an open breaker below) asked to wait longer than the
    /// retry's `max_hint`.
    HintAboveCap,
    /// The backoff's sequence of delays ended.
    BackoffEnded,
    /// The request could not be copied: a `reqwest::Request` with a
    /// streamed body, or under [`ReplayBodies`](crate::retry::ReplayBodies)
    /// a body read past the replay limit or one that failed mid-stream.
    NotReplayable,
    /// The retry budget was spent.
    BudgetExhausted,
    /// The failure was a rejection the layer is set not to retry.
    NotRetryable,
    /// The classifier does not retry this failure (gRPC's INTERNAL, by
    /// default).
    FailureNotRetryable,
    /// The request may not be sent twice (a POST, by default) and may have
    /// reached the server.
    RequestNotRetryable,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GiveUpReason::MaxAttempts => "no attempts left",
            GiveUpReason::Deadline => "the deadline would pass",
            GiveUpReason::ServerSaidNo => "the server said not to retry",
            GiveUpReason::BackoffEnded => "the backoff ended",
            GiveUpReason::NotReplayable => "the request cannot be sent again",
            GiveUpReason::BudgetExhausted => "the retry budget is spent",
            GiveUpReason::NotRetryable => "this rejection is not retried",
            GiveUpReason::HintAboveCap => "asked to wait longer than the cap",
            GiveUpReason::FailureNotRetryable => "this failure is not retried",
            GiveUpReason::RequestNotRetryable => "this request may not be sent twice",
        })
    }
}

/// Receives a layer's events. Implemented for every
/// `Fn(&Event<'_>) + Send + Sync`.
pub trait Listener: Send + Sync + 'static {
    /// Called for every event, on the task that caused it.
    fn on_event(&self, event: &Event<'_>);
}

impl<F> Listener for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event)
    }
}
/// The settings every builder has, written once: `name()` and
/// `on_event()`, over the `name` and `listeners` fields found at `$at`
/// (`self.$at.name`), or on the builder itself (`self.name`).
macro_rules! name_and_listeners {
    ($what:literal, $name_doc:literal $(, $at:ident)?) => {
        #[doc = $name_doc]
        pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
            self$(.$at)?.name = name.into();
            self
        }

        #[doc = concat!("Registers a listener for this ", $what, "'s [events](crate::event).")]
        pub fn on_event(mut self, listener: impl crate::event::Listener) -> Self {
            self$(.$at)?.listeners.push(std::sync::Arc::new(listener));
            self
        }
    };
}
pub(crate) use name_and_listeners;

/// The listeners of one layer.
#[derive(Clone, Default)]
pub(crate) struct Listeners {
    listeners: Vec<Arc<dyn Listener>>,
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} listener(s)", self.listeners.len())
    }
}

impl Listeners {
    pub(crate) fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    pub(crate) fn push(&mut self, listener: Arc<dyn Listener>) {
        self.listeners.push(listener);
    }

    /// Builds the event only if someone listens.
    #[inline]
    pub(crate) fn emit<'a>(&self, event: impl FnOnce() -> Event<'a>) {
        if self.listeners.is_empty() {
            return;
        }
        let event = event();
        for listener in &self.listeners {
            listener.on_event(&event);
        }
    }
}
