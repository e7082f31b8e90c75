//! What detectors produce: one typed offender per detector, and the verdict
//! of one detector for one policy.

use crate::scan::attribution::Attribution;
use crate::scan::cgroup::CgroupVersion;
use nodemedic_crds::Detector;
use serde::Serialize;

/// How bad one offender is. Ordered so that sorting descending puts the worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Below half the threshold: listed as a top offender only.
    Info,
    /// At least half-way to the threshold.
    Warning,
    /// Exceeds the threshold.
    Exceeded,
}

impl Severity {
    /// `fraction` is value / threshold.
    pub fn from_fraction(fraction: f64) -> Self {
        if fraction >= 1.0 {
            Severity::Exceeded
        } else if fraction >= 0.5 {
            Severity::Warning
        } else {
            Severity::Info
        }
    }

    /// `Exceeded` when `exceeds`, otherwise graded by `fraction` (capped below 1).
    pub fn graded(exceeds: bool, fraction: f64) -> Self {
        if exceeds {
            Severity::Exceeded
        } else {
            Severity::from_fraction(fraction.min(0.99))
        }
    }
}

/// Where a duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DurationSource {
    /// `/proc/.../sched` `se.exec_start` against the scheduler clock: exact.
    Sched,
    /// Tracked across scans (a lower bound: it starts when first seen).
    Tracked,
    /// Time since the process started (an upper bound).
    SinceStart,
}

/// A process identity that survives PID reuse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessId {
    pub pid: i32,
    /// stat field 22 (clock ticks after boot); 0 when the process could not
    /// be seen (it exited between the walk's reads).
    pub start_time: u64,
    pub comm: String,
}

impl ProcessId {
    /// The key enrichment and merging use.
    pub fn key(&self) -> (i32, u64) {
        (self.pid, self.start_time)
    }
}

/// A parent holding zombie children.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZombieParent {
    pub parent: ProcessId,
    pub zombies: u32,
    pub past_min_age: u32,
    pub oldest_age_seconds: f64,
    pub age_source: DurationSource,
    pub severity: Severity,
    pub exceeds: bool,
}

/// A thread in uninterruptible sleep.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HungThread {
    /// The process owning the thread.
    pub process: ProcessId,
    pub tid: i32,
    pub thread_comm: String,
    pub blocked_seconds: f64,
    pub blocked_source: DurationSource,
    pub wchan: Option<String>,
    pub severity: Severity,
    pub exceeds: bool,
}

/// A thread in uninterruptible sleep that waits on another task and is
/// not counted as hung (see [`super::waits`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingThread {
    /// The process owning the thread.
    pub process: ProcessId,
    pub tid: i32,
    pub thread_comm: String,
    pub blocked_seconds: f64,
    pub blocked_source: DurationSource,
    pub reason: super::waits::WaitReason,
    /// The task it waits on (for a vfork wait, the child).
    pub waits_on: ProcessId,
    /// The task waited on is itself counted as hung.
    pub waits_on_hung: bool,
}

/// A process and its open file descriptors.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FdUser {
    pub process: ProcessId,
    pub open_fds: u64,
    /// Soft RLIMIT_NOFILE; `None` when unlimited or unreadable.
    pub soft_limit: Option<u64>,
    pub usage_ratio: Option<f64>,
    pub growth_per_minute: Option<f64>,
    /// Seconds until `open_fds` reaches `soft_limit` at the fitted rate.
    pub exhaustion_eta_seconds: Option<f64>,
    pub severity: Severity,
    pub exceeds: bool,
}

/// The node's file table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFileHandles {
    pub allocated: u64,
    pub max: u64,
    pub ratio: f64,
    pub severity: Severity,
    pub exceeds: bool,
}

/// A cgroup throttled by its CPU quota.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottledCgroup {
    /// Path below the hierarchy's mount point.
    pub cgroup: String,
    pub version: CgroupVersion,
    /// Pod and container the path names.
    pub attribution: Attribution,
    pub quota_cores: Option<f64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ratio: f64,
    pub throttled_seconds: f64,
    pub pressure_some_avg10: Option<f64>,
    pub severity: Severity,
    pub exceeds: bool,
}

/// The listed offenders of one detector, worst first, at most
/// [`nodemedic_crds::report::MAX_FINDINGS_PER_DETECTOR`] each.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "detector")]
pub enum Offenders {
    Zombies(Vec<ZombieParent>),
    HungTasks {
        /// Threads that may be hung (the detector's offenders).
        threads: Vec<HungThread>,
        /// Threads in D that wait on another task, longest first, at most
        /// [`nodemedic_crds::report::MAX_FINDINGS_PER_DETECTOR`].
        waits: Vec<WaitingThread>,
        /// Waits left out of `waits` by that bound.
        waits_omitted: u64,
    },
    FdLeak {
        processes: Vec<FdUser>,
        node: Option<NodeFileHandles>,
    },
    CpuThrottling(Vec<ThrottledCgroup>),
}

impl Offenders {
    /// The detector these offenders belong to.
    pub fn detector(&self) -> Detector {
        match self {
            Offenders::Zombies(_) => Detector::Zombies,
            Offenders::HungTasks { .. } => Detector::HungTasks,
            Offenders::FdLeak { .. } => Detector::FdLeak,
            Offenders::CpuThrottling(_) => Detector::CpuThrottling,
        }
    }

    /// Number of listed offenders.
    pub fn len(&self) -> usize {
        match self {
            Offenders::Zombies(v) => v.len(),
            Offenders::HungTasks { threads, .. } => threads.len(),
            Offenders::FdLeak { processes, node } => processes.len() + usize::from(node.is_some()),
            Offenders::CpuThrottling(v) => v.len(),
        }
    }

    /// Nothing listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One detector's verdict for one policy and one scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub detector: Detector,
    /// The node-level condition holds in this scan.
    pub exceeded: bool,
    /// The node-level value compared against the threshold, with its unit.
    pub value: f64,
    pub unit: &'static str,
    /// The thresholds that apply, for people (e.g. "50 per node, 20 per parent").
    pub threshold_text: String,
    /// Offenders that would be listed without the size bound.
    pub candidates: u64,
    /// Offenders left out by the size bound.
    pub omitted: u64,
    pub offenders: Offenders,
}

/// Keeps the worst `max` of a sorted list and says how many were cut.
pub(crate) fn bound<T>(items: &mut Vec<T>, max: usize) -> u64 {
    let cut = items.len().saturating_sub(max);
    items.truncate(max);
    cut as u64
}
