use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::Fallback;
use crate::classify::DefaultClassifier;
use crate::error::{ConfigError, ErrorKinds};
use crate::event::Listeners;

/// What triggers the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Any result the classifier calls a failure.
    Failure,
    /// Only errors of these kinds.
    Kinds(ErrorKinds),
}

/// What a fallback layer's services share: the name and the listeners.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) listeners: Listeners,
}

/// Applies a [`Fallback`] to a service: a failed call is answered by the
/// handler instead. Made by [`FallbackLayer::builder`]; see the
/// [module docs](super).
pub struct FallbackLayer<H, C = DefaultClassifier, K = DropRequest> {
    pub(crate) handler: H,
    pub(crate) classifier: C,
    pub(crate) trigger: Trigger,
    pub(crate) keep: K,
    pub(crate) shared: Arc<Shared>,
}

impl<H: Clone, C: Clone, K: Copy> Clone for FallbackLayer<H, C, K> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            classifier: self.classifier.clone(),
            trigger: self.trigger,
            keep: self.keep,
            shared: self.shared.clone(),
        }
    }
}

impl<H, C, K: fmt::Debug> fmt::Debug for FallbackLayer<H, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("name", &self.shared.name)
            .field("trigger", &self.trigger)
            .field("keep", &self.keep)
            .finish()
    }
}

/// Whether a fallback keeps each request for its handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot keep a `{Req}` for the fallback's handler",
    note = "`keep_request()` clones each request, so it needs `{Req}: Clone`; without it the handler's `Failed::request` is `None` and any request type works"
)]
pub trait KeepRequest<Req>: Copy {
    /// The request to keep, if any.
    fn keep(&self, req: &Req) -> Option<Req>;
}

/// Requests are not kept (the default): any request type works.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropRequest;

/// Requests are cloned and kept for the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req> KeepRequest<Req> for DropRequest {
    #[inline]
    fn keep(&self, _: &Req) -> Option<Req> {
        None
    }
}

#[diagnostic::do_not_recommend]
impl<Req: Clone> KeepRequest<Req> for CloneRequest {
    #[inline]
    fn keep(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

impl<H> FallbackLayer<H> {
    /// Starts configuring a fallback answered by `handler`: a
    /// [`from_fn`](super::from_fn), [`from_sync_fn`](super::from_sync_fn) or
    /// [`from_service`](super::from_service) handler.
    pub fn builder(handler: H) -> FallbackBuilder<H> {
        FallbackBuilder {
            handler,
            classifier: DefaultClassifier,
            kinds: None,
            keep: DropRequest,
            name: Arc::from("fallback"),
            listeners: Listeners::default(),
        }
    }
}

impl<S, H: Clone, C: Clone, K: Copy> Layer<S> for FallbackLayer<H, C, K> {
    type Service = Fallback<S, H, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            layer: self.clone(),
        }
    }
}

/// Configures a [`FallbackLayer`].
///
/// # Default
/// Triggered by any result the [`DefaultClassifier`] calls a failure (every
/// `Err`); the request is not kept; name `"fallback"`.
#[must_use = "a builder does nothing until `build` is called"]
pub struct FallbackBuilder<H, C = DefaultClassifier, K = DropRequest> {
    handler: H,
    classifier: C,
    kinds: Option<ErrorKinds>,
    keep: K,
    name: Arc<str>,
    listeners: Listeners,
}

impl<H, C, K: fmt::Debug> fmt::Debug for FallbackBuilder<H, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("kinds", &self.kinds)
            .field("keep", &self.keep)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<H, C, K> FallbackBuilder<H, C, K> {
    /// Falls back on the results this classifier calls failures (an HTTP 503
    /// response, say, not only errors).
    pub fn classifier<C2>(self, classifier: C2) -> FallbackBuilder<H, C2, K> {
        FallbackBuilder {
            handler: self.handler,
            classifier,
            kinds: self.kinds,
            keep: self.keep,
            name: self.name,
            listeners: self.listeners,
        }
    }

    /// Falls back only on errors of these kinds, for example only
    /// [`ErrorKind::CircuitOpen`](crate::error::ErrorKind::CircuitOpen): other
    /// failures pass through.
    pub fn only_on(mut self, kinds: impl Into<ErrorKinds>) -> Self {
        self.kinds = Some(kinds.into());
        self
    }

    /// Keeps a clone of each request so that the handler receives it. Costs
    /// a clone per call and needs `Clone` requests; off by default.
    pub fn keep_request(self) -> FallbackBuilder<H, C, CloneRequest> {
        FallbackBuilder {
            handler: self.handler,
            classifier: self.classifier,
            kinds: self.kinds,
            keep: CloneRequest,
            name: self.name,
            listeners: self.listeners,
        }
    }

    crate::event::name_and_listeners!("fallback layer", "The name carried by this layer's events.");

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// An empty list of kinds in [`only_on`](Self::only_on): the fallback
    /// could never run.
    pub fn build(self) -> Result<FallbackLayer<H, C, K>, ConfigError> {
        let trigger = match &self.kinds {
            None => Trigger::Failure,
            Some(kinds) if kinds.is_empty() => {
                return Err(ConfigError::new(
                    "only_on",
                    "an empty list of kinds never triggers the fallback",
                ));
            }
            Some(kinds) => Trigger::Kinds(*kinds),
        };
        Ok(FallbackLayer {
            handler: self.handler,
            classifier: self.classifier,
            trigger,
            keep: self.keep,
            shared: Arc::new(Shared {
                name: self.name,
                listeners: self.listeners,
            }),
        })
    }
}
