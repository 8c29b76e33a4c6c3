use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::Timeout;
use crate::cover::{self, Head};
use crate::error::ConfigError;
use crate::event::Listeners;
use crate::validate;

/// What every service of one timeout layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) listeners: Listeners,
}

/// Applies a [`Timeout`] to a service: each call must finish within the
/// limit or fail with [`Elapsed`](crate::error::Elapsed).
///
/// `M` is the part of the call the limit covers: the call up to the
/// response head ([`Head`], the default), or also the response body
/// ([`cover::Body`], made by [`TimeoutBuilder::cover_body`]).
///
/// Made by [`TimeoutLayer::new`] or [`TimeoutLayer::builder`]; see the
/// [module docs](super).
pub struct TimeoutLayer<M = Head> {
    shared: Arc<Shared>,
    _mode: PhantomData<fn() -> M>,
}

impl<M> Clone for TimeoutLayer<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for TimeoutLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("name", &self.shared.name)
            .field("timeout", &self.shared.timeout)
            .field("covers", &cover::name::<M>())
            .finish()
    }
}

impl TimeoutLayer {
    /// A timeout of `timeout` per call, named `"timeout"` (its events and
    /// its [`Elapsed`](crate::error::Elapsed) say so), with no listener.
    ///
    /// # Errors
    /// A zero or unrepresentable (longer than about 584 years) timeout.
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Self::builder().timeout(timeout).build()
    }

    /// Starts configuring a timeout.
    pub fn builder() -> TimeoutBuilder {
        TimeoutBuilder::default()
    }
}

impl<M> TimeoutLayer<M> {
    /// The limit each call has.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }
}

impl<S, M> Layer<S> for TimeoutLayer<M> {
    type Service = Timeout<S, M>;

    fn layer(&self, inner: S) -> Timeout<S, M> {
        Timeout::from_shared(inner, self.shared.clone())
    }
}

/// Configures a [`TimeoutLayer`].
///
/// # Default
/// Name `"timeout"`, timeout 10 s, no listener; the limit covers the call
/// up to the response head (see [`cover_body`](Self::cover_body)).
#[must_use = "a builder does nothing until `build` is called"]
pub struct TimeoutBuilder<M = Head> {
    name: Arc<str>,
    timeout: Duration,
    listeners: Listeners,
    _mode: PhantomData<fn() -> M>,
}

impl Default for TimeoutBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("timeout"),
            timeout: Duration::from_secs(10),
            listeners: Listeners::default(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for TimeoutBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBuilder")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("listeners", &self.listeners)
            .field("covers", &cover::name::<M>())
            .finish()
    }
}

impl TimeoutBuilder {
    /// Bounds each call's `http::Response` body too, not only the wait for
    /// its head (feature `http`).
    ///
    /// The service's responses become `http::Response<`[`ResponseBody<B>`](super::ResponseBody)`>`:
    /// the body keeps the deadline, still measured from `call`, and once it
    /// has passed, the body yields an [`Elapsed`](crate::error::Elapsed)
    /// error instead of its next frame, and then ends. A head that comes
    /// too late fails the call with `Elapsed`, as in the default mode. The
    /// timer goes when the body reports
    /// [`is_end_stream`](http_body::Body::is_end_stream), yields its last
    /// frame or an error, or is dropped; an empty body never arms it. See
    /// [which part of a call a layer covers](crate::cover).
    ///
    /// Without this, a server that sends its head in time may stream the
    /// body for as long as it likes.
    ///
    /// # Examples
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use palisade::BoxError;
    /// use palisade::error::ErrorKind;
    /// use palisade::timeout::TimeoutLayer;
    /// use std::time::Duration;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = TimeoutLayer::builder()
    ///     .timeout(Duration::from_millis(100))
    ///     .cover_body()
    ///     .build()?;
    /// let svc = layer.layer(service_fn(|_: ()| async {
    ///     Ok::<_, BoxError>(http::Response::new(Full::new(&b"hello"[..])))
    /// }));
    ///
    /// // Read in time, the body is the server's.
    /// let response = svc.clone().oneshot(()).await?;
    /// assert_eq!(&response.into_body().collect().await?.to_bytes()[..], b"hello");
    ///
    /// // Still unread when the deadline passes, it yields `Elapsed`.
    /// let response = svc.oneshot(()).await?;
    /// tokio::time::sleep(Duration::from_millis(150)).await;
    /// let err = response.into_body().collect().await.unwrap_err();
    /// assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "http")]
    pub fn cover_body(self) -> TimeoutBuilder<cover::Body> {
        TimeoutBuilder {
            name: self.name,
            timeout: self.timeout,
            listeners: self.listeners,
            _mode: PhantomData,
        }
    }
}

impl<M> TimeoutBuilder<M> {
    crate::event::name_and_listeners!(
        "timeout layer",
        "The name carried by this layer's events, such as `\"per-attempt\"` or `\"total\"`."
    );

    /// The limit of each call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// A zero or unrepresentable (longer than about 584 years) timeout.
    pub fn build(self) -> Result<TimeoutLayer<M>, ConfigError> {
        validate::positive("timeout", self.timeout)?;
        Ok(TimeoutLayer {
            shared: Arc::new(Shared {
                name: self.name,
                timeout: self.timeout,
                listeners: self.listeners,
            }),
            _mode: PhantomData,
        })
    }
}
