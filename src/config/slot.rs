//! A slot of a stack whose parts a document chooses: one of two layers,
//! or none, under one type.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

use crate::error::BoxError;

/// One of two layers, or none: a slot of a [`StackLayer`](super::StackLayer).
/// An empty slot passes calls straight to the service below, with its
/// errors boxed.
#[derive(Debug, Clone)]
pub enum Slot<A, B> {
    /// No part: the service below is called directly.
    Empty,
    /// The slot's first part (the retry, the breaker, the bulkhead, a
    /// timeout).
    First(A),
    /// The slot's second part (the hedge, the throttle, the adaptive limit).
    Second(B),
}

impl<A, B> Slot<A, B> {
    /// The first part, if it fills the slot.
    pub fn first(&self) -> Option<&A> {
        match self {
            Slot::First(a) => Some(a),
            _ => None,
        }
    }

    /// The second part, if it fills the slot.
    pub fn second(&self) -> Option<&B> {
        match self {
            Slot::Second(b) => Some(b),
            _ => None,
        }
    }

    /// Whether no part fills the slot.
    pub fn is_empty(&self) -> bool {
        matches!(self, Slot::Empty)
    }

    /// The service this slot makes of `inner`, its parts' bodies joined
    /// ([`BodySlotService`]).
    #[cfg(feature = "http")]
    pub fn layer_bodies<S>(&self, inner: S) -> BodySlotService<A::Service, B::Service, S>
    where
        A: Layer<S>,
        B: Layer<S>,
    {
        match self {
            Slot::Empty => BodySlotService::Empty(inner),
            Slot::First(a) => BodySlotService::First(a.layer(inner)),
            Slot::Second(b) => BodySlotService::Second(b.layer(inner)),
        }
    }
}

impl<S, A: Layer<S>, B: Layer<S>> Layer<S> for Slot<A, B> {
    type Service = SlotService<A::Service, B::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match self {
            Slot::Empty => SlotService::Empty(inner),
            Slot::First(a) => SlotService::First(a.layer(inner)),
            Slot::Second(b) => SlotService::Second(b.layer(inner)),
        }
    }
}

/// The service a [`Slot`] makes: its part's service, or the service
/// below.
#[derive(Debug, Clone)]
pub enum SlotService<A, B, S> {
    /// An empty slot: the service below.
    Empty(S),
    /// The first part's service.
    First(A),
    /// The second part's service.
    Second(B),
}

impl<Req, R, A, B, S> Service<Req> for SlotService<A, B, S>
where
    A: Service<Req, Response = R>,
    A::Error: Into<BoxError>,
    B: Service<Req, Response = R>,
    B::Error: Into<BoxError>,
    S: Service<Req, Response = R>,
    S::Error: Into<BoxError>,
{
    type Response = R;
    type Error = BoxError;
    type Future = SlotFuture<A::Future, B::Future, S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            SlotService::Empty(s) => s.poll_ready(cx).map_err(Into::into),
            SlotService::First(a) => a.poll_ready(cx).map_err(Into::into),
            SlotService::Second(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            SlotService::Empty(s) => SlotFuture::Empty(s.call(request)),
            SlotService::First(a) => SlotFuture::First(a.call(request)),
            SlotService::Second(b) => SlotFuture::Second(b.call(request)),
        }
    }
}

/// The future of a [`SlotService`].
#[pin_project(project = SlotProjection)]
#[derive(Debug)]
pub enum SlotFuture<A, B, S> {
    /// The service below's.
    Empty(#[pin] S),
    /// The first part's.
    First(#[pin] A),
    /// The second part's.
    Second(#[pin] B),
}

impl<R, EA, EB, ES, A, B, S> Future for SlotFuture<A, B, S>
where
    A: Future<Output = Result<R, EA>>,
    B: Future<Output = Result<R, EB>>,
    S: Future<Output = Result<R, ES>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
    ES: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SlotProjection::Empty(s) => s.poll(cx).map_err(Into::into),
            SlotProjection::First(a) => a.poll(cx).map_err(Into::into),
            SlotProjection::Second(b) => b.poll(cx).map_err(Into::into),
        }
    }
}

#[cfg(feature = "http")]
/// The service a [`Slot`] makes with [`Slot::layer_bodies`]: like
#[cfg(feature = "http")]
/// [`SlotService`], for parts that answer `http::Response`s whose bodies
#[cfg(feature = "http")]
/// differ (a breaker, a throttle or an adaptive limit that waits for
#[cfg(feature = "http")]
/// gRPC's status in the trailers wraps its body): the response's body is
#[cfg(feature = "http")]
/// a [`SlotBody`] of the three, with no allocation.
#[derive(Debug, Clone)]
pub enum BodySlotService<A, B, S> {
    /// An empty slot: the service below.
    Empty(S),
    /// The first part's service.
    First(A),
    /// The second part's service.
    Second(B),
}

#[cfg(feature = "http")]
impl<Req, A, B, S, BA, BB, BS> Service<Req> for BodySlotService<A, B, S>
where
    A: Service<Req, Response = http::Response<BA>>,
    A::Error: Into<BoxError>,
    B: Service<Req, Response = http::Response<BB>>,
    B::Error: Into<BoxError>,
    S: Service<Req, Response = http::Response<BS>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<SlotBody<BA, BB, BS>>;
    type Error = BoxError;
    type Future = BodySlotFuture<A::Future, B::Future, S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            BodySlotService::Empty(s) => s.poll_ready(cx).map_err(Into::into),
            BodySlotService::First(a) => a.poll_ready(cx).map_err(Into::into),
            BodySlotService::Second(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            BodySlotService::Empty(s) => BodySlotFuture::Empty(s.call(request)),
            BodySlotService::First(a) => BodySlotFuture::First(a.call(request)),
            BodySlotService::Second(b) => BodySlotFuture::Second(b.call(request)),
        }
    }
}

#[cfg(feature = "http")]
/// The future of a [`BodySlotService`].
#[pin_project(project = BodySlotProjection)]
#[derive(Debug)]
pub enum BodySlotFuture<A, B, S> {
    /// The service below's.
    Empty(#[pin] S),
    /// The first part's.
    First(#[pin] A),
    /// The second part's.
    Second(#[pin] B),
}

#[cfg(feature = "http")]
impl<BA, BB, BS, EA, EB, ES, A, B, S> Future for BodySlotFuture<A, B, S>
where
    A: Future<Output = Result<http::Response<BA>, EA>>,
    B: Future<Output = Result<http::Response<BB>, EB>>,
    S: Future<Output = Result<http::Response<BS>, ES>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
    ES: Into<BoxError>,
{
    type Output = Result<http::Response<SlotBody<BA, BB, BS>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BodySlotProjection::Empty(s) => s
                .poll(cx)
                .map(|r| r.map(|res| res.map(SlotBody::Empty)).map_err(Into::into)),
            BodySlotProjection::First(a) => a
                .poll(cx)
                .map(|r| r.map(|res| res.map(SlotBody::First)).map_err(Into::into)),
            BodySlotProjection::Second(b) => b
                .poll(cx)
                .map(|r| r.map(|res| res.map(SlotBody::Second)).map_err(Into::into)),
        }
    }
}

#[cfg(feature = "http")]
/// The body of a [`BodySlotService`]'s response: the body of the part that
#[cfg(feature = "http")]
/// answered, or of the service below. Its data is theirs, its errors boxed.
#[pin_project(project = SlotBodyProjection)]
#[derive(Debug)]
pub enum SlotBody<A, B, S> {
    /// The service below's body.
    Empty(#[pin] S),
    /// The first part's body.
    First(#[pin] A),
    /// The second part's body.
    Second(#[pin] B),
}

#[cfg(feature = "http")]
impl<D, A, B, S> http_body::Body for SlotBody<A, B, S>
where
    D: bytes::Buf,
    A: http_body::Body<Data = D>,
    A::Error: Into<BoxError>,
    B: http_body::Body<Data = D>,
    B::Error: Into<BoxError>,
    S: http_body::Body<Data = D>,
    S::Error: Into<BoxError>,
{
    type Data = D;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<D>, BoxError>>> {
        match self.project() {
            SlotBodyProjection::Empty(s) => {
                s.poll_frame(cx).map(|f| f.map(|f| f.map_err(Into::into)))
            }
            SlotBodyProjection::First(a) => {
                a.poll_frame(cx).map(|f| f.map(|f| f.map_err(Into::into)))
            }
            SlotBodyProjection::Second(b) => {
                b.poll_frame(cx).map(|f| f.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SlotBody::Empty(s) => s.is_end_stream(),
            SlotBody::First(a) => a.is_end_stream(),
            SlotBody::Second(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            SlotBody::Empty(s) => s.size_hint(),
            SlotBody::First(a) => a.size_hint(),
            SlotBody::Second(b) => b.size_hint(),
        }
    }
}
