//! Bounded keyed instances: one instance of a layer per key, in a registry
//! that never holds more than its maximum (DESIGN §3, keyed instances).
//!
//! The ground floor of [`keyed`](crate::keyed): the registry knows nothing
//! of breakers, bulkheads or limiters. Each of those says, through
//! [`Instance`], how to make a fresh copy of itself for a key, whether
//! anything besides the registry still holds it (a call in flight, a
//! handle), and whether its state is back to that of a fresh copy (so
//! that dropping it changes nothing).
//!
//! # Layout
//!
//! The keys are spread over a power of two of shards by their hash (a
//! per-registry random SipHash key, so that nobody outside can aim keys at
//! one shard). Each shard is a hash table of slot indexes
//! ([`hashbrown::HashTable`]: a key taken from a request is looked up by a
//! borrowed form, [`Lookup`], and an owned key is built only when an
//! instance is made), and a dense slab of slots. A lookup takes its
//! shard's lock (never a global one), marks the slot as looked up (a write
//! only the first time since the clock's hand passed), and hands the
//! instance to the caller under the lock. The count of instances is one
//! atomic shared by the shards, raised by a compare-and-swap only below
//! the maximum: it is exact, never above it.
//!
//! # What may go
//!
//! An instance in use (anything besides the registry holds it) never goes:
//! replacing it while a call holds it would let two instances of one key
//! count the same limit. One that is not in use goes when
//!
//! * it is fresh: its state is that of a new instance, so nothing is lost;
//! * it is idle: unused for longer than the idle timeout, if one is set;
//! * room is needed for a new key, the policy allows it, and CLOCK picks
//!   it: going round the shard's slots, the first not looked up since the
//!   hand last passed (the marks of those that were are cleared on the
//!   way: a second chance). CLOCK approximates least recently used; an
//!   instance made for a key that never comes again is the first to go.
//!
//! When room is needed, 16 slots are looked at for one that is idle or
//! fresh (from a cursor of their own, which goes on from there next time,
//! so that every slot is looked at in turn), then (if the policy allows)
//! 16 from the clock's hand for CLOCK's pick; the new key's shard first,
//! then another, then the new key's again. With an idle timeout, a
//! lookup in 64 and each new key also evict up to two idle instances among
//! the next slots. Each search is bounded, so a key never costs a walk
//! over the whole registry; [`Registry::evict_idle`] does walk it.

mod ejection;

pub(crate) use self::ejection::Ejection;

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

use hashbrown::HashTable;
use tokio::time::Instant;

use crate::clock::{self, Epoch};
use crate::sync::{AtomicUsize, CachePadded, Mutex, MutexGuard};

/// A layer of which a [keyed](crate::keyed) layer makes one instance per
/// key: palisade's [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer),
/// [`BulkheadLayer`](crate::bulkhead::BulkheadLayer) and
/// [`RateLimitLayer`](crate::rate_limit::RateLimitLayer), or a layer of
/// your own whose state lives behind one `Arc`.
///
/// The layer given to [`KeyedLayer::builder`](crate::keyed::KeyedLayer::builder)
/// is the template: each key gets a [`fork`](Self::fork) of it, with the
/// same settings and a state of its own.
///
/// # Examples
///
/// A layer of your own, counting the calls of each key:
///
/// ```
/// use palisade::keyed::{Fork, Instance, KeyedLayer};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tokio::time::Instant;
///
/// #[derive(Clone, Default)]
/// struct CountLayer(Arc<AtomicU64>);
///
/// impl Instance for CountLayer {
///     type Snapshot = u64;
///
///     fn fork(&self, _: &Fork) -> Self {
///         Self::default()
///     }
///     fn in_use(&self) -> bool {
///         // Every service and future made from it holds a clone.
///         Arc::strong_count(&self.0) > 1
///     }
///     fn is_fresh(&self, _: Instant) -> bool {
///         self.0.load(Ordering::Relaxed) == 0
///     }
///     fn snapshot(&self) -> u64 {
///         self.0.load(Ordering::Relaxed)
///     }
/// }
///
/// let keyed = KeyedLayer::builder(CountLayer::default())
///     .key(|tenant: &String| tenant.clone())
///     .build()
///     .unwrap();
/// # let _ = keyed;
/// ```
pub trait Instance: Clone + Send + Sync + 'static {
    /// What a [listing](crate::keyed::KeyedHandle::instances) shows of one
    /// instance's state.
    type Snapshot: fmt::Debug + Clone + Send + Sync + 'static;

    /// A new instance with this one's settings and a fresh state, for the
    /// key in `fork`.
    fn fork(&self, fork: &Fork) -> Self;

    /// Whether anything besides the registry holds this instance: a
    /// service or future made from it, a response body that holds a
    /// permit, a handle.
    ///
    /// An instance in use is never dropped from the registry. Answering
    /// `false` while something holds it lets the registry replace it, and
    /// two instances of one key then count the same limit; answering
    /// `true` for ever keeps it (and its place) for ever.
    fn in_use(&self) -> bool;

    /// Whether its state at `now` is that of a new instance, so that
    /// dropping it and making a new one later changes nothing. Such an
    /// instance may go whenever it is not in use.
    fn is_fresh(&self, now: Instant) -> bool;

    /// Its state, for a listing.
    fn snapshot(&self) -> Self::Snapshot;
}

/// What a keyed layer tells a new instance: the key it is for. Given to
/// [`Instance::fork`].
#[derive(Debug, Clone)]
pub struct Fork {
    key: Arc<str>,
    ejection: Option<Arc<Ejection>>,
}

impl Fork {
    pub(crate) fn new(key: Arc<str>, ejection: Option<Arc<Ejection>>) -> Self {
        Self { key, ejection }
    }

    /// The key, as it displays: events and rejections of the instance
    /// carry it.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// The keyed set's shared cap on ejected breakers, if it has one.
    pub(crate) fn ejection(&self) -> Option<&Arc<Ejection>> {
        self.ejection.as_ref()
    }
}

/// A key, or a borrowed form of one, that a registry of keys `K` can look
/// up: a key taken from a request without building an owned key (the host
/// and port of a URI, a header's value), which is built only when an
/// instance is made for it.
///
/// Every key is its own lookup. Two lookups of one key must hash the same
/// (the registry hashes only lookups, and keeps the hash of the one that
/// made the instance).
pub trait Lookup<K>: Hash {
    /// Whether this is a lookup of `key`.
    fn matches(&self, key: &K) -> bool;

    /// The owned key.
    fn to_key(&self) -> K;
}

impl<K: Hash + Eq + Clone> Lookup<K> for K {
    #[inline]
    fn matches(&self, key: &K) -> bool {
        self == key
    }

    fn to_key(&self) -> K {
        self.clone()
    }
}

/// Why an instance left a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Eviction {
    /// Its state was that of a new instance: nothing was lost.
    Fresh,
    /// Unused for longer than the idle timeout.
    Idle,
    /// The registry was full, and it was the least recently used instance
    /// that could go, as CLOCK approximates it (see
    /// [`WhenFull::EvictLeastRecentlyUsed`](crate::keyed::WhenFull::EvictLeastRecentlyUsed)).
    LeastRecentlyUsed,
}

impl Eviction {
    /// Every reason, in declaration order.
    pub const ALL: [Eviction; 3] = [Eviction::Fresh, Eviction::Idle, Eviction::LeastRecentlyUsed];

    /// The reason in snake case, as a metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Eviction::Fresh => "fresh",
            Eviction::Idle => "idle",
            Eviction::LeastRecentlyUsed => "least_recently_used",
        }
    }
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Eviction::Fresh => "its state was fresh",
            Eviction::Idle => "it was idle",
            Eviction::LeastRecentlyUsed => "it was the least recently used, and room was needed",
        })
    }
}

/// What a lookup did, besides finding the instance; reported after the
/// shard's lock is let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// An instance was made for the key.
    Created,
    /// An instance left.
    Evicted(Eviction),
}

/// Every instance is in use (or, unless the policy allows evicting the
/// least recently used, none is idle or fresh): no room for a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// How many slots one search for an instance that may go looks at, from
/// the clock's hand on.
const SCAN: usize = 16;

/// How many idle instances one lookup evicts at most, besides the one it
/// needs room for.
const SWEEP: usize = 2;

/// Every how many lookups of a shard its idle instances are looked for.
const SWEEP_EVERY: u32 = 64;

/// One instance and its key.
struct Entry<K, V> {
    key: K,
    /// The key as it displays, made once.
    label: Arc<str>,
    value: V,
    /// When it was last looked up, in nanoseconds since the registry's
    /// epoch; kept only with an idle timeout.
    last_used: u64,
}

struct Slot<K, V> {
    /// `None`: a hole, on the free list.
    entry: Option<Entry<K, V>>,
    hash: u64,
    /// Looked up since the clock's hand last passed (CLOCK's reference
    /// bit): the slot gets a second chance when room is needed.
    referenced: bool,
}

/// One shard: a table of slot indexes, the slots, and the clock's hand
/// going round them. A slot that is let go leaves a hole that the next new
/// key fills: the instance evicted for room is replaced in place, just
/// behind the hand, so that the newest instance is the last the hand comes
/// back to (CLOCK's order). When holes are half the slab, it is compacted.
struct Shard<K, V> {
    table: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    /// Holes, the latest last.
    free: Vec<u32>,
    /// The next slot the clock looks at.
    hand: usize,
    /// The next slot a search for an idle or fresh instance looks at: it
    /// goes round on its own, so that successive searches look at new
    /// slots (a fresh instance far from the clock's hand is found too),
    /// and without clearing the clock's marks.
    scout: usize,
    lookups: u32,
}

impl<K, V> Shard<K, V> {
    fn new() -> Self {
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            scout: 0,
            lookups: 0,
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    #[inline]
    fn find<Q: Lookup<K> + ?Sized>(&self, hash: u64, q: &Q) -> Option<usize> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| {
                slots[i as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| q.matches(&e.key))
            })
            .map(|&i| i as usize)
    }

    /// The entry of a live slot.
    #[inline]
    fn entry(&self, i: usize) -> &Entry<K, V> {
        self.slots[i].entry.as_ref().expect("a live slot")
    }

    fn insert(&mut self, hash: u64, entry: Entry<K, V>) -> usize {
        // A new instance has not been looked up since: if it is never used
        // again (a key sprayed once), it is the first to go.
        let slot = Slot {
            entry: Some(entry),
            hash,
            referenced: false,
        };
        let i = match self.free.pop() {
            Some(hole) => {
                self.slots[hole as usize] = slot;
                hole as usize
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        let index = u32::try_from(i).expect("fewer than 2^32 keys per shard");
        let slots = &self.slots;
        self.table
            .insert_unique(hash, index, |&j| slots[j as usize].hash);
        i
    }

    /// Takes slot `i` out and returns its entry, leaving a hole.
    fn remove(&mut self, i: usize) -> Entry<K, V> {
        let hash = self.slots[i].hash;
        match self.table.find_entry(hash, |&j| j as usize == i) {
            Ok(found) => {
                found.remove();
            }
            Err(_) => unreachable!("a live slot is in the table"),
        }
        let entry = self.slots[i].entry.take().expect("a live slot");
        self.free.push(i as u32);
        entry
    }

    /// Compacts the slab once holes are half of it, keeping the clock's
    /// order (from the hand round), and gives memory back once the shard
    /// holds far fewer keys than it has room for: keys spreading unevenly
    /// over the shards over time cannot make every shard as large as the
    /// largest was.
    fn compact_if_sparse(&mut self) {
        let slots = self.slots.len();
        if slots < 32 || self.free.len() * 2 < slots {
            return;
        }
        let hand = self.hand.min(slots);
        let mut order: Vec<Slot<K, V>> = Vec::with_capacity(2 * self.len() + 8);
        let (after, before) = {
            let mut all = std::mem::take(&mut self.slots);
            let before: Vec<_> = all.drain(..hand).collect();
            (all, before)
        };
        order.extend(
            after
                .into_iter()
                .chain(before)
                .filter(|s| s.entry.is_some()),
        );
        self.free.clear();
        self.free.shrink_to(order.len());
        self.hand = 0;
        self.scout = 0;
        self.table.clear();
        self.table.shrink_to(2 * order.len() + 8, |_| 0);
        for (i, slot) in order.iter().enumerate() {
            let slots = &order;
            self.table
                .insert_unique(slot.hash, i as u32, |&j| slots[j as usize].hash);
        }
        self.slots = order;
    }

    /// The live slot under the hand, the hand moved on past it; `None` if
    /// the shard is empty.
    #[inline]
    fn tick(&mut self) -> Option<usize> {
        if self.len() == 0 {
            return None;
        }
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            if self.slots[i].entry.is_some() {
                return Some(i);
            }
        }
    }
}

/// What left under a lock, reported once it is let go (a listener may take
/// time, or call back in). The instances themselves are dropped under the
/// lock, as they leave, so that no more than the maximum are ever alive.
struct Evicted {
    labels: [Option<(Arc<str>, Eviction)>; SWEEP + 1],
    len: usize,
}

impl Evicted {
    fn new() -> Self {
        Self {
            labels: std::array::from_fn(|_| None),
            len: 0,
        }
    }

    fn has_room(&self) -> bool {
        self.len < self.labels.len()
    }

    fn push(&mut self, label: Arc<str>, why: Eviction) {
        self.labels[self.len] = Some((label, why));
        self.len += 1;
    }

    fn report(self, report: &mut impl FnMut(&Arc<str>, Change)) {
        for (label, why) in self.labels.into_iter().flatten() {
            report(&label, Change::Evicted(why));
        }
    }
}

/// SipHash with a key drawn for each registry, so that nobody outside can
/// aim keys at one shard or one chain of the table (a registry's keys may
/// be a header a client sets); under loom, a fixed key, so that every run
/// of a model puts the keys in the same shards.
#[cfg(not(palisade_loom))]
type Hashing = std::collections::hash_map::RandomState;
#[cfg(palisade_loom)]
type Hashing = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// One shard behind its lock, on cache lines of its own.
type Locked<K, V> = CachePadded<Mutex<Shard<K, V>>>;

/// A bounded map from keys to instances; see the [module docs](self).
pub(crate) struct Registry<K, V> {
    shards: Box<[Locked<K, V>]>,
    hasher: Hashing,
    len: CachePadded<AtomicUsize>,
    max: usize,
    /// The idle timeout, in nanoseconds.
    idle: Option<u64>,
    evict_lru: bool,
    epoch: Epoch,
}

impl<K, V> fmt::Debug for Registry<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len.0.load(Relaxed))
            .field("max", &self.max)
            .field("shards", &self.shards.len())
            .field("idle", &self.idle.map(Duration::from_nanos))
            .field("evict_lru", &self.evict_lru)
            .finish()
    }
}

impl<K, V> Registry<K, V>
where
    K: fmt::Display,
    V: Instance,
{
    /// A registry of at most `max` instances (at least 1), over `shards`
    /// shards (a power of two). Instances unused for `idle` go; when full,
    /// the least recently used instance goes if `evict_lru`.
    pub(crate) fn new(max: usize, shards: usize, idle: Option<Duration>, evict_lru: bool) -> Self {
        assert!(max >= 1 && shards.is_power_of_two());
        Self {
            shards: (0..shards)
                .map(|_| CachePadded(Mutex::new(Shard::new())))
                .collect(),
            hasher: Hashing::default(),
            len: CachePadded(AtomicUsize::new(0)),
            max,
            idle: idle.map(clock::nanos),
            evict_lru,
            epoch: Epoch::now(),
        }
    }

    /// How many shards suit a registry of `max` keys on this machine: four
    /// per core, as a power of two, but no more than one per 16 keys, so
    /// that a small registry is one shard (one clock, whose order is the
    /// whole registry's).
    pub(crate) fn shards_for(max: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (4 * cores)
            .min(max / 16)
            .max(1)
            .next_power_of_two()
            .min(256)
    }

    /// The instances held.
    pub(crate) fn len(&self) -> usize {
        self.len.0.load(Relaxed)
    }

    /// The most instances held.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> &Mutex<Shard<K, V>> {
        // The table uses the hash's low bits and its top seven; the shard
        // takes bits from the middle.
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)].0
    }

    #[inline]
    fn lock(shard: &Mutex<Shard<K, V>>) -> MutexGuard<'_, Shard<K, V>> {
        // Every update leaves the shard consistent before it can panic
        // (an instance's own code runs outside the lock, but for `visit`'s
        // closure, which only reads): a poisoned lock holds a usable shard.
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        self.epoch.nanos_at(now)
    }

    /// The instance of `q`'s key, cloned; see [`visit`](Self::visit).
    #[cfg(test)]
    pub(crate) fn get_or_create<Q>(
        &self,
        q: &Q,
        create: impl FnOnce(&Arc<str>) -> V,
        report: &mut impl FnMut(&Arc<str>, Change),
    ) -> Result<V, Full>
    where
        Q: Lookup<K> + ?Sized,
    {
        self.visit(q, create, V::clone, report)
    }

    /// Runs `visit` on the instance of `q`'s key under its shard's lock,
    /// the instance made by `create` (with the key as it displays) if there
    /// is none; `Err(Full)` if there is none and no room for one. Every
    /// instance made or evicted is reported to `report` once the lock is
    /// let go.
    ///
    /// `visit` makes what the caller needs of the instance (its service
    /// around the caller's inner one) without a clone of the instance
    /// coming and going: it must be quick, and must not call back in.
    #[inline]
    pub(crate) fn visit<Q, R>(
        &self,
        q: &Q,
        create: impl FnOnce(&Arc<str>) -> V,
        visit: impl FnOnce(&V) -> R,
        report: &mut impl FnMut(&Arc<str>, Change),
    ) -> Result<R, Full>
    where
        Q: Lookup<K> + ?Sized,
    {
        let hash = self.hasher.hash_one(q);
        let shard = self.shard_of(hash);
        let mut guard = Self::lock(shard);
        if let Some(i) = guard.find(hash, q) {
            let Some(idle) = self.idle else {
                let slot = &mut guard.slots[i];
                // Written only when it changes: a hot key's slot stays a
                // line that is read, not written.
                if !slot.referenced {
                    slot.referenced = true;
                }
                return Ok(visit(&slot.entry.as_ref().expect("found").value));
            };
            let now = clock::now();
            let nanos = self.nanos(now);
            let slot = &mut guard.slots[i];
            slot.referenced = true;
            let entry = slot.entry.as_mut().expect("found");
            entry.last_used = nanos;
            let out = visit(&entry.value);
            guard.lookups = guard.lookups.wrapping_add(1);
            if guard.lookups.is_multiple_of(SWEEP_EVERY) {
                let mut evicted = Evicted::new();
                self.sweep(&mut guard, now, idle, &mut evicted);
                drop(guard);
                evicted.report(report);
            }
            return Ok(out);
        }
        self.create(guard, shard, hash, q, create, visit, report)
    }

    /// The miss: makes room if need be, then the instance.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn create<'a, Q, R>(
        &'a self,
        mut guard: MutexGuard<'a, Shard<K, V>>,
        shard: &'a Mutex<Shard<K, V>>,
        hash: u64,
        q: &Q,
        create: impl FnOnce(&Arc<str>) -> V,
        visit: impl FnOnce(&V) -> R,
        report: &mut impl FnMut(&Arc<str>, Change),
    ) -> Result<R, Full>
    where
        Q: Lookup<K> + ?Sized,
    {
        let now = clock::now();
        let mut evicted = Evicted::new();
        // Idle instances of this shard go first, a few at a time, room
        // needed or not.
        if let Some(idle) = self.idle {
            self.sweep(&mut guard, now, idle, &mut evicted);
        }
        let mut elsewhere_tried = false;
        loop {
            if self.reserve() {
                break;
            }
            // Full: free a place in this shard...
            if evicted.has_room() && self.free_one(&mut guard, now, &mut evicted) {
                continue;
            }
            // ...or, once, in another (never holding two locks).
            if elsewhere_tried {
                drop(guard);
                evicted.report(report);
                return Err(Full);
            }
            elsewhere_tried = true;
            drop(guard);
            self.free_elsewhere(shard, now, report);
            guard = Self::lock(shard);
            // Another caller may have made this key's instance meanwhile.
            if let Some(i) = guard.find(hash, q) {
                guard.slots[i].referenced = true;
                let out = visit(&guard.entry(i).value);
                drop(guard);
                evicted.report(report);
                return Ok(out);
            }
        }
        // A place is reserved.
        let key = q.to_key();
        let label: Arc<str> = Arc::from(key.to_string());
        let value = create(&label);
        let last_used = if self.idle.is_some() {
            self.nanos(now)
        } else {
            0
        };
        let out = visit(&value);
        guard.insert(
            hash,
            Entry {
                key,
                label: label.clone(),
                value,
                last_used,
            },
        );
        guard.compact_if_sparse();
        drop(guard);
        evicted.report(report);
        report(&label, Change::Created);
        Ok(out)
    }

    /// Takes a place below the maximum, if there is one.
    #[inline]
    fn reserve(&self) -> bool {
        self.len
            .0
            .fetch_update(AcqRel, Acquire, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    /// Takes slot `i` out of `shard`, drops its instance and gives its
    /// place back.
    fn take(&self, shard: &mut Shard<K, V>, i: usize, why: Eviction, evicted: &mut Evicted) {
        let entry = shard.remove(i);
        let label = entry.label.clone();
        drop(entry);
        self.len.0.fetch_sub(1, AcqRel);
        evicted.push(label, why);
    }

    /// Whether `entry`'s instance may go at `now` whatever the policy, and
    /// why: idle or fresh.
    fn may_go(&self, entry: &Entry<K, V>, now: Instant) -> Option<Eviction> {
        if entry.value.in_use() {
            return None;
        }
        if let Some(idle) = self.idle
            && self.nanos(now).saturating_sub(entry.last_used) > idle
        {
            return Some(Eviction::Idle);
        }
        entry.value.is_fresh(now).then_some(Eviction::Fresh)
    }

    /// Evicts up to `SWEEP` idle instances among the next slots under the
    /// clock's hand.
    fn sweep(&self, shard: &mut Shard<K, V>, now: Instant, idle: u64, evicted: &mut Evicted) {
        let now_nanos = self.nanos(now);
        for _ in 0..SCAN.min(shard.len()) {
            if evicted.len >= SWEEP {
                break;
            }
            let Some(i) = shard.tick() else { break };
            let entry = shard.entry(i);
            if now_nanos.saturating_sub(entry.last_used) > idle && !entry.value.in_use() {
                self.take(shard, i, Eviction::Idle, evicted);
            }
        }
        shard.compact_if_sparse();
    }

    /// Evicts one instance of `shard` to make room: among the next `SCAN`
    /// live slots from the scout (which goes on from there next time), the
    /// first that is idle or fresh; else, if the policy allows, going round
    /// from the clock's hand, the first not looked up since the hand last
    /// passed (clearing, as it goes, the mark of those that were: CLOCK,
    /// the second-chance approximation of least recently used), or failing
    /// that the first it cleared. Instances in use are passed over. The
    /// hole is filled by the next new key of the shard.
    fn free_one(&self, shard: &mut Shard<K, V>, now: Instant, evicted: &mut Evicted) -> bool {
        let n = shard.slots.len();
        if shard.len() == 0 {
            return false;
        }
        let mut looked = 0;
        for _ in 0..n {
            if looked == SCAN {
                break;
            }
            let i = shard.scout % n;
            shard.scout = i + 1;
            let Some(entry) = &shard.slots[i].entry else {
                continue;
            };
            looked += 1;
            if let Some(why) = self.may_go(entry, now) {
                self.take(shard, i, why, evicted);
                return true;
            }
        }
        if !self.evict_lru {
            return false;
        }
        let mut second_chance = None;
        for _ in 0..SCAN.min(shard.len()) {
            let Some(i) = shard.tick() else { break };
            let slot = &mut shard.slots[i];
            if slot.entry.as_ref().is_some_and(|e| e.value.in_use()) {
                continue;
            }
            if !slot.referenced {
                self.take(shard, i, Eviction::LeastRecentlyUsed, evicted);
                return true;
            }
            slot.referenced = false;
            second_chance.get_or_insert(i);
        }
        match second_chance {
            Some(i) => {
                self.take(shard, i, Eviction::LeastRecentlyUsed, evicted);
                true
            }
            None => false,
        }
    }

    /// Frees one place in a shard other than `own`, if an instance there
    /// may go, and reports it.
    #[cold]
    fn free_elsewhere(
        &self,
        own: &Mutex<Shard<K, V>>,
        now: Instant,
        report: &mut impl FnMut(&Arc<str>, Change),
    ) {
        // Start at a shard that depends on the time, so that shards are
        // drawn from evenly.
        let n = self.shards.len();
        let start = self.nanos(now) as usize;
        for step in 0..n {
            let shard = &self.shards[(start + step) & (n - 1)].0;
            if std::ptr::eq(shard, own) {
                continue;
            }
            let mut guard = Self::lock(shard);
            if guard.len() == 0 {
                continue;
            }
            let mut evicted = Evicted::new();
            let freed = self.free_one(&mut guard, now, &mut evicted);
            guard.compact_if_sparse();
            drop(guard);
            evicted.report(report);
            if freed {
                return;
            }
        }
    }

    /// The instance of `q`'s key, if there is one; neither made nor marked
    /// as looked up.
    pub(crate) fn get<Q: Lookup<K> + ?Sized>(&self, q: &Q) -> Option<V> {
        let hash = self.hasher.hash_one(q);
        let guard = Self::lock(self.shard_of(hash));
        guard.find(hash, q).map(|i| guard.entry(i).value.clone())
    }

    /// Every key with its instance, shard by shard (each shard as it was
    /// when its turn came).
    pub(crate) fn entries(&self) -> Vec<(K, V)>
    where
        K: Clone,
    {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let guard = Self::lock(&shard.0);
            all.extend(
                guard
                    .slots
                    .iter()
                    .filter_map(|slot| slot.entry.as_ref())
                    .map(|e| (e.key.clone(), e.value.clone())),
            );
        }
        all
    }

    /// Evicts every instance not in use that is idle or fresh. Returns how
    /// many went.
    pub(crate) fn evict_idle(&self, report: &mut impl FnMut(&Arc<str>, Change)) -> usize {
        let now = clock::now();
        let mut total = 0;
        for shard in self.shards.iter() {
            let mut gone = Vec::new();
            {
                let mut guard = Self::lock(&shard.0);
                for i in 0..guard.slots.len() {
                    let Some(entry) = &guard.slots[i].entry else {
                        continue;
                    };
                    if let Some(why) = self.may_go(entry, now) {
                        let entry = guard.remove(i);
                        gone.push((entry.label.clone(), why));
                        drop(entry);
                        self.len.0.fetch_sub(1, AcqRel);
                    }
                }
                guard.compact_if_sparse();
            }
            total += gone.len();
            for (label, why) in gone {
                report(&label, Change::Evicted(why));
            }
        }
        total
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests;

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::AtomicBool;

    /// An instance that is never fresh, in use while a clone is held.
    #[derive(Clone)]
    struct Held(crate::sync::Arc<AtomicBool>);

    impl Instance for Held {
        type Snapshot = ();
        fn fork(&self, _: &Fork) -> Self {
            Held(crate::sync::Arc::new(AtomicBool::new(false)))
        }
        fn in_use(&self) -> bool {
            crate::sync::Arc::strong_count(&self.0) > 1
        }
        fn is_fresh(&self, _: Instant) -> bool {
            false
        }
        fn snapshot(&self) {}
    }

    fn get(registry: &Registry<u32, Held>, key: u32) -> Result<(), Full> {
        let template = Held(crate::sync::Arc::new(AtomicBool::new(false)));
        registry
            .get_or_create(
                &key,
                |label| template.fork(&Fork::new(label.clone(), None)),
                &mut |_, _| {},
            )
            .map(drop)
    }

    /// Two new keys race for the last place of a registry that may not
    /// evict: whatever the interleaving, exactly one gets it. (Fails with
    /// the count's compare-and-swap replaced by a load and a store.)
    #[test]
    fn loom_two_new_keys_race_for_the_last_place() {
        loom::model(|| {
            let registry = crate::sync::Arc::new(Registry::<u32, Held>::new(1, 2, None, false));
            let other = registry.clone();
            let racer = loom::thread::spawn(move || get(&other, 1));
            let mine = get(&registry, 2);
            let theirs = racer.join().unwrap();
            assert_eq!(
                usize::from(mine.is_ok()) + usize::from(theirs.is_ok()),
                1,
                "{mine:?} {theirs:?}"
            );
            assert_eq!(registry.len(), 1);
        });
    }

    /// Two new keys race under the LRU policy: at least one is served (the
    /// other is refused only while the first one's caller still holds its
    /// instance, which may not go), and the count stays exact.
    #[test]
    fn loom_evicting_for_a_new_key_keeps_the_count_exact() {
        loom::model(|| {
            let registry = crate::sync::Arc::new(Registry::<u32, Held>::new(1, 2, None, true));
            let other = registry.clone();
            let racer = loom::thread::spawn(move || get(&other, 1));
            let mine = get(&registry, 2);
            let theirs = racer.join().unwrap();
            assert!(mine.is_ok() || theirs.is_ok(), "{mine:?} {theirs:?}");
            assert_eq!(registry.len(), 1);
            assert_eq!(registry.entries().len(), 1);
            // Nothing is held now: a third key evicts whichever is there.
            assert_eq!(get(&registry, 3), Ok(()));
            assert_eq!(registry.entries().len(), 1);
        });
    }
}
