use std::fmt;
use std::sync::Arc;

use super::layer::Shared;
use crate::classify::{Outcome, Tracker};
use crate::error::Throttled;

/// A sent request's place in the throttle's window, until its outcome is
/// known: at the response head, or at the end of a streamed body whose
/// status a [`Settle`](crate::classify::Settle) classifier reads there (it is then part of the
/// body's type).
///
/// Told a success, it counts an accept; a failure, no accept (the request
/// was counted when it was sent); either way the request is no longer in
/// flight. Ignored, or dropped without an outcome (the call was
/// cancelled), it takes the request back out.
pub struct ThrottleGuard<C> {
    shared: Arc<Shared<C>>,
    /// When the request was counted: its outcome goes in the same bucket.
    at: u64,
    settled: bool,
}

impl<C> ThrottleGuard<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, at: u64) -> Self {
        Self {
            shared,
            at,
            settled: false,
        }
    }
}

impl<C> Tracker for ThrottleGuard<C> {
    #[inline]
    fn finish(mut self, outcome: Outcome) {
        let core = &self.shared.core;
        match outcome {
            Outcome::Success => core.answered(self.at, true),
            Outcome::Failure => core.answered(self.at, false),
            Outcome::Ignored => core.uncount(self.at),
        }
        self.settled = true;
    }
}

impl<C> Drop for ThrottleGuard<C> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.core.uncount(self.at);
        }
    }
}

impl<C> fmt::Debug for ThrottleGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleGuard")
            .field("throttle", &self.shared.core.name)
            .finish()
    }
}

/// The future of a [`Throttle`](super::Throttle) call; see
/// [`adaptive::future::ResponseFuture`](crate::adaptive::future::ResponseFuture).
pub type ResponseFuture<F, C> =
    crate::adaptive::future::ResponseFuture<F, ThrottleGuard<C>, Throttled>;

impl<C> crate::adaptive::future::Guard for ThrottleGuard<C> {
    type Classifier = C;

    fn classifier(&self) -> &C {
        &self.shared.classifier
    }
}
