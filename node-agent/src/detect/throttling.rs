//! CPU throttling: throttled / total CFS periods per container over a
//! window, from `cpu.stat` deltas (v1 and v2).

use super::finding::{Offenders, Severity, ThrottledCgroup, Verdict, bound};
use super::history::History;
use crate::scan::Observation;
use nodemedic_crds::Detector;
use nodemedic_crds::report::MAX_FINDINGS_PER_DETECTOR;
use nodemedic_crds::thresholds::CpuThrottlingThresholds;
use std::time::Duration;

/// `minPeriods` applies to a full window; a shorter span (a one-shot scan's
/// two samples, or the first minutes of watching) needs the same rate of
/// periods, i.e. proportionally fewer, and at least one.
pub fn required_periods(t: &CpuThrottlingThresholds, span: Duration) -> u64 {
    if t.window.is_zero() || span >= t.window {
        return t.min_periods;
    }
    let scaled = t.min_periods as f64 * span.as_secs_f64() / t.window.as_secs_f64();
    (scaled.ceil() as u64).max(1)
}

pub fn detect(obs: &Observation, t: &CpuThrottlingThresholds, history: &History) -> Verdict {
    let mut listed: Vec<ThrottledCgroup> = Vec::new();
    for cg in &obs.cgroups {
        let Some((delta, span)) =
            history.cpu_delta(cg.version, &cg.path, &cg.stat, t.window, obs.taken_at)
        else {
            continue;
        };
        if delta.nr_periods == 0 {
            continue;
        }
        let ratio = delta.nr_throttled as f64 / delta.nr_periods as f64;
        let exceeds = delta.nr_periods >= required_periods(t, span) && ratio >= t.throttled_ratio;
        let fraction = ratio / t.throttled_ratio.max(f64::MIN_POSITIVE);
        listed.push(ThrottledCgroup {
            cgroup: cg.path.clone(),
            version: cg.version,
            attribution: cg.attribution.clone(),
            quota_cores: cg.quota.map(|q| q.cores()),
            periods: delta.nr_periods,
            throttled_periods: delta.nr_throttled,
            throttled_ratio: ratio,
            throttled_seconds: delta.throttled_ns as f64 / 1e9,
            pressure_some_avg10: cg.pressure.map(|p| p.some_avg10),
            severity: Severity::graded(exceeds, fraction),
            exceeds,
        });
    }
    listed.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.throttled_ratio.total_cmp(&a.throttled_ratio))
            .then(a.cgroup.cmp(&b.cgroup))
    });
    let candidates = listed.len() as u64;
    let exceeding = listed.iter().filter(|f| f.exceeds).count();
    let omitted = bound(&mut listed, MAX_FINDINGS_PER_DETECTOR);
    Verdict {
        detector: Detector::CpuThrottling,
        exceeded: exceeding > 0,
        value: exceeding as f64,
        unit: "throttled cgroups",
        threshold_text: format!(
            "{} of {}+ periods per {}s",
            t.throttled_ratio,
            t.min_periods,
            t.window.as_secs()
        ),
        candidates,
        omitted,
        offenders: Offenders::CpuThrottling(listed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_periods_scale_with_the_span() {
        let t = CpuThrottlingThresholds {
            throttled_ratio: 0.25,
            min_periods: 100,
            window: Duration::from_secs(300),
            for_duration: Duration::ZERO,
        };
        assert_eq!(required_periods(&t, Duration::from_secs(300)), 100);
        assert_eq!(required_periods(&t, Duration::from_secs(600)), 100);
        assert_eq!(required_periods(&t, Duration::from_secs(30)), 10);
        assert_eq!(required_periods(&t, Duration::from_secs(1)), 1);
        assert_eq!(required_periods(&t, Duration::ZERO), 1);
    }
}
