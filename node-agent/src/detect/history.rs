//! What the detectors remember between scans about the machine: when a
//! zombie was first seen, since when a thread has been blocked without
//! being switched in, fd counts, task counts, pod pid counts and cgroup
//! counters over a window. It is shared by every policy; each policy's
//! hysteresis lives in [`super::hysteresis`].

use super::fit::{self, Trend};
use crate::scan::Observation;
use crate::scan::cgroup::CgroupVersion;
use crate::scan::parse::CpuStat;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Processes with fewer open fds are not tracked for growth (bounds memory).
const FD_TRACK_MIN: u32 = 16;

/// Samples a series keeps per window at most: a short scan interval thins
/// them (bounds memory and the fit's quadratic cost).
pub const MAX_SAMPLES: u32 = 64;

#[derive(Debug, Default)]
pub struct History {
    zombies: HashMap<(i32, u64), Instant>,
    blocked: HashMap<(i32, u64), (Option<u64>, Instant)>,
    fds: HashMap<(i32, u64), Series>,
    tasks: Series,
    pod_pids: HashMap<(CgroupVersion, String), Series>,
    cpu: HashMap<(CgroupVersion, String), VecDeque<(Instant, CpuStat)>>,
}

/// Retention for the windowed series.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub fd_window: Option<Duration>,
    pub cpu_window: Duration,
    /// Node task counts and pod pid counts.
    pub pids_window: Duration,
}

/// One quantity over a window, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Series {
    samples: VecDeque<(Instant, f64)>,
}

impl Series {
    /// Adds a sample and drops those that fell out of the window. While the
    /// last sample is closer than window / [`MAX_SAMPLES`] to the one before
    /// it, the new one replaces it instead: every kept sample but the newest
    /// is that far from its predecessor (bounded), and the newest is current.
    pub fn push(&mut self, at: Instant, value: f64, window: Duration) {
        let min_gap = window / MAX_SAMPLES;
        let len = self.samples.len();
        if len >= 2
            && self.samples[len - 1]
                .0
                .saturating_duration_since(self.samples[len - 2].0)
                < min_gap
            && let Some(last) = self.samples.back_mut()
        {
            *last = (at, value);
        } else {
            self.samples.push_back((at, value));
        }
        prune(&mut self.samples, at, window);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The robust trend over the window (see [`fit`]); `None` until the
    /// samples span at least half the window (a shorter span is too noisy)
    /// or while there are fewer than [`fit::MIN_SAMPLES`].
    pub fn trend(&self, window: Duration, now: Instant) -> Option<Trend> {
        let &(first_at, _) = self.samples.front()?;
        let &(last_at, _) = self.samples.back()?;
        let span = last_at.saturating_duration_since(first_at);
        if span < window / 2 || span.is_zero() || last_at > now {
            return None;
        }
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|&(at, v)| (at.saturating_duration_since(first_at).as_secs_f64(), v))
            .collect();
        fit::fit(&points)
    }
}

impl History {
    /// Folds one observation in. Call before detecting on it.
    pub fn record(&mut self, obs: &Observation, keep: Retention) {
        let now = obs.taken_at;
        let mut zombies = HashMap::with_capacity(obs.procs.zombies.len());
        for z in &obs.procs.zombies {
            let key = (z.pid, z.starttime);
            zombies.insert(key, self.zombies.get(&key).copied().unwrap_or(now));
        }
        self.zombies = zombies;

        // khungtaskd semantics: a thread's blocked clock restarts whenever its
        // context-switch counter has moved since the last look.
        let mut blocked = HashMap::with_capacity(obs.procs.blocked.len());
        for b in &obs.procs.blocked {
            let key = (b.tid, b.starttime);
            let since = match self.blocked.get(&key) {
                Some(&(switches, since)) if switches == b.switches => since,
                _ => now,
            };
            blocked.insert(key, (b.switches, since));
        }
        self.blocked = blocked;

        if let Some(window) = keep.fd_window {
            let mut fds = HashMap::new();
            for p in &obs.procs.processes {
                let Some(n) = p.fd_count.filter(|&n| n >= FD_TRACK_MIN) else {
                    continue;
                };
                let key = (p.pid, p.starttime);
                let mut series = self.fds.remove(&key).unwrap_or_default();
                series.push(now, f64::from(n), window);
                fds.insert(key, series);
            }
            self.fds = fds;
        } else {
            self.fds.clear();
        }

        // A scan without a process walk (the first sample of a one-shot
        // scan) has no task count and adds nothing.
        if let Some(tasks) = obs.pids.node.tasks {
            self.tasks.push(now, tasks as f64, keep.pids_window);
        }
        if !obs.pids.pods.is_empty() || !obs.procs.processes.is_empty() {
            let mut pods = HashMap::with_capacity(obs.pids.pods.len());
            for p in &obs.pids.pods {
                let key = (p.version, p.path.clone());
                let mut series = self.pod_pids.remove(&key).unwrap_or_default();
                series.push(now, p.current as f64, keep.pids_window);
                pods.insert(key, series);
            }
            self.pod_pids = pods;
        }

        let mut cpu = HashMap::with_capacity(obs.cgroups.len());
        for cg in &obs.cgroups {
            let key = (cg.version, cg.path.clone());
            let mut series = self.cpu.remove(&key).unwrap_or_default();
            series.push_back((now, cg.stat));
            prune(&mut series, now, keep.cpu_window);
            cpu.insert(key, series);
        }
        self.cpu = cpu;
    }

    pub fn zombie_first_seen(&self, pid: i32, starttime: u64) -> Option<Instant> {
        self.zombies.get(&(pid, starttime)).copied()
    }

    pub fn blocked_since(&self, tid: i32, starttime: u64) -> Option<Instant> {
        self.blocked.get(&(tid, starttime)).map(|&(_, since)| since)
    }

    /// The trend of a process's open fds over the window (Theil–Sen slope
    /// and Mann–Kendall significance; see [`fit`]).
    pub fn fd_trend(
        &self,
        pid: i32,
        starttime: u64,
        window: Duration,
        now: Instant,
    ) -> Option<Trend> {
        self.fds.get(&(pid, starttime))?.trend(window, now)
    }

    /// Growth in fds per minute over the window (the robust slope); `None`
    /// until the series spans at least half the window.
    pub fn fd_growth_per_minute(
        &self,
        pid: i32,
        starttime: u64,
        window: Duration,
        now: Instant,
    ) -> Option<f64> {
        self.fd_trend(pid, starttime, window, now)
            .map(|t| t.slope_per_sec * 60.0)
    }

    /// The trend of the node's task count.
    pub fn task_trend(&self, window: Duration, now: Instant) -> Option<Trend> {
        self.tasks.trend(window, now)
    }

    /// The trend of a pod cgroup's `pids.current`.
    pub fn pod_pids_trend(
        &self,
        version: CgroupVersion,
        path: &str,
        window: Duration,
        now: Instant,
    ) -> Option<Trend> {
        self.pod_pids
            .get(&(version, path.to_owned()))?
            .trend(window, now)
    }

    /// Counter movement between the oldest sample in the window and
    /// `current`, and the time it spans.
    /// `None` with fewer than two samples or when the counters went backwards
    /// (the cgroup was recreated).
    pub fn cpu_delta(
        &self,
        version: CgroupVersion,
        path: &str,
        current: &CpuStat,
        window: Duration,
        now: Instant,
    ) -> Option<(CpuStat, Duration)> {
        let series = self.cpu.get(&(version, path.to_owned()))?;
        let (first_at, first) = series
            .iter()
            .find(|(at, _)| now.saturating_duration_since(*at) <= window)?;
        if *first_at >= now {
            return None;
        }
        let delta = CpuStat {
            nr_periods: current.nr_periods.checked_sub(first.nr_periods)?,
            nr_throttled: current.nr_throttled.checked_sub(first.nr_throttled)?,
            throttled_ns: current.throttled_ns.checked_sub(first.throttled_ns)?,
        };
        Some((delta, now.saturating_duration_since(*first_at)))
    }
}

fn prune<T>(series: &mut VecDeque<(Instant, T)>, now: Instant, window: Duration) {
    // The window is measured from the oldest sample still inside it.
    while series
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
    {
        series.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::procfs::{BlockedThread, ProcSnapshot};
    use crate::scan::reader::ScanCounters;

    fn obs_with(at: Instant, blocked: Vec<BlockedThread>, cpu: Option<CpuStat>) -> Observation {
        Observation {
            taken_at: at,
            hostname: None,
            clock_ticks: 100,
            procs: ProcSnapshot {
                blocked,
                ..ProcSnapshot::default()
            },
            node: Default::default(),
            cgroups: cpu
                .map(|stat| crate::scan::cgroup::CgroupCpuObs {
                    version: CgroupVersion::V2,
                    path: "/c".to_owned(),
                    quota: None,
                    stat,
                    pressure: None,
                    attribution: Default::default(),
                })
                .into_iter()
                .collect(),
            pids: Default::default(),
            counters: ScanCounters::default(),
            duration: Duration::ZERO,
        }
    }

    fn d(switches: u64) -> BlockedThread {
        BlockedThread {
            tgid: 7,
            tid: 7,
            comm: "x".to_owned(),
            starttime: 99,
            exec_start_ns: None,
            switches: Some(switches),
            wchan: None,
            cpu: None,
            children: Vec::new(),
        }
    }

    const KEEP: Retention = Retention {
        fd_window: None,
        cpu_window: Duration::from_secs(60),
        pids_window: Duration::from_secs(600),
    };

    #[test]
    fn blocked_clock_runs_while_switch_counter_is_still() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(&obs_with(t0, vec![d(5)], None), KEEP);
        h.record(
            &obs_with(t0 + Duration::from_secs(10), vec![d(5)], None),
            KEEP,
        );
        assert_eq!(h.blocked_since(7, 99), Some(t0));
    }

    #[test]
    fn blocked_clock_restarts_when_the_thread_ran() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut h = History::default();
        h.record(&obs_with(t0, vec![d(5)], None), KEEP);
        h.record(&obs_with(t1, vec![d(6)], None), KEEP);
        assert_eq!(h.blocked_since(7, 99), Some(t1));
        // Leaving D state forgets the thread.
        h.record(&obs_with(t1 + Duration::from_secs(1), vec![], None), KEEP);
        assert_eq!(h.blocked_since(7, 99), None);
    }

    #[test]
    fn cpu_delta_over_window_and_counter_reset() {
        let t0 = Instant::now();
        let s = |p, t| CpuStat {
            nr_periods: p,
            nr_throttled: t,
            throttled_ns: t * 10,
        };
        let mut h = History::default();
        h.record(&obs_with(t0, vec![], Some(s(100, 10))), KEEP);
        let t1 = t0 + Duration::from_secs(30);
        h.record(&obs_with(t1, vec![], Some(s(400, 160))), KEEP);
        let (delta, span) = h
            .cpu_delta(CgroupVersion::V2, "/c", &s(400, 160), KEEP.cpu_window, t1)
            .expect("delta");
        assert_eq!((delta.nr_periods, delta.nr_throttled), (300, 150));
        assert_eq!(span, Duration::from_secs(30));
        // Outside the window the old sample no longer counts.
        let t2 = t0 + Duration::from_secs(70);
        h.record(&obs_with(t2, vec![], Some(s(500, 170))), KEEP);
        let (delta, _) = h
            .cpu_delta(CgroupVersion::V2, "/c", &s(500, 170), KEEP.cpu_window, t2)
            .expect("delta");
        assert_eq!(delta.nr_periods, 100);
        // A recreated cgroup (counters went down) yields no delta.
        assert!(
            h.cpu_delta(CgroupVersion::V2, "/c", &s(5, 1), KEEP.cpu_window, t2)
                .is_none()
        );
    }

    #[test]
    fn a_series_stays_bounded_and_current_at_a_short_interval() {
        let window = Duration::from_secs(640);
        let t0 = Instant::now();
        let mut s = Series::default();
        // One sample a second for 20 minutes: window / 64 is 10 s.
        for i in 0..1200u64 {
            s.push(t0 + Duration::from_secs(i), i as f64, window);
        }
        assert!(s.len() <= MAX_SAMPLES as usize + 2, "{} samples", s.len());
        let now = t0 + Duration::from_secs(1199);
        assert_eq!(s.samples.back(), Some(&(now, 1199.0)), "the newest is kept");
        let t = s.trend(window, now).expect("a trend");
        assert!((t.slope_per_sec - 1.0).abs() < 1e-9, "{t:?}");
        assert!(t.rising());
    }

    #[test]
    fn fd_growth_needs_half_a_window_of_samples() {
        use crate::scan::procfs::ProcessObs;
        let proc_with = |fds: u32| ProcessObs {
            pid: 42,
            ppid: 1,
            state: b'S',
            comm: "leaky".to_owned(),
            starttime: 5,
            num_threads: 1,
            kernel_thread: false,
            fd_count: Some(fds),
            fd_soft_limit: None,
        };
        let keep = Retention {
            fd_window: Some(Duration::from_secs(600)),
            ..KEEP
        };
        let mut h = History::default();
        let t0 = Instant::now();
        for (i, fds) in [100u32, 160, 220, 280, 340, 400].into_iter().enumerate() {
            let mut o = obs_with(t0 + Duration::from_secs(60 * i as u64), vec![], None);
            o.procs.processes.push(proc_with(fds));
            h.record(&o, keep);
            let now = o.taken_at;
            let rate = h.fd_growth_per_minute(42, 5, Duration::from_secs(600), now);
            if i < 5 {
                assert_eq!(rate, None, "{i} minutes is less than half the window");
            } else {
                assert_eq!(rate, Some(60.0));
            }
        }
        // A different start time is a different process.
        assert_eq!(
            h.fd_growth_per_minute(42, 6, Duration::from_secs(600), t0),
            None
        );
    }
}
