use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn jitters() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        Just(Jitter::DecorrelatedV2),
        Just(Jitter::Grpc),
    ]
}

/// Any duration up to the largest a builder accepts.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_nanos(u64::MAX)),
        (0u64..u64::MAX).prop_map(Duration::from_nanos),
        (0u64..10_000_000_000).prop_map(Duration::from_nanos),
    ]
}

/// `initial · 2^n` in nanoseconds, saturating at `u64::MAX` as the strategy does.
fn exponential_2n(initial: Duration, n: u32) -> u128 {
    let power = 2u128.saturating_pow(n);
    initial
        .as_nanos()
        .saturating_mul(power)
        .min(u128::from(u64::MAX))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_delay_stays_within_its_bounds(
        initial in any_duration(),
        max in any_duration(),
        jitter in jitters(),
        seed in any::<u64>(),
        skip in 0usize..2000,
    ) {
        let Ok(backoff) = Backoff::exponential(initial).max_delay(max).jitter(jitter).build() else {
            return Ok(());
        };
        let cap = backoff.max_delay();
        let mut delays = backoff.delays_seeded(seed);
        // Look far into the sequence as well as at its start.
        let mut previous = initial;
        for n in 0..(skip as u32 + 40) {
            let d = delays.next().unwrap();
            if jitter != Jitter::Grpc {
                prop_assert!(d <= cap, "delay {n}: {d:?} above cap {cap:?}");
            }
            match jitter {
                Jitter::None => {
                    let expected = exponential_2n(initial, n).min(cap.as_nanos());
                    prop_assert_eq!(d.as_nanos(), expected);
                }
                Jitter::Full => {
                    prop_assert!(d.as_nanos() <= exponential_2n(initial, n).min(cap.as_nanos()));
                }
                Jitter::Equal => {
                    let t = exponential_2n(initial, n).min(cap.as_nanos());
                    prop_assert!(d.as_nanos() >= t / 2 && d.as_nanos() <= t);
                }
                Jitter::Decorrelated => {
                    prop_assert!(d >= initial.min(cap), "delay {n}: {d:?} below base {initial:?}");
                    prop_assert!(d.as_nanos() <= (previous.as_nanos() * 3).min(cap.as_nanos()));
                }
                Jitter::DecorrelatedV2 => {}
                Jitter::Grpc => {
                    // Within a fifth of the capped delay, either side (and
                    // a nanosecond for the float's rounding).
                    let t = exponential_2n(initial, n).min(cap.as_nanos()) as f64;
                    let d = d.as_nanos() as f64;
                    prop_assert!(d >= (t * 0.8).floor() - 1.0 && d <= t * 1.2 + 1.0, "{d} for {t}");
                }
            }
            previous = d;
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_delays(
        initial_ms in 1u64..10_000,
        jitter in jitters(),
        seed in any::<u64>(),
    ) {
        let backoff = Backoff::exponential(Duration::from_millis(initial_ms))
            .max_delay(Duration::from_secs(3600))
            .jitter(jitter)
            .build()
            .unwrap();
        let a: Vec<_> = backoff.delays_seeded(seed).take(30).collect();
        let b: Vec<_> = backoff.delays_seeded(seed).take(30).collect();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn linear_and_constant_stay_within_bounds(
        initial in any_duration(),
        step in any_duration(),
        max in any_duration(),
        full in any::<bool>(),
        n in 0usize..500,
    ) {
        let jitter = if full { Jitter::Full } else { Jitter::None };
        for builder in [Backoff::linear(initial, step), Backoff::constant(initial)] {
            let Ok(backoff) = builder.max_delay(max).jitter(jitter).build() else { continue };
            let d = backoff.delays_seeded(1).nth(n).unwrap();
            prop_assert!(d <= backoff.max_delay());
            if !full && builder == Backoff::constant(initial) {
                prop_assert_eq!(d, initial);
            }
        }
    }

    #[test]
    fn builders_never_panic(
        initial in any_duration(),
        max in any_duration(),
        factor in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY),
                              Just(0.0), Just(1.0), Just(f64::MAX), any::<f64>()],
        jitter in jitters(),
    ) {
        let built = Backoff::exponential(initial).factor(factor).max_delay(max).jitter(jitter).build();
        if let Ok(backoff) = built {
            prop_assert!(factor.is_finite() && factor >= 1.0);
            // gRPC's jitter may exceed the cap by a fifth, as A6 says.
            let bound = if jitter == Jitter::Grpc { max.as_nanos() * 6 / 5 + 1 } else { max.as_nanos() };
            for d in backoff.delays_seeded(3).take(200) {
                prop_assert!(d.as_nanos() <= bound);
            }
        }
    }
}

#[test]
fn full_jitter_follows_the_article_formula() {
    // Delay n is uniform in [0, min(cap, base * 2^n)]: its mean over many
    // sessions is half of that.
    let backoff = Backoff::exponential(100 * MS)
        .max_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let sessions = 4000u64;
    let mut sums = [0u128; 6];
    for seed in 0..sessions {
        for (n, d) in backoff.delays_seeded(seed).take(6).enumerate() {
            sums[n] += d.as_nanos();
        }
    }
    let ceilings = [100, 200, 400, 800, 1000, 1000];
    for (n, ceiling) in ceilings.iter().enumerate() {
        let mean_ms = sums[n] as f64 / sessions as f64 / 1e6;
        let expected = *ceiling as f64 / 2.0;
        assert!(
            (mean_ms - expected).abs() < expected * 0.05,
            "delay {n}: mean {mean_ms} ms, expected about {expected} ms"
        );
    }
}

#[test]
fn decorrelated_v2_has_the_median_first_delay() {
    // Polly's V2 is scaled so that the median first delay is about the
    // configured initial delay.
    let backoff = Backoff::exponential(Duration::from_secs(1))
        .max_delay(Duration::from_secs(3600))
        .jitter(Jitter::DecorrelatedV2)
        .build()
        .unwrap();
    let mut firsts: Vec<Duration> = (0..2001)
        .map(|seed| backoff.delays_seeded(seed).next().unwrap())
        .collect();
    firsts.sort();
    let median = firsts[1000].as_secs_f64();
    assert!((0.8..1.2).contains(&median), "median first delay {median}s");
    // And it grows: the 8th delay is on average far above the first.
    let eighth: f64 = (0..500)
        .map(|seed| backoff.delays_seeded(seed).nth(7).unwrap().as_secs_f64())
        .sum::<f64>()
        / 500.0;
    assert!(eighth > 20.0, "mean 8th delay {eighth}s");
}

#[test]
fn different_seeds_give_different_sequences() {
    let backoff = Backoff::exponential(100 * MS).build().unwrap();
    let a: Vec<_> = backoff.delays_seeded(1).take(5).collect();
    let b: Vec<_> = backoff.delays_seeded(2).take(5).collect();
    assert_ne!(a, b);
    let c: Vec<_> = backoff.delays().take(5).collect();
    let d: Vec<_> = backoff.delays().take(5).collect();
    assert_ne!(c, d, "unseeded sequences must not repeat each other");
}

#[test]
fn exact_sequences_without_jitter() {
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    let b = Backoff::constant(250 * MS)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(b.delays().take(3).collect::<Vec<_>>(), ms(&[250, 250, 250]));
    let b = Backoff::linear(100 * MS, 50 * MS)
        .max_delay(220 * MS)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(
        b.delays().take(5).collect::<Vec<_>>(),
        ms(&[100, 150, 200, 220, 220])
    );
    let b = Backoff::exponential(10 * MS)
        .factor(3.0)
        .max_delay(500 * MS)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(
        b.delays().take(6).collect::<Vec<_>>(),
        ms(&[10, 30, 90, 270, 500, 500])
    );
    // Far along, nothing overflows.
    assert_eq!(b.delays().nth(100_000), Some(500 * MS));
}

#[test]
fn bad_configurations_are_refused_by_name() {
    let refused = |r: Result<Backoff, ConfigError>| r.unwrap_err().parameter();
    assert_eq!(
        refused(Backoff::exponential(Duration::ZERO).build()),
        "initial"
    );
    assert_eq!(
        refused(Backoff::exponential(MS).factor(f64::NAN).build()),
        "factor"
    );
    assert_eq!(
        refused(Backoff::exponential(MS).factor(0.5).build()),
        "factor"
    );
    assert_eq!(
        refused(Backoff::exponential(MS).factor(f64::INFINITY).build()),
        "factor"
    );
    assert_eq!(refused(Backoff::constant(MS).factor(2.0).build()), "factor");
    assert_eq!(
        refused(Backoff::exponential(MS).max_delay(Duration::ZERO).build()),
        "max_delay"
    );
    assert_eq!(
        refused(Backoff::exponential(Duration::from_secs(60)).build()),
        "max_delay",
        "an initial delay above the default cap is an inverted bound"
    );
    assert_eq!(
        refused(Backoff::exponential(MS).max_delay(Duration::MAX).build()),
        "max_delay"
    );
    assert_eq!(
        refused(Backoff::linear(Duration::ZERO, Duration::ZERO).build()),
        "step"
    );
    assert_eq!(refused(Backoff::linear(MS, Duration::MAX).build()), "step");
    assert_eq!(
        refused(Backoff::constant(MS).jitter(Jitter::Decorrelated).build()),
        "jitter"
    );
    assert_eq!(
        refused(
            Backoff::linear(MS, MS)
                .jitter(Jitter::DecorrelatedV2)
                .build()
        ),
        "jitter"
    );
    let custom = Backoff::custom(|| [MS])
        .jitter(Jitter::Decorrelated)
        .build();
    assert_eq!(custom.unwrap_err().parameter(), "jitter");
    let custom = Backoff::custom(|| [MS]).max_delay(Duration::ZERO).build();
    assert_eq!(custom.unwrap_err().parameter(), "max_delay");
    // A zero constant delay is allowed: retry at once.
    assert!(Backoff::constant(Duration::ZERO).build().is_ok());
}

#[test]
fn custom_delays_are_capped_jittered_and_end() {
    let backoff = Backoff::custom(|| vec![10 * MS, 10 * MS, Duration::from_secs(100)])
        .max_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let delays: Vec<_> = backoff.make_delays(0).collect();
    assert_eq!(delays, vec![10 * MS, 10 * MS, Duration::from_secs(1)]);
    let jittered = Backoff::custom(|| vec![100 * MS; 50])
        .jitter(Jitter::Equal)
        .build()
        .unwrap();
    let delays: Vec<_> = jittered.make_delays(9).collect();
    assert_eq!(delays.len(), 50);
    assert!(delays.iter().all(|d| (50 * MS..=100 * MS).contains(d)));
    assert!(delays.windows(2).any(|w| w[0] != w[1]));
    assert_eq!(delays, jittered.make_delays(9).collect::<Vec<_>>());
    let grpc = Backoff::custom(|| vec![100 * MS; 50])
        .max_delay(100 * MS)
        .jitter(Jitter::Grpc)
        .build()
        .unwrap();
    let delays: Vec<_> = grpc.make_delays(9).collect();
    assert!(delays.iter().all(|d| (80 * MS..=120 * MS).contains(d)));
    assert!(
        delays.iter().any(|d| *d > 100 * MS),
        "above the cap, as A6 says"
    );
    assert!(delays.iter().any(|d| *d < 100 * MS));
}

/// gRPC's jitter (A6 since 2024): the capped delay times [0.8, 1.2].
#[test]
fn grpc_jitter_spreads_a_fifth_either_side_of_the_capped_delay() {
    let backoff = Backoff::exponential(100 * MS)
        .max_delay(Duration::from_secs(1))
        .jitter(Jitter::Grpc)
        .build()
        .unwrap();
    let mut low = [u64::MAX; 6];
    let mut high = [0u64; 6];
    for seed in 0..2000 {
        for (n, d) in backoff.delays_seeded(seed).take(6).enumerate() {
            let ms = d.as_millis() as u64;
            low[n] = low[n].min(ms);
            high[n] = high[n].max(ms);
        }
    }
    // 100, 200, 400, 800, then the cap: 1,000.
    for (n, base) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
        assert!(
            low[n] >= base * 8 / 10 && low[n] < base * 82 / 100,
            "{n}: {low:?}"
        );
        assert!(
            high[n] <= base * 12 / 10 && high[n] > base * 118 / 100,
            "{n}: {high:?}"
        );
    }
}
