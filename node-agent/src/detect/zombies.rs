//! Zombie buildup: per node and per parent, ignoring zombies younger than
//! `minAge` (a parent that reaps promptly is healthy).

use super::finding::{
    DurationSource, Offenders, ProcessId, Severity, Verdict, ZombieParent, bound,
};
use super::history::History;
use crate::scan::Observation;
use nodemedic_crds::Detector;
use nodemedic_crds::report::MAX_FINDINGS_PER_DETECTOR;
use nodemedic_crds::thresholds::ZombieThresholds;
use std::collections::HashMap;

/// Age of a zombie in seconds and how it was measured.
pub fn zombie_age(
    obs: &Observation,
    history: &History,
    pid: i32,
    starttime: u64,
    exec_start_ns: Option<u64>,
    cpu: Option<u32>,
    clock_ticks: u64,
) -> (f64, DurationSource) {
    if let (Some(now), Some(exited)) = (obs.procs.sched_now_for(cpu), exec_start_ns) {
        return (
            now.saturating_sub(exited) as f64 / 1e9,
            DurationSource::Sched,
        );
    }
    if let Some(seen) = history.zombie_first_seen(pid, starttime) {
        return (
            obs.taken_at.saturating_duration_since(seen).as_secs_f64(),
            DurationSource::Tracked,
        );
    }
    let started = starttime as f64 / clock_ticks.max(1) as f64;
    let uptime = obs.node.uptime_secs.unwrap_or(started);
    ((uptime - started).max(0.0), DurationSource::SinceStart)
}

pub fn detect(
    obs: &Observation,
    t: &ZombieThresholds,
    history: &History,
    clock_ticks: u64,
) -> Verdict {
    struct Parent {
        all: u32,
        past_min_age: u32,
        oldest: f64,
        source: DurationSource,
    }
    let min_age = t.min_age.as_secs_f64();
    let mut parents: HashMap<i32, Parent> = HashMap::new();
    let mut total = 0u64;
    for z in &obs.procs.zombies {
        let (age, source) = zombie_age(
            obs,
            history,
            z.pid,
            z.starttime,
            z.exec_start_ns,
            z.cpu,
            clock_ticks,
        );
        let p = parents.entry(z.ppid).or_insert(Parent {
            all: 0,
            past_min_age: 0,
            oldest: 0.0,
            source,
        });
        p.all = p.all.saturating_add(1);
        if age >= p.oldest {
            p.oldest = age;
            p.source = source;
        }
        if age >= min_age {
            total += 1;
            p.past_min_age = p.past_min_age.saturating_add(1);
        }
    }
    let by_pid: HashMap<i32, &crate::scan::procfs::ProcessObs> =
        obs.procs.processes.iter().map(|p| (p.pid, p)).collect();
    let per_parent = f64::from(t.per_parent_threshold.max(1));
    let mut ranked: Vec<(i32, Parent)> = parents.into_iter().collect();
    ranked.sort_by(|a, b| {
        (b.1.past_min_age, b.1.all)
            .cmp(&(a.1.past_min_age, a.1.all))
            .then(a.0.cmp(&b.0))
    });
    let candidates = ranked.len() as u64;
    let mut listed: Vec<ZombieParent> = ranked
        .into_iter()
        .map(|(ppid, p)| {
            let parent = by_pid.get(&ppid);
            let exceeds = p.past_min_age >= t.per_parent_threshold;
            ZombieParent {
                parent: ProcessId {
                    pid: ppid,
                    start_time: parent.map_or(0, |p| p.starttime),
                    comm: parent.map(|p| p.comm.clone()).unwrap_or_default(),
                },
                zombies: p.all,
                past_min_age: p.past_min_age,
                oldest_age_seconds: p.oldest,
                age_source: p.source,
                severity: Severity::from_fraction(f64::from(p.past_min_age) / per_parent),
                exceeds,
            }
        })
        .collect();
    let any_parent_exceeds = listed.iter().any(|p| p.exceeds);
    let omitted = bound(&mut listed, MAX_FINDINGS_PER_DETECTOR);
    Verdict {
        detector: Detector::Zombies,
        exceeded: total >= u64::from(t.threshold) || any_parent_exceeds,
        value: total as f64,
        unit: "zombies",
        threshold_text: format!(
            "{} per node, {} per parent (older than {}s)",
            t.threshold,
            t.per_parent_threshold,
            t.min_age.as_secs()
        ),
        candidates,
        omitted,
        offenders: Offenders::Zombies(listed),
    }
}
