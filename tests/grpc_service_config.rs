//! gRPC's service config (proposal A6), read from its JSON and applied by
//! `ServiceConfigLayer` to a tonic `Channel` against a tonic server on
//! 127.0.0.1: A6's own JSON examples, every refusal with its path, the
//! lookup order, retries with `grpc-previous-rpc-attempts`, the cap on
//! `maxAttempts`, throttling tokens, hedging, and pushback.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::classify::GrpcCode;
use palisade::config::grpc::{
    HedgingPolicy, MethodConfig, MethodName, Policy, RetryPolicy, RetryThrottling, ServiceConfig,
    ServiceConfigLayer,
};
use palisade::event::Event;
use palisade::retry::RetryEvent;
use tonic::codegen::tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::Layer;

// ---------------------------------------------------------------------------
// A6's JSON examples, verbatim (grpc/proposal A6-client-retries.md), each
// placed in a method config of a document.
// ---------------------------------------------------------------------------

const A6_RETRY_POLICY: &str = r#""retryPolicy": {
  "maxAttempts": 4,
  "initialBackoff": "0.1s",
  "maxBackoff": "1s",
  "backoffMultiplier": 2,
  "retryableStatusCodes": [
    "UNAVAILABLE"
  ]
}"#;

const A6_HEDGING_POLICY: &str = r#""hedgingPolicy": {
  "maxAttempts": 4,
  "hedgingDelay": "0.5s",
  "nonFatalStatusCodes": [
    "UNAVAILABLE",
    "INTERNAL",
    "ABORTED"
  ]
}"#;

/// "The following example issues four RPCs simultaneously".
const A6_HEDGING_AT_ONCE: &str = r#""hedgingPolicy": {
  "maxAttempts": 4,
  "hedgingDelay": "0s",
  "nonFatalStatusCodes": [
    "UNAVAILABLE",
    "INTERNAL",
    "ABORTED"
  ]
}"#;

const A6_RETRY_THROTTLING: &str = r#""retryThrottling": {
  "maxTokens": 10,
  "tokenRatio": 0.1
}"#;

const HEALTH: &str = "grpc.health.v1.Health";

fn document(policy: &str, throttling: Option<&str>) -> String {
    let throttling = throttling.map_or(String::new(), |t| format!(",\n{t}"));
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "{HEALTH}", "method": "Check"}}], {policy}}}]{throttling}}}"#
    )
}

fn only_policy(config: &ServiceConfig) -> &Policy {
    config.method_configs[0].policy.as_ref().unwrap()
}

#[test]
fn a6s_retry_policy_example_reads_as_written() {
    let config = ServiceConfig::from_json(&document(A6_RETRY_POLICY, None)).unwrap();
    assert_eq!(
        only_policy(&config),
        &Policy::Retry(RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            retryable_status_codes: vec![GrpcCode::Unavailable],
        })
    );
    assert_eq!(
        config.method_configs[0].names,
        vec![MethodName {
            service: Some(HEALTH.into()),
            method: Some("Check".into()),
        }]
    );
    assert_eq!(config.retry_throttling, None);
    ServiceConfigLayer::builder(config).build().unwrap();
}

#[test]
fn a6s_hedging_policy_examples_read_as_written() {
    let codes = vec![GrpcCode::Unavailable, GrpcCode::Internal, GrpcCode::Aborted];
    let config = ServiceConfig::from_json(&document(A6_HEDGING_POLICY, None)).unwrap();
    assert_eq!(
        only_policy(&config),
        &Policy::Hedging(HedgingPolicy {
            max_attempts: 4,
            hedging_delay: Duration::from_millis(500),
            non_fatal_status_codes: codes.clone(),
        })
    );
    ServiceConfigLayer::builder(config).build().unwrap();
    let config = ServiceConfig::from_json(&document(A6_HEDGING_AT_ONCE, None)).unwrap();
    assert_eq!(
        only_policy(&config),
        &Policy::Hedging(HedgingPolicy {
            max_attempts: 4,
            hedging_delay: Duration::ZERO,
            non_fatal_status_codes: codes,
        })
    );
    ServiceConfigLayer::builder(config).build().unwrap();
}

#[test]
fn a6s_retry_throttling_example_reads_as_written() {
    let config =
        ServiceConfig::from_json(&document(A6_RETRY_POLICY, Some(A6_RETRY_THROTTLING))).unwrap();
    assert_eq!(
        config.retry_throttling,
        Some(RetryThrottling {
            max_tokens: 10,
            token_ratio: 0.1,
        })
    );
    let layer = ServiceConfigLayer::builder(config).build().unwrap();
    let tokens = layer.throttling().unwrap();
    assert_eq!(
        tokens.remaining(),
        4,
        "retried while more than 5 of 10 are left"
    );
}

// ---------------------------------------------------------------------------
// Validation: every refusal names the path of its value.
// ---------------------------------------------------------------------------

fn retry_with(field: &str, value: &str) -> String {
    let mut fields = vec![
        ("maxAttempts", "3"),
        ("initialBackoff", r#""0.1s""#),
        ("maxBackoff", r#""1s""#),
        ("backoffMultiplier", "2"),
        ("retryableStatusCodes", r#"["UNAVAILABLE"]"#),
    ];
    fields.retain(|(key, _)| *key != field);
    if !value.is_empty() {
        fields.push((field, value));
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!(r#""{k}": {v}"#))
        .collect();
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "s"}}]}}, {{"name": [{{"service": "t"}}], "retryPolicy": {{{}}}}}]}}"#,
        body.join(", ")
    )
}

fn hedge_with(field: &str, value: &str) -> String {
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "t"}}], "hedgingPolicy": {{"maxAttempts": 3, "{field}": {value}}}}}]}}"#
    )
}

#[test]
fn every_refusal_names_the_path_of_its_value() {
    let retry = "methodConfig[1].retryPolicy";
    let cases: Vec<(String, String)> = vec![
        // The document and its entries.
        ("[]".into(), "service_config".into()),
        ("{not json".into(), "service_config".into()),
        (r#"{"methodConfig": {}}"#.into(), "methodConfig".into()),
        (r#"{"methodConfig": [3]}"#.into(), "methodConfig[0].methodConfig".into()),
        (r#"{"methodConfig": [{"name": {}}]}"#.into(), "methodConfig[0].name".into()),
        (r#"{"methodConfig": [{"name": [{"service": 5}]}]}"#.into(), "methodConfig[0].name[0].service".into()),
        (r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#.into(), "methodConfig[0].name[0].method".into()),
        (
            r#"{"methodConfig": [{"name": [{"service": "s"}]}, {"name": [{}, {"service": "s", "method": ""}]}]}"#.into(),
            "methodConfig[1].name[1].service".into(),
        ),
        (
            r#"{"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}"#.into(),
            "methodConfig[1].name[0].service".into(),
        ),
        (
            format!(r#"{{"methodConfig": [{{"name": [{{}}], {A6_RETRY_POLICY}, {A6_HEDGING_POLICY}}}]}}"#),
            "methodConfig[0].hedgingPolicy".into(),
        ),
        (r#"{"methodConfig": [{"name": [{}], "timeout": "1"}]}"#.into(), "methodConfig[0].timeout".into()),
        (r#"{"methodConfig": [{"name": [{}], "timeout": "-1s"}]}"#.into(), "methodConfig[0].timeout".into()),
        (r#"{"methodConfig": [{"name": [{}], "waitForReady": "yes"}]}"#.into(), "methodConfig[0].waitForReady".into()),
        (r#"{"methodConfig": [{"name": [{}], "maxRequestMessageBytes": -1}]}"#.into(), "methodConfig[0].maxRequestMessageBytes".into()),
        (r#"{"methodConfig": [{"name": [{}], "maxResponseMessageBytes": 4294967296}]}"#.into(), "methodConfig[0].maxResponseMessageBytes".into()),
        (r#"{"methodConfig": [{"name": [{}], "retryPolicy": []}]}"#.into(), "methodConfig[0].retryPolicy.retryPolicy".into()),
        // retryPolicy, field by field.
        (retry_with("maxAttempts", ""), format!("{retry}.maxAttempts")),
        (retry_with("maxAttempts", "1"), format!("{retry}.maxAttempts")),
        (retry_with("maxAttempts", "2.5"), format!("{retry}.maxAttempts")),
        (retry_with("maxAttempts", "4.0"), format!("{retry}.maxAttempts")),
        (retry_with("maxAttempts", "-3"), format!("{retry}.maxAttempts")),
        (retry_with("maxAttempts", r#""three""#), format!("{retry}.maxAttempts")),
        (retry_with("initialBackoff", ""), format!("{retry}.initialBackoff")),
        (retry_with("initialBackoff", r#""0s""#), format!("{retry}.initialBackoff")),
        (retry_with("initialBackoff", r#"".1s""#), format!("{retry}.initialBackoff")),
        (retry_with("initialBackoff", r#""100ms""#), format!("{retry}.initialBackoff")),
        (retry_with("initialBackoff", "0.1"), format!("{retry}.initialBackoff")),
        (retry_with("initialBackoff", r#""315576000000s""#), format!("{retry}.initialBackoff")),
        (retry_with("maxBackoff", ""), format!("{retry}.maxBackoff")),
        (retry_with("maxBackoff", r#""-1s""#), format!("{retry}.maxBackoff")),
        (retry_with("backoffMultiplier", ""), format!("{retry}.backoffMultiplier")),
        (retry_with("backoffMultiplier", "0"), format!("{retry}.backoffMultiplier")),
        (retry_with("backoffMultiplier", "0.5"), format!("{retry}.backoffMultiplier")),
        (retry_with("backoffMultiplier", r#""2""#), format!("{retry}.backoffMultiplier")),
        (retry_with("retryableStatusCodes", ""), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", "[]"), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", r#""UNAVAILABLE""#), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", r#"["NOPE"]"#), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", "[17]"), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", r#"["OK"]"#), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", "[0]"), format!("{retry}.retryableStatusCodes")),
        (retry_with("retryableStatusCodes", "[true]"), format!("{retry}.retryableStatusCodes")),
        // hedgingPolicy.
        (hedge_with("maxAttempts", "1"), "methodConfig[0].hedgingPolicy.maxAttempts".into()),
        (hedge_with("hedgingDelay", r#""-0.5s""#), "methodConfig[0].hedgingPolicy.hedgingDelay".into()),
        (hedge_with("hedgingDelay", r#""0.5""#), "methodConfig[0].hedgingPolicy.hedgingDelay".into()),
        (hedge_with("nonFatalStatusCodes", r#"["UNAVAILABLE", "bogus"]"#), "methodConfig[0].hedgingPolicy.nonFatalStatusCodes".into()),
        (hedge_with("nonFatalStatusCodes", "{}"), "methodConfig[0].hedgingPolicy.nonFatalStatusCodes".into()),
        // retryThrottling.
        (r#"{"retryThrottling": 10}"#.into(), "retryThrottling.retryThrottling".into()),
        (r#"{"retryThrottling": {"tokenRatio": 0.1}}"#.into(), "retryThrottling.maxTokens".into()),
        (r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 0.1}}"#.into(), "retryThrottling.maxTokens".into()),
        (r#"{"retryThrottling": {"maxTokens": 1001, "tokenRatio": 0.1}}"#.into(), "retryThrottling.maxTokens".into()),
        (r#"{"retryThrottling": {"maxTokens": 10.5, "tokenRatio": 0.1}}"#.into(), "retryThrottling.maxTokens".into()),
        (r#"{"retryThrottling": {"maxTokens": 10}}"#.into(), "retryThrottling.tokenRatio".into()),
        (r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0}}"#.into(), "retryThrottling.tokenRatio".into()),
        (r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.0004}}"#.into(), "retryThrottling.tokenRatio".into()),
        (r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": "0.1"}}"#.into(), "retryThrottling.tokenRatio".into()),
    ];
    for (json, path) in &cases {
        let error = ServiceConfig::from_json(json)
            .map(|_| ())
            .expect_err(&format!("accepted: {json}"));
        assert_eq!(&error.path(), path, "{json}: {error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("invalid `{path}`: ")),
            "{error}"
        );
    }
    assert_eq!(cases.len(), 56);
}

#[test]
fn refusals_say_what_is_wrong() {
    let error = |json: &str| ServiceConfig::from_json(json).unwrap_err().to_string();
    assert_eq!(
        error(&retry_with("maxAttempts", "1")),
        "invalid `methodConfig[1].retryPolicy.maxAttempts`: must be at least 2 (the first attempt counts), got 1"
    );
    assert_eq!(
        error(&retry_with("initialBackoff", r#"".1s""#)),
        "invalid `methodConfig[1].retryPolicy.initialBackoff`: \".1s\" is not a protobuf duration (the seconds must be digits); write seconds with an `s`, as \"0.1s\" or \"30s\""
    );
    assert_eq!(
        error(&retry_with(
            "retryableStatusCodes",
            r#"["UNAVAILABLE", "NOPE"]"#
        )),
        "invalid `methodConfig[1].retryPolicy.retryableStatusCodes`: element 1: \"NOPE\" is not a gRPC status code (a number from 1 to 16, or a name such as \"UNAVAILABLE\")"
    );
    assert_eq!(
        error(r#"{"methodConfig": [{"name": [{"service": "s"}, {"service": "s"}]}]}"#),
        "invalid `methodConfig[0].name[1].service`: the service s is named by two method configs"
    );
}

#[test]
fn what_a6_allows_is_read() {
    // Codes as numbers, numeric strings and names in any case, deduplicated;
    // maxAttempts as a numeric string; unknown fields and other top-level
    // keys ignored; entries without a name apply to nothing.
    let config = ServiceConfig::from_json(
        r#"{
          "loadBalancingConfig": [{"round_robin": {}}],
          "methodConfig": [
            {"retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s",
               "backoffMultiplier": 1, "retryableStatusCodes": [14]}},
            {"name": [], "waitForReady": false},
            {"name": [{"service": "s", "method": null}, {"service": "t", "method": "M"}],
             "someFutureField": {"anything": 1},
             "timeout": "1.5s", "waitForReady": true,
             "maxRequestMessageBytes": "1024", "maxResponseMessageBytes": 0,
             "retryPolicy": {"maxAttempts": "7", "initialBackoff": "2s", "maxBackoff": "0.5s",
               "backoffMultiplier": 1.5,
               "retryableStatusCodes": [14, "unavailable", "14", "Deadline_Exceeded", 8]}}
          ]
        }"#,
    )
    .unwrap();
    assert_eq!(
        config.method_configs.len(),
        1,
        "the nameless entries are left out"
    );
    let method = &config.method_configs[0];
    assert_eq!(
        method.names[0],
        MethodName {
            service: Some("s".into()),
            method: None,
        }
    );
    assert_eq!(method.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(method.wait_for_ready, Some(true));
    assert_eq!(method.max_request_message_bytes, Some(1024));
    assert_eq!(method.max_response_message_bytes, Some(0));
    let Some(Policy::Retry(retry)) = &method.policy else {
        panic!("a retry policy")
    };
    assert_eq!(retry.max_attempts, 7, "kept as written; the layer caps it");
    assert_eq!(
        retry.retryable_status_codes,
        vec![
            GrpcCode::Unavailable,
            GrpcCode::DeadlineExceeded,
            GrpcCode::ResourceExhausted
        ]
    );
    // maxBackoff below initialBackoff: every delay is maxBackoff, as A6's
    // formula gives.
    ServiceConfigLayer::builder(config).build().unwrap();
}

#[test]
fn a_call_finds_its_method_then_its_service_then_the_default() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [
            {"name": [{"service": "a.S", "method": "M"}], "timeout": "1s"},
            {"name": [{"service": "a.S"}], "timeout": "2s"},
            {"name": [{"service": ""}], "timeout": "3s"},
            {"name": [{"service": "b.S", "method": "N"}], "timeout": "4s"}
        ]}"#,
    )
    .unwrap();
    let timeout = |path: &str| config.method_config(path).and_then(|m| m.timeout);
    let s = Duration::from_secs;
    assert_eq!(timeout("/a.S/M"), Some(s(1)));
    assert_eq!(timeout("/a.S/Other"), Some(s(2)));
    assert_eq!(timeout("/b.S/N"), Some(s(4)));
    assert_eq!(
        timeout("/b.S/Other"),
        Some(s(3)),
        "b.S has no config of its own"
    );
    assert_eq!(timeout("/c.S/M"), Some(s(3)));
    assert_eq!(
        timeout("/a.s/M"),
        Some(s(3)),
        "names are matched case-sensitively"
    );
    assert_eq!(timeout("/"), Some(s(3)));
    let no_default = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.S", "method": "M"}]}]}"#,
    )
    .unwrap();
    assert!(no_default.method_config("/a.S/N").is_none());
}

#[test]
fn the_builder_checks_its_cap_and_configs_built_by_hand() {
    let config = ServiceConfig::from_json(&document(A6_RETRY_POLICY, None)).unwrap();
    for bad in [0, 6] {
        let error = ServiceConfigLayer::builder(config.clone())
            .max_attempts(bad)
            .build()
            .unwrap_err();
        assert_eq!(error.parameter(), "max_attempts");
    }
    // Two configs naming one method, as a program might build them.
    let method = |names: Vec<MethodName>| MethodConfig {
        names,
        ..MethodConfig::default()
    };
    let health = MethodName {
        service: Some(HEALTH.into()),
        method: None,
    };
    let by_hand = ServiceConfig {
        method_configs: vec![method(vec![health.clone()]), method(vec![health])],
        retry_throttling: None,
    };
    let error = ServiceConfigLayer::builder(by_hand).build().unwrap_err();
    assert_eq!(error.path(), "method_configs[1].names[0].service");
    // A retry policy no retry layer takes.
    let by_hand = ServiceConfig {
        method_configs: vec![MethodConfig {
            names: vec![MethodName::default()],
            policy: Some(Policy::Retry(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::ZERO,
                max_backoff: Duration::from_secs(1),
                backoff_multiplier: 2.0,
                retryable_status_codes: vec![GrpcCode::Unavailable],
            })),
            ..MethodConfig::default()
        }],
        retry_throttling: None,
    };
    let error = ServiceConfigLayer::builder(by_hand).build().unwrap_err();
    assert_eq!(error.path(), "method_configs[0].retryPolicy.initialBackoff");
    let by_hand = ServiceConfig {
        method_configs: vec![],
        retry_throttling: Some(RetryThrottling {
            max_tokens: 2000,
            token_ratio: 0.1,
        }),
    };
    let error = ServiceConfigLayer::builder(by_hand).build().unwrap_err();
    assert_eq!(error.path(), "retryThrottling.maxTokens");
}

// ---------------------------------------------------------------------------
// On the wire: a tonic server whose `Check` answers from a script.
// ---------------------------------------------------------------------------

/// One answer of the script: a status (OK: SERVING) and an optional
/// `grpc-retry-pushback-ms`.
type Step = (Code, Option<&'static str>);

/// A call's method and its `grpc-previous-rpc-attempts`.
type Seen = (&'static str, Option<String>);

#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
    /// Each call's method and `grpc-previous-rpc-attempts`, in arrival order.
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn new(steps: &[Step]) -> Self {
        let scripted = Self::default();
        scripted
            .script
            .lock()
            .unwrap()
            .extend(steps.iter().copied());
        scripted
    }

    fn then(&self, steps: &[Step]) {
        self.script.lock().unwrap().extend(steps.iter().copied());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn record<T>(&self, method: &'static str, request: &tonic::Request<T>) {
        let attempts = request
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen.lock().unwrap().push((method, attempts));
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        self.record("Check", &request);
        let step = self.script.lock().unwrap().pop_front();
        match step.unwrap_or((Code::Ok, None)) {
            (Code::Ok, _) => Ok(tonic::Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            })),
            (code, pushback) => {
                let mut status = Status::new(code, "scripted");
                if let Some(ms) = pushback {
                    status
                        .metadata_mut()
                        .insert("grpc-retry-pushback-ms", MetadataValue::from_static(ms));
                }
                Err(status)
            }
        }
    }

    type WatchStream = WatchStream;

    /// Always UNAVAILABLE, before any message (trailers-only).
    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        self.record("Watch", &request);
        Err(Status::unavailable("watching is down"))
    }
}

async fn start(health: Scripted) -> SocketAddr {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(health))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

type Client = HealthClient<palisade::config::grpc::ServiceConfigService<tonic::transport::Channel>>;

fn client(addr: SocketAddr, layer: &ServiceConfigLayer) -> Client {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    HealthClient::new(layer.layer(channel))
}

fn layer(json: &str) -> ServiceConfigLayer {
    ServiceConfigLayer::builder(ServiceConfig::from_json(json).unwrap())
        .build()
        .unwrap()
}

async fn check(client: &mut Client) -> Result<(), Code> {
    client
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|status| status.code())
}

const UNAVAILABLE: Step = (Code::Unavailable, None);

#[tokio::test(start_paused = true)]
async fn a_retryable_status_is_retried_and_each_attempt_says_which_it_is() {
    let server = Scripted::new(&[UNAVAILABLE, UNAVAILABLE]);
    let addr = start(server.clone()).await;
    let mut client = client(addr, &layer(&document(A6_RETRY_POLICY, None)));
    let request = tonic::Request::new(HealthCheckRequest::default());
    let mut request = request;
    // A value the caller set is not the client's count: it is replaced.
    request.metadata_mut().insert(
        "grpc-previous-rpc-attempts",
        MetadataValue::from_static("9"),
    );
    client.check(request).await.unwrap();
    assert_eq!(
        server.seen(),
        vec![
            ("Check", None),
            ("Check", Some("1".to_owned())),
            ("Check", Some("2".to_owned())),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_status_not_listed_is_returned_at_once() {
    let server = Scripted::new(&[(Code::Internal, None)]);
    let addr = start(server.clone()).await;
    let mut client = client(addr, &layer(&document(A6_RETRY_POLICY, None)));
    assert_eq!(check(&mut client).await, Err(Code::Internal));
    assert_eq!(server.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_above_five_makes_five() {
    let policy = A6_RETRY_POLICY.replace(r#""maxAttempts": 4"#, r#""maxAttempts": 10"#);
    let server = Scripted::new(&[UNAVAILABLE; 20]);
    let addr = start(server.clone()).await;
    let mut client = client(addr, &layer(&document(&policy, None)));
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 5, "A6: values above 5 are treated as 5");
    // A lower cap of the client's own.
    let capped =
        ServiceConfigLayer::builder(ServiceConfig::from_json(&document(&policy, None)).unwrap())
            .max_attempts(2)
            .build()
            .unwrap();
    let mut client = self::client(addr, &capped);
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn methods_without_a_policy_are_sent_once() {
    // Check has a policy; Watch, of the same service, has none.
    let server = Scripted::new(&[]);
    let addr = start(server.clone()).await;
    let mut client = client(addr, &layer(&document(A6_RETRY_POLICY, None)));
    let status = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.seen(), vec![("Watch", None)]);
    // A service-wide policy covers Watch too.
    let whole = format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "{HEALTH}"}}], {A6_RETRY_POLICY}}}]}}"#
    );
    let mut client = self::client(addr, &layer(&whole));
    client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(server.calls(), 1 + 4);
}

/// A6's throttling, with 4 tokens (threshold 2) and a whole token back per
/// OK call.
#[tokio::test(start_paused = true)]
async fn throttling_tokens_stop_the_retries_and_ok_calls_bring_them_back() {
    let throttling = r#""retryThrottling": {"maxTokens": 4, "tokenRatio": 1}"#;
    let layer = layer(&document(A6_RETRY_POLICY, Some(throttling)));
    let tokens = layer.throttling().unwrap().clone();
    let server = Scripted::new(&[UNAVAILABLE; 3]);
    let addr = start(server.clone()).await;
    let mut client = client(addr, &layer);
    // 4 → 3 (above 2: retried) → 2 (not above: returned).
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 2);
    // 2 → 1: not retried.
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 3);
    assert_eq!(tokens.remaining(), 0);
    // Two OK calls: 3 tokens; the next failure leaves 2 and is not retried,
    // a third OK call makes 3... and one more makes 4.
    check(&mut client).await.unwrap();
    check(&mut client).await.unwrap();
    check(&mut client).await.unwrap();
    assert_eq!(server.calls(), 6);
    assert_eq!(tokens.remaining(), 1, "4 tokens: one failure is retried");
    server.then(&[UNAVAILABLE, UNAVAILABLE]);
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 8, "4 → 3, retried; 3 → 2, returned");
    // A method without a policy fills the bucket too (every OK call
    // counts), and its failures take nothing: they are not retryable there.
    let watch_fails = client.watch(HealthCheckRequest::default()).await;
    assert!(watch_fails.is_err());
    assert_eq!(tokens.remaining(), 0, "still 2 tokens");
}

#[tokio::test(start_paused = true)]
async fn a_pushback_that_says_no_ends_the_retries() {
    let server = Scripted::new(&[(Code::Unavailable, Some("-1"))]);
    let addr = start(server.clone()).await;
    let throttling = r#""retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}"#;
    let layer = layer(&document(A6_RETRY_POLICY, Some(throttling)));
    let mut client = client(addr, &layer);
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 1);
    assert_eq!(
        layer.throttling().unwrap().remaining(),
        3,
        "and counts as a failure: 9 tokens"
    );
    // A pushback with a delay is waited and retried, beyond maxBackoff.
    server.then(&[(Code::Unavailable, Some("5000"))]);
    let started = tokio::time::Instant::now();
    check(&mut client).await.unwrap();
    assert_eq!(server.calls(), 3);
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn hedging_sends_the_next_attempt_on_a_non_fatal_status() {
    let server = Scripted::new(&[UNAVAILABLE, (Code::Aborted, None)]);
    let addr = start(server.clone()).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let heard = events.clone();
    let layer = ServiceConfigLayer::builder(
        ServiceConfig::from_json(&document(A6_HEDGING_POLICY, None)).unwrap(),
    )
    .on_event(move |event: &Event<'_>| heard.lock().unwrap().push(event.name().to_owned()))
    .build()
    .unwrap();
    let mut client = client(addr, &layer);
    check(&mut client).await.unwrap();
    assert_eq!(
        server.seen(),
        vec![
            ("Check", None),
            ("Check", Some("1".to_owned())),
            ("Check", Some("2".to_owned())),
        ]
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .all(|name| name == "grpc/grpc.health.v1.Health/Check"),
        "{events:?}"
    );
    // A fatal status ends the call.
    server.then(&[(Code::PermissionDenied, None)]);
    assert_eq!(check(&mut client).await, Err(Code::PermissionDenied));
    assert_eq!(server.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn retries_are_heard_as_events_named_after_the_method() {
    let server = Scripted::new(&[UNAVAILABLE]);
    let addr = start(server.clone()).await;
    let retries = Arc::new(Mutex::new(Vec::new()));
    let heard = retries.clone();
    let layer = ServiceConfigLayer::builder(
        ServiceConfig::from_json(&document(A6_RETRY_POLICY, None)).unwrap(),
    )
    .name("inventory")
    .on_event(move |event: &Event<'_>| {
        if let Some(RetryEvent::Retry { attempt, delay, .. }) = event.kind::<RetryEvent>() {
            heard
                .lock()
                .unwrap()
                .push((event.name().to_owned(), *attempt, *delay));
        }
    })
    .build()
    .unwrap();
    let mut client = client(addr, &layer);
    check(&mut client).await.unwrap();
    let retries = retries.lock().unwrap();
    assert_eq!(retries.len(), 1);
    let (name, attempt, delay) = &retries[0];
    assert_eq!(name, "inventory/grpc.health.v1.Health/Check");
    assert_eq!(*attempt, 1);
    // initialBackoff × random(0.8, 1.2).
    assert!(
        (Duration::from_millis(80)..=Duration::from_millis(120)).contains(delay),
        "{delay:?}"
    );
}

/// Hedges spend the same tokens: a non-fatal failure takes one, and the
/// next attempt is sent only while more than half are left.
#[tokio::test(start_paused = true)]
async fn hedges_are_throttled_by_the_same_tokens() {
    let throttling = r#""retryThrottling": {"maxTokens": 4, "tokenRatio": 1}"#;
    let layer = layer(&document(A6_HEDGING_POLICY, Some(throttling)));
    let server = Scripted::new(&[UNAVAILABLE; 4]);
    let addr = start(server.clone()).await;
    let mut client = client(addr, &layer);
    // 4 → 3: the second attempt goes; 3 → 2: no third.
    assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    assert_eq!(server.calls(), 2);
    assert_eq!(layer.throttling().unwrap().remaining(), 0);
    check(&mut client).await.unwrap_err();
    assert_eq!(server.calls(), 3, "2 → 1: sent once");
    server.script.lock().unwrap().clear();
    check(&mut client).await.unwrap();
    check(&mut client).await.unwrap();
    assert_eq!(layer.throttling().unwrap().remaining(), 0, "3 tokens");
    check(&mut client).await.unwrap();
    assert_eq!(layer.throttling().unwrap().remaining(), 1, "4 tokens");
}
