//! The event stream: what the layers did, as it happens.
//!
//! Every layer's builder takes listeners ([`on_event`](crate::circuit_breaker::CircuitBreakerBuilder::on_event));
//! each listener sees every [`Event`] of that layer, synchronously, on the
//! task that caused it. An event is the layer's name and what happened, in
//! the terms of the layer's pattern: an [`EventKind`] that the pattern owns
//! (`circuit_breaker::BreakerEvent`, `bulkhead::BulkheadEvent`,
//! `rate_limit::RateLimitEvent`, `adaptive::AdaptiveLimitEvent`,
//! `adaptive::ThrottleEvent`, `retry::RetryEvent`,
//! `hedge::HedgeEvent`, `timeout::TimeoutEvent`,
//! `fallback::FallbackEvent`, `keyed::KeyedEvent`), read back with
//! [`Event::kind`]. Events
//! borrow their data, so emitting one allocates nothing, and with no
//! listener registered nothing is built at all.
//!
//! A listener must be quick and must not block: it runs inside the call.
//! Forward to a channel if you need to do more.
//!
//! Ready-made listeners: [`TracingEvents`] (feature `tracing`) and
//! [`MetricsEvents`] (feature `metrics`; every metric it records, with its
//! labels, is in the table of [`event::metrics`](self::metrics)). Each pattern says how its events
//! are traced and counted, in its own folder: a new pattern adds its kinds
//! without touching this module or those listeners.
//!
//! # Examples
//!
//! ```
//! use palisade::circuit_breaker::{BreakerEvent, CircuitBreakerLayer, CircuitState};
//! use palisade::event::Event;
//! use std::sync::{Arc, Mutex};
//!
//! let opened = Arc::new(Mutex::new(Vec::new()));
//! let seen = opened.clone();
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("db")
//!     .on_event(move |event: &Event<'_>| {
//!         if let Some(BreakerEvent::StateTransition { to: CircuitState::ForcedOpen, .. }) =
//!             event.kind()
//!         {
//!             seen.lock().unwrap().push(event.to_string());
//!         }
//!     })
//!     .build()
//!     .unwrap();
//! breaker.handle().force_open();
//! assert_eq!(
//!     *opened.lock().unwrap(),
//!     ["circuit `db`: Closed -> ForcedOpen (set by hand)"]
//! );
//! ```

#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "tracing")]
mod tracing;

#[cfg(feature = "metrics")]
pub use self::metrics::{Measure, MetricsEvents};
#[cfg(feature = "tracing")]
pub use self::tracing::TracingEvents;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Something that happened in a layer: the layer's name, the key of the
/// instance it happened in (for a [keyed](crate::keyed) layer's instances
/// and the keyed layer itself), and what happened, as its pattern tells it.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    name: &'a Arc<str>,
    key: Option<&'a str>,
    what: &'a dyn EventKind,
}

impl<'a> Event<'a> {
    /// `what` happened in the layer named `name`.
    pub fn new(name: &'a Arc<str>, what: &'a dyn EventKind) -> Self {
        Self {
            name,
            key: None,
            what,
        }
    }

    /// The same event, in the instance of `key` of a keyed layer.
    #[must_use]
    pub fn with_key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// The name of the layer it happened in. The instances of one
    /// [keyed](crate::keyed) layer share its name, and differ by
    /// [`key`](Self::key).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The key the event is about, as the key displays (`10.0.0.7:8080`,
    /// `tenant-42`): that of the [keyed](crate::keyed) layer's instance it
    /// happened in, or, for the keyed layer's own events (an instance made
    /// or evicted, a call refused), the key they concern. `None` for any
    /// other layer's events.
    pub fn key(&self) -> Option<&'a str> {
        self.key
    }

    /// The layer's name, shared (a metric label made from it allocates
    /// nothing).
    pub fn shared_name(&self) -> &'a Arc<str> {
        self.name
    }

    /// What happened, if it is a `K`: for example
    /// `event.kind::<BreakerEvent>()`.
    pub fn kind<K: EventKind>(&self) -> Option<&'a K> {
        let what: &'a dyn Any = self.what;
        what.downcast_ref()
    }

    /// What happened, whatever its kind.
    pub fn what(&self) -> &'a dyn EventKind {
        self.what
    }
}

impl fmt::Display for Event<'_> {
    /// The pattern's sentence, then the key of a keyed instance:
    /// ``circuit `hosts`: Closed -> Open (failure rate reached its threshold); key `10.0.0.7:8080` ``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.what.describe(self.name, f)?;
        match self.key {
            Some(key) => write!(f, "; key `{key}`"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("key", &self.key)
            .field("what", &self.what)
            .finish()
    }
}

/// What happened in a layer, in its pattern's terms. Each pattern owns one
/// (an enum in its folder) and says there how it reads, how it is traced
/// and how it is counted; a layer of your own can have one too.
pub trait EventKind: Any + fmt::Debug + Send + Sync {
    /// The event as a sentence, for logs, with the layer's `name`: for
    /// example ``circuit `db`: call rejected, retry in 5s``.
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// Emits the event as a [`tracing`](https://docs.rs/tracing) event
    /// (for [`TracingEvents`]), at a level and with fields of the
    /// pattern's choosing. The default: `debug`, with the event's `Debug`.
    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        ::tracing::debug!(target: "palisade", layer = name, event = ?self, "event");
    }

    /// What [`MetricsEvents`] records for it: each [`Measure`] passed to
    /// `record`. The default records nothing.
    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(Measure)) {
        let _ = record;
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

/// The settings every builder has, written once: `name()` and
/// `on_event()`, over the `name` and `listeners` fields found at `$at`
/// (`self.$at.name`), or on the builder itself (`self.name`).
macro_rules! name_and_listeners {
    ($what:literal, $name_doc:literal $(, $at:ident)?) => {
        #[doc = $name_doc]
        pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
            self$(.$at)?.name = name.into();
            self
        }

        #[doc = concat!("Registers a listener for this ", $what, "'s [events](crate::event).")]
        pub fn on_event(mut self, listener: impl crate::event::Listener) -> Self {
            self$(.$at)?.listeners.push(std::sync::Arc::new(listener));
            self
        }

        /// Registers a listener shared with other layers (the preset's
        /// stack-wide listeners).
        #[allow(dead_code)]
        pub(crate) fn add_listener(
            mut self,
            listener: std::sync::Arc<dyn crate::event::Listener>,
        ) -> Self {
            self$(.$at)?.listeners.push(listener);
            self
        }
    };
}
pub(crate) use name_and_listeners;

/// The listeners of one layer, and the key of the instance they hear
/// (a keyed layer's instance: its events and rejections carry the key).
#[derive(Clone, Default)]
pub(crate) struct Listeners {
    listeners: Vec<Arc<dyn Listener>>,
    key: Option<Arc<str>>,
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} listener(s)", self.listeners.len())?;
        match &self.key {
            Some(key) => write!(f, ", key {key:?}"),
            None => Ok(()),
        }
    }
}

impl Listeners {
    /// The same listeners, for the instance of `key`.
    pub(crate) fn for_key(&self, key: Arc<str>) -> Self {
        Self {
            listeners: self.listeners.clone(),
            key: Some(key),
        }
    }

    /// The key of the instance these listeners hear, if it is one.
    pub(crate) fn key(&self) -> Option<&Arc<str>> {
        self.key.as_ref()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    pub(crate) fn push(&mut self, listener: Arc<dyn Listener>) {
        self.listeners.push(listener);
    }

    /// The listeners, each shared.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Listener>> {
        self.listeners.iter()
    }

    /// Builds the event only if someone listens: `what` happened in the
    /// layer named `name`.
    #[inline]
    pub(crate) fn emit<K: EventKind>(&self, name: &Arc<str>, what: impl FnOnce() -> K) {
        if self.listeners.is_empty() {
            return;
        }
        let what = what();
        let event = Event {
            name,
            key: self.key.as_deref(),
            what: &what,
        };
        for listener in &self.listeners {
            listener.on_event(&event);
        }
    }

    /// Like [`emit`](Self::emit), about the instance of `key` (the keyed
    /// layer's own events, which are about one key of many).
    #[inline]
    pub(crate) fn emit_for<K: EventKind>(
        &self,
        name: &Arc<str>,
        key: &str,
        what: impl FnOnce() -> K,
    ) {
        if self.listeners.is_empty() {
            return;
        }
        let what = what();
        let event = Event::new(name, &what).with_key(key);
        for listener in &self.listeners {
            listener.on_event(&event);
        }
    }
}
