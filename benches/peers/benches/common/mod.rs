//! The stacks more than one bench drives, made in one place so that the
//! timings, the contention figures and the instruction counts measure the
//! same thing.

#![allow(dead_code)] // each bench uses some of them

use std::time::Duration;

use palisade::error::BoxError;
use tower::{Layer, Service, ServiceBuilder, service_fn};

pub type Ready = std::future::Ready<Result<u64, BoxError>>;
pub type Bare = tower::util::ServiceFn<fn(u64) -> Ready>;

/// The inner service: answers at once.
pub fn bare() -> Bare {
    service_fn((|n| std::future::ready(Ok(n))) as fn(u64) -> Ready)
}

/// The five parts both presets below have, added to a preset's builder:
/// total timeout, retry, breaker, bulkhead of `$limit`, attempt timeout.
macro_rules! five_parts {
    ($builder:expr, $limit:expr) => {
        $builder
            .total_timeout(Duration::from_secs(10))
            .retry(|retry| retry)
            .circuit_breaker(|breaker| breaker)
            .bulkhead(|bulkhead| bulkhead.max_concurrent($limit))
            .attempt_timeout(Duration::from_secs(1))
    };
}

/// palisade's preset with all six parts: a fallback and the five parts.
pub fn preset(
    limit: u32,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    use palisade::fallback::{Failed, from_sync_fn};
    let builder =
        palisade::Resilience::builder().fallback(from_sync_fn(|_: Failed<u64, u64>| Ok(0)));
    five_parts!(builder, limit).build().unwrap().layer(bare())
}

/// The same without the fallback (the five parts a configuration
/// document can name).
pub fn preset_five(
    limit: u32,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    five_parts!(palisade::Resilience::builder(), limit)
        .build()
        .unwrap()
        .layer(bare())
}

/// tower's retry policy for the pass-through case: never retries.
#[derive(Clone)]
pub struct NeverRetry;

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for NeverRetry {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Boxes any error: how the peers' stack is glued, each tower-resilience
/// layer wrapping the errors of the one below in its own type.
fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> BoxError {
    Box::new(e)
}

/// tower-resilience 0.13's equivalent of [`preset`]: fallback, time
/// limiter, retry, breaker, bulkhead, time limiter.
pub fn tower_resilience_stack()
-> impl Service<u64, Response = u64, Error: std::fmt::Debug + Send, Future: Send> + Clone + Send {
    let tr = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(1))
        .build();
    let attempt = ServiceBuilder::new()
        .map_err(boxed::<tower_resilience::timelimiter::TimeLimiterError<BoxError>>)
        .layer(tr)
        .service(bare());
    let bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(100)
        .build()
        .unwrap();
    let guarded = ServiceBuilder::new()
        .map_err(boxed::<tower_resilience::bulkhead::BulkheadServiceError<BoxError>>)
        .layer(bulkhead)
        .service(attempt);
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .unwrap();
    let broken = ServiceBuilder::new()
        .map_err(boxed::<tower_resilience::circuitbreaker::CircuitBreakerError<BoxError>>)
        .layer(breaker)
        .service(guarded);
    let retry = tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build();
    let retried = retry.layer(broken);
    let total = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(10))
        .build();
    let timed = ServiceBuilder::new()
        .map_err(boxed::<tower_resilience::timelimiter::TimeLimiterError<BoxError>>)
        .layer(total)
        .service(retried);
    let fallback = tower_resilience::fallback::FallbackLayer::<u64, u64, BoxError>::builder()
        .value(0)
        .build();
    fallback.layer(timed)
}

/// [`preset_five`]'s parts from a configuration document (a slot per
/// place, chosen at run time, reloadable).
pub fn config_five(
    limit: u32,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    use palisade::bulkhead::BulkheadSettings;
    use palisade::config::{Config, Document, StackSettings};
    let mut stack = StackSettings::default();
    stack.total_timeout = Some(Duration::from_secs(10));
    stack.retry = Some(Default::default());
    stack.circuit_breaker = Some(Default::default());
    let mut bulkhead = BulkheadSettings::default();
    bulkhead.max_concurrent = Some(limit);
    stack.bulkhead = Some(bulkhead);
    stack.attempt_timeout = Some(Duration::from_secs(1));
    let mut document = Document::default();
    document.instances.insert("bench".to_string(), stack);
    let config = Config::new(document).unwrap();
    config.stack("bench").unwrap().layer(bare())
}
