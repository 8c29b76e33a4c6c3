//! The hedge's events: what they say, how they are traced and counted.

use std::fmt;

use crate::event::EventKind;

/// What happened in a hedge layer; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HedgeEvent {
    /// An attempt after the first started: a hedge.
    Hedged {
        /// The attempt's number, from 2.
        attempt: u32,
        /// What started it.
        trigger: HedgeTrigger,
    },
    /// A hedge was due and was not sent; no further one will be, for this
    /// call (the attempts running go on).
    Skipped {
        /// The number the attempt would have had.
        attempt: u32,
        /// Why it was not sent.
        reason: SkipReason,
    },
    /// An attempt's answer, not a failure, was returned: it won.
    Won {
        /// The winning attempt's number, from 1.
        attempt: u32,
        /// How many attempts the call made.
        attempts: u32,
    },
    /// The call returned a failure: a fatal one (which ended the call), or
    /// the first attempt's once every attempt had failed.
    Failed {
        /// The number of the attempt whose answer was returned.
        attempt: u32,
        /// How many attempts the call made.
        attempts: u32,
        /// Whether a fatal failure ended the call (rather than every
        /// attempt failing).
        fatal: bool,
    },
    /// Attempts still running when the call ended were dropped, cancelling
    /// them.
    Cancelled {
        /// How many.
        attempts: u32,
    },
}

/// What started a hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HedgeTrigger {
    /// The newest attempt had not answered within the delay
    /// ([`HedgeMode::Latency`](super::HedgeMode::Latency)).
    Delay,
    /// An attempt failed with a retryable failure (after the server's
    /// pushback, if it gave one).
    Failure,
    /// Every attempt starts at once ([`HedgeMode::Parallel`](super::HedgeMode::Parallel)).
    Parallel,
}

impl HedgeTrigger {
    /// Every trigger, in the order of their metric labels.
    pub const ALL: [HedgeTrigger; 3] = [
        HedgeTrigger::Delay,
        HedgeTrigger::Failure,
        HedgeTrigger::Parallel,
    ];

    /// The trigger as a metric label value: `delay`, `failure`,
    /// `parallel`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HedgeTrigger::Delay => "delay",
            HedgeTrigger::Failure => "failure",
            HedgeTrigger::Parallel => "parallel",
        }
    }
}

impl fmt::Display for HedgeTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HedgeTrigger::Delay => "the last attempt was slow",
            HedgeTrigger::Failure => "an attempt failed",
            HedgeTrigger::Parallel => "every attempt starts at once",
        })
    }
}

/// Why a hedge that was due was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The budget had nothing left.
    BudgetExhausted,
    /// The server's pushback said not to send the call again.
    ServerSaidNo,
    /// The server's pushback was longer than
    /// [`max_hint`](super::HedgeBuilder::max_hint).
    HintAboveCap,
    /// The request could not be copied beside the running attempts: its
    /// body was over the replay limit, or failed. (A body still being sent
    /// is waited for.)
    NotCopyable,
    /// The service failed while getting ready for the hedge.
    NotReady,
    /// A palisade layer below refused an attempt (an open breaker, a full
    /// bulkhead, a rate limiter): a further one would be refused too.
    Refused,
}

impl SkipReason {
    /// Every reason, in the order of their metric labels.
    pub const ALL: [SkipReason; 6] = [
        SkipReason::BudgetExhausted,
        SkipReason::ServerSaidNo,
        SkipReason::HintAboveCap,
        SkipReason::NotCopyable,
        SkipReason::NotReady,
        SkipReason::Refused,
    ];

    /// The reason as a metric label value: `budget_exhausted`,
    /// `server_said_no`, `hint_above_cap`, `not_copyable`, `not_ready`,
    /// `refused`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::BudgetExhausted => "budget_exhausted",
            SkipReason::ServerSaidNo => "server_said_no",
            SkipReason::HintAboveCap => "hint_above_cap",
            SkipReason::NotCopyable => "not_copyable",
            SkipReason::NotReady => "not_ready",
            SkipReason::Refused => "refused",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::BudgetExhausted => "the budget is exhausted",
            SkipReason::ServerSaidNo => "the server said not to retry",
            SkipReason::HintAboveCap => "the server's pushback is above the cap",
            SkipReason::NotCopyable => "the request cannot be copied beside the running attempts",
            SkipReason::NotReady => "the service failed to get ready",
            SkipReason::Refused => "a layer below refused an attempt",
        })
    }
}

impl fmt::Display for HedgeEvent {
    /// The event without the layer's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HedgeEvent::Hedged { attempt, trigger } => {
                write!(f, "attempt {attempt} started: {trigger}")
            }
            HedgeEvent::Skipped { attempt, reason } => {
                write!(f, "attempt {attempt} not sent: {reason}")
            }
            HedgeEvent::Won { attempt, attempts } => {
                write!(f, "attempt {attempt} of {attempts} won")
            }
            HedgeEvent::Failed {
                attempt,
                attempts,
                fatal: true,
            } => write!(
                f,
                "attempt {attempt} of {attempts} failed with a fatal failure"
            ),
            HedgeEvent::Failed {
                attempt, attempts, ..
            } => write!(
                f,
                "all {attempts} attempt(s) failed; returning attempt {attempt}'s failure"
            ),
            HedgeEvent::Cancelled { attempts } => {
                write!(f, "{attempts} attempt(s) cancelled")
            }
        }
    }
}

impl EventKind for HedgeEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hedge `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        use tracing::{debug, trace, warn};
        match *self {
            HedgeEvent::Hedged { attempt, trigger } => {
                debug!(target: "palisade", layer = name, attempt, trigger = trigger.as_str(), "hedge sent");
            }
            HedgeEvent::Skipped { attempt, reason } => {
                debug!(target: "palisade", layer = name, attempt, reason = reason.as_str(), "hedge not sent");
            }
            HedgeEvent::Won { attempt, attempts } => {
                trace!(target: "palisade", layer = name, attempt, attempts, "attempt won");
            }
            HedgeEvent::Failed {
                attempt,
                attempts,
                fatal,
            } => {
                warn!(target: "palisade", layer = name, attempt, attempts, fatal, "hedged call failed");
            }
            HedgeEvent::Cancelled { attempts } => {
                trace!(target: "palisade", layer = name, attempts, "losing attempts cancelled");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        match *self {
            HedgeEvent::Hedged { trigger, .. } => record(
                Measure::count("palisade.hedge.hedges", &TRIGGERS[trigger as usize]).described(
                    Unit::Count,
                    "Attempts after the first sent, by what started them",
                ),
            ),
            HedgeEvent::Skipped { reason, .. } => record(
                Measure::count("palisade.hedge.skipped", &SKIPPED[reason as usize])
                    .described(Unit::Count, "Hedges due and not sent, by why"),
            ),
            HedgeEvent::Won { attempt, .. } => record(
                Measure::count(
                    "palisade.hedge.wins",
                    if attempt == 1 {
                        &WINNER_FIRST
                    } else {
                        &WINNER_HEDGE
                    },
                )
                .described(
                    Unit::Count,
                    "Calls answered, by whether the first attempt or a hedge won",
                ),
            ),
            HedgeEvent::Failed { fatal, .. } => record(
                Measure::count(
                    "palisade.hedge.failed_calls",
                    if fatal { &FATAL } else { &ALL_FAILED },
                )
                .described(
                    Unit::Count,
                    "Calls that returned a failure: a fatal one, or every attempt failed",
                ),
            ),
            HedgeEvent::Cancelled { attempts } => record(
                Measure::count("palisade.hedge.cancelled_attempts", &[])
                    .by(u64::from(attempts))
                    .described(Unit::Count, "Losing attempts cancelled when the call ended"),
            ),
        }
    }
}

/// The `palisade.hedge.trigger` label of each trigger, built once.
#[cfg(feature = "metrics")]
static TRIGGERS: [[(&str, &str); 1]; HedgeTrigger::ALL.len()] = {
    let mut table = [[("", "")]; HedgeTrigger::ALL.len()];
    let mut i = 0;
    while i < table.len() {
        table[i] = [("palisade.hedge.trigger", HedgeTrigger::ALL[i].as_str())];
        i += 1;
    }
    table
};

/// The `palisade.hedge.skip_reason` label of each reason, built once.
#[cfg(feature = "metrics")]
static SKIPPED: [[(&str, &str); 1]; SkipReason::ALL.len()] = {
    let mut table = [[("", "")]; SkipReason::ALL.len()];
    let mut i = 0;
    while i < table.len() {
        table[i] = [("palisade.hedge.skip_reason", SkipReason::ALL[i].as_str())];
        i += 1;
    }
    table
};

#[cfg(feature = "metrics")]
static WINNER_FIRST: [(&str, &str); 1] = [("palisade.hedge.winner", "first")];
#[cfg(feature = "metrics")]
static WINNER_HEDGE: [(&str, &str); 1] = [("palisade.hedge.winner", "hedge")];
#[cfg(feature = "metrics")]
static FATAL: [(&str, &str); 1] = [("palisade.hedge.failure", "fatal")];
#[cfg(feature = "metrics")]
static ALL_FAILED: [(&str, &str); 1] = [("palisade.hedge.failure", "all_failed")];
