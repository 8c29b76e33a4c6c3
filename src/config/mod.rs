//! Configuration from files: every layer's settings as plain data, and
//! documents of named stacks that inherit from each other.
//!
//! Operators tune a service's resilience without a rebuild, as
//! Resilience4j's `configs` and `instances` or Polly's options do. Three
//! levels:
//!
//! * **Settings.** Every layer's builder takes a plain settings struct,
//!   [`CircuitBreakerSettings`](crate::circuit_breaker::CircuitBreakerSettings),
//!   [`RetrySettings`](crate::retry::RetrySettings) and the rest, whose
//!   fields are the builder's setters by the same names, each optional
//!   (unset: the builder's default). With feature `serde` they
//!   (de)serialise: durations as people write them (`"250ms"`, `"30s"`,
//!   `"1m30s"`; a bare number is refused, as its unit would be a guess),
//!   unknown fields refused, enums in snake case. `build()` validates them
//!   as it validates setters, so a file can set nothing a program could not.
//! * **Documents.** A [`Document`] has `defaults` and `instances`; each
//!   instance is a stack ([`StackSettings`]) in the preset's order, that
//!   starts from the defaults, or from the instance it `inherits`, and lays
//!   its own settings over it field by field.
//! * **Stacks.** [`Config::new`] resolves and validates every instance at
//!   once; an error names the path of the value refused
//!   (`instances.inventory.circuit_breaker.failure_rate_threshold`).
//!   [`Config::stack`] (or [`http_stack`](Config::http_stack), or
//!   [`stack_with`](Config::stack_with) for a classifier and request
//!   replay of your own) makes an instance's [`StackLayer`], whose type is
//!   the same whatever parts the document chose.
//!
//! # Example
//!
//! ```
//! use palisade::config::{Config, Document};
//! use palisade::error::BoxError;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let document: Document = toml::from_str(
//!     r#"
//!     [defaults]
//!     total_timeout = "5s"
//!     attempt_timeout = "1s"
//!     retry = { max_attempts = 3, backoff = { initial = "50ms", max_delay = "1s" } }
//!     circuit_breaker = { count_window = 50, failure_rate_threshold = 0.5 }
//!
//!     [instances.inventory]
//!     bulkhead = { max_concurrent = 32 }
//!
//!     [instances.search]
//!     inherits = "inventory"
//!     circuit_breaker = { failure_rate_threshold = 0.25 }
//!     without = ["retry"]
//!     "#,
//! )?;
//! let config = Config::new(document)?;
//!
//! let search = config.settings("search").unwrap();
//! assert!(search.retry.is_none());
//! let breaker = search.circuit_breaker.as_ref().unwrap();
//! assert_eq!(breaker.count_window, Some(50)); // from the defaults
//! assert_eq!(breaker.failure_rate_threshold, Some(0.25)); // its own
//! assert_eq!(search.bulkhead.as_ref().unwrap().max_concurrent, Some(32)); // from inventory
//!
//! let stack = config.stack("search")?;
//! let svc = stack.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//! assert_eq!(svc.oneshot(21).await?, 42);
//!
//! // A value no builder would take is refused, with its path.
//! let bad: Document = toml::from_str(
//!     "[instances.inventory]\ncircuit_breaker = { failure_rate_threshold = 1.5 }",
//! )?;
//! let error = Config::new(bad).unwrap_err();
//! assert_eq!(error.path(), "instances.inventory.circuit_breaker.failure_rate_threshold");
//! assert_eq!(
//!     error.to_string(),
//!     "invalid `instances.inventory.circuit_breaker.failure_rate_threshold`: must be a fraction in (0, 1], got 1.5",
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # What a document cannot say
//!
//! What is code stays code: the classifier, how requests are copied for a
//! retry, a fallback's answer, a rate limiter's cost function, a hedge's
//! delay function, `cover_body` (which changes the response's type) and
//! listeners (given to [`Config::on_event`]).

mod document;
mod slot;
mod stack;

pub use self::document::{Document, PartName, StackSettings};
pub use self::slot::{Slot, SlotFuture, SlotService};
pub use self::stack::{StackLayer, Stacked};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::classify::DefaultClassifier;
use crate::error::ConfigError;
use crate::event::{Listener, Listeners};
use crate::replay::ByClone;

/// A validated [`Document`]: every instance resolved over its bases, and
/// the listeners its stacks report to. Makes each instance's
/// [`StackLayer`].
#[derive(Clone)]
pub struct Config {
    instances: BTreeMap<String, StackSettings>,
    listeners: Listeners,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Resolves every instance of `document` over its bases and validates
    /// each part as its builder's `build()` would.
    ///
    /// # Errors
    /// The first value refused, in instance-name order, with its path
    /// ([`ConfigError::path`]): an `inherits` that names no instance or
    /// goes round in a circle, two parts in one slot, `without` a part the
    /// instance sets, or a setting a builder refuses.
    pub fn new(document: Document) -> Result<Self, ConfigError> {
        Ok(Self {
            instances: document.resolve()?,
            listeners: Listeners::default(),
        })
    }

    /// Registers `listener` on every part of every stack made from here
    /// on: one event stream for all instances, each event carrying its
    /// part's name (the instance's, unless the settings name it).
    pub fn on_event(mut self, listener: impl Listener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// The instances' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }

    /// An instance's settings, resolved: what its stack is built from.
    pub fn settings(&self, instance: &str) -> Option<&StackSettings> {
        self.instances.get(instance)
    }

    /// The instance's stack, for any request and response: every `Err`
    /// is a failure ([`DefaultClassifier`]) and requests are copied by
    /// `Clone` ([`ByClone`]) for a retry.
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    pub fn stack(
        &self,
        instance: &str,
    ) -> Result<StackLayer<DefaultClassifier, ByClone>, ConfigError> {
        self.stack_with(instance, DefaultClassifier, ByClone)
    }

    /// The instance's stack for an HTTP client (`reqwest::Client`, hyper's
    /// client): the [`HttpClassifier`](crate::classify::HttpClassifier)
    /// and [`ReplayBodies`](crate::replay::ReplayBodies), as in
    /// [`Resilience::http`](crate::Resilience::http). The numbers are the
    /// document's (the builders' defaults where it says nothing), not the
    /// standard stack's.
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    #[cfg(feature = "http")]
    pub fn http_stack(
        &self,
        instance: &str,
    ) -> Result<StackLayer<crate::classify::HttpClassifier, crate::replay::ReplayBodies>, ConfigError>
    {
        self.stack_with(
            instance,
            crate::classify::HttpClassifier::new(),
            crate::replay::ReplayBodies::default(),
        )
    }

    /// The instance's stack with a classifier and a request replay of
    /// your own. A classifier that judges at the response head
    /// ([`JudgesAtHead`](crate::classify::JudgesAtHead)) gives every part
    /// the same response type, which a stack whose parts a file chooses
    /// needs.
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    pub fn stack_with<C: Clone, K: Clone>(
        &self,
        instance: &str,
        classifier: C,
        replay: K,
    ) -> Result<StackLayer<C, K>, ConfigError> {
        let settings = self.instances.get(instance).ok_or_else(|| {
            ConfigError::new(
                "instances",
                format!(
                    "there is no instance {instance:?}; the document has {:?}",
                    self.instances.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        StackLayer::build(instance, settings, classifier, replay, &self.listeners)
    }
}
