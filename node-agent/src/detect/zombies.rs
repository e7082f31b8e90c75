//! Zombie buildup: per node and per parent, ignoring zombies younger than
//! `minAge` (a parent that reaps promptly is healthy).

use super::finding::{DetectorKind, DetectorReport, DurationSource, Finding, Severity};
use super::history::History;
use super::thresholds::ZombieThresholds;
use crate::scan::Observation;
use std::collections::HashMap;

/// How many zombie parents to list.
pub const TOP_PARENTS: usize = 10;

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
) -> DetectorReport {
    struct Parent {
        all: u64,
        count: u64,
        oldest: f64,
    }
    let min_age = t.min_age.as_secs_f64();
    let mut parents: HashMap<i32, Parent> = HashMap::new();
    let mut total = 0u64;
    for z in &obs.procs.zombies {
        let (age, _) = zombie_age(
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
            count: 0,
            oldest: 0.0,
        });
        p.all += 1;
        p.oldest = p.oldest.max(age);
        if age >= min_age {
            total += 1;
            p.count += 1;
        }
    }
    let by_pid: HashMap<i32, &crate::scan::procfs::ProcessObs> =
        obs.procs.processes.iter().map(|p| (p.pid, p)).collect();
    let per_parent = f64::from(t.per_parent_threshold.max(1));
    let mut ranked: Vec<(i32, Parent)> = parents.into_iter().collect();
    ranked.sort_by(|a, b| {
        (b.1.count, b.1.all)
            .cmp(&(a.1.count, a.1.all))
            .then(a.0.cmp(&b.0))
    });
    let candidates = ranked.len() as u64;
    let findings: Vec<Finding> = ranked
        .into_iter()
        .take(TOP_PARENTS)
        .map(|(ppid, p)| {
            let parent = by_pid.get(&ppid);
            let exceeds = p.count >= u64::from(t.per_parent_threshold);
            Finding {
                severity: Some(Severity::from_fraction(p.count as f64 / per_parent)),
                exceeds,
                summary: format!(
                    "{} zombie children ({} past minAge), oldest {:.0}s",
                    p.all, p.count, p.oldest
                ),
                host_pid: Some(ppid),
                start_time: parent.map(|p| p.starttime),
                comm: parent.map(|p| p.comm.clone()),
                zombies: Some(p.all),
                zombies_past_min_age: Some(p.count),
                oldest_zombie_age_seconds: Some(p.oldest),
                ..Finding::default()
            }
        })
        .collect();
    let exceeded = total >= u64::from(t.threshold) || findings.iter().any(|f| f.exceeds);
    DetectorReport {
        detector: DetectorKind::Zombies,
        enabled: true,
        exceeded,
        firing: false,
        exceeded_for_seconds: 0.0,
        value: total as f64,
        threshold: f64::from(t.threshold),
        unit: "zombies",
        threshold_text: format!(
            "{} per node, {} per parent (older than {}s)",
            t.threshold,
            t.per_parent_threshold,
            t.min_age.as_secs()
        ),
        candidates,
        findings,
    }
}
