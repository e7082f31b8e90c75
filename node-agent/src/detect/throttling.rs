//! CPU throttling: throttled / total CFS periods per container over a
//! window, from `cpu.stat` deltas (v1 and v2).

use super::finding::{DetectorKind, DetectorReport, Finding, Severity};
use super::history::History;
use super::thresholds::CpuThrottlingThresholds;
use crate::scan::Observation;

/// How many cgroups to list.
pub const TOP_CGROUPS: usize = 10;

pub fn detect(obs: &Observation, t: &CpuThrottlingThresholds, history: &History) -> DetectorReport {
    let mut findings: Vec<Finding> = Vec::new();
    for cg in &obs.cgroups {
        let Some(delta) = history.cpu_delta(cg.version, &cg.path, &cg.stat, t.window, obs.taken_at)
        else {
            continue;
        };
        if delta.nr_periods == 0 {
            continue;
        }
        let ratio = delta.nr_throttled as f64 / delta.nr_periods as f64;
        let exceeds = delta.nr_periods >= t.min_periods && ratio >= t.throttled_ratio;
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
        candidates,
        findings,
    }
}
