//! Recognising errors that mean a request never reached the server.

use std::any::Any;
use std::error::Error;
use std::io;

use crate::BoxError;

/// Whether `err`, or an error in its `source()` chain, says the connection
/// was never made, so that the request cannot have reached the server.
///
/// Recognised: an `std::io::Error` of a kind that only connecting produces
/// (`ConnectionRefused`, `AddrNotAvailable`, `HostUnreachable`,
/// `NetworkUnreachable`); a `reqwest::Error` whose `is_connect()` is true
/// (feature `reqwest`); a `hyper_util::client::legacy::Error` whose
/// `is_connect()` is true (feature `hyper-util`), which covers a failed DNS
/// lookup or TLS handshake too. tonic's transport wraps these, and is read
/// through its chain. `err` may be one of these types, a `tonic::Status` or
/// a `tonic::transport::Error` (feature `tonic`), or a [`BoxError`] holding
/// any of them; an error of another type is not looked into.
///
/// # Examples
///
/// ```
/// use palisade::classify::is_connect_error;
/// use palisade::BoxError;
/// use std::io;
///
/// let refused: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionRefused));
/// assert!(is_connect_error(&refused));
/// let reset: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
/// assert!(!is_connect_error(&reset)); // the request may have been sent
/// ```
pub fn is_connect_error<E: 'static>(err: &E) -> bool {
    match as_error(err) {
        Some(err) => chain_says_connect(err),
        None => false,
    }
}

fn as_error<E: 'static>(err: &E) -> Option<&(dyn Error + 'static)> {
    let any = err as &dyn Any;
    if let Some(boxed) = any.downcast_ref::<BoxError>() {
        return Some(&**boxed);
    }
    if let Some(err) = any.downcast_ref::<io::Error>() {
        return Some(err);
    }
    #[cfg(feature = "reqwest")]
    if let Some(err) = any.downcast_ref::<reqwest::Error>() {
        return Some(err);
    }
    #[cfg(feature = "hyper-util")]
    if let Some(err) = any.downcast_ref::<hyper_util::client::legacy::Error>() {
        return Some(err);
    }
    #[cfg(feature = "tonic")]
    if let Some(err) = any.downcast_ref::<tonic::Status>() {
        return Some(err);
    }
    #[cfg(feature = "tonic")]
    if let Some(err) = any.downcast_ref::<tonic::transport::Error>() {
        return Some(err);
    }
    None
}

fn chain_says_connect(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if says_connect(err) {
            return true;
        }
        next = err.source();
    }
    false
}

fn says_connect(err: &(dyn Error + 'static)) -> bool {
    if let Some(io) = err.downcast_ref::<io::Error>() {
        return matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
        );
    }
    #[cfg(feature = "reqwest")]
    if let Some(err) = err.downcast_ref::<reqwest::Error>() {
        return err.is_connect();
    }
    #[cfg(feature = "hyper-util")]
    if let Some(err) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
        return err.is_connect();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_and_chains() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
        ] {
            let wrapped: BoxError = Box::new(Wrapper(kind.into()));
            assert!(is_connect_error(&wrapped), "{kind:?}");
            assert!(is_connect_error(&io::Error::from(kind)), "{kind:?}");
        }
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
        ] {
            let wrapped: BoxError = Box::new(Wrapper(kind.into()));
            assert!(!is_connect_error(&wrapped), "{kind:?}");
        }
        // Types it cannot see into are not connect errors.
        assert!(!is_connect_error(&"connection refused"));
    }
}
