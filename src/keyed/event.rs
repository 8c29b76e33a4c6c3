//! The keyed layer's own events: instances made and evicted, calls refused
//! or served by the shared instance. Each carries the key it is about
//! ([`Event::key`](crate::event::Event::key)).

use std::fmt;

use crate::event::EventKind;
use crate::registry::Eviction;

/// What happened in a keyed layer; see [`Event`](crate::event::Event),
/// whose [`key`](crate::event::Event::key) says for which key. An event
/// displays as ``keyed `hosts`: instance evicted: it was idle (41 keys); key `10.0.0.7:8080` ``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyedEvent {
    /// An instance was made for a key seen for the first time (or again
    /// after its instance went).
    InstanceCreated {
        /// How many keys the layer holds as the event is emitted, this one
        /// included.
        keys: usize,
    },
    /// An instance went.
    InstanceEvicted {
        /// Why it went.
        reason: Eviction,
        /// How many keys the layer holds as the event is emitted: an
        /// instance made for the key that needed the room already counts
        /// (its `InstanceCreated` comes next).
        keys: usize,
    },
    /// A call's key found no room, and the call was refused with
    /// [`TooManyKeys`](crate::error::TooManyKeys).
    Rejected,
    /// A call's key found no room, and the call went through the shared
    /// instance ([`WhenFull::Share`](super::WhenFull::Share)).
    Shared,
}

impl fmt::Display for KeyedEvent {
    /// The event without the layer's name and key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyedEvent::InstanceCreated { keys } => write!(f, "instance created ({keys} keys)"),
            KeyedEvent::InstanceEvicted { reason, keys } => {
                write!(f, "instance evicted: {reason} ({keys} keys)")
            }
            KeyedEvent::Rejected => f.write_str("call rejected: no room for its key"),
            KeyedEvent::Shared => {
                f.write_str("no room for its key: call served by the shared instance")
            }
        }
    }
}

impl EventKind for KeyedEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keyed `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            KeyedEvent::InstanceCreated { keys } => {
                tracing::trace!(target: "palisade", layer = name, keys, "keyed instance created");
            }
            KeyedEvent::InstanceEvicted { reason, keys } => {
                tracing::debug!(target: "palisade", layer = name, reason = reason.as_str(), keys, "keyed instance evicted");
            }
            KeyedEvent::Rejected => {
                tracing::warn!(target: "palisade", layer = name, "call rejected: no room for its key");
            }
            KeyedEvent::Shared => {
                tracing::debug!(target: "palisade", layer = name, "no room for its key: served by the shared instance");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        const KEYS: &str = "palisade.keyed.keys";
        const KEYS_HELP: &str = "Keys the keyed layer holds an instance for";
        const EVICTED: &str = "palisade.keyed.evictions";
        const EVICTED_HELP: &str = "Instances the keyed layer let go";
        const REASON: &str = "palisade.keyed.eviction_reason";
        static BY_REASON: [[(&str, &str); 1]; Eviction::ALL.len()] = {
            let mut table = [[("", "")]; Eviction::ALL.len()];
            let mut i = 0;
            while i < Eviction::ALL.len() {
                table[i] = [(REASON, Eviction::ALL[i].as_str())];
                i += 1;
            }
            table
        };
        match *self {
            KeyedEvent::InstanceCreated { keys } => {
                record(
                    Measure::count("palisade.keyed.instances_created", &[])
                        .described(Unit::Count, "Instances the keyed layer made"),
                );
                record(Measure::set(KEYS, &[], keys as f64).described(Unit::Count, KEYS_HELP));
            }
            KeyedEvent::InstanceEvicted { reason, keys } => {
                record(
                    Measure::count(EVICTED, &BY_REASON[reason as usize])
                        .described(Unit::Count, EVICTED_HELP),
                );
                record(Measure::set(KEYS, &[], keys as f64).described(Unit::Count, KEYS_HELP));
            }
            KeyedEvent::Rejected => record(
                Measure::count("palisade.keyed.rejected_calls", &[])
                    .described(Unit::Count, "Calls refused for want of room for their key"),
            ),
            KeyedEvent::Shared => record(
                Measure::count("palisade.keyed.shared_calls", &[]).described(
                    Unit::Count,
                    "Calls served by the shared instance for want of room for their key",
                ),
            ),
        }
    }
}
