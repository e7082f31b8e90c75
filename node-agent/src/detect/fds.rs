//! File-descriptor leaks: open fds against each process's soft
//! RLIMIT_NOFILE, growth over a window (when watching), and the node's
//! file-nr against file-max.

use super::finding::{DetectorKind, DetectorReport, Finding, Severity};
use super::history::History;
use super::thresholds::FdLeakThresholds;
use crate::scan::Observation;
use crate::scan::parse::Limit;

/// How many fd users to list.
pub const TOP_USERS: usize = 10;

/// `limit_of(pid, starttime)` reads the soft limit; it is only called for
/// processes that could matter (candidates and the top-N).
pub fn detect(
    obs: &Observation,
    t: &FdLeakThresholds,
    history: &History,
    mut limit_of: impl FnMut(i32, u64) -> Option<Limit>,
) -> DetectorReport {
    let mut users: Vec<&crate::scan::procfs::ProcessObs> = obs
        .procs
        .processes
        .iter()
        .filter(|p| p.fd_count.is_some())
        .collect();
    users.sort_by(|a, b| b.fd_count.cmp(&a.fd_count).then(a.pid.cmp(&b.pid)));
    let growing = |pid, st| {
        t.growth
            .as_ref()
            .and_then(|g| history.fd_growth_per_minute(pid, st, g.window, obs.taken_at))
    };
    let mut findings = Vec::new();
    let mut candidates = 0u64;
    for (rank, p) in users.iter().enumerate() {
        let fds = u64::from(p.fd_count.unwrap_or(0));
        let growth = growing(p.pid, p.starttime);
        let growth_exceeds = match (&t.growth, growth) {
            (Some(g), Some(rate)) => rate >= g.min_fds_per_minute && fds >= t.min_open_fds,
            _ => false,
        };
        // Both rules need minOpenFds, and the list is sorted by fd count:
        // past the top-N, the first process below it ends the search.
        let could_matter = fds >= t.min_open_fds;
        if rank >= TOP_USERS && !could_matter {
            break;
        }
        if could_matter {
            candidates += 1;
        }
        let limit = limit_of(p.pid, p.starttime).and_then(Limit::as_option);
        let ratio = limit.filter(|&l| l > 0).map(|l| fds as f64 / l as f64);
        let ratio_exceeds = fds >= t.min_open_fds && ratio.is_some_and(|r| r >= t.usage_ratio);
        let exceeds = ratio_exceeds || growth_exceeds;
        let fraction = ratio.map_or(0.0, |r| r / t.usage_ratio.max(f64::MIN_POSITIVE));
        let limit_text = limit.map_or("unlimited".to_owned(), |l| l.to_string());
        findings.push(Finding {
            severity: Some(if exceeds {
                Severity::Exceeded
            } else {
                Severity::from_fraction(fraction.min(0.99))
            }),
            exceeds,
            summary: match growth {
                Some(g) => format!("{fds} fds of {limit_text} soft limit, +{g:.1}/min"),
                None => format!("{fds} fds of {limit_text} soft limit"),
            },
            host_pid: Some(p.pid),
            start_time: Some(p.starttime),
            comm: Some(p.comm.clone()),
            open_fds: Some(fds),
            fd_soft_limit: limit,
            fd_usage_ratio: ratio,
            fd_growth_per_minute: growth,
            ..Finding::default()
        });
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.open_fds.cmp(&a.open_fds))
    });
    findings.truncate(TOP_USERS.max(findings.iter().filter(|f| f.exceeds).count()));
    let node_ratio = obs.node.file_ratio();
    let node_exceeds = node_ratio.is_some_and(|r| r >= t.node_file_ratio);
    if let Some(r) = node_ratio {
        findings.push(Finding {
            severity: Some(Severity::from_fraction(
                r / t.node_file_ratio.max(f64::MIN_POSITIVE),
            )),
            exceeds: node_exceeds,
            summary: format!(
                "node file handles {} of {} (file-nr)",
                obs.node.file_handles_allocated.unwrap_or(0),
                obs.node.file_handles_max.unwrap_or(0)
            ),
            fd_usage_ratio: Some(r),
            open_fds: obs.node.file_handles_allocated,
            ..Finding::default()
        });
    }
    let worst_ratio = findings
        .iter()
        .filter(|f| f.host_pid.is_some())
        .filter_map(|f| f.fd_usage_ratio)
        .fold(0.0f64, f64::max);
    DetectorReport {
        detector: DetectorKind::FdLeak,
        enabled: true,
        exceeded: node_exceeds || findings.iter().any(|f| f.exceeds),
        firing: false,
        exceeded_for_seconds: 0.0,
        value: worst_ratio,
        threshold: t.usage_ratio,
        unit: "of soft RLIMIT_NOFILE (worst process)",
        threshold_text: format!(
            "{} of the limit with {}+ fds; node {} of file-max",
            t.usage_ratio, t.min_open_fds, t.node_file_ratio
        ),
        candidates,
        findings,
    }
}
