//! Properties of the trend fit and the time-to-exhaustion arithmetic.

use nodemedic_agent::detect::fit::{MIN_RISING_SAMPLES, MIN_SAMPLES, eta_seconds, fit};
use proptest::prelude::*;

/// A linear series with integer times and values (exact slopes).
fn linear(n: usize, start: i64, slope: i64, step: i64) -> Vec<(f64, f64)> {
    (0..n as i64)
        .map(|i| ((i * step) as f64, (start + i * slope * step) as f64))
        .collect()
}

proptest! {
    #[test]
    fn eta_is_never_negative_and_absent_without_growth(
        current in -1e9f64..1e9,
        limit in -1e9f64..1e9,
        slope in -1e6f64..1e6,
    ) {
        match eta_seconds(current, limit, slope) {
            Some(eta) => {
                prop_assert!(slope > 0.0);
                prop_assert!(eta >= 0.0 && eta.is_finite());
                if current >= limit {
                    prop_assert_eq!(eta, 0.0);
                }
            }
            None => prop_assert!(slope <= 0.0),
        }
    }

    #[test]
    fn eta_shrinks_with_usage_and_rate_and_grows_with_the_limit(
        current in 0f64..1e6,
        more in 0f64..1e6,
        limit in 0f64..2e6,
        slope in 1e-3f64..1e4,
        faster in 1f64..100.0,
    ) {
        let eta = eta_seconds(current, limit, slope).expect("rising");
        let fuller = eta_seconds(current + more, limit, slope).expect("rising");
        let quicker = eta_seconds(current, limit, slope * faster).expect("rising");
        let roomier = eta_seconds(current, limit + more, slope).expect("rising");
        prop_assert!(fuller <= eta);
        prop_assert!(quicker <= eta);
        prop_assert!(roomier >= eta);
    }

    #[test]
    fn a_linear_rise_is_recovered_exactly_and_is_significant_from_8_samples(
        n in MIN_SAMPLES..64usize,
        start in 0i64..100_000,
        slope in 1i64..1_000,
        step in 1i64..60,
    ) {
        let t = fit(&linear(n, start, slope, step)).expect("enough samples");
        prop_assert_eq!(t.slope_per_sec, slope as f64);
        prop_assert_eq!(t.rising(), n >= MIN_RISING_SAMPLES, "{} samples: {:?}", n, t);
    }

    #[test]
    fn one_spike_anywhere_leaves_a_linear_slope_unchanged(
        n in 6usize..64,
        slope in 0i64..1_000,
        spike_at in 0usize..64,
        spike in -1_000_000i64..1_000_000,
    ) {
        let mut s = linear(n, 1_000, slope, 10);
        let i = spike_at % n;
        s[i].1 += spike as f64;
        let t = fit(&s).expect("enough samples");
        prop_assert_eq!(t.slope_per_sec, slope as f64);
    }

    #[test]
    fn a_series_that_never_rises_has_no_trend(
        start in 0u32..100_000,
        drops in proptest::collection::vec(0u32..50, MIN_SAMPLES..64),
    ) {
        let mut v = f64::from(start) + 1e7;
        let s: Vec<(f64, f64)> = drops
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                v -= f64::from(d);
                (i as f64 * 10.0, v)
            })
            .collect();
        let t = fit(&s).expect("enough samples");
        prop_assert!(t.slope_per_sec <= 0.0);
        prop_assert!(!t.rising());
    }

    #[test]
    fn the_slope_lies_between_the_extreme_pairwise_slopes(
        values in proptest::collection::vec(0u32..10_000, MIN_SAMPLES..40),
    ) {
        let s: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, f64::from(v)))
            .collect();
        let t = fit(&s).expect("enough samples");
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for (i, a) in s.iter().enumerate() {
            for b in &s[i + 1..] {
                let m = (b.1 - a.1) / (b.0 - a.0);
                lo = lo.min(m);
                hi = hi.max(m);
            }
        }
        prop_assert!(lo <= t.slope_per_sec && t.slope_per_sec <= hi);
    }
}
