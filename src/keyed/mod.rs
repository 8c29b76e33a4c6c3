//! One instance of a layer per key: a breaker per host, a rate limiter per
//! tenant, a bulkhead per downstream, in a registry bounded in memory.
//!
//! A breaker for a whole provider cuts off its healthy hosts with its
//! failing one; .NET's resilience handler selects a pipeline per
//! authority, and Envoy and Finagle keep failure state per endpoint.
//! [`KeyedLayer`] does that for any of palisade's
//! [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer),
//! [`BulkheadLayer`](crate::bulkhead::BulkheadLayer) and
//! [`RateLimitLayer`](crate::rate_limit::RateLimitLayer) (or a layer of
//! your own that implements [`Instance`]): it takes a key from each
//! request, and sends the call through that key's instance, a fork of
//! the template layer with the same settings and a state of its own.
//!
//! # Keys
//!
//! From a closure ([`key`](KeyedBuilder::key)), or a built-in
//! [`key_source`](KeyedBuilder::key_source) (feature `http`):
//! [`HostAndPort`] (the host and port an `http::Request` or a
//! `reqwest::Request` goes to) and [`Header`] (a header's value). The
//! built-in sources find the instance without building an owned key, so a
//! call whose key has an instance allocates nothing.
//!
//! # Bounded
//!
//! The layer holds at most [`max_keys`](KeyedBuilder::max_keys) instances,
//! however many distinct keys come: an adversary sending a million keys
//! cannot make it hold more (`tests/keyed.rs` sends 10^6 to a layer of
//! 10^4). An instance goes when nothing holds it and
//!
//! * its state is back to that of a new one (a limiter that has filled up
//!   again, an idle bulkhead, a closed breaker whose window is empty): it
//!   can always go, since a new one would be the same;
//! * it was not used for the [`idle_timeout`](KeyedBuilder::idle_timeout);
//! * room is needed for a new key and the [`WhenFull`] policy says so
//!   (by default, the least recently used goes, as CLOCK approximates it).
//!
//! An instance that something holds (a call in flight through it, a
//! response body holding its permit, a handle) never goes: two instances
//! of one key would count one limit twice. If every instance is held, a
//! new key's call is refused with [`TooManyKeys`](crate::error::TooManyKeys).
//!
//! When each is looked for: when a new key finds the layer full, 16
//! instances of its shard (the registry has one shard per 16 keys, at
//! most four per core; each search goes on where the last one stopped,
//! so every instance is looked at in turn), then of another shard; with an [`idle_timeout`](KeyedBuilder::idle_timeout), also every
//! new key and every 64th call of a shard look at the next 16 and evict
//! up to two idle ones. [`KeyedHandle::evict_idle`] looks at every one.
//!
//! **Memory per key**, measured by `tests/keyed_memory.rs` with a
//! counting allocator (x86_64, 10^4 keys of `u64`): the registry's own
//! share is about 140 bytes (its table and slot, the key and the key's
//! display form); with the instance, a rate limiter or a bulkhead comes
//! to about 640 bytes a key, a breaker to about 1.1 KB (its default count
//! window of 100 calls; 1.0 KB with a window of 10). A host-and-port key
//! adds its host's length. The hash tables settle at about twice their
//! first size once keys come and go, and stay there: 10^6 more distinct
//! keys grow what a layer of 10^4 holds by at most a tenth, and the next
//! 3·10^5 by nothing.
//!
//! # Events and metrics
//!
//! Each instance's events carry its key ([`Event::key`](crate::event::Event::key)),
//! and its rejections name it (`circuit breaker "hosts" for key
//! "10.0.0.7:8080" is open; ...`); instances keep the template's name. The
//! layer's own [`KeyedEvent`]s tell of instances made and evicted and of
//! calls refused. [`MetricsEvents`](crate::event::MetricsEvents) counts
//! every key of a layer in the same series by default, so the number of
//! series does not grow with the keys; label them by key only through
//! [`MetricsEvents::key_label`](crate::event::MetricsEvents::key_label),
//! which maps each key to one of a bounded set of values.
//!
//! # Load balancing
//!
//! For the endpoints of a `tower::balance::p2c::Balance`, take each
//! endpoint's breaker with [`KeyedLayer::instance`] and build its service
//! with it; a breaker built with
//! [`eject_when_open`](crate::circuit_breaker::CircuitBreakerBuilder::eject_when_open)
//! reports `Pending` from `poll_ready` while open, so that the balancer
//! picks another endpoint, and [`max_ejection_percent`](KeyedBuilder::max_ejection_percent)
//! caps how many of the layer's breakers do so at once.
//!
//! # Readiness
//!
//! `poll_ready` is the inner service's. The key is known only at `call`:
//! the call then takes the readied inner service into its key's instance,
//! leaves a clone in its place (hence `S: Clone`), and asks the instance's
//! service whether it is ready. If it is (a closed breaker, a free
//! bulkhead, a limiter), the call goes through at once; if not (a
//! bulkhead's queue), the future waits for it, as tower's `Oneshot` does,
//! and an ejecting breaker that is open keeps it waiting.
//!
//! # Cost
//!
//! On top of the instance's own: the key, a SipHash of it, and one
//! shard's lock (a registry has four shards per core; never a global
//! lock), under which the instance's service around the inner one is
//! made. No allocation once the key has an
//! instance; making one allocates it, its key and its key's display form.
//! See BENCHMARKS.md for the lookup at 10^2 to 10^6 keys.
//!
//! # Examples
//!
//! A breaker per host: one host failing opens its own breaker only.
//!
//! ```
//! use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
//! use palisade::error::{BoxError, ErrorKind};
//! use palisade::keyed::{HostAndPort, HostPort, KeyedLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let per_host = KeyedLayer::builder(
//!     CircuitBreakerLayer::builder().name("hosts").consecutive_failures(3).build().unwrap(),
//! )
//! .key_source(HostAndPort)
//! .max_keys(1_000)
//! .build()
//! .unwrap();
//! let handle = per_host.handle();
//!
//! let client = per_host.layer(service_fn(|req: http::Request<()>| async move {
//!     match req.uri().host() {
//!         Some("bad.example") => Err::<&str, BoxError>("connection reset".into()),
//!         _ => Ok("ok"),
//!     }
//! }));
//! let get = |uri: &str| http::Request::get(uri).body(()).unwrap();
//!
//! for _ in 0..3 {
//!     let _ = client.clone().oneshot(get("http://bad.example/")).await;
//! }
//! let err = client.clone().oneshot(get("http://bad.example/")).await.unwrap_err();
//! assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
//! assert_eq!(
//!     err.to_string(),
//!     r#"circuit breaker "hosts" for key "bad.example:80" is open; it may admit calls again in 30s"#
//! );
//! assert_eq!(client.clone().oneshot(get("http://good.example/")).await.unwrap(), "ok");
//!
//! let bad = handle.get(&HostPort::new("bad.example", 80)).unwrap();
//! assert_eq!(bad.handle().state(), CircuitState::Open);
//! assert_eq!(handle.len(), 2);
//! # }
//! ```

mod event;
mod future;
mod handle;
mod key;
mod layer;

pub use self::event::KeyedEvent;
pub use self::future::ResponseFuture;
pub use self::handle::{EjectionCount, KeyedHandle};
#[cfg(feature = "http")]
pub use self::key::Header;
pub use self::key::{
    HeaderKey, HeaderRef, HostAndPort, HostPort, HostPortRef, KeyFn, KeyOf, KeySource, NoKey,
};
pub use self::layer::{KeyedBuilder, KeyedLayer, MAX_KEYS, WhenFull};
pub use crate::registry::{Eviction, Fork, Instance, Lookup};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use self::layer::Shared;
use crate::BoxError;

/// A service that sends each call through its key's instance; see the
/// [module docs](self).
pub struct Keyed<S, X: KeySource, I> {
    inner: S,
    shared: Arc<Shared<X, I>>,
}

impl<S, X: KeySource, I> Keyed<S, X, I> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<X, I>>) -> Self {
        Self { inner, shared }
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
}

impl<S: Clone, X: KeySource, I> Clone for Keyed<S, X, I> {
    /// A clone shares the instances.
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, X: KeySource, I> fmt::Debug for Keyed<S, X, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, X, I, Req> Service<Req> for Keyed<S, X, I>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    X: KeyOf<Req>,
    I: Instance + Layer<S>,
    I::Service: Service<Req>,
    <I::Service as Service<Req>>::Error: Into<BoxError>,
{
    type Response = <I::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<I::Service, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The readied service goes with the call, into its key's instance
        // (made under the registry's lock: no clone of the instance comes
        // and goes); this one gets a clone, readied by the caller's next
        // `poll_ready`.
        let inner = &mut self.inner;
        let found = {
            let lookup = self.shared.source.key_of(&req);
            self.shared.visit(&lookup, |instance| {
                let clone = inner.clone();
                instance.layer(std::mem::replace(inner, clone))
            })
        };
        match found {
            Ok(service) => ResponseFuture::called(service, req),
            Err(refused) => ResponseFuture::rejected(refused.into()),
        }
    }
}
