use std::fmt;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode, header::RETRY_AFTER};

use super::hint::parse_retry_after;
use super::{Classify, ClassifyRequest, DelayHint, Outcome};

/// A response with an HTTP status and headers: `http::Response<B>` and, with
/// the `reqwest` feature, `reqwest::Response`.
pub trait HttpResponse {
    /// The response's status code.
    fn status(&self) -> StatusCode;
    /// The response's headers.
    fn headers(&self) -> &HeaderMap;
}

impl<B> HttpResponse for http::Response<B> {
    fn status(&self) -> StatusCode {
        http::Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        http::Response::headers(self)
    }
}

#[cfg(feature = "reqwest")]
impl HttpResponse for reqwest::Response {
    fn status(&self) -> StatusCode {
        reqwest::Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        reqwest::Response::headers(self)
    }
}

/// A request with an HTTP method: `http::Request<B>` and, with the `reqwest`
/// feature, `reqwest::Request`.
pub trait HttpRequest {
    /// The request's method.
    fn method(&self) -> &Method;
}

impl<B> HttpRequest for http::Request<B> {
    fn method(&self) -> &Method {
        http::Request::method(self)
    }
}

#[cfg(feature = "reqwest")]
impl HttpRequest for reqwest::Request {
    fn method(&self) -> &Method {
        reqwest::Request::method(self)
    }
}

/// One bit per status code 100..=999 (the codes `StatusCode` can hold).
#[derive(Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 16]);

impl StatusSet {
    fn contains(&self, status: StatusCode) -> bool {
        let code = status.as_u16() as usize;
        self.0[code / 64] & (1 << (code % 64)) != 0
    }
    fn set(&mut self, status: StatusCode, on: bool) {
        let code = status.as_u16() as usize;
        if on {
            self.0[code / 64] |= 1 << (code % 64);
        } else {
            self.0[code / 64] &= !(1 << (code % 64));
        }
    }
}

/// Classifies HTTP calls: transport errors, 5xx, 408 and 429 are failures;
/// every other status (1xx–4xx) is a success, because a client error says
/// nothing about the server's health and sending it again would not help.
///
/// Only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE; RFC 9110
/// §9.2.2) are retryable unless [`retry_non_idempotent`](Self::retry_non_idempotent)
/// says otherwise, with one exception: a request whose connection failed
/// (refused, DNS, TLS handshake; see [`is_connect_error`](super::is_connect_error))
/// never reached the server and is retried whatever its method. A
/// `Retry-After` header on a response is read as a delay hint.
///
/// Works on `http::Response<B>` and `reqwest::Response` (feature `reqwest`).
///
/// # Examples
///
/// ```
/// use palisade::classify::{Classify, ClassifyRequest, HttpClassifier, Outcome};
/// use http::{Request, Response, StatusCode};
///
/// let c = HttpClassifier::new().failure_status(StatusCode::NOT_FOUND);
/// let res: Result<Response<()>, std::io::Error> =
///     Ok(Response::builder().status(404).body(()).unwrap());
/// assert_eq!(c.classify(&res), Outcome::Failure);
///
/// let post = Request::post("/orders").body(()).unwrap();
/// assert!(!c.is_retryable(&post));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    failures: StatusSet,
    retry_non_idempotent: bool,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failures: Vec<u16> = (100..=999u16)
            .filter(|&c| {
                StatusCode::from_u16(c)
                    .map(|s| self.failures.contains(s))
                    .unwrap_or(false)
            })
            .collect();
        f.debug_struct("HttpClassifier")
            .field("failures", &failures)
            .field("retry_non_idempotent", &self.retry_non_idempotent)
            .finish()
    }
}

impl HttpClassifier {
    /// The default: 5xx, 408 and 429 fail; only idempotent methods retry.
    pub fn new() -> Self {
        let mut failures = StatusSet([0; 16]);
        for code in 500..=599u16 {
            failures.set(StatusCode::from_u16(code).expect("5xx is valid"), true);
        }
        failures.set(StatusCode::REQUEST_TIMEOUT, true);
        failures.set(StatusCode::TOO_MANY_REQUESTS, true);
        Self {
            failures,
            retry_non_idempotent: false,
        }
    }

    /// Counts `status` as a failure too.
    pub fn failure_status(mut self, status: StatusCode) -> Self {
        self.failures.set(status, true);
        self
    }

    /// Counts `status` as a success, even if it is a failure by default (for
    /// example 501 Not Implemented, which no retry will change).
    pub fn success_status(mut self, status: StatusCode) -> Self {
        self.failures.set(status, false);
        self
    }

    /// Whether non-idempotent methods (POST, PATCH, CONNECT, extensions) may be
    /// retried. Default: `false`. Turn it on only when the server
    /// deduplicates, for example with an idempotency key.
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// Whether `status` counts as a failure.
    pub fn is_failure_status(&self, status: StatusCode) -> bool {
        self.failures.contains(status)
    }

    /// Whether a request with this method may be sent more than once.
    pub fn is_retryable_method(&self, method: &Method) -> bool {
        self.retry_non_idempotent || is_idempotent(method)
    }
}

/// Idempotent methods per RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl super::JudgesAtHead for HttpClassifier {}

impl<Req: HttpRequest> ClassifyRequest<Req> for HttpClassifier {
    fn is_retryable(&self, req: &Req) -> bool {
        self.is_retryable_method(req.method())
    }
}

impl<Res, E> Classify<Res, E> for HttpClassifier
where
    Res: HttpResponse,
    E: 'static,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(res) if self.failures.contains(res.status()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    /// A transport error from connecting (see
    /// [`is_connect_error`](super::is_connect_error)): the request never
    /// left, so it is retried whatever its method.
    fn is_not_sent(&self, result: &Result<Res, E>) -> bool {
        result.as_ref().err().is_some_and(super::is_connect_error)
    }

    fn delay_hint(&self, result: &Result<Res, E>) -> Option<DelayHint> {
        let res = result.as_ref().ok()?;
        let value = res.headers().get(RETRY_AFTER)?;
        parse_retry_after(value.as_bytes(), SystemTime::now()).map(DelayHint::After)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use std::time::Duration;

    type Res = Result<Response<()>, &'static str>;

    fn status(code: u16) -> Res {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    fn classify(c: &HttpClassifier, r: &Res) -> Outcome {
        Classify::classify(c, r)
    }

    #[test]
    fn every_status_class() {
        let c = HttpClassifier::new();
        for code in 100..=999u16 {
            let expected = match code {
                408 | 429 | 500..=599 => Outcome::Failure,
                _ => Outcome::Success,
            };
            assert_eq!(classify(&c, &status(code)), expected, "status {code}");
        }
        assert_eq!(classify(&c, &Err("connection refused")), Outcome::Failure);
    }

    #[test]
    fn statuses_can_be_moved_between_classes() {
        let c = HttpClassifier::new()
            .success_status(StatusCode::NOT_IMPLEMENTED)
            .failure_status(StatusCode::CONFLICT);
        assert_eq!(classify(&c, &status(501)), Outcome::Success);
        assert_eq!(classify(&c, &status(409)), Outcome::Failure);
        assert_eq!(classify(&c, &status(503)), Outcome::Failure);
        assert!(format!("{c:?}").contains("409"));
    }

    #[test]
    fn the_failure_statuses_can_be_read_back() {
        let c = HttpClassifier::new().failure_status(StatusCode::CONFLICT);
        for (code, failure) in [(409, true), (503, true), (404, false), (200, false)] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(c.is_failure_status(status), failure, "{code}");
        }
    }

    #[test]
    fn a_refused_connection_was_not_sent_a_reset_one_may_have_been() {
        use std::io::{Error, ErrorKind};
        let c = HttpClassifier::new();
        let failed = |kind| -> Result<Response<()>, Error> { Err(Error::from(kind)) };
        assert!(Classify::is_not_sent(
            &c,
            &failed(ErrorKind::ConnectionRefused)
        ));
        assert!(!Classify::is_not_sent(
            &c,
            &failed(ErrorKind::ConnectionReset)
        ));
        let answered: Result<Response<()>, Error> = Ok(Response::new(()));
        assert!(!Classify::is_not_sent(&c, &answered));
    }

    #[test]
    fn only_idempotent_methods_retry_by_default() {
        let retryable = |c: &HttpClassifier, m: Method| {
            let req = Request::builder().method(m).body(()).unwrap();
            ClassifyRequest::is_retryable(c, &req)
        };
        let c = HttpClassifier::new();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(retryable(&c, m.clone()), "{m}");
        }
        let custom = Method::from_bytes(b"PURGE").unwrap();
        for m in [Method::POST, Method::PATCH, Method::CONNECT, custom] {
            assert!(!retryable(&c, m.clone()), "{m}");
            assert!(retryable(&c.retry_non_idempotent(true), m.clone()), "{m}");
        }
    }

    #[test]
    fn retry_after_is_a_hint() {
        let c = HttpClassifier::new();
        let res: Res = Ok(Response::builder()
            .status(429)
            .header("retry-after", "7")
            .body(())
            .unwrap());
        assert_eq!(
            Classify::delay_hint(&c, &res),
            Some(DelayHint::After(Duration::from_secs(7)))
        );
        assert_eq!(Classify::delay_hint(&c, &status(503)), None);
        let garbage: Res = Ok(Response::builder()
            .status(503)
            .header("retry-after", "later")
            .body(())
            .unwrap());
        assert_eq!(Classify::delay_hint(&c, &garbage), None);
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn reqwest_types_classify_the_same() {
        let res = reqwest::Response::from(
            Response::builder()
                .status(503)
                .header("retry-after", "3")
                .body("")
                .unwrap(),
        );
        let result: Result<reqwest::Response, reqwest::Error> = Ok(res);
        let c = HttpClassifier::new();
        assert_eq!(Classify::classify(&c, &result), Outcome::Failure);
        assert_eq!(
            Classify::delay_hint(&c, &result),
            Some(DelayHint::After(Duration::from_secs(3)))
        );
        let post = reqwest::Request::new(Method::POST, "http://127.0.0.1/".parse().unwrap());
        assert!(!ClassifyRequest::is_retryable(&c, &post));
    }
}
