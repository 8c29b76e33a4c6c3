use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::layer::Shared;
use crate::adaptive::Sample;
use crate::classify::{Outcome, Tracker};
use crate::error::ConcurrencyLimited;

/// An admitted call's permit, until the call's outcome is known: at the
/// response head, or at the end of a streamed body whose status a
/// [`Settle`](crate::classify::Settle) classifier reads there (it is then part of the body's type).
///
/// Told the outcome, it teaches the algorithm the call's sample; dropped
/// without one (the call was cancelled), it teaches nothing. Either way it
/// gives the permit back.
pub struct LimitGuard<C> {
    shared: Arc<Shared<C>>,
    started: Instant,
    in_flight: u32,
}

impl<C> LimitGuard<C> {
    /// Holds a permit already taken from `shared`'s semaphore.
    pub(crate) fn new(shared: Arc<Shared<C>>, started: Instant) -> Self {
        let in_flight = shared.core.semaphore.in_use();
        Self {
            shared,
            started,
            in_flight,
        }
    }
}

impl<C> Tracker for LimitGuard<C> {
    #[inline]
    fn finish(self, outcome: Outcome) {
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
        };
        let ended = crate::clock::now();
        let rtt = ended.saturating_duration_since(self.started);
        self.shared
            .core
            .learn(Sample::new(rtt, self.in_flight, dropped), ended);
    }
}

impl<C> Drop for LimitGuard<C> {
    #[inline]
    fn drop(&mut self) {
        self.shared.core.semaphore.release();
    }
}

impl<C> fmt::Debug for LimitGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitGuard")
            .field("limit", &self.shared.core.name)
            .field("started", &self.started)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// The future of an [`AdaptiveLimit`](super::AdaptiveLimit) call; see
/// [`adaptive::future::ResponseFuture`](crate::adaptive::future::ResponseFuture).
pub type ResponseFuture<F, C> =
    crate::adaptive::future::ResponseFuture<F, LimitGuard<C>, ConcurrencyLimited>;

impl<C> crate::adaptive::future::Guard for LimitGuard<C> {
    type Classifier = C;

    fn classifier(&self) -> &C {
        &self.shared.classifier
    }
}
