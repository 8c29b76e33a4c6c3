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
