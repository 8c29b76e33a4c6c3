//! The algorithms that move an [adaptive limit](super::AdaptiveLimitLayer):
//! one small trait, [`LimitAlgorithm`], and three built in, ported from
//! Netflix's [concurrency-limits] with its defaults and bounds.
//!
//! | algorithm | moves the limit by | reacts to | default bounds |
//! |---|---|---|---|
//! | [`Aimd`] | +1 per sample, ×0.9 on a failure | failures and timeouts only | 20 to 200 |
//! | [`Vegas`] | ± log10(limit) per sample | the queue it infers from RTT against the lowest RTT seen | 1 to 1,000 |
//! | [`Gradient2`] | limit × (long RTT / short RTT) + 4 | RTT against its own long average | 20 to 200 |
//!
//! [concurrency-limits]: https://github.com/Netflix/concurrency-limits
//!
//! # An algorithm of your own
//!
//! ```
//! use palisade::adaptive::{AdaptiveLimitLayer, LimitAlgorithm, Sample};
//! use std::time::Duration;
//!
//! /// Halves the limit on a failure or a call slower than 100 ms, else adds one.
//! #[derive(Debug)]
//! struct Halving(u32);
//!
//! impl LimitAlgorithm for Halving {
//!     fn initial_limit(&self) -> u32 {
//!         self.0
//!     }
//!     fn update(&mut self, sample: &Sample) -> u32 {
//!         self.0 = if sample.dropped() || sample.rtt() > Duration::from_millis(100) {
//!             (self.0 / 2).max(1)
//!         } else {
//!             (self.0 + 1).min(64)
//!         };
//!         self.0
//!     }
//! }
//!
//! let layer = AdaptiveLimitLayer::builder().algorithm(Halving(8)).build().unwrap();
//! assert_eq!(layer.handle().limit(), 8);
//! ```

mod aimd;
mod gradient;
mod vegas;

pub use self::aimd::{Aimd, AimdBuilder};
pub use self::gradient::{Gradient2, Gradient2Builder};
pub use self::vegas::{Vegas, VegasBuilder};

use std::fmt;
use std::time::Duration;

/// One finished call, as a [`LimitAlgorithm`] learns from it.
///
/// A call counts as a sample when the layer's classifier calls its outcome
/// a success or a failure; a call it ignores, and a call dropped before its
/// outcome was known, are no sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    rtt: Duration,
    in_flight: u32,
    dropped: bool,
}

impl Sample {
    /// A sample: the call took `rtt`, `in_flight` calls were in flight when
    /// it started (itself included), and it failed if `dropped`. For
    /// testing an algorithm of your own; the layer makes the real ones.
    pub fn new(rtt: Duration, in_flight: u32, dropped: bool) -> Self {
        Self {
            rtt,
            in_flight,
            dropped,
        }
    }

    /// How long the call took: from its `call` to the moment its outcome
    /// was known (the response head, or the end of a body whose status
    /// comes in trailers).
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// The calls in flight when this one started, itself included: an
    /// algorithm does not raise a limit that the callers do not use
    /// (concurrency-limits' "app-limited" rule).
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Whether the classifier called the call a failure: TCP's dropped
    /// packet, the signal to back off.
    pub fn dropped(&self) -> bool {
        self.dropped
    }

    /// The RTT in nanoseconds, as the algorithms compute in.
    fn rtt_nanos(&self) -> f64 {
        self.rtt.as_nanos() as f64
    }
}

/// Moves a concurrency limit from the samples of finished calls.
///
/// The layer calls [`update`](Self::update) one sample at a time (an
/// algorithm needs no lock of its own), and applies the limit it returns,
/// kept within 1 and [`MAX_ADAPTIVE_LIMIT`](super::MAX_ADAPTIVE_LIMIT).
///
/// What it calls it with: by default, one sample per
/// [window](super::AdaptiveLimitBuilder::window), the window's calls taken
/// as one (their mean RTT, their highest in-flight count, and failed if
/// any of them failed), as concurrency-limits' `WindowedLimit` feeds its
/// algorithms. With [`per_sample`](super::AdaptiveLimitBuilder::per_sample),
/// each call's own sample; a call that finishes while another sample is
/// being learned is not lost, but folded with the others that do into one
/// sample (taken as a window's are), learned right after.
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// The limit before the first sample.
    fn initial_limit(&self) -> u32;

    /// Learns from one sample; returns the new limit.
    fn update(&mut self, sample: &Sample) -> u32;
}

impl LimitAlgorithm for Box<dyn LimitAlgorithm> {
    fn initial_limit(&self) -> u32 {
        (**self).initial_limit()
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        (**self).update(sample)
    }
}

/// `limit` as a whole number of calls within `[min, max]`, as
/// concurrency-limits rounds (down).
fn whole(limit: f64, min: u32, max: u32) -> u32 {
    (limit as u32).clamp(min, max)
}
