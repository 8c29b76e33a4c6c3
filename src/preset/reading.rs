//! One clock reading for a preset's parts (see `clock`): the outermost
//! service lends it for the length of its `call`, the innermost stops
//! lending before the wrapped service's `call`.

use std::task::{Context, Poll};

use tower::Service;

use crate::clock;

/// A wrapper whose `call` runs its inner service's `call` with the clock's
/// lending set by `$guard` (restored when the guard drops); every other
/// method is the inner service's.
macro_rules! reading_wrapper {
    (
        $(#[$doc:meta])*
        $name:ident, inner: $inner:literal, guard: $guard:path
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<S> {
            inner: S,
        }

        impl<S> $name<S> {
            pub(crate) fn new(inner: S) -> Self {
                Self { inner }
            }

            #[doc = concat!("The ", $inner, ".")]
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            #[doc = concat!("The ", $inner, ", mutably.")]
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            #[doc = concat!("Unwraps the ", $inner, ".")]
            pub fn into_inner(self) -> S {
                self.inner
            }
        }

        impl<S: Service<Req>, Req> Service<Req> for $name<S> {
            type Response = S::Response;
            type Error = S::Error;
            type Future = S::Future;

            #[inline]
            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
                self.inner.poll_ready(cx)
            }

            #[inline]
            fn call(&mut self, req: Req) -> S::Future {
                let _lending = $guard();
                self.inner.call(req)
            }
        }
    };
}

reading_wrapper! {
    /// The outside of a [`ResilienceLayer`](super::ResilienceLayer)'s stack:
    /// while its `call` runs, the preset's parts share one reading of the
    /// clock, taken by the first that needs the time (the total timeout, the
    /// retry budget, the attempt timeout would each read it otherwise). Only
    /// the preset's own parts run in that time: the service it wraps is called
    /// through [`OwnReading`], and reads the clock itself. A part's
    /// `call`-time is thus the preset's, earlier by what the parts before it
    /// took in their `call` (nanoseconds; see the
    /// [preset's docs](super#one-clock-reading-per-call)).
    ///
    /// Its future is the inner service's: it adds nothing to a call's future.
    SharedReading, inner: "preset's stack", guard: clock::lend
}

reading_wrapper! {
    /// The inside of a [`ResilienceLayer`](super::ResilienceLayer)'s stack: the
    /// service it wraps, whose `call` (and any palisade layer that `call`
    /// reaches) reads the clock itself, not the preset's shared reading.
    OwnReading, inner: "wrapped service", guard: clock::unlend
}
