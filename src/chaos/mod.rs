//! Chaos: inject faults on purpose, to test what the rest of the stack does
//! with them (feature `chaos`).
//!
//! [`ChaosLayer`] is the counterpart of Polly's chaos strategies. Each call,
//! in this order, may:
//!
//! * fail at once with an injected error ([`error_rate`](ChaosBuilder::error_rate)),
//!   without reaching the inner service;
//! * be answered at once with a substitute response
//!   ([`substitute`](ChaosBuilder::substitute)), without reaching it either;
//! * be slowed down ([`latency`](ChaosBuilder::latency)): the inner call
//!   starts at once, its result is held back until the latency has passed.
//!
//! Or a closure decides per request ([`decide`](ChaosBuilder::decide)). The
//! draws come from a seed and the call's number, so a seeded layer replays
//! the same faults for the same sequence of calls. A [`ChaosHandle`] turns
//! the chaos on and off and changes its rates while the service runs (an
//! outage phase, say).
//!
//! # Examples
//!
//! ```
//! use palisade::chaos::ChaosLayer;
//! use palisade::error::BoxError;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let chaos = ChaosLayer::<u32, u32>::builder().error_rate(1.0).seed(1).build().unwrap();
//! let handle = chaos.handle();
//! let svc = chaos.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
//!
//! assert!(svc.clone().oneshot(1).await.is_err()); // every call fails...
//! handle.disable();
//! assert_eq!(svc.oneshot(2).await.unwrap(), 2); // ...until the chaos is off
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::BoxError;
use crate::error::ConfigError;
use crate::validate;

/// What chaos does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Nothing: the call goes through.
    None,
    /// Fail at once with the injected error.
    Error,
    /// Answer at once with the substitute response.
    Substitute,
    /// Hold the result back this long.
    Latency(Duration),
}

/// An `f64` in an atomic, so rates can change while the service runs.
#[derive(Debug)]
struct Rate(AtomicU64);

impl Rate {
    fn new(rate: f64) -> Self {
        Rate(AtomicU64::new(rate.to_bits()))
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    fn set(&self, rate: f64) {
        self.0.store(rate.to_bits(), Relaxed);
    }
}

type Decide<Req> = dyn Fn(&Req) -> Fault + Send + Sync;

struct Shared<Req, Res> {
    enabled: AtomicBool,
    error_rate: Rate,
    substitute_rate: Rate,
    latency_rate: Rate,
    latency: Duration,
    seed: u64,
    calls: AtomicU64,
    make_error: Arc<dyn Fn() -> BoxError + Send + Sync>,
    substitute: Option<Arc<dyn Fn() -> Res + Send + Sync>>,
    decide: Option<Arc<Decide<Req>>>,
}

/// A uniform draw in `[0, 1)` for the `n`-th call: SplitMix64 of the seed
/// and the call's number, lock-free and replayable.
fn draw(seed: u64, n: u64, salt: u64) -> f64 {
    use crate::random::{GAMMA, mix, unit};
    unit(mix(seed ^ n.wrapping_mul(GAMMA) ^ salt))
}

impl<Req, Res> Shared<Req, Res> {
    fn fault(&self, req: &Req) -> Fault {
        if !self.enabled.load(Relaxed) {
            return Fault::None;
        }
        if let Some(decide) = &self.decide {
            return decide(req);
        }
        let n = self.calls.fetch_add(1, Relaxed);
        if draw(self.seed, n, 1) < self.error_rate.get() {
            Fault::Error
        } else if self.substitute.is_some() && draw(self.seed, n, 2) < self.substitute_rate.get() {
            Fault::Substitute
        } else if draw(self.seed, n, 3) < self.latency_rate.get() {
            Fault::Latency(self.latency)
        } else {
            Fault::None
        }
    }
}

/// Injects faults into a service; see the [module docs](self).
pub struct ChaosLayer<Res, Req> {
    shared: Arc<Shared<Req, Res>>,
}

impl<Res, Req> Clone for ChaosLayer<Res, Req> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<Res, Req> fmt::Debug for ChaosLayer<Res, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("enabled", &self.shared.enabled.load(Relaxed))
            .field("error_rate", &self.shared.error_rate.get())
            .field("latency_rate", &self.shared.latency_rate.get())
            .finish_non_exhaustive()
    }
}

impl<Res, Req> ChaosLayer<Res, Req> {
    /// Starts configuring chaos for a service taking `Req` and answering
    /// `Res`.
    pub fn builder() -> ChaosBuilder<Res, Req> {
        ChaosBuilder {
            error_rate: 0.0,
            substitute_rate: 0.0,
            latency_rate: 0.0,
            latency: Duration::ZERO,
            seed: None,
            make_error: Arc::new(|| BoxError::from("chaos: injected fault")),
            substitute: None,
            decide: None,
        }
    }
}

impl<Res, Req> ChaosLayer<Res, Req> {
    /// A handle to switch this chaos at run time.
    pub fn handle(&self) -> ChaosHandle
    where
        Req: 'static,
        Res: 'static,
    {
        ChaosHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, Res, Req> Layer<S> for ChaosLayer<Res, Req> {
    type Service = Chaos<S, Res, Req>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Configures a [`ChaosLayer`].
///
/// # Default
/// No fault at all (every rate 0); the injected error is
/// `"chaos: injected fault"`; a seed drawn at random.
#[must_use = "a builder does nothing until `build` is called"]
pub struct ChaosBuilder<Res, Req> {
    error_rate: f64,
    substitute_rate: f64,
    latency_rate: f64,
    latency: Duration,
    seed: Option<u64>,
    make_error: Arc<dyn Fn() -> BoxError + Send + Sync>,
    substitute: Option<Arc<dyn Fn() -> Res + Send + Sync>>,
    decide: Option<Arc<Decide<Req>>>,
}

impl<Res, Req> fmt::Debug for ChaosBuilder<Res, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosBuilder")
            .field("error_rate", &self.error_rate)
            .field("substitute_rate", &self.substitute_rate)
            .field("latency_rate", &self.latency_rate)
            .field("latency", &self.latency)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<Res, Req> ChaosBuilder<Res, Req> {
    /// Fail this fraction of calls (in `[0, 1]`).
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// The error injected calls fail with.
    pub fn error(mut self, make: impl Fn() -> BoxError + Send + Sync + 'static) -> Self {
        self.make_error = Arc::new(make);
        self
    }

    /// Answer this fraction of calls (in `[0, 1]`) with `make()`.
    pub fn substitute(mut self, rate: f64, make: impl Fn() -> Res + Send + Sync + 'static) -> Self {
        self.substitute_rate = rate;
        self.substitute = Some(Arc::new(make));
        self
    }

    /// Hold back the result of this fraction of calls (in `[0, 1]`) by
    /// `latency`.
    pub fn latency(mut self, rate: f64, latency: Duration) -> Self {
        self.latency_rate = rate;
        self.latency = latency;
        self
    }

    /// Seeds the draws: the `n`-th call always draws the same.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Lets a closure decide each request's fault instead of the rates
    /// (a [`Fault::Substitute`] needs a [`substitute`](Self::substitute)).
    pub fn decide(mut self, decide: impl Fn(&Req) -> Fault + Send + Sync + 'static) -> Self {
        self.decide = Some(Arc::new(decide));
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// A rate outside `[0, 1]` or NaN; a latency rate without a latency or
    /// one too long to represent.
    pub fn build(self) -> Result<ChaosLayer<Res, Req>, ConfigError> {
        for (parameter, rate) in [
            ("error_rate", self.error_rate),
            ("substitute", self.substitute_rate),
            ("latency", self.latency_rate),
        ] {
            validate::fraction(parameter, rate)?;
        }
        if self.latency_rate > 0.0 && self.latency.is_zero() {
            return Err(ConfigError::new(
                "latency",
                "a latency rate needs a latency above zero",
            ));
        }
        validate::fits("latency", self.latency)?;
        Ok(ChaosLayer {
            shared: Arc::new(Shared {
                enabled: AtomicBool::new(true),
                error_rate: Rate::new(self.error_rate),
                substitute_rate: Rate::new(self.substitute_rate),
                latency_rate: Rate::new(self.latency_rate),
                latency: self.latency,
                seed: self.seed.unwrap_or_else(rand::random),
                calls: AtomicU64::new(0),
                make_error: self.make_error,
                substitute: self.substitute,
                decide: self.decide,
            }),
        })
    }
}

/// Switches a [`ChaosLayer`] at run time. Cheap to clone.
#[derive(Clone)]
pub struct ChaosHandle {
    shared: Arc<dyn ChaosControl>,
}

trait ChaosControl: Send + Sync {
    fn enabled(&self) -> &AtomicBool;
    fn error_rate(&self) -> &Rate;
    fn latency_rate(&self) -> &Rate;
}

impl<Req, Res> ChaosControl for Shared<Req, Res> {
    fn enabled(&self) -> &AtomicBool {
        &self.enabled
    }
    fn error_rate(&self) -> &Rate {
        &self.error_rate
    }
    fn latency_rate(&self) -> &Rate {
        &self.latency_rate
    }
}

impl fmt::Debug for ChaosHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosHandle")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl ChaosHandle {
    /// Turns the chaos on.
    pub fn enable(&self) {
        self.shared.enabled().store(true, Relaxed);
    }

    /// Turns the chaos off: every call goes through untouched.
    pub fn disable(&self) {
        self.shared.enabled().store(false, Relaxed);
    }

    /// Whether the chaos is on.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled().load(Relaxed)
    }

    /// Changes the error rate; a rate outside `[0, 1]` is refused (`false`)
    /// and the old one kept.
    pub fn set_error_rate(&self, rate: f64) -> bool {
        let valid = (0.0..=1.0).contains(&rate);
        if valid {
            self.shared.error_rate().set(rate);
        }
        valid
    }

    /// Changes the latency rate; `false` if outside `[0, 1]`.
    pub fn set_latency_rate(&self, rate: f64) -> bool {
        let valid = (0.0..=1.0).contains(&rate);
        if valid {
            self.shared.latency_rate().set(rate);
        }
        valid
    }
}

/// A service with faults injected; see the [module docs](self).
pub struct Chaos<S, Res, Req> {
    inner: S,
    shared: Arc<Shared<Req, Res>>,
}

impl<S: Clone, Res, Req> Clone for Chaos<S, Res, Req> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, Res, Req> fmt::Debug for Chaos<S, Res, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, Res> Service<Req> for Chaos<S, Res, Req>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
{
    type Response = Res;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Res, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let kind = match self.shared.fault(&req) {
            Fault::Error => Kind::Ready(Some(Err((self.shared.make_error)()))),
            Fault::Substitute => match &self.shared.substitute {
                Some(make) => Kind::Ready(Some(Ok(make()))),
                None => Kind::Ready(Some(Err(
                    "chaos: a substitute was asked for, none is configured".into(),
                ))),
            },
            Fault::Latency(delay) => Kind::Delayed {
                future: self.inner.call(req),
                sleep: Box::pin(tokio::time::sleep(delay)),
                result: None,
            },
            Fault::None => Kind::Through {
                future: self.inner.call(req),
            },
        };
        ResponseFuture { kind }
    }
}

/// The future of a [`Chaos`] call (`E` is the inner service's error).
#[pin_project]
pub struct ResponseFuture<F, Res, E> {
    #[pin]
    kind: Kind<F, Res, E>,
}

#[pin_project(project = KindProj)]
enum Kind<F, Res, E> {
    Through {
        #[pin]
        future: F,
    },
    Ready(Option<Result<Res, BoxError>>),
    Delayed {
        #[pin]
        future: F,
        sleep: Pin<Box<Sleep>>,
        result: Option<Result<Res, E>>,
    },
}

impl<F, Res, E> fmt::Debug for ResponseFuture<F, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("chaos::ResponseFuture")
    }
}

impl<F, Res, E> Future for ResponseFuture<F, Res, E>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Through { future } => future.poll(cx).map_err(Into::into),
            KindProj::Ready(ready) => Poll::Ready(ready.take().expect("polled after completion")),
            KindProj::Delayed {
                future,
                sleep,
                result,
            } => {
                if result.is_none() {
                    *result = Some(ready!(future.poll(cx)));
                }
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(
                    result
                        .take()
                        .expect("polled after completion")
                        .map_err(Into::into),
                )
            }
        }
    }
}
