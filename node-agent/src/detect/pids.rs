//! Pid exhaustion: the headroom of the node (tasks against `pid_max` and
//! `threads-max`) and of each pod (`pids.current` against `pids.max`), and
//! the time until each runs out at its current trend. Zombies hold their
//! pid until reaped, so a zombie storm shows up here as a pod (or node)
//! running out of pids; the zombies' share of the count names the cause.
//!
//! Not a detector: no policy threshold applies (yet); the report, the
//! metrics and the alerts carry it.

use super::fit::{Trend, eta_seconds};
use super::history::History;
use crate::scan::Observation;
use crate::scan::cgroup::CgroupVersion;
use nodemedic_crds::report::{MAX_POD_PIDS, PidsLimitSource};
use std::collections::HashMap;
use std::time::Duration;

/// The window task and pid counts are fitted over by default (ETA after
/// half of it); the agent's `--pids-trend-window`.
pub const WINDOW: Duration = Duration::from_secs(600);

/// The node's pids.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePids {
    pub tasks: u64,
    pub pid_max: Option<u64>,
    pub threads_max: Option<u64>,
    /// min(pid_max, threads_max).
    pub limit: u64,
    pub headroom: u64,
    pub zombies: u64,
    pub growth_per_minute: Option<f64>,
    pub eta_seconds: Option<f64>,
}

/// One pod's pids cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPids {
    pub version: CgroupVersion,
    pub cgroup: String,
    pub pod_uid: String,
    pub current: u64,
    pub limit: u64,
    pub limit_source: PidsLimitSource,
    pub headroom: u64,
    pub zombies: u64,
    pub growth_per_minute: Option<f64>,
    pub eta_seconds: Option<f64>,
}

impl PodPids {
    /// current / limit.
    pub fn usage(&self) -> f64 {
        if self.limit == 0 {
            1.0
        } else {
            self.current as f64 / self.limit as f64
        }
    }

    /// zombies / current, when anything is charged.
    pub fn zombie_share(&self) -> Option<f64> {
        share(self.zombies, self.current)
    }
}

impl NodePids {
    /// zombies / tasks, when there are tasks.
    pub fn zombie_share(&self) -> Option<f64> {
        share(self.zombies, self.tasks)
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64).min(1.0))
}

/// Node and pods, pods soonest-exhausted first, then fullest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PidsAssessment {
    pub node: Option<NodePids>,
    pub pods: Vec<PodPids>,
    /// Pods cut by the report's bound.
    pub pods_omitted: u64,
}

impl PidsAssessment {
    /// The pod with this UID, when listed.
    pub fn pod(&self, uid: &str) -> Option<&PodPids> {
        self.pods.iter().find(|p| p.pod_uid == uid)
    }
}

fn eta(current: u64, limit: u64, trend: Option<Trend>) -> Option<f64> {
    let t = trend.filter(Trend::rising)?;
    eta_seconds(current as f64, limit as f64, t.slope_per_sec)
}

/// Assesses pid headroom. `zombies_by_pod` counts the zombies whose parent
/// runs in each pod (by pod UID), from the enrichment stage.
pub fn assess(
    obs: &Observation,
    history: &History,
    zombies_by_pod: &HashMap<String, u64>,
    window: Duration,
) -> PidsAssessment {
    let n = &obs.pids.node;
    let node_limit = match (n.pid_max, n.threads_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let node = match (n.tasks, node_limit) {
        (Some(tasks), Some(limit)) => {
            let trend = history.task_trend(window, obs.taken_at);
            Some(NodePids {
                tasks,
                pid_max: n.pid_max,
                threads_max: n.threads_max,
                limit,
                headroom: limit.saturating_sub(tasks),
                zombies: obs.procs.zombies.len() as u64,
                growth_per_minute: trend.map(|t| t.slope_per_sec * 60.0),
                eta_seconds: eta(tasks, limit, trend),
            })
        }
        _ => None,
    };
    let mut pods: Vec<PodPids> = obs
        .pids
        .pods
        .iter()
        .filter_map(|p| {
            // A pod without a limit of its own is bounded by the node's.
            let (limit, limit_source) = match p.max {
                Some(max) => (max, PidsLimitSource::PodCgroup),
                None => (node_limit?, PidsLimitSource::Node),
            };
            let trend = history.pod_pids_trend(p.version, &p.path, window, obs.taken_at);
            Some(PodPids {
                version: p.version,
                cgroup: p.path.clone(),
                pod_uid: p.pod_uid.clone(),
                current: p.current,
                limit,
                limit_source,
                headroom: limit.saturating_sub(p.current),
                zombies: zombies_by_pod.get(&p.pod_uid).copied().unwrap_or(0),
                growth_per_minute: trend.map(|t| t.slope_per_sec * 60.0),
                eta_seconds: eta(p.current, limit, trend),
            })
        })
        .collect();
    pods.sort_by(|a, b| {
        let by_eta = match (a.eta_seconds, b.eta_seconds) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_eta
            .then(b.usage().total_cmp(&a.usage()))
            .then(a.cgroup.cmp(&b.cgroup))
    });
    let pods_omitted = pods.len().saturating_sub(MAX_POD_PIDS) as u64;
    pods.truncate(MAX_POD_PIDS);
    PidsAssessment {
        node,
        pods,
        pods_omitted,
    }
}

/// "in 12 minutes", "in 3 hours", "now": an ETA for people.
pub fn eta_words(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 1.0 {
        "now".to_owned()
    } else if s < 120.0 {
        format!("in {:.0} seconds", s)
    } else if s < 2.0 * 3600.0 {
        format!("in {:.0} minutes", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("in {:.0} hours", s / 3600.0)
    } else {
        format!("in {:.0} days", s / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::history::Retention;
    use crate::scan::pids::{NodePidsObs, PidsObs, PodPidsObs};
    use crate::scan::procfs::ZombieObs;
    use std::time::Instant;

    const UID_A: &str = "aaaaaaaa-1111-4222-8333-944455556666";
    const UID_B: &str = "bbbbbbbb-1111-4222-8333-944455556666";

    fn obs(at: Instant, tasks: u64, pods: Vec<PodPidsObs>) -> Observation {
        Observation {
            taken_at: at,
            hostname: None,
            clock_ticks: 100,
            procs: Default::default(),
            node: Default::default(),
            cgroups: Vec::new(),
            pids: PidsObs {
                node: NodePidsObs {
                    pid_max: Some(32_768),
                    threads_max: Some(20_000),
                    tasks: Some(tasks),
                },
                pods,
            },
            counters: Default::default(),
            duration: Duration::ZERO,
        }
    }

    fn pod(uid: &str, current: u64, max: Option<u64>) -> PodPidsObs {
        PodPidsObs {
            version: CgroupVersion::V1,
            path: format!("/kubepods/pod{uid}"),
            pod_uid: uid.to_owned(),
            current,
            max,
        }
    }

    const KEEP: Retention = Retention {
        fd_window: None,
        cpu_window: Duration::from_secs(60),
        pids_window: WINDOW,
    };

    #[test]
    fn a_pod_filling_with_zombies_gets_an_eta_and_its_zombie_share() {
        let t0 = Instant::now();
        let mut h = History::default();
        let mut last = None;
        // Pod A: 10 more pids a minute against pids.max 1000; pod B flat
        // without a limit of its own.
        for i in 0..9u64 {
            let o = obs(
                t0 + Duration::from_secs(60 * i),
                5_000,
                vec![pod(UID_A, 400 + 10 * i, Some(1000)), pod(UID_B, 30, None)],
            );
            h.record(&o, KEEP);
            last = Some(o);
        }
        let o = last.expect("observed");
        let zombies: HashMap<String, u64> = [(UID_A.to_owned(), 240)].into();
        let a = assess(&o, &h, &zombies, WINDOW);
        let node = a.node.as_ref().expect("node");
        assert_eq!((node.limit, node.headroom), (20_000, 15_000));
        assert_eq!(node.eta_seconds, None, "flat task count");
        assert_eq!(node.growth_per_minute, Some(0.0));
        assert_eq!(a.pods.len(), 2);
        let pa = &a.pods[0];
        assert_eq!(pa.pod_uid, UID_A, "the pod with an ETA comes first");
        assert_eq!((pa.current, pa.limit, pa.headroom), (480, 1000, 520));
        assert_eq!(pa.limit_source, PidsLimitSource::PodCgroup);
        assert_eq!(pa.growth_per_minute, Some(10.0));
        assert_eq!(pa.eta_seconds, Some(520.0 * 6.0));
        assert_eq!(pa.zombie_share(), Some(240.0 / 480.0));
        assert_eq!(eta_words(pa.eta_seconds.unwrap_or(0.0)), "in 52 minutes");
        let pb = &a.pods[1];
        assert_eq!((pb.limit, pb.limit_source), (20_000, PidsLimitSource::Node));
        assert_eq!((pb.eta_seconds, pb.zombies), (None, 0));
    }

    #[test]
    fn no_eta_before_half_the_window_and_node_zombies_counted() {
        let t0 = Instant::now();
        let mut h = History::default();
        let mut o = obs(t0, 1_000, vec![]);
        for i in 0..4u64 {
            o = obs(t0 + Duration::from_secs(60 * i), 1_000 + 100 * i, vec![]);
            o.procs.zombies = vec![
                ZombieObs {
                    pid: 9,
                    ppid: 1,
                    comm: "z".to_owned(),
                    starttime: 1,
                    exec_start_ns: None,
                    cpu: None,
                };
                3
            ];
            h.record(&o, KEEP);
        }
        let a = assess(&o, &h, &HashMap::new(), WINDOW);
        let node = a.node.expect("node");
        assert_eq!(node.eta_seconds, None, "3 minutes of a 10 minute window");
        assert_eq!(node.zombies, 3);
        assert_eq!(node.zombie_share(), Some(3.0 / 1_300.0));
        for i in 4..9u64 {
            o = obs(t0 + Duration::from_secs(60 * i), 1_000 + 100 * i, vec![]);
            h.record(&o, KEEP);
        }
        let node = assess(&o, &h, &HashMap::new(), WINDOW).node.expect("node");
        assert_eq!(node.growth_per_minute, Some(100.0));
        assert_eq!(node.eta_seconds, Some((20_000.0 - 1_800.0) * 0.6));
    }

    #[test]
    fn a_shorter_window_gives_an_eta_sooner() {
        let t0 = Instant::now();
        let short = Duration::from_secs(60);
        let keep = Retention {
            pids_window: short,
            ..KEEP
        };
        let mut h = History::default();
        let mut o = obs(t0, 1_000, vec![]);
        for i in 0..9u64 {
            o = obs(t0 + Duration::from_secs(5 * i), 1_000 + 10 * i, vec![]);
            h.record(&o, keep);
        }
        let node = |w| assess(&o, &h, &HashMap::new(), w).node.expect("node");
        assert_eq!(node(WINDOW).eta_seconds, None, "40 s of a 10 minute window");
        assert_eq!(node(short).growth_per_minute, Some(120.0));
        assert_eq!(
            node(short).eta_seconds,
            Some((20_000.0 - 1_080.0) / 2.0),
            "40 s of a 1 minute window"
        );
    }

    #[test]
    fn without_node_limits_an_unlimited_pod_is_left_out() {
        let mut o = obs(Instant::now(), 10, vec![pod(UID_B, 30, None)]);
        o.pids.node.pid_max = None;
        o.pids.node.threads_max = None;
        let a = assess(&o, &History::default(), &HashMap::new(), WINDOW);
        assert!(a.node.is_none() && a.pods.is_empty(), "{a:?}");
    }

    #[test]
    fn pods_are_bounded() {
        let pods = (0..MAX_POD_PIDS as u64 + 3)
            .map(|i| {
                pod(
                    &format!("{i:08x}-1111-4222-8333-944455556666"),
                    i,
                    Some(100),
                )
            })
            .collect();
        let a = assess(
            &obs(Instant::now(), 10, pods),
            &History::default(),
            &HashMap::new(),
            WINDOW,
        );
        assert_eq!(a.pods.len(), MAX_POD_PIDS);
        assert_eq!(a.pods_omitted, 3);
        assert_eq!(a.pods[0].current, MAX_POD_PIDS as u64 + 2, "fullest first");
    }

    #[test]
    fn eta_words_read_naturally() {
        assert_eq!(eta_words(0.0), "now");
        assert_eq!(eta_words(45.0), "in 45 seconds");
        assert_eq!(eta_words(30.0 * 60.0), "in 30 minutes");
        assert_eq!(eta_words(5.0 * 3600.0), "in 5 hours");
        assert_eq!(eta_words(3.0 * 86_400.0), "in 3 days");
    }
}
