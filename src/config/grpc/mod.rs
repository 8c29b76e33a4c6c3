//! gRPC's service config (proposal A6): a channel's retry and hedging
//! policies per method, and its retry throttling, read from the JSON that
//! gRPC's own clients read, and applied by palisade's retry and hedge.
//!
//! Feature `grpc-service-config`. gRPC clients in Go, Java and C++ take a
//! service config from DNS or from the program; tonic reads none. With
//! this module a tonic `Channel` (or any HTTP/2 client of
//! `http::Request`s) retries and hedges as the service's owners wrote in
//! its config:
//!
//! * [`ServiceConfig::from_json`] reads and validates the document, as
//!   strictly as gRPC's C core, grpc-java and grpc-rust do (the whole
//!   config is refused for one bad value), each refusal naming the path of
//!   its value: `methodConfig[0].retryPolicy.maxAttempts`;
//! * [`ServiceConfigLayer`] wraps a channel; each call takes the policy of
//!   the method config that names its method, else its service, else the
//!   default one (no service), else none: it is sent once.
//!
//! # What each policy becomes
//!
//! | A6 | palisade |
//! |---|---|
//! | `retryPolicy` | a [`RetryLayer`](crate::retry::RetryLayer): `maxAttempts` capped at 5 ([`max_attempts`](ServiceConfigBuilder::max_attempts)); the backoff `min(initialBackoff × backoffMultiplier^n, maxBackoff) × random(0.8, 1.2)` ([`Jitter::Grpc`](crate::backoff::Jitter::Grpc), A6 since 2024); only `retryableStatusCodes` are retried, and only while the answer has no response head of its own (a status in a trailers-only response, or a connection that failed): a call whose head arrived is committed, as A6 says |
//! | `hedgingPolicy` | a [`HedgeLayer`](crate::hedge::HedgeLayer): up to `maxAttempts` (capped at 5), `hedgingDelay` apart (`"0s"` or absent: all at once); a status in `nonFatalStatusCodes` sends the next attempt at once, any other failure ends the call and cancels the others |
//! | `retryThrottling` | one [`RetryBudget::tokens`](crate::retry::RetryBudget::tokens) shared by every method of the layer: a retryable (or non-fatal) failure takes a token, an OK call gives back `tokenRatio`, and retries and hedges are sent only while more than `maxTokens / 2` are left |
//! | `grpc-retry-pushback-ms` | read from the answer: the retry waits exactly that long (then resumes its backoff); a negative or unreadable value ends the retries and counts as a throttling failure |
//! | `grpc-previous-rpc-attempts` | set on every attempt after the first ([`PreviousAttempts`](crate::retry::PreviousAttempts)): 1 on the second, and so on |
//!
//! A call returns what its last attempt answered (a hedged call, the
//! winner or the first attempt's failure), its error boxed: tonic's
//! generated client sees the server's `Status` as it was. A connection
//! that failed before the request left is sent again whatever the codes
//! (gRPC's transparent retry), and takes no token.
//!
//! Every status but OK is a failure for the retry's and the hedge's
//! [events](crate::event) and for the tokens (A6 counts an OK call as a
//! success). The layers' events are named after the method config's first
//! name: `grpc/<service>/<method>`, `grpc/<service>`, or `grpc/*`.
//!
//! # What is not applied
//!
//! * `timeout`, `waitForReady`, `maxRequestMessageBytes` and
//!   `maxResponseMessageBytes` are read and checked (a malformed one
//!   refuses the config, as in gRPC's C core) and kept on
//!   [`MethodConfig`], but the layer does not act on them: set a deadline
//!   with tonic's `Request::set_timeout` or a palisade
//!   [`TimeoutLayer`](crate::timeout::TimeoutLayer) around this one.
//! * After a pushback, A6 starts the backoff again from `initialBackoff`;
//!   palisade's retry resumes it where it was.
//! * A call whose response head arrived but whose status, in the trailers,
//!   is not OK gave back its token share when the head arrived (the retry
//!   judges the head; grpc-go counts such a call neither way).
//! * Where A6 allows more than palisade's builders take, the config is
//!   refused rather than changed: a `backoffMultiplier` below 1 (a backoff
//!   that shrinks). A `maxBackoff` below `initialBackoff` is taken as A6
//!   means it: every delay is `maxBackoff`.
//!
//! # Example
//!
//! A6's own examples: a retry policy for one service, the hedging policy for
//! another, and throttling for the channel.
//!
//! ```
//! use palisade::config::grpc::{Policy, ServiceConfig, ServiceConfigLayer};
//! use std::time::Duration;
//! use tonic_health::pb::health_client::HealthClient;
//! use tower::Layer;
//!
//! # fn main() -> Result<(), palisade::BoxError> {
//! let config = ServiceConfig::from_json(r#"{
//!   "methodConfig": [
//!     {
//!       "name": [{ "service": "grpc.health.v1.Health" }],
//!       "retryPolicy": {
//!         "maxAttempts": 4,
//!         "initialBackoff": "0.1s",
//!         "maxBackoff": "1s",
//!         "backoffMultiplier": 2,
//!         "retryableStatusCodes": ["UNAVAILABLE"]
//!       }
//!     },
//!     {
//!       "name": [{ "service": "example.Search", "method": "Query" }],
//!       "hedgingPolicy": {
//!         "maxAttempts": 4,
//!         "hedgingDelay": "0.5s",
//!         "nonFatalStatusCodes": ["UNAVAILABLE", "INTERNAL", "ABORTED"]
//!       }
//!     }
//!   ],
//!   "retryThrottling": { "maxTokens": 10, "tokenRatio": 0.1 }
//! }"#)?;
//! let Some(Policy::Retry(retry)) = &config.method_config("/grpc.health.v1.Health/Check").unwrap().policy else {
//!     unreachable!()
//! };
//! assert_eq!(retry.initial_backoff, Duration::from_millis(100));
//!
//! let layer = ServiceConfigLayer::builder(config).build()?;
//! assert_eq!(layer.throttling().unwrap().remaining(), 4);
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let mut client = HealthClient::new(layer.layer(channel));
//! # drop(client);
//! # });
//!
//! // A value A6 refuses is refused, with its path.
//! let error = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "s"}],
//!     "retryPolicy": {"maxAttempts": 1, "initialBackoff": "0.1s", "maxBackoff": "1s",
//!     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#).unwrap_err();
//! assert_eq!(error.path(), "methodConfig[0].retryPolicy.maxAttempts");
//! # Ok(())
//! # }
//! ```

mod duration;
mod layer;
mod parse;

pub use self::layer::{
    ResponseFuture, ServiceConfigBuilder, ServiceConfigLayer, ServiceConfigService,
};
pub use self::parse::{
    HedgingPolicy, MethodConfig, MethodName, Policy, RetryPolicy, RetryThrottling, ServiceConfig,
};
