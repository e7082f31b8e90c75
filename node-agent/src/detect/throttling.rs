//! CPU throttling: throttled / total CFS periods per container over a
//! window, from `cpu.stat` deltas (v1 and v2).

use super::finding::{DetectorKind, DetectorReport, Finding, Severity};
use super::history::History;
use super::thresholds::CpuThrottlingThresholds;
use crate::scan::Observation;
use std::time::Duration;

/// How many cgroups to list.
pub const TOP_CGROUPS: usize = 10;

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

pub fn detect(obs: &Observation, t: &CpuThrottlingThresholds, history: &History) -> DetectorReport {
    let mut findings: Vec<Finding> = Vec::new();
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
        let severity = if exceeds {
            Severity::Exceeded
        } else {
            Severity::from_fraction(fraction.min(0.99))
        };
        findings.push(Finding {
            severity: Some(severity),
            exceeds,
            summary: format!(
                "{}/{} periods throttled ({:.0}%), {:.2}s lost",
                delta.nr_throttled,
                delta.nr_periods,
                ratio * 100.0,
                delta.throttled_ns as f64 / 1e9
            ),
            pod_uid: cg.attribution.pod_uid.clone(),
            container_id: cg.attribution.container_id.clone(),
            cgroup: Some(cg.path.clone()),
            periods: Some(delta.nr_periods),
            throttled_periods: Some(delta.nr_throttled),
            throttled_ratio: Some(ratio),
            throttled_seconds: Some(delta.throttled_ns as f64 / 1e9),
            quota_cores: cg.quota.map(|q| q.cores()),
            cpu_pressure_some_avg10: cg.pressure.map(|p| p.some_avg10),
            ..Finding::default()
        });
    }
    findings.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then(
            b.throttled_ratio
                .unwrap_or(0.0)
                .total_cmp(&a.throttled_ratio.unwrap_or(0.0)),
        )
    });
    let candidates = findings.len() as u64;
    let exceeding = findings.iter().filter(|f| f.exceeds).count();
    findings.truncate(TOP_CGROUPS.max(exceeding));
    DetectorReport {
        detector: DetectorKind::CpuThrottling,
        enabled: true,
        exceeded: exceeding > 0,
        firing: false,
        exceeded_for_seconds: 0.0,
        value: exceeding as f64,
        threshold: t.throttled_ratio,
        unit: "throttled cgroups",
        threshold_text: format!(
            "{} of {}+ periods per {}s",
            t.throttled_ratio,
            t.min_periods,
            t.window.as_secs()
        ),
        candidates,
        findings,
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
