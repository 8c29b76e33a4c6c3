use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize as StdAtomicUsize, Ordering::SeqCst};

use proptest::prelude::*;

use super::*;

/// Counts the instances alive, and the most ever alive at once.
#[derive(Debug, Default)]
struct Census {
    alive: StdAtomicUsize,
    most: StdAtomicUsize,
    made: StdAtomicUsize,
}

#[derive(Debug)]
struct State {
    census: Arc<Census>,
    fresh: AtomicBool,
    label: Arc<str>,
    /// Forked, so counted (the template is not).
    counted: bool,
}

impl Drop for State {
    fn drop(&mut self) {
        if self.counted {
            self.census.alive.fetch_sub(1, SeqCst);
        }
    }
}

/// An instance whose freshness a test sets, and which counts itself.
#[derive(Debug, Clone)]
struct Probe(Arc<State>);

impl Probe {
    fn template(census: &Arc<Census>) -> Self {
        Probe(Arc::new(State {
            census: census.clone(),
            fresh: AtomicBool::new(false),
            label: Arc::from("template"),
            counted: false,
        }))
    }

    fn set_fresh(&self, fresh: bool) {
        self.0.fresh.store(fresh, SeqCst);
    }
}

impl Instance for Probe {
    type Snapshot = bool;

    fn fork(&self, fork: &Fork) -> Self {
        let census = &self.0.census;
        let alive = census.alive.fetch_add(1, SeqCst) + 1;
        census.most.fetch_max(alive, SeqCst);
        census.made.fetch_add(1, SeqCst);
        Probe(Arc::new(State {
            census: census.clone(),
            fresh: AtomicBool::new(false),
            label: fork.key().clone(),
            counted: true,
        }))
    }

    fn in_use(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    fn is_fresh(&self, _: Instant) -> bool {
        self.0.fresh.load(SeqCst)
    }

    fn snapshot(&self) -> bool {
        self.0.fresh.load(SeqCst)
    }
}

struct Fixture {
    census: Arc<Census>,
    template: Probe,
    registry: Registry<String, Probe>,
    log: Vec<(String, Change)>,
}

impl Fixture {
    fn new(max: usize, shards: usize, idle: Option<Duration>, lru: bool) -> Self {
        let census = Arc::new(Census::default());
        Self {
            template: Probe::template(&census),
            census,
            registry: Registry::new(max, shards, idle, lru),
            log: Vec::new(),
        }
    }

    /// The instance of `key`, without holding it.
    fn get(&mut self, key: &str) -> Result<Probe, Full> {
        let template = &self.template;
        let log = &mut self.log;
        self.registry.get_or_create(
            &key.to_string(),
            |label| template.fork(&Fork::new(label.clone(), None)),
            &mut |label, change| log.push((label.to_string(), change)),
        )
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .registry
            .entries()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    }

    /// The instances alive (the template is not counted).
    fn alive(&self) -> usize {
        self.census.alive.load(SeqCst)
    }

    fn evictions(&self) -> Vec<(String, Eviction)> {
        self.log
            .iter()
            .filter_map(|(k, c)| match c {
                Change::Evicted(why) => Some((k.clone(), *why)),
                Change::Created => None,
            })
            .collect()
    }
}

#[test]
fn a_key_gets_one_instance_made_once() {
    let mut f = Fixture::new(10, 1, None, false);
    let a = f.get("a").unwrap();
    let again = f.get("a").unwrap();
    assert!(Arc::ptr_eq(&a.0, &again.0));
    assert_eq!(&*a.0.label, "a", "made for its key");
    assert_eq!(f.log, [("a".to_string(), Change::Created)]);
    assert_eq!(f.registry.len(), 1);
    assert!(f.registry.get(&"a".to_string()).is_some());
    assert!(f.registry.get(&"b".to_string()).is_none());
    assert_eq!(f.registry.len(), 1, "get makes nothing");
}

#[test]
fn full_of_instances_that_must_stay_it_refuses_a_new_key() {
    let mut f = Fixture::new(2, 1, None, false);
    f.get("a").unwrap();
    f.get("b").unwrap();
    assert_eq!(f.get("c").unwrap_err(), Full);
    assert_eq!(f.keys(), ["a", "b"]);
    assert_eq!(f.get("a").map(|_| ()), Ok(()), "known keys still served");
}

#[test]
fn a_fresh_instance_makes_room_whatever_the_policy() {
    let mut f = Fixture::new(2, 1, None, false);
    f.get("a").unwrap();
    f.get("b").unwrap().set_fresh(true);
    f.get("a").unwrap();
    f.get("c").unwrap();
    assert_eq!(f.keys(), ["a", "c"]);
    assert_eq!(f.evictions(), [("b".to_string(), Eviction::Fresh)]);
    assert_eq!(f.alive(), 2, "the evicted instance was dropped");
}

#[test]
fn with_lru_the_least_recently_used_goes() {
    let mut f = Fixture::new(3, 1, None, true);
    for key in ["a", "b", "c"] {
        f.get(key).unwrap();
    }
    f.get("a").unwrap(); // b is now the least recently used
    f.get("d").unwrap();
    assert_eq!(f.keys(), ["a", "c", "d"]);
    f.get("e").unwrap(); // then c
    assert_eq!(f.keys(), ["a", "d", "e"]);
    assert_eq!(
        f.evictions(),
        [
            ("b".to_string(), Eviction::LeastRecentlyUsed),
            ("c".to_string(), Eviction::LeastRecentlyUsed)
        ]
    );
}

/// CLOCK's order: keys used once go in the order they came; a key looked
/// up since the hand passed gets a second chance; the instance made in
/// place of one evicted is the last the hand comes back to.
#[test]
fn the_clock_evicts_in_arrival_order_and_spares_keys_in_use_since() {
    let mut f = Fixture::new(3, 1, None, true);
    for key in 0..10 {
        f.get(&key.to_string()).unwrap();
    }
    let gone: Vec<String> = f.evictions().into_iter().map(|(k, _)| k).collect();
    assert_eq!(gone, ["0", "1", "2", "3", "4", "5", "6"]);
    assert_eq!(f.keys(), ["7", "8", "9"]);
    f.get("8").unwrap(); // 8 is looked up again: a second chance
    f.get("a").unwrap();
    f.get("b").unwrap();
    let gone: Vec<String> = f.evictions().into_iter().map(|(k, _)| k).collect();
    assert_eq!(&gone[7..], ["7", "9"]);
    assert_eq!(f.keys(), ["8", "a", "b"]);
}

#[test]
fn a_fresh_instance_goes_before_the_least_recently_used() {
    let mut f = Fixture::new(3, 1, None, true);
    for key in ["a", "b", "c"] {
        f.get(key).unwrap();
    }
    f.get("b").unwrap().set_fresh(true);
    f.get("d").unwrap();
    assert_eq!(f.keys(), ["a", "c", "d"]);
    assert_eq!(f.evictions(), [("b".to_string(), Eviction::Fresh)]);
}

#[test]
fn an_instance_in_use_never_goes() {
    let mut f = Fixture::new(2, 1, None, true);
    let held = f.get("a").unwrap();
    held.set_fresh(true); // fresh, but in use
    f.get("b").unwrap();
    f.get("c").unwrap(); // b goes, not a
    assert_eq!(f.keys(), ["a", "c"]);
    let also_held = f.get("c").unwrap();
    assert_eq!(f.get("d").unwrap_err(), Full, "every instance is in use");
    drop((held, also_held));
    f.get("d").unwrap();
    assert_eq!(f.registry.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_instances_go_when_a_key_is_added_and_when_asked() {
    let mut f = Fixture::new(100, 1, Some(Duration::from_secs(10)), false);
    f.get("a").unwrap();
    f.get("b").unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    f.get("b").unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    // a is 11 s idle, b 5 s: adding c sweeps a.
    f.get("c").unwrap();
    assert_eq!(f.keys(), ["b", "c"]);
    assert_eq!(f.evictions(), [("a".to_string(), Eviction::Idle)]);
    tokio::time::advance(Duration::from_secs(20)).await;
    let held = f.get("c").unwrap();
    let mut reported = Vec::new();
    let gone = f
        .registry
        .evict_idle(&mut |label, change| reported.push((label.to_string(), change)));
    assert_eq!(gone, 1);
    assert_eq!(
        reported,
        [("b".to_string(), Change::Evicted(Eviction::Idle))]
    );
    assert_eq!(f.keys(), ["c"], "c was used just now, and is held");
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn idle_instances_are_swept_by_lookups_too() {
    let mut f = Fixture::new(100, 1, Some(Duration::from_secs(1)), false);
    f.get("old").unwrap();
    f.get("hot").unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..SWEEP_EVERY {
        f.get("hot").unwrap();
    }
    assert_eq!(f.keys(), ["hot"]);
    assert_eq!(f.evictions(), [("old".to_string(), Eviction::Idle)]);
}

#[test]
fn evict_idle_takes_fresh_instances_and_leaves_the_rest() {
    let mut f = Fixture::new(10, 2, None, false);
    for key in ["a", "b", "c", "d"] {
        f.get(key).unwrap().set_fresh(key == "b" || key == "d");
    }
    let gone = f.registry.evict_idle(&mut |_, _| {});
    assert_eq!(gone, 2);
    assert_eq!(f.keys(), ["a", "c"]);
    assert_eq!(f.registry.len(), 2);
}

#[test]
fn room_is_found_in_another_shard() {
    // Many shards and a small maximum: the new key's shard is often empty.
    let mut f = Fixture::new(3, 8, None, true);
    for i in 0..100 {
        f.get(&format!("k{i}")).unwrap();
        assert!(f.registry.len() <= 3);
        assert!(f.alive() <= 3);
    }
    assert_eq!(f.registry.len(), 3);
    assert_eq!(f.evictions().len(), 97);
}

#[test]
fn a_full_registry_of_fresh_instances_in_other_shards_still_takes_a_key() {
    let mut f = Fixture::new(4, 8, None, false);
    for i in 0..4 {
        f.get(&format!("k{i}")).unwrap().set_fresh(true);
    }
    for i in 4..50 {
        f.get(&format!("k{i}")).unwrap().set_fresh(true);
        assert_eq!(f.registry.len(), 4.min(i + 1));
    }
}

/// A key that is looked up by a borrowed form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owned(String);

impl fmt::Display for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Hash)]
struct Borrowed<'a>(&'a str);

impl Lookup<Owned> for Borrowed<'_> {
    fn matches(&self, key: &Owned) -> bool {
        self.0 == key.0
    }

    fn to_key(&self) -> Owned {
        Owned(self.0.to_string())
    }
}

#[test]
fn a_borrowed_lookup_finds_the_owned_key() {
    let census = Arc::new(Census::default());
    let template = Probe::template(&census);
    let registry: Registry<Owned, Probe> = Registry::new(10, 4, None, false);
    let make = |label: &Arc<str>| template.fork(&Fork::new(label.clone(), None));
    let first = registry
        .get_or_create(&Borrowed("x"), make, &mut |_, _| {})
        .unwrap();
    let second = registry
        .get_or_create(&Borrowed("x"), make, &mut |_, _| {})
        .unwrap();
    assert!(Arc::ptr_eq(&first.0, &second.0));
    assert!(registry.get(&Owned("x".into())).is_some(), "hashed alike");
    assert_eq!(census.made.load(SeqCst), 1);
}

#[test]
fn shards_follow_the_machine_and_the_maximum() {
    assert_eq!(Registry::<String, Probe>::shards_for(1), 1);
    assert_eq!(
        Registry::<String, Probe>::shards_for(31),
        1,
        "a small registry is one clock"
    );
    assert!(Registry::<String, Probe>::shards_for(64) <= 4);
    let many = Registry::<String, Probe>::shards_for(1_000_000);
    assert!(many.is_power_of_two() && (4..=256).contains(&many));
}

/// Many threads, a small maximum, keys spread over every shard: at no
/// moment are more instances alive than the maximum, and a held instance
/// is the one its key finds.
#[test]
fn under_contention_never_more_than_the_maximum_alive() {
    let census = Arc::new(Census::default());
    let template = Probe::template(&census);
    let registry = Arc::new(Registry::<String, Probe>::new(16, 8, None, true));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let registry = registry.clone();
            let template = template.clone();
            std::thread::spawn(move || {
                let mut refused = 0;
                for i in 0..20_000u64 {
                    let key = format!("k{}", (i * 7 + t * 13) % 97);
                    match registry.get_or_create(
                        &key,
                        |label| template.fork(&Fork::new(label.clone(), None)),
                        &mut |_, _| {},
                    ) {
                        Ok(probe) => {
                            assert_eq!(&*probe.0.label, key.as_str());
                            if i % 5 == 0 {
                                // Hold it across another lookup.
                                let other = format!("k{}", (i + 1) % 97);
                                let _ = registry.get_or_create(
                                    &other,
                                    |label| template.fork(&Fork::new(label.clone(), None)),
                                    &mut |_, _| {},
                                );
                                let again = registry.get(&key).expect("held: never evicted");
                                assert!(Arc::ptr_eq(&again.0, &probe.0));
                            }
                        }
                        Err(Full) => refused += 1,
                    }
                }
                refused
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(census.most.load(SeqCst) <= 16, "{census:?}");
    assert!(registry.len() <= 16);
    assert_eq!(census.alive.load(SeqCst), registry.len());
}

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    Hold(u8),
    Release,
    Fresh(u8, bool),
    EvictIdle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24).prop_map(Op::Get),
        1 => (0u8..24).prop_map(Op::Hold),
        1 => Just(Op::Release),
        2 => (0u8..24, any::<bool>()).prop_map(|(k, f)| Op::Fresh(k, f)),
        1 => Just(Op::EvictIdle),
    ]
}

proptest! {
    /// Against the registry's promises, whatever the sequence: the count
    /// is exact and never above the maximum; no more instances are alive
    /// than it holds; a held instance never goes; a key keeps its
    /// instance until that is reported evicted; a new key is refused only
    /// when no instance could go.
    #[test]
    fn the_promises_hold_for_any_sequence(
        max in 1usize..8,
        shards in prop_oneof![Just(1usize), Just(2), Just(8)],
        lru in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut f = Fixture::new(max, shards, None, lru);
        // Held instances are in use; `known` remembers each key's instance
        // without holding it.
        let mut held: Vec<(String, Probe)> = Vec::new();
        let mut known: HashMap<String, std::sync::Weak<State>> = HashMap::new();
        for op in ops {
            match op {
                Op::Get(k) | Op::Hold(k) => {
                    let key = format!("k{k}");
                    let before = f.log.len();
                    let result = f.get(&key);
                    for (label, change) in f.log[before..].iter().cloned() {
                        if let Change::Evicted(_) = change {
                            let gone = known.remove(&label);
                            prop_assert!(gone.is_some(), "evicted {} unknown", label);
                            prop_assert!(!held.iter().any(|(k, _)| *k == label), "held {} evicted", label);
                        }
                    }
                    match result {
                        Ok(probe) => {
                            if let Some(old) = known.get(&key) {
                                prop_assert!(std::ptr::eq(old.as_ptr(), Arc::as_ptr(&probe.0)), "{} changed instance", key);
                            }
                            known.insert(key.clone(), Arc::downgrade(&probe.0));
                            if matches!(op, Op::Hold(_)) {
                                held.push((key, probe));
                            }
                        }
                        Err(Full) => {
                            prop_assert!(!known.contains_key(&key));
                            prop_assert_eq!(f.registry.len(), max);
                            // Nothing could go: each is held, or (without
                            // the LRU policy) neither fresh nor idle.
                            for (k, state) in &known {
                                let fresh = state.upgrade().expect("alive").fresh.load(SeqCst);
                                let could_go = !held.iter().any(|(h, _)| h == k) && (lru || fresh);
                                prop_assert!(!could_go, "{} could have gone", k);
                            }
                        }
                    }
                }
                Op::Release => {
                    held.pop();
                }
                Op::Fresh(k, fresh) => {
                    if let Some(state) = known.get(&format!("k{k}")) {
                        state.upgrade().expect("alive").fresh.store(fresh, SeqCst);
                    }
                }
                Op::EvictIdle => {
                    let mut gone = Vec::new();
                    f.registry.evict_idle(&mut |label, _| gone.push(label.to_string()));
                    for label in gone {
                        let state = known.remove(&label).expect("known");
                        prop_assert!(state.upgrade().is_none(), "an evicted instance is dropped");
                        prop_assert!(!held.iter().any(|(k, _)| *k == label));
                    }
                }
            }
            prop_assert_eq!(f.registry.len(), known.len());
            prop_assert!(f.registry.len() <= max);
            prop_assert_eq!(f.alive(), f.registry.len(), "an evicted instance is dropped at once");
            let mut keys: Vec<String> = known.keys().cloned().collect();
            keys.sort();
            prop_assert_eq!(f.keys(), keys);
        }
        drop(held);
        prop_assert_eq!(f.alive(), f.registry.len());
        prop_assert!(f.census.most.load(SeqCst) <= max);
    }
}

/// A shard whose holes are half its slab is compacted: the slab and the
/// table shrink to what it holds, every key is still found, and the
/// clock goes on in the order it had (from the hand round).
#[test]
fn a_sparse_shard_is_compacted_in_clock_order() {
    let mut f = Fixture::new(1_000, 1, None, false);
    for key in 0..100 {
        f.get(&format!("k{key:03}"))
            .unwrap()
            .set_fresh(key % 5 != 0);
    }
    {
        let shard = f.registry.shards[0].0.lock().unwrap();
        assert_eq!((shard.len(), shard.slots.len()), (100, 100));
    }
    // The fresh ones go (80 of 100): holes are then far more than half.
    assert_eq!(f.registry.evict_idle(&mut |_, _| {}), 80);
    let shard = f.registry.shards[0].0.lock().unwrap();
    assert_eq!(shard.len(), 20);
    assert_eq!(shard.slots.len(), 20, "compacted: no holes left");
    assert!(shard.free.is_empty());
    assert!(
        shard.slots.capacity() <= 2 * 20 + 8,
        "{}",
        shard.slots.capacity()
    );
    let table = shard.table.capacity();
    assert!(
        (2 * 20..100).contains(&table),
        "room for twice what it holds: {table}"
    );
    let order: Vec<String> = shard
        .slots
        .iter()
        .map(|s| s.entry.as_ref().unwrap().key.clone())
        .collect();
    let expected: Vec<String> = (0..100).step_by(5).map(|k| format!("k{k:03}")).collect();
    assert_eq!(
        order, expected,
        "in the clock's order, from the hand (at 0)"
    );
    assert_eq!(shard.hand, 0);
    drop(shard);
    for key in &expected {
        assert!(f.registry.get(key).is_some(), "{key} still found");
    }
}

/// A small shard, or one with few holes, is left as it is: compaction is
/// for a slab mostly empty.
#[test]
fn a_shard_with_few_holes_is_not_compacted() {
    let mut f = Fixture::new(1_000, 1, None, false);
    for key in 0..40 {
        f.get(&format!("k{key}")).unwrap().set_fresh(key < 15);
    }
    assert_eq!(f.registry.evict_idle(&mut |_, _| {}), 15);
    let shard = f.registry.shards[0].0.lock().unwrap();
    assert_eq!(
        (shard.len(), shard.slots.len(), shard.free.len()),
        (25, 40, 15)
    );
    drop(shard);
    let mut f = Fixture::new(1_000, 1, None, false);
    for key in 0..31 {
        f.get(&format!("k{key}")).unwrap().set_fresh(key < 30);
    }
    assert_eq!(f.registry.evict_idle(&mut |_, _| {}), 30);
    let shard = f.registry.shards[0].0.lock().unwrap();
    assert_eq!(shard.slots.len(), 31, "under 32 slots: left as it is");
    drop(shard);
    // At the bounds, 32 slots half of which are holes, it is compacted.
    let mut f = Fixture::new(1_000, 1, None, false);
    for key in 0..32 {
        f.get(&format!("k{key}")).unwrap().set_fresh(key % 2 == 0);
    }
    assert_eq!(f.registry.evict_idle(&mut |_, _| {}), 16);
    let shard = f.registry.shards[0].0.lock().unwrap();
    assert_eq!(shard.slots.len(), 16, "32 slots, 16 holes: compacted");
}

/// Compaction keeps the clock's order from its hand: with the hand in the
/// middle, the slots after it come first.
#[test]
fn compaction_starts_the_order_at_the_hand() {
    let mut f = Fixture::new(1_000, 1, None, true);
    for key in 0..64 {
        f.get(&format!("k{key:02}")).unwrap();
    }
    {
        let mut shard = f.registry.shards[0].0.lock().unwrap();
        shard.hand = 40;
        for i in (0..64).filter(|i| i % 4 != 0) {
            drop(shard.remove(i));
        }
        shard.compact_if_sparse();
        let order: Vec<String> = shard
            .slots
            .iter()
            .map(|s| s.entry.as_ref().unwrap().key.clone())
            .collect();
        let expected: Vec<String> = (40..64)
            .chain(0..40)
            .filter(|i| i % 4 == 0)
            .map(|k| format!("k{k:02}"))
            .collect();
        assert_eq!(order, expected);
        assert_eq!(shard.hand, 0);
        assert_eq!(shard.table.len(), 16);
    }
}

/// A new key sweeps at most two idle instances (each reported), so that
/// one call never pays for many.
#[tokio::test(start_paused = true)]
async fn a_new_key_sweeps_two_idle_instances_at_most() {
    let mut f = Fixture::new(100, 1, Some(Duration::from_secs(1)), false);
    for key in 0..5 {
        f.get(&format!("old{key}")).unwrap();
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    f.get("new").unwrap();
    let swept = f.evictions();
    assert_eq!(swept.len(), SWEEP, "{swept:?}");
    assert!(swept.iter().all(|(_, why)| *why == Eviction::Idle));
    let mut names: Vec<&str> = swept.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), SWEEP, "each reported once");
    assert_eq!(f.registry.len(), 4);
}

/// Keys spread over every shard (the shard is taken from the hash's
/// middle bits).
#[test]
fn keys_spread_over_the_shards() {
    let mut f = Fixture::new(10_000, 8, None, false);
    for key in 0..800 {
        f.get(&format!("k{key}")).unwrap();
    }
    for shard in f.registry.shards.iter() {
        let len = shard.0.lock().unwrap().len();
        assert!(
            (50..=150).contains(&len),
            "a shard of {len} keys out of 800 over 8"
        );
    }
}

#[test]
fn a_registry_debugs_as_its_counts() {
    let mut f = Fixture::new(10, 2, Some(Duration::from_secs(3)), true);
    f.get("a").unwrap();
    assert_eq!(
        format!("{:?}", f.registry),
        "Registry { len: 1, max: 10, shards: 2, idle: Some(3s), evict_lru: true }"
    );
    assert_eq!(f.registry.max(), 10);
}

/// Idle means unused for longer than the timeout: at the timeout exactly,
/// an instance stays (for the sweep of a new key and for `evict_idle`).
#[tokio::test(start_paused = true)]
async fn idle_is_longer_than_the_timeout_not_as_long() {
    let mut f = Fixture::new(100, 1, Some(Duration::from_secs(1)), false);
    f.get("a").unwrap();
    f.get("b").unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    f.get("c").unwrap();
    assert_eq!(f.registry.evict_idle(&mut |_, _| {}), 0);
    assert!(f.evictions().is_empty(), "{:?}", f.evictions());
    tokio::time::advance(Duration::from_nanos(1)).await;
    f.get("d").unwrap();
    assert_eq!(f.evictions().len(), 2, "a and b, by the new key's sweep");
    assert_eq!(f.keys(), ["c", "d"]);
}

/// A search for room looks at 16 instances, and the next search at the
/// next 16: a fresh instance anywhere in the shard is found within a few
/// new keys, even where the policy evicts nothing else.
#[test]
fn successive_searches_look_at_new_instances() {
    let mut f = Fixture::new(40, 1, None, false);
    for key in 0..40 {
        f.get(&format!("k{key:02}")).unwrap().set_fresh(key == 37);
    }
    let mut refused = 0;
    while f.get("new").is_err() {
        refused += 1;
        assert!(
            refused <= 1,
            "the fresh instance is found by the second key"
        );
    }
    // The first key's searches (its shard's, and again after looking in
    // the other shards, here none) look at k00..k31; the second's go on.
    assert_eq!(refused, 1);
    assert_eq!(f.evictions(), [("k37".to_string(), Eviction::Fresh)]);
}

#[test]
fn evictions_read_and_label_as_they_say() {
    let said: Vec<(String, &str)> = Eviction::ALL
        .iter()
        .map(|why| (why.to_string(), why.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            ("its state was fresh".to_string(), "fresh"),
            ("it was idle".to_string(), "idle"),
            (
                "it was the least recently used, and room was needed".to_string(),
                "least_recently_used"
            ),
        ]
    );
}
