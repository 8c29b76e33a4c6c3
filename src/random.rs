//! Seedable draws without shared state: SplitMix64's finaliser, which the
//! backoff's sessions, the chaos layer's faults, Vegas's probes and the
//! throttle's rejections all draw from. A draw is a pure function of a
//! seed and a counter, so a seeded layer replays exactly and needs no
//! lock or per-thread generator.

/// SplitMix64's increment: the golden ratio, as a 64-bit odd number.
pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijection that spreads every input bit over
/// the output.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `[0, 1)` from 53 bits of `bits`.
#[inline]
pub(crate) fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's first three outputs from a seed of 0 (Vigna's
    /// reference `splitmix64.c`): the finaliser is the published one.
    #[test]
    fn the_finaliser_gives_splitmix64s_reference_outputs() {
        let outputs: Vec<u64> = (1..=3u64).map(|i| mix(i.wrapping_mul(GAMMA))).collect();
        assert_eq!(
            outputs,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
        assert_eq!(unit(u64::MAX), 1.0 - f64::EPSILON / 2.0, "just below 1");
        assert_eq!(
            unit(1 << 11),
            1.0 / (1u64 << 53) as f64,
            "53 bits: the lowest 11 dropped"
        );
    }

    #[test]
    fn draws_are_spread_over_the_unit_interval() {
        let draws: Vec<f64> = (0..10_000u64)
            .map(|n| unit(mix(n.wrapping_mul(GAMMA))))
            .collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let low = draws.iter().filter(|d| **d < 0.1).count();
        assert!((900..1100).contains(&low), "{low} draws below 0.1");
        assert_eq!(mix(0), 0, "the finaliser alone maps 0 to 0");
        assert_ne!(mix(1), 1);
    }
}
