//! Hung tasks: threads in uninterruptible sleep for longer than
//! `minDuration`, counted per thread like the kernel's khungtaskd.

use super::finding::{
    DurationSource, HungThread, Offenders, ProcessId, Severity, Verdict, WaitingThread, bound,
};
use super::history::History;
use super::waits::{Blocked, classify};
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
    // 0 is not a time: the kernel resets `se.exec_start` when it migrates a
    // task that is not running (`migrate_task_rq_fair`), e.g. a D thread
    // woken onto another CPU between the reads of its state and its sched
    // file. Taken at face value it made a vfork wait of microseconds
    // "blocked since boot".
    let exec_start_ns = exec_start_ns.filter(|&ns| ns != 0);
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
    let mut rows: Vec<HungThread> = Vec::new();
    let mut waits: Vec<WaitingThread> = Vec::new();
    for b in &obs.procs.blocked {
        let (secs, source) = blocked_for(obs, history, b.tid, b.starttime, b.exec_start_ns, b.cpu);
        let owner = owners.get(&b.tgid);
        let process = ProcessId {
            pid: b.tgid,
            start_time: owner.map_or(b.starttime, |p| p.starttime),
            comm: owner.map_or_else(|| b.comm.clone(), |p| p.comm.clone()),
        };
        match classify(b) {
            Blocked::Waits(reason, child) => waits.push(WaitingThread {
                process,
                tid: b.tid,
                thread_comm: b.comm.clone(),
                blocked_seconds: secs,
                blocked_source: source,
                reason,
                waits_on: ProcessId {
                    pid: child.pid,
                    start_time: child.starttime,
                    comm: child.comm.clone(),
                },
                waits_on_hung: false,
            }),
            Blocked::Candidate => {
                let fraction = if min > 0.0 { secs / min } else { 1.0 };
                rows.push(HungThread {
                    process,
                    tid: b.tid,
                    thread_comm: b.comm.clone(),
                    blocked_seconds: secs,
                    blocked_source: source,
                    wchan: b.wchan.clone(),
                    severity: Severity::from_fraction(fraction),
                    exceeds: secs >= min,
                });
            }
        }
    }
    let hung = rows.iter().filter(|f| f.exceeds).count() as u64;
    // The wait is attributed to the task waited on: say when that one is hung.
    let hung_processes: std::collections::HashSet<(i32, u64)> = rows
        .iter()
        .filter(|f| f.exceeds)
        .map(|f| f.process.key())
        .collect();
    for w in &mut waits {
        w.waits_on_hung = hung_processes.contains(&w.waits_on.key());
    }
    rows.sort_by(|a, b| {
        b.blocked_seconds
            .total_cmp(&a.blocked_seconds)
            .then(a.tid.cmp(&b.tid))
    });
    waits.sort_by(|a, b| {
        b.blocked_seconds
            .total_cmp(&a.blocked_seconds)
            .then(a.tid.cmp(&b.tid))
    });
    let candidates = rows.len() as u64;
    let omitted = bound(&mut rows, MAX_FINDINGS_PER_DETECTOR);
    let waits_omitted = bound(&mut waits, MAX_FINDINGS_PER_DETECTOR);
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
        offenders: Offenders::HungTasks {
            threads: rows,
            waits,
            waits_omitted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::procfs::{BlockedThread, ChildObs, ProcSnapshot};
    use crate::scan::{Observation, node::NodeObs, reader::ScanCounters};
    use std::time::{Duration, Instant};

    const MM: Option<(u64, u64)> = Some((17_276_928, 3420));

    fn d(tgid: i32, starttime: u64, exec_start_ns: u64, children: Vec<ChildObs>) -> BlockedThread {
        BlockedThread {
            tgid,
            tid: tgid,
            comm: format!("t{tgid}"),
            starttime,
            exec_start_ns: Some(exec_start_ns),
            switches: Some(1),
            wchan: None,
            cpu: None,
            children,
        }
    }

    fn vfork_child(pid: i32, starttime: u64, state: u8) -> ChildObs {
        ChildObs {
            pid,
            comm: format!("t{pid}"),
            starttime,
            state,
            fork_no_exec: true,
            mm: MM,
            parent_mm: MM,
        }
    }

    fn observe(blocked: Vec<BlockedThread>) -> Observation {
        Observation {
            taken_at: Instant::now(),
            hostname: None,
            clock_ticks: 100,
            procs: ProcSnapshot {
                blocked,
                // The scheduler clock "now": 1000 s.
                sched_now_ns: Some(1_000_000_000_000),
                ..ProcSnapshot::default()
            },
            node: NodeObs::default(),
            cgroups: Vec::new(),
            pids: Default::default(),
            counters: ScanCounters::default(),
            duration: Duration::ZERO,
        }
    }

    fn thresholds() -> HungTaskThresholds {
        HungTaskThresholds {
            min_duration: Duration::from_secs(120),
            threshold: 1,
            for_duration: Duration::ZERO,
        }
    }

    /// Blocked since `secs` seconds before the clock's "now".
    fn since(secs: u64) -> u64 {
        1_000_000_000_000 - secs * 1_000_000_000
    }

    #[test]
    fn a_stuck_vfork_child_is_the_hung_task_and_its_parent_waits_on_it() {
        let obs = observe(vec![
            // 20 vfork parents blocked for 10 minutes; child 1000 is stuck
            // in D itself, the others sleep.
            d(10, 1, since(600), vec![vfork_child(1000, 2, b'D')]),
            d(1000, 2, since(600), vec![]),
            d(11, 1, since(600), vec![vfork_child(1001, 2, b'S')]),
            // A plain D thread (NFS, FUSE) blocked for 5 minutes.
            d(12, 1, since(300), vec![]),
            // A D thread whose child is a fork, not a vfork: counted.
            d(
                13,
                1,
                since(300),
                vec![ChildObs {
                    mm: Some((17_276_928, 2536)),
                    ..vfork_child(1003, 2, b'S')
                }],
            ),
        ]);
        let v = detect(&obs, &thresholds(), &History::default());
        let Offenders::HungTasks {
            threads,
            waits,
            waits_omitted,
        } = &v.offenders
        else {
            panic!("hung verdict holds {:?}", v.offenders);
        };
        let hung: Vec<i32> = threads
            .iter()
            .filter(|t| t.exceeds)
            .map(|t| t.tid)
            .collect();
        assert_eq!(
            hung,
            vec![1000, 12, 13],
            "the child and the plain D threads"
        );
        assert_eq!(v.value, 3.0);
        assert!(v.exceeded);
        let listed: Vec<(i32, i32, bool)> = waits
            .iter()
            .map(|w| (w.tid, w.waits_on.pid, w.waits_on_hung))
            .collect();
        assert_eq!(listed, vec![(10, 1000, true), (11, 1001, false)]);
        assert!(waits.iter().all(|w| w.blocked_seconds >= 599.0));
        assert_eq!(*waits_omitted, 0);
    }

    /// The kernel resets `se.exec_start` to 0 when it migrates a task that
    /// is not running to another CPU (`migrate_task_rq_fair`), as happens to
    /// a D thread woken — a vfork parent whose child just exec'd, a writer
    /// whose fsync returned — between the scanner's read of its state and
    /// of its sched file. Seen in the soak benchmark: a vfork wait of a few
    /// microseconds reported as blocked for 50,896 s (the scheduler clock's
    /// whole uptime). 0 says nothing about the wait: the tracked duration
    /// (here the first sighting: 0 s) is used instead.
    #[test]
    fn an_exec_start_of_zero_is_unknown_not_blocked_since_boot() {
        let obs = observe(vec![
            d(20, 1, 0, vec![]),
            d(21, 1, 0, vec![vfork_child(1021, 2, b'S')]),
        ]);
        let v = detect(&obs, &thresholds(), &History::default());
        let Offenders::HungTasks { threads, waits, .. } = &v.offenders else {
            panic!("hung verdict holds {:?}", v.offenders);
        };
        assert!(!v.exceeded, "{threads:?}");
        assert_eq!(v.value, 0.0);
        let secs: Vec<(i32, f64)> = threads
            .iter()
            .map(|t| (t.tid, t.blocked_seconds))
            .chain(waits.iter().map(|w| (w.tid, w.blocked_seconds)))
            .collect();
        assert_eq!(secs, vec![(20, 0.0), (21, 0.0)]);
    }

    #[test]
    fn waits_are_bounded_and_never_counted() {
        let blocked = (0..30)
            .map(|i| d(100 + i, 1, since(600), vec![vfork_child(1000 + i, 2, b'S')]))
            .collect();
        let v = detect(&observe(blocked), &thresholds(), &History::default());
        let Offenders::HungTasks {
            threads,
            waits,
            waits_omitted,
        } = &v.offenders
        else {
            panic!("hung verdict holds {:?}", v.offenders);
        };
        assert!(threads.is_empty());
        assert_eq!(v.value, 0.0);
        assert!(!v.exceeded);
        assert_eq!(waits.len(), MAX_FINDINGS_PER_DETECTOR);
        assert_eq!(*waits_omitted, 10);
    }
}
