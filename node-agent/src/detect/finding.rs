//! The shapes detectors produce.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DetectorKind {
    Zombies,
    HungTasks,
    FdLeak,
    CpuThrottling,
}

impl DetectorKind {
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Zombies => "zombies",
            DetectorKind::HungTasks => "hungTasks",
            DetectorKind::FdLeak => "fdLeak",
            DetectorKind::CpuThrottling => "cpuThrottling",
        }
    }
}

/// How bad one finding is. Ordered so that sorting descending puts the worst first.
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

/// One offender. Identity fields are always present when the detector is
/// about a process; the value fields depend on the detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Option<Severity>,
    pub exceeds: bool,
    /// A short human description of the measured value.
    pub summary: String,

    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<i32>,
    /// stat starttime (clock ticks since boot): with the pid, the identity a
    /// signal request must quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,

    // zombies (per parent)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zombies: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zombies_past_min_age: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_zombie_age_seconds: Option<f64>,
    // hung tasks
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_source: Option<DurationSource>,
    /// Thread name (the process comm is in `comm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    // fd leak
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_fds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_soft_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_usage_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_growth_per_minute: Option<f64>,
    // cpu throttling
    #[serde(skip_serializing_if = "Option::is_none")]
    pub periods: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_periods: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_cores: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_pressure_some_avg10: Option<f64>,
}

/// One detector's verdict for one scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectorReport {
    pub detector: DetectorKind,
    pub enabled: bool,
    /// The node-level condition holds in this scan.
    pub exceeded: bool,
    /// It has held for the policy's `for` duration (hysteresis).
    pub firing: bool,
    /// Seconds the condition has held continuously (0 when not exceeded).
    pub exceeded_for_seconds: f64,
    /// The node-level value compared against the threshold, with its unit.
    pub value: f64,
    pub threshold: f64,
    pub unit: &'static str,
    /// The thresholds that apply, for people (e.g. "50 per node, 20 per parent").
    pub threshold_text: String,
    /// Candidates considered before the top-N cut.
    pub candidates: u64,
    pub findings: Vec<Finding>,
}

impl DetectorReport {
    pub fn disabled(detector: DetectorKind) -> Self {
        Self {
            detector,
            enabled: false,
            exceeded: false,
            firing: false,
            exceeded_for_seconds: 0.0,
            value: 0.0,
            threshold: 0.0,
            unit: "",
            threshold_text: String::new(),
            candidates: 0,
            findings: Vec::new(),
        }
    }
}
