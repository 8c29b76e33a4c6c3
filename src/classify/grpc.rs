use std::any::Any;
use std::fmt;

use http::HeaderMap;

use super::hint::{GRPC_RETRY_PUSHBACK_MS, parse_grpc_pushback};
use super::{Classify, ClassifyRequest, DelayHint, Outcome};

/// A gRPC status code, as carried in the `grpc-status` header or trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)] // the names are gRPC's own
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// Every code, in numeric order.
    pub const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code with this number; numbers gRPC does not define are
    /// `Unknown`, as the gRPC spec says a client must treat them.
    pub fn from_i32(code: i32) -> GrpcCode {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(GrpcCode::Unknown)
    }

    /// Parses a `grpc-status` value: a decimal number. Unreadable values
    /// are `None`.
    pub fn parse(value: &[u8]) -> Option<GrpcCode> {
        let text = std::str::from_utf8(value).ok()?.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Long digit strings overflow i32: a code gRPC does not define.
        Some(
            text.parse::<i32>()
                .map_or(GrpcCode::Unknown, GrpcCode::from_i32),
        )
    }

    /// The code a response without `grpc-status` implies from its HTTP status,
    /// per gRPC's "HTTP to gRPC status code mapping". 200 is `Ok`: a 200 head
    /// without `grpc-status` carries its status in the trailers, which only
    /// the end of the body tells (see [`StatusBody`](super::StatusBody)).
    pub fn from_http_status(status: http::StatusCode) -> GrpcCode {
        match status.as_u16() {
            200 => GrpcCode::Ok,
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }

    /// The code's name as gRPC writes it: `"UNAVAILABLE"`, `"DEADLINE_EXCEEDED"`.
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }

    /// The code of a name as gRPC writes it, in any case (`"UNAVAILABLE"`,
    /// `"unavailable"`), as gRPC's service config (proposal A6) lists
    /// status codes.
    ///
    /// ```
    /// use palisade::classify::GrpcCode;
    ///
    /// assert_eq!(GrpcCode::from_name("deadline_exceeded"), Some(GrpcCode::DeadlineExceeded));
    /// assert_eq!(GrpcCode::Unavailable.name(), "UNAVAILABLE");
    /// assert_eq!(GrpcCode::from_name("UNAVAILABLE "), None);
    /// ```
    pub fn from_name(name: &str) -> Option<GrpcCode> {
        NAMES
            .iter()
            .position(|known| known.eq_ignore_ascii_case(name))
            .map(|i| Self::ALL[i])
    }

    fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

/// The codes' names, in numeric order.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Classifies gRPC calls by status code.
///
/// Two sets of codes, both adjustable:
///
/// * **failures**, what the circuit breaker counts against the server:
///   Unknown (what grpc-java and grpc-go send for an unhandled server error),
///   Internal, Unavailable, DeadlineExceeded, ResourceExhausted and DataLoss,
///   as well as transport errors. Every other code, such as NotFound or
///   InvalidArgument, is the caller's problem and a success for the breaker.
///   Change it with [`failure_code`](Self::failure_code) and
///   [`success_code`](Self::success_code).
/// * **retryable**, what the retry sends again: only Unavailable (the server
///   did not process the call) and transport errors, as gRPC's retry design
///   (proposal A6) retries only the codes listed in `retryableStatusCodes`.
///   Internal or Aborted may come from a call that ran: list them with
///   [`retryable_code`](Self::retryable_code) only for idempotent methods.
///
/// Reads the code from:
/// * the `grpc-status` header of an `http::Response<B>` (a "trailers-only"
///   answer, which is how servers send an error before any message); a
///   value that is present but not a number is Unknown;
/// * with no `grpc-status` in the head, the HTTP status, mapped as gRPC's
///   "HTTP to gRPC Status Code Mapping" says (400 Internal, 401
///   Unauthenticated, 403 PermissionDenied, 404 Unimplemented, 429, 502, 503
///   and 504 Unavailable, another non-200 Unknown), so that a proxy's error
///   page is a failure;
/// * a 200 head without `grpc-status` carries its status in the trailers: the
///   circuit breaker judges such a call when its body ends (see
///   [`Settle`](super::Settle)), while the retry takes the head as the
///   answer (gRPC A6: a call whose response head reached the caller is
///   committed and not retried);
/// * a `tonic::Status` error, directly or inside a `BoxError` (feature
///   `tonic`), and the `Err` of a `Result<tonic::Response<T>, Status>`.
///
/// A transport error from connecting ([`is_connect_error`](super::is_connect_error))
/// never reached the server: it is retried whatever the method.
///
/// A `grpc-retry-pushback-ms` header or metadata entry is read as a delay
/// hint; a negative or unreadable value means "do not retry".
///
/// # Examples
///
/// ```
/// use palisade::classify::{Classify, GrpcClassifier, GrpcCode, Outcome};
///
/// let c = GrpcClassifier::new();
/// let res = http::Response::builder().header("grpc-status", "14").body(()).unwrap();
/// let result: Result<_, std::io::Error> = Ok(res);
/// assert_eq!(Classify::classify(&c, &result), Outcome::Failure);
/// assert!(c.is_failure_code(GrpcCode::Internal));
/// assert!(!c.is_retryable_code(GrpcCode::Internal));
/// assert!(c.is_retryable_code(GrpcCode::Unavailable));
/// assert!(!c.is_failure_code(GrpcCode::NotFound));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    failures: u32,
    retryable: u32,
    dropped: Outcome,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes = |bits: u32| -> Vec<GrpcCode> {
            GrpcCode::ALL
                .into_iter()
                .filter(|c| bits & c.bit() != 0)
                .collect()
        };
        f.debug_struct("GrpcClassifier")
            .field("failures", &codes(self.failures))
            .field("retryable", &codes(self.retryable))
            .field("dropped", &self.dropped)
            .finish()
    }
}

fn bits(codes: &[GrpcCode]) -> u32 {
    codes.iter().fold(0, |bits, c| bits | c.bit())
}

impl GrpcClassifier {
    /// The default failure codes (Unknown, Internal, Unavailable,
    /// DeadlineExceeded, ResourceExhausted, DataLoss) and retryable codes
    /// (Unavailable); a streamed answer dropped before its end is Ignored.
    pub fn new() -> Self {
        Self {
            failures: bits(&[
                GrpcCode::Unknown,
                GrpcCode::Internal,
                GrpcCode::Unavailable,
                GrpcCode::DeadlineExceeded,
                GrpcCode::ResourceExhausted,
                GrpcCode::DataLoss,
            ]),
            retryable: bits(&[GrpcCode::Unavailable]),
            dropped: Outcome::Ignored,
        }
    }

    /// Counts `code` as a failure too.
    pub fn failure_code(mut self, code: GrpcCode) -> Self {
        self.failures |= code.bit();
        self
    }

    /// Counts `code` as a success. It is then not retried either.
    pub fn success_code(mut self, code: GrpcCode) -> Self {
        self.failures &= !code.bit();
        self.retryable &= !code.bit();
        self
    }

    /// Retries `code` too (A6's `retryableStatusCodes`), and counts it as a
    /// failure. Only for methods that are safe to run twice.
    pub fn retryable_code(mut self, code: GrpcCode) -> Self {
        self.retryable |= code.bit();
        self.failures |= code.bit();
        self
    }

    /// Does not retry `code`; it still counts as a failure if it did.
    pub fn not_retryable_code(mut self, code: GrpcCode) -> Self {
        self.retryable &= !code.bit();
        self
    }

    /// What a streamed answer counts as when the caller drops its body
    /// before the status arrives. Default: [`Outcome::Ignored`], since the
    /// caller, not the server, ended it.
    pub fn when_dropped(mut self, outcome: Outcome) -> Self {
        self.dropped = outcome;
        self
    }

    /// Whether `code` counts as a failure.
    pub fn is_failure_code(&self, code: GrpcCode) -> bool {
        self.failures & code.bit() != 0
    }

    /// Whether `code` is retried.
    pub fn is_retryable_code(&self, code: GrpcCode) -> bool {
        self.retryable & code.bit() != 0
    }

    /// What a streamed answer dropped before its end counts as.
    pub fn dropped_outcome(&self) -> Outcome {
        self.dropped
    }

    /// The outcome of a call that ended with `code`.
    pub fn outcome_of(&self, code: GrpcCode) -> Outcome {
        if self.is_failure_code(code) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// The code of a response head: its `grpc-status`, or else what its
    /// HTTP status implies.
    pub fn code_of_head(status: http::StatusCode, headers: &HeaderMap) -> GrpcCode {
        match headers.get("grpc-status") {
            // A header that is present but unreadable is a protocol error.
            Some(value) => GrpcCode::parse(value.as_bytes()).unwrap_or(GrpcCode::Unknown),
            None => GrpcCode::from_http_status(status),
        }
    }

    fn outcome_of_error<E: 'static>(&self, err: &E) -> Outcome {
        match status_code_of_error(err) {
            Some(code) => self.outcome_of(code),
            // A transport error: the call never got an answer.
            None => Outcome::Failure,
        }
    }

    fn error_is_retryable<E: 'static>(&self, err: &E) -> bool {
        match status_code_of_error(err) {
            Some(code) => self.is_retryable_code(code),
            None => true,
        }
    }
}

fn pushback_of(headers: &HeaderMap) -> Option<DelayHint> {
    headers
        .get(GRPC_RETRY_PUSHBACK_MS)
        .map(|v| parse_grpc_pushback(v.as_bytes()))
}

#[cfg(feature = "tonic")]
fn tonic_status_of<E: 'static>(err: &E) -> Option<&tonic::Status> {
    let any = err as &dyn Any;
    if let Some(status) = any.downcast_ref::<tonic::Status>() {
        return Some(status);
    }
    any.downcast_ref::<crate::BoxError>()
        .and_then(|boxed| boxed.downcast_ref::<tonic::Status>())
}

#[cfg(feature = "tonic")]
fn status_code_of_error<E: 'static>(err: &E) -> Option<GrpcCode> {
    tonic_status_of(err).map(|s| GrpcCode::from_i32(s.code() as i32))
}

#[cfg(not(feature = "tonic"))]
fn status_code_of_error<E: 'static>(err: &E) -> Option<GrpcCode> {
    let _ = err as &dyn Any;
    None
}

fn pushback_of_error<E: 'static>(err: &E) -> Option<DelayHint> {
    #[cfg(feature = "tonic")]
    if let Some(status) = tonic_status_of(err) {
        return pushback_of(status.metadata().as_ref());
    }
    let _ = err as &dyn Any;
    None
}

/// Every call may be sent again: gRPC decides by the status
/// ([`retryable_code`](GrpcClassifier::retryable_code)), and a call that
/// must not run twice is made with a classifier that says so.
impl<Req> ClassifyRequest<Req> for GrpcClassifier {}

impl<B, E: 'static> Classify<http::Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(res) => self.outcome_of(Self::code_of_head(res.status(), res.headers())),
            Err(err) => self.outcome_of_error(err),
        }
    }

    fn delay_hint(&self, result: &Result<http::Response<B>, E>) -> Option<DelayHint> {
        match result {
            Ok(res) => pushback_of(res.headers()),
            Err(err) => pushback_of_error(err),
        }
    }

    fn is_retryable_failure(&self, result: &Result<http::Response<B>, E>) -> bool {
        match result {
            Ok(res) => self.is_retryable_code(Self::code_of_head(res.status(), res.headers())),
            Err(err) => self.error_is_retryable(err),
        }
    }

    fn is_not_sent(&self, result: &Result<http::Response<B>, E>) -> bool {
        result.as_ref().err().is_some_and(super::is_connect_error)
    }
}

#[cfg(feature = "tonic")]
impl<T> Classify<tonic::Response<T>, tonic::Status> for GrpcClassifier {
    fn classify(&self, result: &Result<tonic::Response<T>, tonic::Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) => self.outcome_of(GrpcCode::from_i32(status.code() as i32)),
        }
    }

    fn delay_hint(&self, result: &Result<tonic::Response<T>, tonic::Status>) -> Option<DelayHint> {
        match result {
            Ok(_) => None,
            Err(status) => pushback_of(status.metadata().as_ref()),
        }
    }

    fn is_retryable_failure(&self, result: &Result<tonic::Response<T>, tonic::Status>) -> bool {
        match result {
            Ok(_) => false,
            Err(status) => self.is_retryable_code(GrpcCode::from_i32(status.code() as i32)),
        }
    }

    fn is_not_sent(&self, result: &Result<tonic::Response<T>, tonic::Status>) -> bool {
        result.as_ref().err().is_some_and(super::is_connect_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_name_back() {
        for code in GrpcCode::ALL {
            assert_eq!(GrpcCode::from_name(code.name()), Some(code));
            assert_eq!(GrpcCode::from_name(&code.name().to_lowercase()), Some(code));
        }
        assert_eq!(GrpcCode::DataLoss.name(), "DATA_LOSS");
        assert_eq!(GrpcCode::from_name("14"), None);
        assert_eq!(GrpcCode::from_name(""), None);
    }
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn any_grpc_status_bytes_parse_without_panic(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let parsed = GrpcCode::parse(&value);
            // Only digits (with surrounding spaces) name a code.
            let text = String::from_utf8_lossy(&value);
            if parsed.is_some() {
                prop_assert!(!text.trim().is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()));
            }
        }

        #[test]
        fn any_number_is_a_code(n in any::<i32>()) {
            let code = GrpcCode::from_i32(n);
            prop_assert!((0..=16).contains(&n) == (code as i32 == n));
        }
    }

    fn head(status: u16, grpc_status: Option<&str>) -> Result<http::Response<()>, std::io::Error> {
        let mut b = http::Response::builder().status(status);
        if let Some(s) = grpc_status {
            b = b.header("grpc-status", s);
        }
        Ok(b.body(()).unwrap())
    }

    fn classify(c: &GrpcClassifier, r: &Result<http::Response<()>, std::io::Error>) -> Outcome {
        Classify::classify(c, r)
    }

    fn retries(c: &GrpcClassifier, r: &Result<http::Response<()>, std::io::Error>) -> bool {
        Classify::is_retryable_failure(c, r)
    }

    #[test]
    fn every_code_from_the_header() {
        let c = GrpcClassifier::new();
        for code in GrpcCode::ALL {
            let expected = match code {
                GrpcCode::Unknown
                | GrpcCode::Internal
                | GrpcCode::Unavailable
                | GrpcCode::DeadlineExceeded
                | GrpcCode::ResourceExhausted
                | GrpcCode::DataLoss => Outcome::Failure,
                _ => Outcome::Success,
            };
            let value = (code as u8).to_string();
            let head = head(200, Some(&value));
            assert_eq!(classify(&c, &head), expected, "{code}");
            // Only UNAVAILABLE is retried by default (gRPC A6).
            assert_eq!(retries(&c, &head), code == GrpcCode::Unavailable, "{code}");
            assert_eq!(GrpcCode::from_i32(code as i32), code);
        }
    }

    #[test]
    fn retryable_codes_are_listed_by_the_user() {
        let c = GrpcClassifier::new()
            .retryable_code(GrpcCode::Aborted)
            .not_retryable_code(GrpcCode::Unavailable);
        assert!(retries(&c, &head(200, Some("10"))));
        // Listed as retryable, so counted as a failure too.
        assert_eq!(classify(&c, &head(200, Some("10"))), Outcome::Failure);
        assert!(!retries(&c, &head(200, Some("14"))));
        assert_eq!(classify(&c, &head(200, Some("14"))), Outcome::Failure);
        // A success code is neither.
        let c = c.success_code(GrpcCode::Aborted);
        assert!(!retries(&c, &head(200, Some("10"))));
        assert_eq!(classify(&c, &head(200, Some("10"))), Outcome::Success);
        // A transport error is retried.
        let err: Result<http::Response<()>, _> = Err(std::io::Error::other("reset"));
        assert!(retries(&GrpcClassifier::new(), &err));
        assert!(format!("{c:?}").contains("retryable"));
    }

    #[test]
    fn odd_headers_and_http_statuses() {
        let c = GrpcClassifier::new();
        // No grpc-status: the HTTP status decides, as gRPC's mapping says.
        for (status, code) in [
            (400, GrpcCode::Internal),
            (401, GrpcCode::Unauthenticated),
            (403, GrpcCode::PermissionDenied),
            (404, GrpcCode::Unimplemented),
            (429, GrpcCode::Unavailable),
            (502, GrpcCode::Unavailable),
            (503, GrpcCode::Unavailable),
            (504, GrpcCode::Unavailable),
            (500, GrpcCode::Unknown),
            (418, GrpcCode::Unknown),
        ] {
            let s = http::StatusCode::from_u16(status).unwrap();
            assert_eq!(GrpcClassifier::code_of_head(s, &HeaderMap::new()), code);
            assert_eq!(
                classify(&c, &head(status, None)),
                c.outcome_of(code),
                "{status}"
            );
        }
        assert_eq!(classify(&c, &head(503, None)), Outcome::Failure);
        assert!(retries(&c, &head(503, None)));
        assert_eq!(classify(&c, &head(404, None)), Outcome::Success);
        // A 200 head without a status is a success at the head: the
        // trailers tell the rest.
        assert_eq!(classify(&c, &head(200, None)), Outcome::Success);
        // Unknown numbers and garbage are Unknown, a failure by default.
        for v in ["17", "99999999999999", "-1", "abc", ""] {
            assert_eq!(classify(&c, &head(200, Some(v))), Outcome::Failure, "{v}");
            assert!(!retries(&c, &head(200, Some(v))), "{v}");
        }
        let lenient = c.success_code(GrpcCode::Unknown);
        assert_eq!(
            classify(&lenient, &head(200, Some("garbage"))),
            Outcome::Success
        );
        let lenient = c.success_code(GrpcCode::Internal);
        assert_eq!(classify(&lenient, &head(200, Some("13"))), Outcome::Success);
        let strict = c.failure_code(GrpcCode::NotFound);
        assert_eq!(classify(&strict, &head(200, Some("5"))), Outcome::Failure);
        // A transport error is a failure.
        let err: Result<http::Response<()>, _> = Err(std::io::Error::other("reset"));
        assert_eq!(classify(&c, &err), Outcome::Failure);
        assert!(format!("{c:?}").contains("Unavailable"));
        assert_eq!(c.dropped_outcome(), Outcome::Ignored);
        assert_eq!(
            c.when_dropped(Outcome::Failure).dropped_outcome(),
            Outcome::Failure
        );
    }

    #[test]
    fn pushback_header_is_a_hint() {
        let c = GrpcClassifier::new();
        let res = |v: &str| -> Result<http::Response<()>, std::io::Error> {
            Ok(http::Response::builder()
                .header("grpc-status", "14")
                .header("grpc-retry-pushback-ms", v)
                .body(())
                .unwrap())
        };
        let hint = |r| Classify::delay_hint(&c, &r);
        assert_eq!(
            hint(res("250")),
            Some(DelayHint::After(Duration::from_millis(250)))
        );
        assert_eq!(hint(res("-1")), Some(DelayHint::DoNotRetry));
        assert_eq!(hint(head(200, Some("14"))), None);
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_status_errors() {
        use tonic::{Code, Status};
        let c = GrpcClassifier::new();
        let direct: Result<http::Response<()>, Status> = Err(Status::unavailable("down"));
        assert_eq!(Classify::classify(&c, &direct), Outcome::Failure);
        let boxed: Result<http::Response<()>, crate::BoxError> =
            Err(Box::new(Status::not_found("gone")));
        assert_eq!(Classify::classify(&c, &boxed), Outcome::Success);

        let mut status = Status::new(Code::ResourceExhausted, "slow down");
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", "1200".parse().unwrap());
        let per_call: Result<tonic::Response<()>, Status> = Err(status);
        assert_eq!(Classify::classify(&c, &per_call), Outcome::Failure);
        assert_eq!(
            Classify::delay_hint(&c, &per_call),
            Some(DelayHint::After(Duration::from_millis(1200)))
        );
        let ok: Result<tonic::Response<()>, Status> = Ok(tonic::Response::new(()));
        assert_eq!(Classify::classify(&c, &ok), Outcome::Success);
        // Every tonic code maps onto the same number.
        for n in 0..=16 {
            assert_eq!(GrpcCode::from_i32(Code::from_i32(n) as i32) as i32, n);
        }
    }

    #[test]
    fn codes_print_by_name_and_the_classifier_lists_its_sets() {
        assert_eq!(GrpcCode::Unavailable.to_string(), "Unavailable");
        let c = GrpcClassifier::new()
            .success_code(GrpcCode::Unknown)
            .retryable_code(GrpcCode::Aborted);
        assert_eq!(
            format!("{c:?}"),
            "GrpcClassifier { failures: [DeadlineExceeded, ResourceExhausted, Aborted, \
             Internal, Unavailable, DataLoss], retryable: [Aborted, Unavailable], dropped: Ignored }"
        );
    }

    /// A refused connection never reached the server; any other error, and
    /// any answer, may have.
    #[test]
    fn a_refused_connection_was_not_sent() {
        use std::io::{Error, ErrorKind};
        let c = GrpcClassifier::new();
        let failed = |kind| -> Result<http::Response<()>, Error> { Err(Error::from(kind)) };
        assert!(Classify::is_not_sent(
            &c,
            &failed(ErrorKind::ConnectionRefused)
        ));
        assert!(!Classify::is_not_sent(
            &c,
            &failed(ErrorKind::ConnectionReset)
        ));
        assert!(!Classify::is_not_sent(&c, &head(200, Some("14"))));
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_errors_are_retried_by_their_code_and_paced_by_their_pushback() {
        use tonic::Status;
        let c = GrpcClassifier::new();
        let boxed = |status: Status| -> Result<http::Response<()>, crate::BoxError> {
            Err(Box::new(status))
        };
        assert!(Classify::is_retryable_failure(
            &c,
            &boxed(Status::unavailable("down"))
        ));
        assert!(!Classify::is_retryable_failure(
            &c,
            &boxed(Status::internal("bug"))
        ));
        let mut status = Status::unavailable("later");
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", "250".parse().unwrap());
        assert_eq!(
            Classify::delay_hint(&c, &boxed(status)),
            Some(DelayHint::After(Duration::from_millis(250)))
        );

        // The same through tonic's own response type.
        let answer = |r: Result<(), Status>| r.map(tonic::Response::new);
        assert!(Classify::is_retryable_failure(
            &c,
            &answer(Err(Status::unavailable("down")))
        ));
        assert!(!Classify::is_retryable_failure(
            &c,
            &answer(Err(Status::internal("bug")))
        ));
        assert!(!Classify::is_retryable_failure(&c, &answer(Ok(()))));
        let refused = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(Classify::is_not_sent(&c, &answer(Err(refused))));
        assert!(!Classify::is_not_sent(
            &c,
            &answer(Err(Status::unavailable("down")))
        ));
        assert!(!Classify::is_not_sent(&c, &answer(Ok(()))));
    }
}
