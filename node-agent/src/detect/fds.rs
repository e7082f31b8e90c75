//! File-descriptor leaks: open fds against each process's soft
//! RLIMIT_NOFILE, growth over a window (when watching), and the node's
//! file-nr against file-max.

use super::finding::{FdUser, NodeFileHandles, Offenders, ProcessId, Severity, Verdict, bound};
use super::fit::{Trend, eta_seconds};
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
        let trend = history.fd_trend(p.pid, p.starttime, t.fit_window(), obs.taken_at);
        let growth = trend.map(|t| t.slope_per_sec * 60.0);
        let growth_exceeds = match (&t.growth, growth) {
            (Some(g), Some(rate)) => rate >= g.min_fds_per_minute && could_matter,
            _ => false,
        };
        let limit = p.fd_soft_limit.and_then(Limit::as_option);
        let ratio = limit.filter(|&l| l > 0).map(|l| fds as f64 / l as f64);
        let ratio_exceeds = could_matter && ratio.is_some_and(|r| r >= t.usage_ratio);
        let eta = exhaustion_eta(fds, limit, trend);
        let eta_exceeds = could_matter
            && match (t.exhaustion_within, eta) {
                (Some(within), Some(eta)) => eta <= within.as_secs_f64(),
                _ => false,
            };
        // Any one rule fires the process; minOpenFds gates all three.
        let exceeds = ratio_exceeds || growth_exceeds || eta_exceeds;
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
            exhaustion_eta_seconds: eta,
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
        threshold_text: match t.exhaustion_within {
            Some(w) => format!(
                "{} of the limit or exhausted within {} with {}+ fds; node {} of file-max",
                t.usage_ratio,
                nodemedic_crds::duration::format_duration(w),
                t.min_open_fds,
                t.node_file_ratio
            ),
            None => format!(
                "{} of the limit with {}+ fds; node {} of file-max",
                t.usage_ratio, t.min_open_fds, t.node_file_ratio
            ),
        },
        candidates,
        omitted,
        offenders: Offenders::FdLeak {
            processes: listed,
            node,
        },
    }
}

/// Seconds until `fds` reaches the soft `limit` at the trend's rate; only
/// for a significant rise (see [`super::fit`]) and a finite limit.
pub fn exhaustion_eta(fds: u64, limit: Option<u64>, trend: Option<Trend>) -> Option<f64> {
    let trend = trend.filter(Trend::rising)?;
    eta_seconds(fds as f64, limit? as f64, trend.slope_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Engine;
    use crate::detect::finding::FdUser;
    use crate::scan::procfs::ProcessObs;
    use k8s_openapi::jiff::Timestamp;
    use nodemedic_crds::thresholds::{EffectiveThresholds, SelectedPolicy};
    use std::time::{Duration, Instant};

    fn obs(at: Instant, fds: u32) -> Observation {
        let mut procs = crate::scan::procfs::ProcSnapshot::default();
        procs.processes.push(ProcessObs {
            pid: 42,
            ppid: 1,
            state: b'S',
            comm: "leaky".to_owned(),
            starttime: 5,
            num_threads: 1,
            kernel_thread: false,
            fd_count: Some(fds),
            fd_soft_limit: Some(Limit::Value(1024)),
        });
        Observation {
            taken_at: at,
            hostname: None,
            clock_ticks: 100,
            procs,
            node: Default::default(),
            cgroups: Vec::new(),
            pids: Default::default(),
            counters: Default::default(),
            duration: Duration::ZERO,
        }
    }

    fn policy(within: Option<Duration>) -> SelectedPolicy {
        SelectedPolicy {
            name: "p".to_owned(),
            thresholds: EffectiveThresholds {
                fd_leak: Some(FdLeakThresholds {
                    usage_ratio: 0.9,
                    min_open_fds: 100,
                    growth: None,
                    exhaustion_within: within,
                    node_file_ratio: 1.0,
                    for_duration: Duration::from_secs(120),
                }),
                ..Default::default()
            },
            protected_processes: Vec::new(),
        }
    }

    fn leaky(v: &Verdict) -> &FdUser {
        match &v.offenders {
            Offenders::FdLeak { processes, .. } => processes
                .iter()
                .find(|p| p.process.pid == 42)
                .expect("listed"),
            _ => panic!("not an fd verdict"),
        }
    }

    /// Scans every 10 s while a process leaks 10 fds a minute from 200
    /// towards its soft limit of 1024; returns when the detector first
    /// fired, in minutes before the limit is reached.
    fn minutes_of_warning(within: Option<Duration>) -> Option<f64> {
        let p = [policy(within)];
        let mut engine = Engine::new();
        let t0 = Instant::now();
        let exhausted_at = (1024.0 - 200.0) / 10.0;
        for step in 0..(exhausted_at as u64 * 6) {
            let minutes = step as f64 / 6.0;
            let fds = 200 + (minutes * 10.0) as u32;
            let a = engine.assess(
                &obs(t0 + Duration::from_secs(10 * step), fds),
                &p,
                Timestamp::now(),
            );
            let d = &a[0].detectors[0];
            if let Some(eta) = leaky(&d.verdict).exhaustion_eta_seconds {
                // The ETA is the time actually left, within a scan's rounding.
                let left = (exhausted_at - minutes) * 60.0;
                assert!((eta - left).abs() <= 0.1 * left + 60.0, "{eta} vs {left}");
            }
            if d.hold.firing {
                return Some(exhausted_at - minutes);
            }
        }
        None
    }

    #[test]
    fn exhaustion_within_fires_well_before_the_limit_where_the_ratio_is_late() {
        // exhaustionWithin 1h and for 2m: firing ~58 minutes ahead.
        let lead = minutes_of_warning(Some(Duration::from_secs(3600))).expect("fired");
        assert!(lead >= 15.0, "fired {lead:.1} minutes ahead");
        assert!(lead > 55.0, "fired {lead:.1} minutes ahead");
        // usageRatio 0.9 alone: 10 minutes ahead, minus the 2m `for`.
        let lead = minutes_of_warning(None).expect("fired");
        assert!(lead < 15.0, "fired {lead:.1} minutes ahead");
    }

    #[test]
    fn a_burst_in_a_steady_process_gives_no_eta_and_no_finding() {
        let p = [policy(Some(Duration::from_secs(3600)))];
        let mut engine = Engine::new();
        let t0 = Instant::now();
        let mut last = None;
        for step in 0..60u64 {
            // 500 fds, with one burst to 1000 (a reload) at 5 minutes.
            let fds = if step == 30 { 1000 } else { 500 };
            last = Some(engine.assess(
                &obs(t0 + Duration::from_secs(10 * step), fds),
                &p,
                Timestamp::now(),
            ));
        }
        let a = last.expect("assessed");
        let f = leaky(&a[0].detectors[0].verdict);
        assert_eq!(f.growth_per_minute, Some(0.0));
        assert_eq!(f.exhaustion_eta_seconds, None);
        assert!(!f.exceeds);
    }

    #[test]
    fn no_eta_without_a_finite_limit_or_a_rise() {
        let rising = Some(crate::detect::fit::Trend {
            slope_per_sec: 1.0,
            z: 4.0,
        });
        assert_eq!(exhaustion_eta(100, Some(400), rising), Some(300.0));
        assert_eq!(exhaustion_eta(100, None, rising), None);
        let insignificant = Some(crate::detect::fit::Trend {
            slope_per_sec: 1.0,
            z: 1.0,
        });
        assert_eq!(exhaustion_eta(100, Some(400), insignificant), None);
        assert_eq!(exhaustion_eta(100, Some(400), None), None);
    }
}
