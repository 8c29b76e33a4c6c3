use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::event::KeyedEvent;
use super::key::{HostAndPort, KeyFn, KeySource, NoKey};
use super::{Keyed, KeyedHandle};
use crate::error::{ConfigError, TooManyKeys};
use crate::event::Listeners;
use crate::registry::{Change, Ejection, Fork, Full, Instance, Lookup, Registry};
use crate::validate;

/// The most keys a keyed layer may hold.
pub const MAX_KEYS: usize = 1 << 31;

/// What a keyed layer does with a call whose key has no instance when it
/// holds its [`max_keys`](KeyedBuilder::max_keys) and none of them is idle
/// or fresh.
///
/// Whatever the policy, an instance in use (a call in flight through it, a
/// handle held) never goes, and an idle or fresh one goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// The least recently used instance that is not in use goes, and the
    /// key gets a new one: the layer keeps serving every key, and what the
    /// evicted instance knew (an open breaker, a spent limit) is
    /// forgotten. The default. If every instance is in use, the call is
    /// refused as with `Reject`.
    ///
    /// "Least recently used" as CLOCK approximates it (per shard of the
    /// registry, among the next 16 instances from its hand): an instance
    /// looked up since the hand last passed gets a second chance, and one
    /// made for a key never seen again is the first to go, so a burst of
    /// one-off keys evicts itself rather than the keys in steady use.
    #[default]
    EvictLeastRecentlyUsed,
    /// The call is refused with [`TooManyKeys`]: no state is forgotten,
    /// and keys past the maximum get nothing until room is made.
    Reject,
    /// The call goes through one instance shared by every key that finds
    /// no room (made with the layer, with the key `(shared)`): no state is
    /// forgotten and no call refused, but the keys past the maximum share
    /// one limit. The shared instance is not one of the layer's keys (not
    /// in [`KeyedHandle::len`] nor [`KeyedHandle::instances`]; see
    /// [`KeyedHandle::shared_instance`]).
    Share,
}

/// The key of the instance shared by keys that find no room.
pub(crate) const SHARED_KEY: &str = "(shared)";

/// What every service of one keyed layer shares: the registry and how to
/// fill it.
pub(crate) struct Shared<X: KeySource, I> {
    pub(crate) name: Arc<str>,
    pub(crate) source: X,
    pub(crate) template: I,
    pub(crate) registry: Registry<X::Key, I>,
    pub(crate) when_full: WhenFull,
    pub(crate) shared: Option<I>,
    pub(crate) ejection: Option<Arc<Ejection>>,
    pub(crate) listeners: Listeners,
}

impl<X: KeySource, I: Instance> Shared<X, I> {
    /// The instance for `lookup`'s key, made if need be.
    pub(crate) fn instance<Q>(&self, lookup: &Q) -> Result<I, TooManyKeys>
    where
        Q: Lookup<X::Key> + ?Sized,
    {
        self.visit(lookup, I::clone)
    }

    /// `visit` on the instance for `lookup`'s key (made if need be) under
    /// the registry's lock, or on the shared instance when there is no room
    /// and the policy says so.
    #[inline]
    pub(crate) fn visit<Q, R>(
        &self,
        lookup: &Q,
        visit: impl FnOnce(&I) -> R,
    ) -> Result<R, TooManyKeys>
    where
        Q: Lookup<X::Key> + ?Sized,
    {
        let mut visit = Some(visit);
        let found = self.registry.visit(
            lookup,
            |key| {
                self.template
                    .fork(&Fork::new(key.clone(), self.ejection.clone()))
            },
            |instance| (visit.take().expect("visited once"))(instance),
            &mut |key, change| self.report(key, change),
        );
        match found {
            Ok(out) => Ok(out),
            Err(Full) => {
                let shared = self.no_room(lookup)?;
                Ok((visit.take().expect("not visited: no room"))(shared))
            }
        }
    }

    /// No room for `lookup`'s key: the shared instance, or the refusal.
    #[cold]
    fn no_room<Q>(&self, lookup: &Q) -> Result<&I, TooManyKeys>
    where
        Q: Lookup<X::Key> + ?Sized,
    {
        let key = || -> Arc<str> { Arc::from(lookup.to_key().to_string()) };
        match (&self.shared, self.when_full) {
            (Some(shared), WhenFull::Share) => {
                if !self.listeners.is_empty() {
                    self.listeners
                        .emit_for(&self.name, &key(), || KeyedEvent::Shared);
                }
                Ok(shared)
            }
            _ => {
                let key = key();
                self.listeners
                    .emit_for(&self.name, &key, || KeyedEvent::Rejected);
                Err(TooManyKeys::new(
                    self.name.clone(),
                    key,
                    self.registry.max(),
                ))
            }
        }
    }

    pub(crate) fn report(&self, key: &Arc<str>, change: Change) {
        let keys = self.registry.len();
        self.listeners.emit_for(&self.name, key, || match change {
            Change::Created => KeyedEvent::InstanceCreated { keys },
            Change::Evicted(reason) => KeyedEvent::InstanceEvicted { reason, keys },
        });
    }
}

/// Makes one instance of a layer per key taken from the request, in a
/// bounded registry; see the [module docs](super).
///
/// One layer is one registry: every service it wraps and every clone of
/// them share its instances. Made by [`KeyedLayer::builder`].
///
/// # Examples
///
/// A rate limiter per tenant, the tenant named by a header, on a server:
/// one tenant over its rate is refused, the others are not slowed down.
///
/// ```
/// use palisade::error::{BoxError, ErrorKind};
/// use palisade::keyed::{Header, KeyedLayer, WhenFull};
/// use palisade::rate_limit::RateLimitLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let per_tenant = KeyedLayer::builder(
///     RateLimitLayer::builder().name("tenants").rate(2, Duration::from_secs(1)).build().unwrap(),
/// )
/// .key_source(Header::new(http::HeaderName::from_static("x-tenant")))
/// .max_keys(10_000)
/// .idle_timeout(Duration::from_secs(600))
/// .when_full(WhenFull::Reject)
/// .build()
/// .unwrap();
/// let app = per_tenant.layer(service_fn(|_: http::Request<()>| async {
///     Ok::<_, BoxError>("hello")
/// }));
/// let from = |tenant: &str| {
///     http::Request::get("/").header("x-tenant", tenant).body(()).unwrap()
/// };
///
/// app.clone().oneshot(from("acme")).await.unwrap();
/// app.clone().oneshot(from("acme")).await.unwrap();
/// let err = app.clone().oneshot(from("acme")).await.unwrap_err();
/// assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
/// assert!(err.to_string().starts_with(r#"rate limiter "tenants" for key "acme" is over its rate"#));
/// assert_eq!(app.oneshot(from("globex")).await.unwrap(), "hello");
/// # }
/// ```
pub struct KeyedLayer<X: KeySource, I> {
    shared: Arc<Shared<X, I>>,
}

impl<X: KeySource, I> Clone for KeyedLayer<X, I> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<X: KeySource, I> fmt::Debug for KeyedLayer<X, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLayer")
            .field("name", &self.shared.name)
            .field("registry", &self.shared.registry)
            .field("when_full", &self.shared.when_full)
            .finish()
    }
}

// `builder` sits on one concrete key source, as `HashMap::new` sits on
// `RandomState`: the layer's type needs a key source, and the builder
// picks the real one.
impl<I: Instance> KeyedLayer<HostAndPort, I> {
    /// Starts configuring a keyed layer whose instances are forks of
    /// `template`: each key gets an instance with the template's settings
    /// and a state of its own. The template itself serves no call.
    pub fn builder(template: I) -> KeyedBuilder<NoKey, I> {
        KeyedBuilder {
            name: Arc::from("keyed"),
            source: NoKey,
            template,
            max_keys: 10_000,
            idle_timeout: None,
            when_full: WhenFull::default(),
            max_ejection_percent: None,
            listeners: Listeners::default(),
        }
    }
}

impl<X: KeySource, I: Instance> KeyedLayer<X, I> {
    /// A handle to list the instances and let idle ones go.
    pub fn handle(&self) -> KeyedHandle<X, I> {
        KeyedHandle::new(self.shared.clone())
    }

    /// The instance of `key`, made if need be, as a call with that key
    /// would find it: for a service of your own per key, such as the
    /// endpoints of a load balancer, each with its key's breaker. The
    /// instance (and every service made from it) holds its place in the
    /// registry while it is alive.
    ///
    /// # Errors
    /// [`TooManyKeys`] when the layer has no room for the key (and its
    /// policy is not [`WhenFull::Share`]).
    ///
    /// # Examples
    ///
    /// A breaker per endpoint of tower's power-of-two-choices balancer;
    /// each leaves the balancer while it is open, and at most half of them
    /// at once:
    ///
    /// ```
    /// use palisade::circuit_breaker::CircuitBreakerLayer;
    /// use palisade::error::BoxError;
    /// use palisade::keyed::KeyedLayer;
    /// use std::net::SocketAddr;
    /// use tower::balance::p2c::Balance;
    /// use tower::discover::ServiceList;
    /// use tower::load::Constant;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let breakers = KeyedLayer::builder(
    ///     CircuitBreakerLayer::builder().consecutive_failures(5).eject_when_open().build().unwrap(),
    /// )
    /// .key(|addr: &SocketAddr| *addr)
    /// .max_ejection_percent(50)
    /// .build()
    /// .unwrap();
    /// let addrs: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()];
    /// let endpoints = addrs.iter().map(|addr| {
    ///     let addr = *addr;
    ///     // Your client for `addr`, here one that answers with it.
    ///     let client = service_fn(move |_: &'static str| async move { Ok::<_, BoxError>(addr) });
    ///     Constant::new(breakers.instance(&addr).unwrap().layer(client), 0)
    /// });
    /// let mut balance = Balance::new(ServiceList::new(endpoints.collect::<Vec<_>>()));
    /// let answered_by = balance.ready().await.unwrap().call("/item").await.unwrap();
    /// assert!(addrs.contains(&answered_by));
    /// assert_eq!(breakers.handle().ejection().unwrap().breakers, 2);
    /// # }
    /// ```
    pub fn instance(&self, key: &X::Key) -> Result<I, TooManyKeys> {
        self.shared.instance(key)
    }
}

impl<S, X: KeySource, I> Layer<S> for KeyedLayer<X, I> {
    type Service = Keyed<S, X, I>;

    fn layer(&self, inner: S) -> Keyed<S, X, I> {
        Keyed::from_shared(inner, self.shared.clone())
    }
}

/// Configures a [`KeyedLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"keyed"` |
/// | [`key`](Self::key) / [`key_source`](Self::key_source) | none: `build` needs one |
/// | [`max_keys`](Self::max_keys) | 10 000 |
/// | [`idle_timeout`](Self::idle_timeout) | none: instances go only when fresh, or when room is needed |
/// | [`when_full`](Self::when_full) | [`WhenFull::EvictLeastRecentlyUsed`] |
/// | [`max_ejection_percent`](Self::max_ejection_percent) | none: each breaker that ejects itself does so alone |
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeyedBuilder<X, I> {
    name: Arc<str>,
    source: X,
    template: I,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    when_full: WhenFull,
    max_ejection_percent: Option<u32>,
    listeners: Listeners,
}

impl<X, I> fmt::Debug for KeyedBuilder<X, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("name", &self.name)
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .field("when_full", &self.when_full)
            .field("max_ejection_percent", &self.max_ejection_percent)
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl<X, I: Instance> KeyedBuilder<X, I> {
    crate::event::name_and_listeners!(
        "keyed layer",
        "The name carried by this layer's events and rejections (and not by its instances', which keep the template's name and carry their key)."
    );

    /// Keys each request by `key(&request)`: a tenant's name, a method, a
    /// host. The key displays in events and rejections, so it must be
    /// `Display`; wrap it in a type of your own otherwise.
    pub fn key<Req, K, F>(self, key: F) -> KeyedBuilder<KeyFn<F, Req, K>, I>
    where
        F: Fn(&Req) -> K + Send + Sync + 'static,
        KeyFn<F, Req, K>: KeySource,
    {
        self.key_source(KeyFn::new(key))
    }

    /// Keys each request by a built-in source: [`HostAndPort`](super::HostAndPort)
    /// or [`Header`](super::Header) (feature `http`), which find the
    /// instance without building an owned key.
    pub fn key_source<Y: KeySource>(self, source: Y) -> KeyedBuilder<Y, I> {
        KeyedBuilder {
            name: self.name,
            source,
            template: self.template,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            when_full: self.when_full,
            max_ejection_percent: self.max_ejection_percent,
            listeners: self.listeners,
        }
    }

    /// At most this many instances, so this many keys, at once (1 to
    /// [`MAX_KEYS`]). However many distinct keys come, no more instances
    /// are alive than this (and the shared one, with [`WhenFull::Share`]).
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self
    }

    /// An instance not used for this long goes, if nothing holds it. It
    /// is found when a new key comes and on some lookups, or by
    /// [`KeyedHandle::evict_idle`]; with it set, each call reads the
    /// clock once more.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// What to do with a new key when the layer is full; see [`WhenFull`].
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// For breakers that eject themselves from a load balancer while open
    /// ([`CircuitBreakerBuilder::eject_when_open`](crate::circuit_breaker::CircuitBreakerBuilder::eject_when_open)):
    /// at most this percentage of this layer's breakers (1 to 100) are
    /// ejected at once, as Envoy's `max_ejection_percent`.
    ///
    /// A breaker that opens is ejected if fewer than the percentage of the
    /// layer's breakers are: the test is made before each ejection, so one
    /// breaker can always be ejected, and the count may end above the
    /// percentage (50% of 3 breakers: the first two to open are ejected,
    /// since 0 of 3 and then 1 of 3 are below 50%, and 2 of 3 is not; of
    /// 4 breakers, two as well). The
    /// test is made each time a breaker opens (again after a failed
    /// probe); one that opened past the cap is not ejected later while it
    /// stays open, and answers its calls at once with `CircuitOpen`. An
    /// ejection ends when the open wait does (the breaker is half-open,
    /// back in its balancer) or the breaker is set by hand. The shared
    /// instance of [`WhenFull::Share`] counts among the breakers. Without
    /// this setting, each breaker ejects itself whenever it is open.
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.max_ejection_percent = Some(percent);
        self
    }
}

impl<X: KeySource, I: Instance> KeyedBuilder<X, I> {
    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting: `max_keys` (0, or more than
    /// [`MAX_KEYS`]), `idle_timeout` (zero, or longer than about 584
    /// years), `max_ejection_percent` (0 or above 100). Without a key
    /// source, `build` does not compile.
    pub fn build(self) -> Result<KeyedLayer<X, I>, ConfigError> {
        validate::within("max_keys", self.max_keys, 1..=MAX_KEYS)?;
        if let Some(idle) = self.idle_timeout {
            validate::positive("idle_timeout", idle)?;
        }
        if let Some(percent) = self.max_ejection_percent {
            validate::within("max_ejection_percent", percent, 1..=100)?;
        }
        let ejection = self
            .max_ejection_percent
            .map(|percent| Arc::new(Ejection::new(percent)));
        let shared = (self.when_full == WhenFull::Share).then(|| {
            self.template
                .fork(&Fork::new(Arc::from(SHARED_KEY), ejection.clone()))
        });
        Ok(KeyedLayer {
            shared: Arc::new(Shared {
                registry: Registry::new(
                    self.max_keys,
                    Registry::<X::Key, I>::shards_for(self.max_keys),
                    self.idle_timeout,
                    self.when_full == WhenFull::EvictLeastRecentlyUsed,
                ),
                name: self.name,
                source: self.source,
                template: self.template,
                when_full: self.when_full,
                shared,
                ejection,
                listeners: self.listeners,
            }),
        })
    }
}
