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
    /// A bulkhead refused a call.
    BulkheadRejected {
        /// The bulkhead's name.
        name: &'a str,
        /// `true` if the call waited in the queue until its maximum wait
        /// expired; `false` if every permit and queue place was taken.
        timed_out_in_queue: bool,
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
