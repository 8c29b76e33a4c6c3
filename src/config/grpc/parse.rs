//! Reading a service config's JSON: every rule of gRPC's proposal A6, each
//! refusal naming the path of its value.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::duration;
use crate::classify::GrpcCode;
use crate::error::ConfigError;

/// A gRPC service config, as proposal A6 (and gRPC's `service_config.proto`)
/// writes it in JSON: the methods' retry or hedging policies, and the
/// channel's retry throttling.
///
/// Read with [`from_json`](Self::from_json). Fields palisade does not act
/// on (`loadBalancingConfig`, `healthCheckConfig`, ...) are ignored, as
/// gRPC's clients ignore them; each method config's `timeout`,
/// `waitForReady` and message size limits are checked and kept, for the
/// caller to read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceConfig {
    /// The method configs, in the document's order (those without a name,
    /// which apply to nothing, left out).
    pub method_configs: Vec<MethodConfig>,
    /// `retryThrottling`: one bucket of tokens for every method of the
    /// channel.
    pub retry_throttling: Option<RetryThrottling>,
}

/// One entry of `methodConfig`: the methods it names and their policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MethodConfig {
    /// `name`: the methods this config applies to.
    pub names: Vec<MethodName>,
    /// `retryPolicy` or `hedgingPolicy` (never both), or neither: calls
    /// are sent once.
    pub policy: Option<Policy>,
    /// `timeout`: the most a call may take, as the service sees it. Read
    /// and checked, not applied: see the [module docs](super#what-is-not-applied).
    pub timeout: Option<Duration>,
    /// `waitForReady`. Read and checked, not applied.
    pub wait_for_ready: Option<bool>,
    /// `maxRequestMessageBytes`. Read and checked, not applied.
    pub max_request_message_bytes: Option<u32>,
    /// `maxResponseMessageBytes`. Read and checked, not applied.
    pub max_response_message_bytes: Option<u32>,
}

/// A method config's name: a service and a method, a whole service (no
/// method), or every method (neither).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MethodName {
    /// The fully qualified service, `"grpc.health.v1.Health"`; `None` (an
    /// empty or absent `service`) with no method: every method.
    pub service: Option<String>,
    /// The method, `"Check"`; `None` (empty or absent): every method of
    /// the service.
    pub method: Option<String>,
}

/// A method config's policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// `retryPolicy`.
    Retry(RetryPolicy),
    /// `hedgingPolicy`.
    Hedging(HedgingPolicy),
}

/// `retryPolicy`: a failed call is sent again after a jittered exponential
/// backoff, if its status code is retryable.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `maxAttempts`, the first included, as written (at least 2); the
    /// layer caps it (5 unless told otherwise, as A6 says).
    pub max_attempts: u32,
    /// `initialBackoff`: above zero.
    pub initial_backoff: Duration,
    /// `maxBackoff`: above zero.
    pub max_backoff: Duration,
    /// `backoffMultiplier`: above zero.
    pub backoff_multiplier: f64,
    /// `retryableStatusCodes`: at least one, never OK, each once.
    pub retryable_status_codes: Vec<GrpcCode>,
}

/// `hedgingPolicy`: copies of a call are sent `hedging_delay` apart until
/// one answers.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgingPolicy {
    /// `maxAttempts`, the first included, as written (at least 2); the
    /// layer caps it at 5.
    pub max_attempts: u32,
    /// `hedgingDelay`: zero (A6's default) sends every attempt at once.
    pub hedging_delay: Duration,
    /// `nonFatalStatusCodes`: a status that sends the next attempt at once
    /// rather than ending the call; never OK, each once.
    pub non_fatal_status_codes: Vec<GrpcCode>,
}

/// `retryThrottling`: retries and hedges only while more than half of
/// `max_tokens` are left (see [`RetryBudget::tokens`](crate::retry::RetryBudget::tokens)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryThrottling {
    /// `maxTokens`: 1 to 1000.
    pub max_tokens: u32,
    /// `tokenRatio`: at least 0.001; decimals beyond the third are dropped
    /// when it is read (A6: 0.5466 is 0.546).
    pub token_ratio: f64,
}

impl ServiceConfig {
    /// Reads a service config from its JSON text.
    ///
    /// # Errors
    /// Text that is not JSON (parameter `service_config`), and every value
    /// A6 refuses, named by its path in the document
    /// (`methodConfig[0].retryPolicy.maxAttempts`): see
    /// [`from_value`](Self::from_value).
    pub fn from_json(text: &str) -> Result<ServiceConfig, ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::new("service_config", format!("not JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Reads a service config from parsed JSON.
    ///
    /// # Errors
    /// Integers (`maxAttempts`, `maxTokens`, a status code, the message
    /// sizes) are JSON integers or strings of digits (`"3"`), as
    /// protobuf's JSON writes integer fields and gRPC's C core reads them;
    /// other numbers (`backoffMultiplier`, `tokenRatio`) are JSON numbers.
    /// Status codes are also names, in any case (`"UNAVAILABLE"`,
    /// `"unavailable"`), and a code listed twice counts once. Unknown
    /// fields are ignored, as gRPC's clients ignore them.
    ///
    /// As A6 and gRPC's C core, grpc-java and grpc-rust validate, the
    /// whole config is refused (grpc-go instead drops a bad retry policy
    /// with a warning), the error's path naming the value
    /// (`methodConfig[1].name[0].service` for a name given twice,
    /// `methodConfig[0].hedgingPolicy` for a config with both policies,
    /// `service_config` for a document that is not a JSON object):
    /// * a document or a `methodConfig` entry that is not an object;
    /// * a `name` whose `method` has no `service`, or a name given twice in
    ///   the document;
    /// * a method config with both `retryPolicy` and `hedgingPolicy`;
    /// * `maxAttempts` missing, not an integer, or below 2;
    /// * `initialBackoff` or `maxBackoff` missing, not a protobuf duration
    ///   (`"0.1s"`), or zero; `hedgingDelay` or `timeout` not a protobuf
    ///   duration, or negative; a duration longer than palisade's clock
    ///   counts (about 584 years; protobuf allows 10,000);
    /// * `backoffMultiplier` missing or not a number above zero (palisade
    ///   also refuses one below 1, a backoff that shrinks);
    /// * `retryableStatusCodes` missing or empty; a status code that is not
    ///   a number from 1 to 16 or a code's name (in any case), or is OK;
    /// * `maxTokens` missing or not an integer from 1 to 1000;
    ///   `tokenRatio` missing or not a number of at least 0.001.
    pub fn from_value(value: &Value) -> Result<ServiceConfig, ConfigError> {
        let root = object(value, "service_config")?;
        let mut config = ServiceConfig::default();
        let mut seen = HashSet::new();
        if let Some(entries) = root.get("methodConfig") {
            let Value::Array(entries) = entries else {
                return Err(ConfigError::new("methodConfig", "must be an array"));
            };
            for (i, entry) in entries.iter().enumerate() {
                let method = method_config(entry, &mut seen)
                    .map_err(|e| e.under(format!("methodConfig[{i}]")))?;
                if !method.names.is_empty() {
                    config.method_configs.push(method);
                }
            }
        }
        if let Some(throttling) = root.get("retryThrottling") {
            config.retry_throttling =
                Some(retry_throttling(throttling).map_err(|e| e.under("retryThrottling"))?);
        }
        Ok(config)
    }

    /// The method config for a call to `path` (`/package.Service/Method`,
    /// an HTTP/2 `:path`), as gRPC looks it up: the config that names the
    /// method, else the one that names its service, else the one that
    /// names neither.
    ///
    /// ```
    /// use palisade::config::grpc::ServiceConfig;
    ///
    /// let config = ServiceConfig::from_json(r#"{"methodConfig": [
    ///     {"name": [{}], "waitForReady": true},
    ///     {"name": [{"service": "grpc.health.v1.Health"}], "timeout": "1s"},
    ///     {"name": [{"service": "grpc.health.v1.Health", "method": "Watch"}], "timeout": "0s"}
    /// ]}"#).unwrap();
    /// let timeout = |path| config.method_config(path).and_then(|m| m.timeout);
    /// assert_eq!(timeout("/grpc.health.v1.Health/Watch"), Some(std::time::Duration::ZERO));
    /// assert_eq!(timeout("/grpc.health.v1.Health/Check"), Some(std::time::Duration::from_secs(1)));
    /// assert_eq!(config.method_config("/other.Service/Call").unwrap().wait_for_ready, Some(true));
    /// ```
    pub fn method_config(&self, path: &str) -> Option<&MethodConfig> {
        self.index_of(path).map(|i| &self.method_configs[i])
    }

    /// The index in `method_configs` of [`method_config`](Self::method_config)'s answer.
    pub(crate) fn index_of(&self, path: &str) -> Option<usize> {
        let (service, method) = split_path(path);
        let find = |service: Option<&str>, method: Option<&str>| {
            self.method_configs.iter().position(|config| {
                config.names.iter().any(|name| {
                    name.service.as_deref() == service && name.method.as_deref() == method
                })
            })
        };
        service
            .and_then(|service| {
                method
                    .and_then(|method| find(Some(service), Some(method)))
                    .or_else(|| find(Some(service), None))
            })
            .or_else(|| find(None, None))
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`); parts that
/// are missing or empty are `None`.
pub(crate) fn split_path(path: &str) -> (Option<&str>, Option<&str>) {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    (non_empty(service), non_empty(method))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn object<'a>(value: &'a Value, what: &'static str) -> Result<&'a Map<String, Value>, ConfigError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ConfigError::new(
            what,
            format!("must be a JSON object, got {}", kind(other)),
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn method_config(
    value: &Value,
    seen: &mut HashSet<MethodName>,
) -> Result<MethodConfig, ConfigError> {
    let entry = object(value, "methodConfig")?;
    let mut config = MethodConfig::default();
    if let Some(names) = entry.get("name") {
        let Value::Array(names) = names else {
            return Err(ConfigError::new("name", "must be an array"));
        };
        for (i, name) in names.iter().enumerate() {
            let name = method_name(name).map_err(|e| e.under(format!("name[{i}]")))?;
            if !seen.insert(name.clone()) {
                return Err(ConfigError::new(
                    "service",
                    format!("{} is named by two method configs", describe(&name)),
                )
                .under(format!("name[{i}]")));
            }
            config.names.push(name);
        }
    }
    match (entry.get("retryPolicy"), entry.get("hedgingPolicy")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "hedgingPolicy",
                "a method config has a retryPolicy or a hedgingPolicy, not both",
            ));
        }
        (Some(retry), None) => {
            config.policy = Some(Policy::Retry(
                retry_policy(retry).map_err(|e| e.under("retryPolicy"))?,
            ));
        }
        (None, Some(hedging)) => {
            config.policy = Some(Policy::Hedging(
                hedging_policy(hedging).map_err(|e| e.under("hedgingPolicy"))?,
            ));
        }
        (None, None) => {}
    }
    if let Some(timeout) = entry.get("timeout") {
        config.timeout = Some(proto_duration(timeout, "timeout", false)?);
    }
    if let Some(wait) = entry.get("waitForReady") {
        match wait {
            Value::Bool(wait) => config.wait_for_ready = Some(*wait),
            other => {
                return Err(ConfigError::new(
                    "waitForReady",
                    format!("must be true or false, got {}", kind(other)),
                ));
            }
        }
    }
    for (key, field) in [
        (
            "maxRequestMessageBytes",
            &mut config.max_request_message_bytes,
        ),
        (
            "maxResponseMessageBytes",
            &mut config.max_response_message_bytes,
        ),
    ] {
        if let Some(value) = entry.get(key) {
            let bytes = integer(value, key)?;
            *field = Some(u32::try_from(bytes).map_err(|_| {
                ConfigError::new(key, format!("must be at most {}, got {bytes}", u32::MAX))
            })?);
        }
    }
    Ok(config)
}

fn describe(name: &MethodName) -> String {
    match (&name.service, &name.method) {
        (Some(service), Some(method)) => format!("the method {service}/{method}"),
        (Some(service), None) => format!("the service {service}"),
        _ => "the default (no service)".to_owned(),
    }
}

fn method_name(value: &Value) -> Result<MethodName, ConfigError> {
    let name = object(value, "name")?;
    let part = |key: &'static str| -> Result<Option<String>, ConfigError> {
        match name.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ConfigError::new(
                key,
                format!("must be a string, got {}", kind(other)),
            )),
        }
    };
    let service = part("service")?;
    let method = part("method")?;
    if service.is_none() && method.is_some() {
        return Err(ConfigError::new(
            "method",
            "a method needs its service (a name with neither is the default)",
        ));
    }
    Ok(MethodName { service, method })
}

fn required<'a>(map: &'a Map<String, Value>, key: &'static str) -> Result<&'a Value, ConfigError> {
    map.get(key)
        .ok_or_else(|| ConfigError::new(key, "is required"))
}

/// A JSON integer, or a string of digits (protobuf's JSON allows both for
/// integer fields, and C core and grpc-rust read both).
fn integer(value: &Value, key: &'static str) -> Result<u64, ConfigError> {
    let refuse = || {
        ConfigError::new(
            key,
            format!("must be a non-negative JSON integer, got {value}"),
        )
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(refuse),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(|_| refuse())
        }
        _ => Err(refuse()),
    }
}

fn number(value: &Value, key: &'static str) -> Result<f64, ConfigError> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| ConfigError::new(key, format!("must be a number, got {n}"))),
        other => Err(ConfigError::new(
            key,
            format!("must be a number, got {}", kind(other)),
        )),
    }
}

fn proto_duration(
    value: &Value,
    key: &'static str,
    positive: bool,
) -> Result<Duration, ConfigError> {
    let Value::String(text) = value else {
        return Err(ConfigError::new(
            key,
            format!(
                "must be a protobuf duration string such as \"0.1s\", got {}",
                kind(value)
            ),
        ));
    };
    let duration = duration::parse(text).map_err(|why| ConfigError::new(key, why))?;
    // Protobuf allows 10,000 years; palisade's clock counts 584.
    crate::validate::fits(key, duration)?;
    if positive && duration.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(duration)
}

fn max_attempts(map: &Map<String, Value>) -> Result<u32, ConfigError> {
    let attempts = integer(required(map, "maxAttempts")?, "maxAttempts")?;
    if attempts < 2 {
        return Err(ConfigError::new(
            "maxAttempts",
            format!("must be at least 2 (the first attempt counts), got {attempts}"),
        ));
    }
    // Capped at 5 (or the layer's cap) when used; beyond u32 is as many.
    Ok(u32::try_from(attempts).unwrap_or(u32::MAX))
}

fn status_codes(value: &Value, key: &'static str) -> Result<Vec<GrpcCode>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(ConfigError::new(
            key,
            format!("must be an array of status codes, got {}", kind(value)),
        ));
    };
    let mut codes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let code = match item {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| GrpcCode::ALL.get(n).copied()),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse::<usize>()
                .ok()
                .and_then(|n| GrpcCode::ALL.get(n).copied()),
            Value::String(s) => GrpcCode::from_name(s),
            _ => None,
        };
        let code = match code {
            Some(GrpcCode::Ok) => {
                return Err(ConfigError::new(
                    key,
                    format!("element {i}: OK is not a failure"),
                ));
            }
            Some(code) => code,
            None => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "element {i}: {item} is not a gRPC status code (a number from 1 to 16, or a name such as \"UNAVAILABLE\")"
                    ),
                ));
            }
        };
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

fn retry_policy(value: &Value) -> Result<RetryPolicy, ConfigError> {
    let map = object(value, "retryPolicy")?;
    let max_attempts = max_attempts(map)?;
    let initial_backoff = proto_duration(required(map, "initialBackoff")?, "initialBackoff", true)?;
    let max_backoff = proto_duration(required(map, "maxBackoff")?, "maxBackoff", true)?;
    let backoff_multiplier = number(required(map, "backoffMultiplier")?, "backoffMultiplier")?;
    // JSON has no NaN.
    if backoff_multiplier <= 0.0 {
        return Err(ConfigError::new(
            "backoffMultiplier",
            format!("must be above zero, got {backoff_multiplier}"),
        ));
    }
    if backoff_multiplier < 1.0 {
        return Err(ConfigError::new(
            "backoffMultiplier",
            format!(
                "palisade's backoff does not shrink: must be at least 1, got {backoff_multiplier}"
            ),
        ));
    }
    let retryable_status_codes = status_codes(
        required(map, "retryableStatusCodes")?,
        "retryableStatusCodes",
    )?;
    if retryable_status_codes.is_empty() {
        return Err(ConfigError::new(
            "retryableStatusCodes",
            "must list at least one status code",
        ));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_status_codes,
    })
}

fn hedging_policy(value: &Value) -> Result<HedgingPolicy, ConfigError> {
    let map = object(value, "hedgingPolicy")?;
    let max_attempts = max_attempts(map)?;
    let hedging_delay = match map.get("hedgingDelay") {
        Some(delay) => proto_duration(delay, "hedgingDelay", false)?,
        None => Duration::ZERO,
    };
    let non_fatal_status_codes = match map.get("nonFatalStatusCodes") {
        Some(codes) => status_codes(codes, "nonFatalStatusCodes")?,
        None => Vec::new(),
    };
    Ok(HedgingPolicy {
        max_attempts,
        hedging_delay,
        non_fatal_status_codes,
    })
}

fn retry_throttling(value: &Value) -> Result<RetryThrottling, ConfigError> {
    let map = object(value, "retryThrottling")?;
    let max_tokens = integer(required(map, "maxTokens")?, "maxTokens")?;
    if !(1..=1000).contains(&max_tokens) {
        return Err(ConfigError::new(
            "maxTokens",
            format!("must be from 1 to 1000, got {max_tokens}"),
        ));
    }
    let token_ratio = number(required(map, "tokenRatio")?, "tokenRatio")?;
    // Checked as the budget checks it, named as the document names it.
    crate::budget::RetryBudget::tokens(max_tokens as u32, token_ratio)
        .map_err(|e| ConfigError::new("tokenRatio", e.reason().to_owned()))?;
    Ok(RetryThrottling {
        max_tokens: max_tokens as u32,
        // As the bucket counts it (thousandths, the rest dropped), with
        // the same nudge for a ratio that binary cannot write exactly.
        token_ratio: (token_ratio * 1000.0 + 1e-9).floor() / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal says what it found, by its JSON kind.
    #[test]
    fn a_refusal_names_the_json_kind_it_found() {
        let refusal = |json: &str| ServiceConfig::from_json(json).unwrap_err().to_string();
        for (entry, found) in [
            ("null", "got null"),
            ("true", "got a boolean"),
            ("1", "got a number"),
            ("\"a\"", "got a string"),
            ("[]", "got an array"),
        ] {
            let json = format!(r#"{{"methodConfig": [{entry}]}}"#);
            let refusal = refusal(&json);
            assert!(
                refusal.ends_with(&format!("must be a JSON object, {found}")),
                "{refusal}"
            );
        }
        let json = r#"{"methodConfig": [{"name": [{}], "waitForReady": {}}]}"#;
        let refusal = refusal(json);
        assert!(
            refusal.ends_with("must be true or false, got an object"),
            "{refusal}"
        );
    }

    /// A name given twice is refused, and the refusal says which.
    #[test]
    fn a_name_given_twice_is_named() {
        let twice = |name: &str| {
            let json =
                format!(r#"{{"methodConfig": [{{"name": [{name}]}}, {{"name": [{name}]}}]}}"#);
            ServiceConfig::from_json(&json).unwrap_err().to_string()
        };
        let method = twice(r#"{"service": "pkg.Svc", "method": "Get"}"#);
        assert!(
            method.contains("the method pkg.Svc/Get is named by two"),
            "{method}"
        );
        let service = twice(r#"{"service": "pkg.Svc"}"#);
        assert!(
            service.contains("the service pkg.Svc is named by two"),
            "{service}"
        );
        let default = twice("{}");
        assert!(
            default.contains("the default (no service) is named by two"),
            "{default}"
        );
    }

    /// Protobuf's JSON writes an integer as a number or a string of
    /// digits; a sign, a space or an empty string is not one.
    #[test]
    fn an_integer_is_a_number_or_a_string_of_digits() {
        let max_attempts = |value: &str| {
            let json = format!(
                r#"{{"methodConfig": [{{"name": [{{}}], "retryPolicy": {{"maxAttempts": {value},
                "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"]}}}}]}}"#
            );
            ServiceConfig::from_json(&json)
        };
        assert!(max_attempts("3").is_ok());
        assert!(max_attempts("\"3\"").is_ok());
        for refused in ["\"+3\"", "\" 3\"", "\"\"", "\"-3\"", "-3", "3.5"] {
            let refusal = max_attempts(refused).unwrap_err().to_string();
            assert!(
                refusal.contains("must be a non-negative JSON integer"),
                "{refused}: {refusal}"
            );
        }
    }
}
