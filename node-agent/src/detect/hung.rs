//! Hung tasks: threads in uninterruptible sleep for longer than
//! `minDuration`, counted per thread like the kernel's khungtaskd.

use super::finding::{DurationSource, HungThread, Offenders, ProcessId, Severity, Verdict, bound};
use super::history::History;
use crate::scan::Observation;
use nodemedic_crds::Detector;
use nodemedic_crds::report::MAX_FINDINGS_PER_DETECTOR;
use nodemedic_crds::thresholds::HungTaskThresholds;

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

pub fn detect(obs: &Observation, t: &HungTaskThresholds, history: &History) -> Verdict {
    let min = t.min_duration.as_secs_f64();
    let owners: std::collections::HashMap<i32, &crate::scan::procfs::ProcessObs> = obs
        .procs
        .processes
        .iter()
        .filter(|p| p.num_threads > 1)
        .map(|p| (p.pid, p))
        .collect();
    let mut rows: Vec<HungThread> = obs
        .procs
        .blocked
        .iter()
        .map(|b| {
            let (secs, source) =
                blocked_for(obs, history, b.tid, b.starttime, b.exec_start_ns, b.cpu);
            let owner = owners.get(&b.tgid);
            let fraction = if min > 0.0 { secs / min } else { 1.0 };
            HungThread {
                process: ProcessId {
                    pid: b.tgid,
                    start_time: owner.map_or(b.starttime, |p| p.starttime),
                    comm: owner.map_or_else(|| b.comm.clone(), |p| p.comm.clone()),
                },
                tid: b.tid,
                thread_comm: b.comm.clone(),
                blocked_seconds: secs,
                blocked_source: source,
                wchan: b.wchan.clone(),
                severity: Severity::from_fraction(fraction),
                exceeds: secs >= min,
            }
        })
        .collect();
    let hung = rows.iter().filter(|f| f.exceeds).count() as u64;
    rows.sort_by(|a, b| {
        b.blocked_seconds
            .total_cmp(&a.blocked_seconds)
            .then(a.tid.cmp(&b.tid))
    });
    let candidates = rows.len() as u64;
    let omitted = bound(&mut rows, MAX_FINDINGS_PER_DETECTOR);
    Verdict {
        detector: Detector::HungTasks,
        exceeded: t.threshold > 0 && hung >= u64::from(t.threshold),
        value: hung as f64,
        unit: "hung threads",
        threshold_text: format!(
            "{} thread(s) in D for {}s",
            t.threshold,
            t.min_duration.as_secs()
        ),
        candidates,
        omitted,
        offenders: Offenders::HungTasks(rows),
    }
}
