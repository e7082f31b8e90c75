//! File-descriptor leaks: open fds against each process's soft
//! RLIMIT_NOFILE, growth over a window (when watching), and the node's
//! file-nr against file-max.

use super::finding::{FdUser, NodeFileHandles, Offenders, ProcessId, Severity, Verdict, bound};
use super::history::History;
use crate::scan::Observation;
use crate::scan::parse::Limit;
use nodemedic_crds::Detector;
use nodemedic_crds::report::MAX_FINDINGS_PER_DETECTOR;
use nodemedic_crds::thresholds::FdLeakThresholds;

/// Processes listed even below the thresholds (the biggest fd users).
pub const TOP_USERS: usize = 10;

/// The soft limit is read by the scan for the processes this detector can
/// look at: the [`TOP_USERS`] biggest users and every process with at least
/// `minOpenFds` (see [`crate::scan::ScanPlan`]).
pub fn detect(obs: &Observation, t: &FdLeakThresholds, history: &History) -> Verdict {
    let mut users: Vec<&crate::scan::procfs::ProcessObs> = obs
        .procs
        .processes
        .iter()
        .filter(|p| p.fd_count.is_some())
        .collect();
    users.sort_by(|a, b| b.fd_count.cmp(&a.fd_count).then(a.pid.cmp(&b.pid)));
    let mut listed = Vec::new();
    let mut candidates = 0u64;
    for (rank, p) in users.iter().enumerate() {
        let fds = u64::from(p.fd_count.unwrap_or(0));
        // Both rules need minOpenFds, and the list is sorted by fd count:
        // past the top users, the first process below it ends the search.
        let could_matter = fds >= t.min_open_fds;
        if rank >= TOP_USERS && !could_matter {
            break;
        }
        if could_matter {
            candidates += 1;
        }
        let growth = t
            .growth
            .as_ref()
            .and_then(|g| history.fd_growth_per_minute(p.pid, p.starttime, g.window, obs.taken_at));
        let growth_exceeds = match (&t.growth, growth) {
            (Some(g), Some(rate)) => rate >= g.min_fds_per_minute && could_matter,
            _ => false,
        };
        let limit = p.fd_soft_limit.and_then(Limit::as_option);
        let ratio = limit.filter(|&l| l > 0).map(|l| fds as f64 / l as f64);
        let ratio_exceeds = could_matter && ratio.is_some_and(|r| r >= t.usage_ratio);
        let exceeds = ratio_exceeds || growth_exceeds;
        let fraction = ratio.map_or(0.0, |r| r / t.usage_ratio.max(f64::MIN_POSITIVE));
        listed.push(FdUser {
            process: ProcessId {
                pid: p.pid,
                start_time: p.starttime,
                comm: p.comm.clone(),
            },
            open_fds: fds,
            soft_limit: limit,
            usage_ratio: ratio,
            growth_per_minute: growth,
            severity: Severity::graded(exceeds, fraction),
            exceeds,
        });
    }
    listed.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.open_fds.cmp(&a.open_fds))
            .then(a.process.pid.cmp(&b.process.pid))
    });
    let exceeding = listed.iter().filter(|f| f.exceeds).count();
    // Below-threshold users beyond the top ones are not offenders.
    listed.truncate(TOP_USERS.max(exceeding));
    let omitted = bound(&mut listed, MAX_FINDINGS_PER_DETECTOR);
    let node = match (
        obs.node.file_ratio(),
        obs.node.file_handles_allocated,
        obs.node.file_handles_max,
    ) {
        (Some(ratio), Some(allocated), Some(max)) => {
            let exceeds = ratio >= t.node_file_ratio;
            Some(NodeFileHandles {
                allocated,
                max,
                ratio,
                severity: Severity::graded(
                    exceeds,
                    ratio / t.node_file_ratio.max(f64::MIN_POSITIVE),
                ),
                exceeds,
            })
        }
        _ => None,
    };
    let worst_ratio = listed
        .iter()
        .filter_map(|f| f.usage_ratio)
        .fold(0.0f64, f64::max);
    Verdict {
        detector: Detector::FdLeak,
        exceeded: node.as_ref().is_some_and(|n| n.exceeds) || exceeding > 0,
        value: worst_ratio,
        unit: "of soft RLIMIT_NOFILE (worst process)",
        threshold_text: format!(
            "{} of the limit with {}+ fds; node {} of file-max",
            t.usage_ratio, t.min_open_fds, t.node_file_ratio
        ),
        candidates,
        omitted,
        offenders: Offenders::FdLeak {
            processes: listed,
            node,
        },
    }
}
