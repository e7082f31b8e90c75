//! Hung tasks: threads in uninterruptible sleep for longer than
//! `minDuration`, counted per thread like the kernel's khungtaskd.

use super::finding::{DetectorKind, DetectorReport, DurationSource, Finding, Severity};
use super::history::History;
use super::thresholds::HungTaskThresholds;
use crate::scan::Observation;

/// How many D-state threads to list.
pub const MAX_LISTED: usize = 50;

/// Blocked duration of one D thread. The scheduler's `se.exec_start` gives
/// it directly; the history's khungtaskd-style tracking (which restarts
/// whenever the thread's switch counter moves) gives a lower bound; the
/// larger wins.
pub fn blocked_for(
    obs: &Observation,
    history: &History,
    tid: i32,
    starttime: u64,
    exec_start_ns: Option<u64>,
    cpu: Option<u32>,
) -> (f64, DurationSource) {
    let since = history
        .blocked_since(tid, starttime)
        .unwrap_or(obs.taken_at);
    let tracked = obs.taken_at.saturating_duration_since(since).as_secs_f64();
    // The scheduler clock excludes steal and IRQ time, so on a busy VM it can
    // trail the wall clock; the tracked value is a wall-clock lower bound.
    match (obs.procs.sched_now_for(cpu), exec_start_ns) {
        (Some(now), Some(ran)) => {
            let sched = now.saturating_sub(ran) as f64 / 1e9;
            if tracked > sched {
                (tracked, DurationSource::Tracked)
            } else {
                (sched, DurationSource::Sched)
            }
        }
        _ => (tracked, DurationSource::Tracked),
    }
}

pub fn detect(obs: &Observation, t: &HungTaskThresholds, history: &History) -> DetectorReport {
    let min = t.min_duration.as_secs_f64();
    let owners: std::collections::HashMap<i32, &crate::scan::procfs::ProcessObs> = obs
        .procs
        .processes
        .iter()
        .filter(|p| p.num_threads > 1)
        .map(|p| (p.pid, p))
        .collect();
    let mut rows: Vec<Finding> = obs
        .procs
        .blocked
        .iter()
        .map(|b| {
            let (secs, source) =
                blocked_for(obs, history, b.tid, b.starttime, b.exec_start_ns, b.cpu);
            let owner = owners.get(&b.tgid);
            let fraction = if min > 0.0 { secs / min } else { 1.0 };
            Finding {
                severity: Some(Severity::from_fraction(fraction)),
                exceeds: secs >= min,
                summary: format!("in D state for {secs:.1}s"),
                host_pid: Some(b.tgid),
                tid: Some(b.tid),
                start_time: Some(owner.map_or(b.starttime, |p| p.starttime)),
                comm: Some(owner.map_or_else(|| b.comm.clone(), |p| p.comm.clone())),
                thread_comm: Some(b.comm.clone()),
                wchan: b.wchan.clone(),
                blocked_seconds: Some(secs),
                blocked_source: Some(source),
                ..Finding::default()
            }
        })
        .collect();
    let hung = rows.iter().filter(|f| f.exceeds).count() as u64;
    rows.sort_by(|a, b| {
        b.blocked_seconds
            .unwrap_or(0.0)
            .total_cmp(&a.blocked_seconds.unwrap_or(0.0))
            .then(a.tid.cmp(&b.tid))
    });
    let candidates = rows.len() as u64;
    rows.truncate(MAX_LISTED);
    DetectorReport {
        detector: DetectorKind::HungTasks,
        enabled: true,
        exceeded: t.threshold > 0 && hung >= u64::from(t.threshold),
        firing: false,
        exceeded_for_seconds: 0.0,
        value: hung as f64,
        threshold: f64::from(t.threshold),
        unit: "hung threads",
        threshold_text: format!(
            "{} thread(s) in D for {}s",
            t.threshold,
            t.min_duration.as_secs()
        ),
        candidates,
        findings: rows,
    }
}
