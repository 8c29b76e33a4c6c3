//! The document: `defaults` and named `instances`, each a stack of parts
//! that may inherit from another; resolved and validated into a
//! [`Config`](super::Config).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::adaptive::{AdaptiveLimitLayer, AdaptiveLimitSettings, ThrottleLayer, ThrottleSettings};
use crate::bulkhead::{BulkheadLayer, BulkheadSettings};
use crate::circuit_breaker::{CircuitBreakerLayer, CircuitBreakerSettings};
use crate::error::ConfigError;
use crate::hedge::{HedgeLayer, HedgeSettings};
use crate::rate_limit::{RateLimitLayer, RateLimitSettings};
use crate::retry::{RetryLayer, RetrySettings};
use crate::settings::Merge;
use crate::validate;

/// A part of a stack, by the name its settings go under: what
/// [`StackSettings::without`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PartName {
    /// `total_timeout`.
    TotalTimeout,
    /// `retry`.
    Retry,
    /// `hedge`.
    Hedge,
    /// `circuit_breaker`.
    CircuitBreaker,
    /// `throttle`.
    Throttle,
    /// `rate_limit`.
    RateLimit,
    /// `bulkhead`.
    Bulkhead,
    /// `adaptive_limit`.
    AdaptiveLimit,
    /// `attempt_timeout`.
    AttemptTimeout,
}

impl PartName {
    /// Every part, outermost first.
    pub(crate) const ALL: [PartName; 9] = [
        PartName::TotalTimeout,
        PartName::Retry,
        PartName::Hedge,
        PartName::CircuitBreaker,
        PartName::Throttle,
        PartName::RateLimit,
        PartName::Bulkhead,
        PartName::AdaptiveLimit,
        PartName::AttemptTimeout,
    ];

    /// The name as the document writes it: `"circuit_breaker"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartName::TotalTimeout => "total_timeout",
            PartName::Retry => "retry",
            PartName::Hedge => "hedge",
            PartName::CircuitBreaker => "circuit_breaker",
            PartName::Throttle => "throttle",
            PartName::RateLimit => "rate_limit",
            PartName::Bulkhead => "bulkhead",
            PartName::AdaptiveLimit => "adaptive_limit",
            PartName::AttemptTimeout => "attempt_timeout",
        }
    }
}

/// One stack's settings: a part in each slot of the preset's order, each
/// optional.
///
/// ```text
/// total_timeout → retry or hedge → circuit_breaker or throttle → rate_limit
///               → bulkhead or adaptive_limit → attempt_timeout → service
/// ```
///
/// The order is the [preset's](crate::preset), for the reasons given
/// there; a fallback is code, so a stack from a document has none (put
/// a [`FallbackLayer`](crate::fallback::FallbackLayer) around it).
///
/// An instance with `inherits = "base"` starts from the stack `base`
/// resolves to (else from the document's `defaults`) and lays its own
/// settings over it, field by field: a part it sets is merged with the
/// base's part of the same name, and replaces the other part of the same
/// slot (a `hedge` over a base with a `retry` drops the retry). `without`
/// drops parts it would otherwise inherit.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct StackSettings {
    /// The instance this one starts from (not in `defaults`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub inherits: Option<String>,
    /// Bounds the whole call, retries and backoffs included.
    #[cfg_attr(
        feature = "serde",
        serde(
            skip_serializing_if = "Option::is_none",
            with = "crate::settings::duration::option"
        )
    )]
    pub total_timeout: Option<Duration>,
    /// Retries failed attempts (the repeat slot).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub retry: Option<RetrySettings>,
    /// Hedges slow calls (the repeat slot, in the retry's place).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub hedge: Option<HedgeSettings>,
    /// Stops calling a failing service.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub circuit_breaker: Option<CircuitBreakerSettings>,
    /// Sheds a share of calls while the service fails (the breaker's slot).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub throttle: Option<ThrottleSettings>,
    /// Bounds the rate of attempts.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub rate_limit: Option<RateLimitSettings>,
    /// Bounds the calls in flight.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub bulkhead: Option<BulkheadSettings>,
    /// Bounds the calls in flight with a limit that moves (the bulkhead's slot).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub adaptive_limit: Option<AdaptiveLimitSettings>,
    /// Bounds each attempt.
    #[cfg_attr(
        feature = "serde",
        serde(
            skip_serializing_if = "Option::is_none",
            with = "crate::settings::duration::option"
        )
    )]
    pub attempt_timeout: Option<Duration>,
    /// Parts not to inherit from the base.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub without: Option<Vec<PartName>>,
}

/// A configuration document: settings every instance starts from, and
/// the instances by name. With feature `serde` it reads from any format
/// serde has (TOML, YAML, JSON), unknown fields refused; see the
/// [module docs](super) for an example.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Document {
    /// What every instance starts from (an instance that `inherits`
    /// starts from its base, which started from these).
    pub defaults: StackSettings,
    /// The stacks, by name.
    pub instances: BTreeMap<String, StackSettings>,
}

/// Two parts that fill one slot.
const SLOTS: [(PartName, PartName); 3] = [
    (PartName::Retry, PartName::Hedge),
    (PartName::CircuitBreaker, PartName::Throttle),
    (PartName::Bulkhead, PartName::AdaptiveLimit),
];

impl StackSettings {
    /// Whether `part` has the same settings here and in `other`.
    pub(crate) fn same_part(&self, other: &StackSettings, part: PartName) -> bool {
        match part {
            PartName::TotalTimeout => self.total_timeout == other.total_timeout,
            PartName::Retry => self.retry == other.retry,
            PartName::Hedge => self.hedge == other.hedge,
            PartName::CircuitBreaker => self.circuit_breaker == other.circuit_breaker,
            PartName::Throttle => self.throttle == other.throttle,
            PartName::RateLimit => self.rate_limit == other.rate_limit,
            PartName::Bulkhead => self.bulkhead == other.bulkhead,
            PartName::AdaptiveLimit => self.adaptive_limit == other.adaptive_limit,
            PartName::AttemptTimeout => self.attempt_timeout == other.attempt_timeout,
        }
    }

    /// Whether the part is set.
    pub(crate) fn has(&self, part: PartName) -> bool {
        match part {
            PartName::TotalTimeout => self.total_timeout.is_some(),
            PartName::Retry => self.retry.is_some(),
            PartName::Hedge => self.hedge.is_some(),
            PartName::CircuitBreaker => self.circuit_breaker.is_some(),
            PartName::Throttle => self.throttle.is_some(),
            PartName::RateLimit => self.rate_limit.is_some(),
            PartName::Bulkhead => self.bulkhead.is_some(),
            PartName::AdaptiveLimit => self.adaptive_limit.is_some(),
            PartName::AttemptTimeout => self.attempt_timeout.is_some(),
        }
    }

    /// Unsets the part.
    fn remove(&mut self, part: PartName) {
        match part {
            PartName::TotalTimeout => self.total_timeout = None,
            PartName::Retry => self.retry = None,
            PartName::Hedge => self.hedge = None,
            PartName::CircuitBreaker => self.circuit_breaker = None,
            PartName::Throttle => self.throttle = None,
            PartName::RateLimit => self.rate_limit = None,
            PartName::Bulkhead => self.bulkhead = None,
            PartName::AdaptiveLimit => self.adaptive_limit = None,
            PartName::AttemptTimeout => self.attempt_timeout = None,
        }
    }

    /// The parts this stack has, outermost first.
    pub fn parts(&self) -> impl Iterator<Item = PartName> + '_ {
        PartName::ALL.into_iter().filter(|part| self.has(*part))
    }

    /// Refuses two parts in one slot, and `without` a part set here.
    fn check_own(&self) -> Result<(), ConfigError> {
        for (one, other) in SLOTS {
            if self.has(one) && self.has(other) {
                return Err(ConfigError::new(
                    other.as_str(),
                    format!(
                        "{} is set too, and the two fill the same slot; keep one",
                        one.as_str()
                    ),
                ));
            }
        }
        for part in self.without.iter().flatten() {
            if self.has(*part) {
                return Err(ConfigError::new(
                    "without",
                    format!("{} is set here; it cannot also be left out", part.as_str()),
                ));
            }
        }
        Ok(())
    }

    /// These settings over `base`: see the type's docs.
    fn over(mut self, base: &StackSettings) -> StackSettings {
        let mut base = base.clone();
        for (one, other) in SLOTS {
            if self.has(one) {
                base.remove(other);
            }
            if self.has(other) {
                base.remove(one);
            }
        }
        for part in self.without.take().into_iter().flatten() {
            base.remove(part);
        }
        StackSettings {
            inherits: None,
            total_timeout: self.total_timeout.or(base.total_timeout),
            retry: self.retry.over(&base.retry),
            hedge: self.hedge.over(&base.hedge),
            circuit_breaker: self.circuit_breaker.over(&base.circuit_breaker),
            throttle: self.throttle.over(&base.throttle),
            rate_limit: self.rate_limit.over(&base.rate_limit),
            bulkhead: self.bulkhead.over(&base.bulkhead),
            adaptive_limit: self.adaptive_limit.over(&base.adaptive_limit),
            attempt_timeout: self.attempt_timeout.or(base.attempt_timeout),
            without: None,
        }
    }

    /// Validates every part as its builder's `build()` does, each error
    /// under the part's name.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(total) = self.total_timeout {
            validate::positive("total_timeout", total)?;
        }
        if let Some(attempt) = self.attempt_timeout {
            validate::positive("attempt_timeout", attempt)?;
        }
        let under = |part: PartName| move |e: ConfigError| e.under(part.as_str());
        if let Some(s) = &self.retry {
            RetryLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::Retry))?;
        }
        if let Some(s) = &self.hedge {
            HedgeLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::Hedge))?;
        }
        if let Some(s) = &self.circuit_breaker {
            CircuitBreakerLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::CircuitBreaker))?;
        }
        if let Some(s) = &self.throttle {
            ThrottleLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::Throttle))?;
        }
        if let Some(s) = &self.rate_limit {
            RateLimitLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::RateLimit))?;
        }
        if let Some(s) = &self.bulkhead {
            BulkheadLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::Bulkhead))?;
        }
        if let Some(s) = &self.adaptive_limit {
            AdaptiveLimitLayer::builder()
                .settings(s)
                .build()
                .map_err(under(PartName::AdaptiveLimit))?;
        }
        Ok(())
    }
}

impl Document {
    /// Every instance, resolved (its bases laid under it) and validated.
    ///
    /// # Errors
    /// The first instance (in name order) that cannot work, with the path
    /// of the refused value: an unknown or circular `inherits`, two parts
    /// in one slot, a value a builder refuses.
    pub(crate) fn resolve(&self) -> Result<BTreeMap<String, StackSettings>, ConfigError> {
        if self.defaults.inherits.is_some() {
            return Err(ConfigError::new(
                "inherits",
                "the defaults are where inheritance starts; they inherit from nothing",
            )
            .under("defaults"));
        }
        self.defaults.check_own().map_err(|e| e.under("defaults"))?;
        let mut resolved = BTreeMap::new();
        for name in self.instances.keys() {
            let stack = self
                .resolve_one(name, &mut Vec::new())
                .map_err(|e| e.under("instances"))?;
            stack
                .validate()
                .map_err(|e| e.under(name.clone()).under("instances"))?;
            resolved.insert(name.clone(), stack);
        }
        Ok(resolved)
    }

    /// One instance over its chain of bases; errors under the instance's
    /// name (the caller adds `instances`).
    fn resolve_one(
        &self,
        name: &str,
        chain: &mut Vec<String>,
    ) -> Result<StackSettings, ConfigError> {
        let own = &self.instances[name];
        own.check_own().map_err(|e| e.under(name))?;
        chain.push(name.to_string());
        let base = match &own.inherits {
            None => self.defaults.clone(),
            Some(parent) if chain.contains(parent) => {
                return Err(ConfigError::new(
                    "inherits",
                    format!(
                        "inheritance goes round in a circle: {} → {parent}",
                        chain.join(" → ")
                    ),
                )
                .under(name));
            }
            Some(parent) if !self.instances.contains_key(parent) => {
                return Err(ConfigError::new(
                    "inherits",
                    format!("there is no instance {parent:?} to inherit from"),
                )
                .under(name));
            }
            Some(parent) => self.resolve_one(parent, chain)?,
        };
        Ok(own.clone().over(&base))
    }
}
