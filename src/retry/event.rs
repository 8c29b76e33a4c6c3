//! The retry's events: what they say, how they are traced and counted.

use std::fmt;
use std::time::Duration;

use crate::event::EventKind;

/// What happened in a retry layer; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryEvent {
    /// The layer sent an attempt (the first included).
    Attempt {
        /// The attempt's number, from 1.
        attempt: u32,
    },
    /// The layer will send another attempt after `delay`.
    Retry {
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
    BudgetExhausted {
        /// The number of the attempt that failed, from 1.
        attempt: u32,
    },
    /// The layer returned a failure without retrying further.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// Why no further attempt was made.
        reason: GiveUpReason,
    },
}

impl fmt::Display for RetryEvent {
    /// The event without the layer's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RetryEvent::Attempt { attempt } => write!(f, "attempt {attempt}"),
            RetryEvent::Retry {
                attempt,
                delay,
                reason,
                hinted,
            } => write!(
                f,
                "attempt {attempt} {reason}; retrying in {delay:?}{}",
                if hinted { " (server hint)" } else { "" }
            ),
            RetryEvent::BudgetExhausted { attempt } => {
                write!(f, "attempt {attempt} failed, retry budget exhausted")
            }
            RetryEvent::GaveUp { attempts, reason } => {
                write!(f, "gave up after {attempts} attempt(s): {reason}")
            }
        }
    }
}

impl EventKind for RetryEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        use tracing::{debug, trace, warn};
        match *self {
            RetryEvent::Attempt { attempt } => {
                trace!(target: "palisade", layer = name, attempt, "attempt");
            }
            RetryEvent::Retry {
                attempt,
                delay,
                reason,
                hinted,
            } => {
                debug!(target: "palisade", layer = name, attempt, delay_ms = delay.as_millis() as u64, reason = %reason, hinted, "retrying");
            }
            RetryEvent::BudgetExhausted { attempt } => {
                warn!(target: "palisade", layer = name, attempt, "retry budget exhausted");
            }
            RetryEvent::GaveUp { attempts, reason } => {
                warn!(target: "palisade", layer = name, attempts, reason = %reason, "gave up retrying");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        match *self {
            RetryEvent::Attempt { .. } => {
                record(Measure::count("palisade.retry.attempts", &[]).described(
                    Unit::Count,
                    "Attempts sent by the retry, first ones included",
                ))
            }
            RetryEvent::Retry { reason, .. } => record(
                Measure::count("palisade.retry.retries", &RETRIED[reason as usize]).described(
                    Unit::Count,
                    "Retries scheduled, by what the failed attempt came to",
                ),
            ),
            // Counted by the `GaveUp { BudgetExhausted }` that follows.
            RetryEvent::BudgetExhausted { .. } => {}
            RetryEvent::GaveUp { reason, .. } => record(
                Measure::count("palisade.retry.failed_calls", &GAVE_UP[reason as usize]).described(
                    Unit::Count,
                    "Failures returned without a further attempt, by why none was made",
                ),
            ),
        }
    }
}

/// The `palisade.retry.reason` label of each reason to retry, built once.
#[cfg(feature = "metrics")]
static RETRIED: [[(&str, &str); 1]; RetryReason::ALL.len()] = {
    let mut table = [[("", "")]; RetryReason::ALL.len()];
    let mut i = 0;
    while i < table.len() {
        table[i] = [("palisade.retry.reason", RetryReason::ALL[i].as_str())];
        i += 1;
    }
    table
};

/// The `palisade.retry.give_up_reason` label of each way to give up, built once.
#[cfg(feature = "metrics")]
static GAVE_UP: [[(&str, &str); 1]; GiveUpReason::ALL.len()] = {
    let mut table = [[("", "")]; GiveUpReason::ALL.len()];
    let mut i = 0;
    while i < table.len() {
        table[i] = [(
            "palisade.retry.give_up_reason",
            GiveUpReason::ALL[i].as_str(),
        )];
        i += 1;
    }
    table
};

// The label tables are indexed by `reason as usize`: each `ALL` lists its
// variants in declaration order, and ends with the last one.
const _: () = {
    let mut i = 0;
    while i < RetryReason::ALL.len() {
        assert!(RetryReason::ALL[i] as usize == i, "in declaration order");
        i += 1;
    }
    assert!(RetryReason::Throttled as usize + 1 == RetryReason::ALL.len());
    let mut i = 0;
    while i < GiveUpReason::ALL.len() {
        assert!(GiveUpReason::ALL[i] as usize == i, "in declaration order");
        i += 1;
    }
    assert!(GiveUpReason::RequestNotRetryable as usize + 1 == GiveUpReason::ALL.len());
};

/// What a failed attempt came to, in a [`RetryEvent::Retry`].
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
    /// A rate limiter below refused it.
    RateLimited,
    /// A keyed layer below had no room for its key.
    TooManyKeys,
    /// An adaptive concurrency limit below refused it.
    ConcurrencyLimited,
    /// A throttle below rejected it locally.
    Throttled,
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetryReason::Failure => "failed",
            RetryReason::Timeout => "timed out",
            RetryReason::CircuitOpen => "was refused by an open circuit",
            RetryReason::BulkheadFull => "was refused by a full bulkhead",
            RetryReason::NotSent => "never reached the server",
            RetryReason::RateLimited => "was refused by a rate limiter",
            RetryReason::TooManyKeys => "was refused by a keyed layer with no room for its key",
            RetryReason::ConcurrencyLimited => "was refused by an adaptive concurrency limit",
            RetryReason::Throttled => "was rejected locally by a throttle",
        })
    }
}

/// Why a retry layer stopped, in a [`RetryEvent::GaveUp`].
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
    /// streamed body, or under [`ReplayBodies`](crate::replay::ReplayBodies)
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

impl RetryReason {
    /// Every variant, in declaration order.
    pub const ALL: [RetryReason; 9] = [
        RetryReason::Failure,
        RetryReason::Timeout,
        RetryReason::CircuitOpen,
        RetryReason::BulkheadFull,
        RetryReason::NotSent,
        RetryReason::RateLimited,
        RetryReason::TooManyKeys,
        RetryReason::ConcurrencyLimited,
        RetryReason::Throttled,
    ];

    /// The reason's name, as in the `palisade.retry.reason` label of
    /// `palisade.retry.retries`: `circuit_open` (its `Display` is the
    /// phrase in the event's sentence: `Failure` there reads "failed").
    pub const fn as_str(self) -> &'static str {
        match self {
            RetryReason::Failure => "failure",
            RetryReason::Timeout => "timeout",
            RetryReason::CircuitOpen => "circuit_open",
            RetryReason::BulkheadFull => "bulkhead_full",
            RetryReason::NotSent => "not_sent",
            RetryReason::RateLimited => "rate_limited",
            RetryReason::TooManyKeys => "too_many_keys",
            RetryReason::ConcurrencyLimited => "concurrency_limited",
            RetryReason::Throttled => "throttled",
        }
    }
}

impl GiveUpReason {
    /// Every variant, in declaration order.
    pub const ALL: [GiveUpReason; 10] = [
        GiveUpReason::MaxAttempts,
        GiveUpReason::Deadline,
        GiveUpReason::ServerSaidNo,
        GiveUpReason::HintAboveCap,
        GiveUpReason::BackoffEnded,
        GiveUpReason::NotReplayable,
        GiveUpReason::BudgetExhausted,
        GiveUpReason::NotRetryable,
        GiveUpReason::FailureNotRetryable,
        GiveUpReason::RequestNotRetryable,
    ];

    /// The reason's name, as in the `palisade.retry.give_up_reason` label
    /// of `palisade.retry.failed_calls`: `max_attempts` (its `Display` is
    /// the phrase in the event's sentence).
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::MaxAttempts => "max_attempts",
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::ServerSaidNo => "server_said_no",
            GiveUpReason::HintAboveCap => "hint_above_cap",
            GiveUpReason::BackoffEnded => "backoff_ended",
            GiveUpReason::NotReplayable => "not_replayable",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::NotRetryable => "not_retryable",
            GiveUpReason::FailureNotRetryable => "failure_not_retryable",
            GiveUpReason::RequestNotRetryable => "request_not_retryable",
        }
    }
}
