//! `NodeHealthReport`: one per node (name = node name). The operator writes
//! node-local action requests into `spec`; the agent writes what it sees and
//! what it did into `status`.

// Printer columns legitimately repeat `type_ = "integer"`; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::{
    KERNEL_LONG_MAX, MAX_COMM, MAX_COUNT, MAX_CPUS, MAX_FDS, MAX_LABEL_VALUE, MAX_NAME, MAX_PATH,
    MAX_PID, MAX_POLICIES, MAX_TASKS, MAX_WORD,
};
use crate::conditions::{ConditionReason, ConditionStatus, ConditionType};
use crate::policy::ParentSignal;
use crate::remediation::Remediation;

/// Bound on each per-detector findings list (top offenders).
pub const MAX_FINDINGS_PER_DETECTOR: usize = 20;
/// Bound on pending action requests per node.
pub const MAX_ACTION_REQUESTS: usize = 32;
/// Bound on remembered action results per node.
pub const MAX_ACTION_RESULTS: usize = 32;
/// Bound on the policies named in a finding's `exceededUnder`.
pub const MAX_EXCEEDED_UNDER: usize = 64;
/// Bound on the messages of conditions and action results (characters).
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Operator → agent: node-local actions to carry out.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "nodemedic.io",
    version = "v1alpha1",
    kind = "NodeHealthReport",
    plural = "nodehealthreports",
    singular = "nodehealthreport",
    shortname = "nhr",
    category = "nodemedic",
    status = "NodeHealthReportStatus",
    cel,
    doc = "The health of one node as seen by the nodemedic agent (status), and the node-local actions the operator asks the agent to carry out (spec). Named after its Node.",
    printcolumn(
        name = "Healthy",
        type_ = "boolean",
        json_path = ".status.healthy",
        description = "No detector fires under any policy"
    ),
    printcolumn(
        name = "Problems",
        type_ = "string",
        json_path = ".status.problems",
        description = "Firing detectors and their worst offender"
    ),
    printcolumn(
        name = "Zombies",
        type_ = "integer",
        json_path = ".status.summary.tasks.zombie",
        description = "Zombie processes on the node"
    ),
    printcolumn(
        name = "D-State",
        type_ = "integer",
        json_path = ".status.summary.tasks.uninterruptible",
        description = "Threads in uninterruptible sleep"
    ),
    printcolumn(
        name = "Load1",
        type_ = "number",
        json_path = ".status.summary.load.one",
        description = "1-minute load average"
    ),
    printcolumn(
        name = "Scanned",
        type_ = "date",
        json_path = ".status.lastScanTime",
        description = "Time of the last scan"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealthReportSpec {
    /// Node-local actions requested by the operator, oldest first. The agent
    /// executes each id once and records the outcome in status.actionResults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub action_requests: Vec<ActionRequest>,

    /// Deprecated: where operators before the NodeRemediation kind kept
    /// their remediation ledger. The operator reads it once, moves it into
    /// the node's NodeRemediation and drops it from here; nothing writes it
    /// any more.
    #[serde(default, skip_serializing_if = "Remediation::is_empty")]
    pub remediation: Remediation,
}

/// One node-local action.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.action != 'SignalParent' || (has(self.target) && has(self.signal))")
    .message("a SignalParent request needs target and signal"))]
#[x_kube(validation = Rule::new("self.action == 'SignalParent' || (!has(self.target) && !has(self.signal))")
    .message("target and signal are only meaningful for SignalParent"))]
pub struct ActionRequest {
    /// Unique id, chosen by the operator; results refer to it. The agent
    /// executes each id at most once.
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// The action.
    pub action: NodeAction,
    /// SignalParent: the process to signal, as observed in the report the
    /// decision was based on. The agent re-verifies it (pidfd + start time)
    /// before acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ProcessTarget>,
    /// SignalParent: the signal to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<ParentSignal>,
    /// Policy that decided the action.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// When the operator requested it (the operator's clock; informational
    /// for the agent, whose action TTL runs on its own clock from when it
    /// first sees the request).
    pub requested_at: Time,
    /// Human-readable reason, copied into the Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// Actions the agent carries out on its node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeAction {
    /// Signal a zombie parent (pidfd + start-time re-verification).
    SignalParent,
    /// Create the reboot daemon's sentinel file (the path kured is started
    /// with as --reboot-sentinel) on the node.
    RequestReboot,
}

pub use crate::process::ProcessTarget;
pub use crate::scope::{CulpritPod, ProblemScope};

/// Agent → everyone: what the node looks like.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealthReportStatus {
    /// When the last scan finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_time: Option<Time>,
    /// Wall time the last scan took, e.g. "42ms".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub scan_duration: Option<String>,
    /// Version of the agent that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub agent_version: Option<String>,
    /// How often the agent scans, e.g. "10s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub scan_interval: Option<String>,
    /// The longest the agent goes without writing this status, e.g. "5m".
    /// A report whose lastScanTime is older than three heartbeats is stale:
    /// the operator plans nothing from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub heartbeat_interval: Option<String>,
    /// False when any detector fires under any policy.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Short human summary of what fires, e.g. "zombies(212 under php-fpm)".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 4096))]
    pub problems: String,
    /// Node-wide figures.
    #[serde(default)]
    pub summary: NodeSummary,
    /// Top offenders per detector, also below thresholds.
    #[serde(default)]
    pub findings: Findings,
    /// Threads in D state that wait on another task and are not counted as
    /// hung (a parent in vfork() waiting for its child to exec or exit),
    /// longest blocked first; at most 20 (summary.waitingTasks counts all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub waiting_tasks: Vec<WaitingTaskFinding>,
    /// Per policy and detector: is it firing, since when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["policy".into(), "type".into()]))]
    pub conditions: Vec<PolicyCondition>,
    /// Outcomes of spec.actionRequests, most recent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub action_results: Vec<ActionResult>,
    /// Pid headroom of the node and of its pods, with the time until each
    /// runs out at the current trend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsStatus>,
    /// Problems reading /proc and cgroupfs during the last scan.
    #[serde(default)]
    pub scan_errors: ScanErrors,
}

/// Bound on the pods listed in status.pids.pods.
pub const MAX_POD_PIDS: usize = 20;

/// Pid headroom of the node and of its pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PidsStatus {
    /// The node: tasks against kernel.pid_max and kernel.threads-max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodePids>,
    /// Pods with a pids cgroup, soonest exhaustion first, then the fullest;
    /// at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub pods: Vec<PodPids>,
    /// Pods left out of `pods` by its bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = crate::bounds::MAX_PODS))]
    pub pods_omitted: u32,
}

/// The node's pids.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodePids {
    /// Tasks (threads, zombies included) on the node: nr_threads of
    /// /proc/loadavg.
    #[schemars(range(max = MAX_TASKS))]
    pub tasks: u32,
    /// kernel.pid_max, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_TASKS))]
    pub pid_max: Option<u32>,
    /// kernel.threads-max, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_COUNT))]
    pub threads_max: Option<u64>,
    /// The smaller of pidMax and threadsMax: what a fork hits first.
    #[schemars(range(max = MAX_COUNT))]
    pub limit: u64,
    /// limit − tasks (0 when at or above it).
    #[schemars(range(max = MAX_COUNT))]
    pub headroom: u64,
    /// Zombies on the node (summary.tasks.zombie) / tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub zombie_share: Option<f64>,
    /// Growth in tasks per minute over the last 10 minutes (Theil–Sen),
    /// once 5 minutes are sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1e12, max = 1e12))]
    pub growth_per_minute: Option<f64>,
    /// Seconds until tasks reach limit at that growth; absent when the
    /// task count is not rising significantly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub exhaustion_eta_seconds: Option<u64>,
}

/// Where a pod's pid limit comes from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PidsLimitSource {
    /// The pod cgroup's pids.max (kubelet's podPidsLimit).
    #[default]
    PodCgroup,
    /// pids.max is "max": the node's limit applies.
    Node,
}

/// One pod's pids cgroup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodPids {
    /// The pod (UID from the cgroup path; namespace and name when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// The pod's cgroup, relative to the pids hierarchy's mount.
    #[schemars(length(max = MAX_PATH))]
    pub cgroup: String,
    /// pids.current: tasks charged to the pod, zombies included.
    #[schemars(range(max = MAX_COUNT))]
    pub current: u64,
    /// The limit that applies: pids.max, or the node's limit when pids.max
    /// is "max".
    #[schemars(range(max = MAX_COUNT))]
    pub limit: u64,
    /// PodCgroup or Node.
    pub limit_source: PidsLimitSource,
    /// limit − current (0 when at or above it).
    #[schemars(range(max = MAX_COUNT))]
    pub headroom: u64,
    /// Zombies whose parent runs in the pod.
    #[schemars(range(max = MAX_TASKS))]
    pub zombies: u32,
    /// zombies / current: how much of the pod's pid use is zombies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub zombie_share: Option<f64>,
    /// Growth of pids.current per minute over the last 10 minutes
    /// (Theil–Sen), once 5 minutes are sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1e12, max = 1e12))]
    pub growth_per_minute: Option<f64>,
    /// Seconds until current reaches limit at that growth; absent when
    /// pids.current is not rising significantly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub exhaustion_eta_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Node-wide figures from /proc.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    /// Tasks by state (processes, plus threads for D state).
    #[serde(default)]
    pub tasks: TaskCounts,
    /// Load average, split into its runnable and blocked parts.
    #[serde(default)]
    pub load: LoadSummary,
    /// Pressure stall information, where the kernel provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<PressureSummary>,
    /// Allocated file handles (/proc/sys/fs/file-nr).
    #[serde(default)]
    #[schemars(range(max = KERNEL_LONG_MAX))]
    pub file_handles_allocated: u64,
    /// fs.file-max.
    #[serde(default)]
    #[schemars(range(max = KERNEL_LONG_MAX))]
    pub file_handles_max: u64,
    /// kernel.hung_task_timeout_secs, when the kernel has the hung-task detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = KERNEL_LONG_MAX))]
    pub hung_task_timeout_secs: Option<u64>,
    /// kernel.hung_task_detect_count, where the kernel has it (Linux 6.11
    /// and later): hung-task reports of the kernel's khungtaskd since boot,
    /// cumulative. khungtaskd skips killable waits (NFS, FUSE after a
    /// signal, vfork), so it can stay at 0 while hungTasks counts threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = KERNEL_LONG_MAX))]
    pub hung_task_detect_count: Option<u64>,
    /// Threads nodemedic counts as hung now: in D state for the hungTasks
    /// minDuration, waits that are not hangs left out; the largest count
    /// under the policies that configure hungTasks (absent when none does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_TASKS))]
    pub hung_tasks: Option<u32>,
    /// Threads in D state that wait on another task and are not counted as
    /// hung (listed in status.waitingTasks); absent when no policy
    /// configures hungTasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_TASKS))]
    pub waiting_tasks: Option<u32>,
}

/// Counts by /proc state letter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    /// Processes.
    #[schemars(range(max = MAX_TASKS))]
    pub processes: u32,
    /// Threads (all tasks).
    #[schemars(range(max = MAX_TASKS))]
    pub threads: u32,
    /// Processes in R.
    #[schemars(range(max = MAX_TASKS))]
    pub running: u32,
    /// Processes in S.
    #[schemars(range(max = MAX_TASKS))]
    pub sleeping: u32,
    /// Threads in D (uninterruptible sleep).
    #[schemars(range(max = MAX_TASKS))]
    pub uninterruptible: u32,
    /// Processes in Z.
    #[schemars(range(max = MAX_TASKS))]
    pub zombie: u32,
    /// Processes in T or t.
    #[schemars(range(max = MAX_TASKS))]
    pub stopped: u32,
    /// Processes in I (idle kernel threads).
    #[schemars(range(max = MAX_TASKS))]
    pub idle: u32,
}

/// /proc/loadavg, with the instantaneous split that explains it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadSummary {
    /// 1-minute load average.
    #[schemars(range(min = 0, max = MAX_TASKS))]
    pub one: f64,
    /// 5-minute load average.
    #[schemars(range(min = 0, max = MAX_TASKS))]
    pub five: f64,
    /// 15-minute load average.
    #[schemars(range(min = 0, max = MAX_TASKS))]
    pub fifteen: f64,
    /// Runnable tasks now (procs_running).
    #[schemars(range(max = MAX_TASKS))]
    pub runnable: u32,
    /// Tasks blocked on I/O now (procs_blocked). High load with low CPU and a
    /// high blocked count means D-state tasks, not CPU demand.
    #[schemars(range(max = MAX_TASKS))]
    pub blocked: u32,
    /// Online CPUs, to read the load against.
    #[schemars(range(max = MAX_CPUS))]
    pub cpus: u32,
}

/// PSI for the node (/proc/pressure).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PressureSummary {
    /// CPU pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Pressure>,
    /// Memory pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Pressure>,
    /// I/O pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<Pressure>,
}

/// avg10 percentages from one pressure file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    /// Percent of the last 10 s in which some task stalled.
    #[schemars(range(min = 0, max = 100))]
    pub some_avg10: f64,
    /// Percent of the last 10 s in which all non-idle tasks stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub full_avg10: Option<f64>,
}

/// Top offenders per detector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    /// Parents with the most zombies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub zombies: Vec<ZombieFinding>,
    /// Threads in D state, longest blocked first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub hung_tasks: Vec<HungTaskFinding>,
    /// Processes closest to their fd limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub fd_leak: Vec<FdLeakFinding>,
    /// The node's file table (file-nr against fs.file-max), part of the
    /// fdLeak detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_file_handles: Option<NodeFileHandlesFinding>,
    /// Most throttled containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub cpu_throttling: Vec<CpuThrottlingFinding>,
    /// Offenders left out of the lists above by their size bound.
    #[serde(default, skip_serializing_if = "OmittedFindings::is_empty")]
    pub omitted: OmittedFindings,
}

/// How many offenders per detector did not fit into the report.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OmittedFindings {
    /// Zombie parents not listed.
    #[serde(default)]
    #[schemars(range(max = MAX_TASKS))]
    pub zombies: u32,
    /// D-state threads not listed.
    #[serde(default)]
    #[schemars(range(max = MAX_TASKS))]
    pub hung_tasks: u32,
    /// fd users not listed.
    #[serde(default)]
    #[schemars(range(max = MAX_TASKS))]
    pub fd_leak: u32,
    /// Throttled cgroups not listed.
    #[serde(default)]
    #[schemars(range(max = MAX_TASKS))]
    pub cpu_throttling: u32,
}

impl OmittedFindings {
    /// Nothing was left out.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The node's file table.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeFileHandlesFinding {
    /// Allocated file handles (file-nr).
    #[schemars(range(max = KERNEL_LONG_MAX))]
    pub allocated: u64,
    /// fs.file-max.
    #[schemars(range(max = KERNEL_LONG_MAX))]
    pub max: u64,
    /// allocated / max.
    #[schemars(range(min = 0))]
    pub ratio: f64,
    /// Whether nodeFileRatio is reached under any policy.
    pub exceeded: bool,
    /// Policies under whose thresholds it is exceeded (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = MAX_NAME)))]
    pub exceeded_under: Vec<String>,
    /// Policies under which it is exceeded that did not fit into
    /// exceededUnder.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = MAX_POLICIES))]
    pub exceeded_under_omitted: u32,
}

/// A process as the agent saw it, with its workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRef {
    /// PID in the host PID namespace.
    #[schemars(range(min = 0, max = MAX_PID))]
    pub host_pid: i32,
    /// PID inside the process's own PID namespace (innermost NSpid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_PID))]
    pub ns_pid: Option<i32>,
    /// Command name (comm).
    #[schemars(length(max = MAX_COMM))]
    pub comm: String,
    /// Start time in clock ticks after boot; with hostPid it identifies the
    /// process across PID reuse.
    #[schemars(range(max = MAX_COUNT))]
    pub start_time: u64,
    /// Pod and container, when the cgroup names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// The pod and container a process belongs to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Pod UID from the cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub pod_uid: Option<String>,
    /// Pod namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LABEL_VALUE))]
    pub pod_namespace: Option<String>,
    /// Pod name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME))]
    pub pod_name: Option<String>,
    /// Container name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME))]
    pub container: Option<String>,
    /// Container ID from the cgroup path (64 hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub container_id: Option<String>,
    /// Container runtime the cgroup path belongs to: containerd, cri-o or docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub runtime: Option<String>,
}

/// A parent holding zombies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZombieFinding {
    /// The parent that does not reap.
    pub parent: ProcessRef,
    /// Zombies under this parent.
    #[schemars(range(max = MAX_TASKS))]
    pub zombies: u32,
    /// Zombies older than the policy's minAge.
    #[schemars(range(max = MAX_TASKS))]
    pub zombies_past_min_age: u32,
    /// Age of the oldest zombie, seconds.
    #[schemars(range(max = MAX_COUNT))]
    pub oldest_age_seconds: u64,
    /// Whether this parent exceeds perParentThreshold under any policy.
    pub exceeded: bool,
    /// Policies under whose thresholds it exceeds (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = MAX_NAME)))]
    pub exceeded_under: Vec<String>,
    /// Policies under which it exceeds that did not fit into exceededUnder.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = MAX_POLICIES))]
    pub exceeded_under_omitted: u32,
}

/// A thread in D state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HungTaskFinding {
    /// The process owning the thread.
    pub process: ProcessRef,
    /// Thread id (host namespace).
    #[schemars(range(min = 0, max = MAX_PID))]
    pub tid: i32,
    /// Thread name.
    #[schemars(length(max = MAX_COMM))]
    pub thread_comm: String,
    /// How long it has been in D state without a context switch, seconds.
    #[schemars(range(max = MAX_COUNT))]
    pub blocked_seconds: u64,
    /// Kernel function it waits in (/proc/TID/wchan), when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub wchan: Option<String>,
    /// Whether it is blocked longer than minDuration under any policy.
    pub exceeded: bool,
    /// Policies under whose thresholds it exceeds (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = MAX_NAME)))]
    pub exceeded_under: Vec<String>,
    /// Policies under which it exceeds that did not fit into exceededUnder.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = MAX_POLICIES))]
    pub exceeded_under_omitted: u32,
}

/// A thread in D state that waits on another task: not a hang.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaitingTaskFinding {
    /// The process owning the thread.
    pub process: ProcessRef,
    /// Thread id (host namespace).
    #[schemars(range(min = 0, max = MAX_PID))]
    pub tid: i32,
    /// Thread name.
    #[schemars(length(max = MAX_COMM))]
    pub thread_comm: String,
    /// How long it has been in D state without a context switch, seconds.
    #[schemars(range(max = MAX_COUNT))]
    pub blocked_seconds: u64,
    /// What it waits for.
    pub reason: WaitReason,
    /// The task it waits on (for VforkChild, the child). When that task is
    /// stuck, it is listed in findings.hungTasks itself.
    pub waits_on: ProcessRef,
    /// The task waited on is itself counted as hung.
    #[serde(default)]
    pub waits_on_hung: bool,
}

/// Why a thread in D state is not counted as hung.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// Blocked in vfork() until its child calls execve or exits.
    #[default]
    VforkChild,
}

impl WaitReason {
    /// The stable name (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            WaitReason::VforkChild => "VforkChild",
        }
    }
}

/// A process and its fd usage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FdLeakFinding {
    /// The process.
    pub process: ProcessRef,
    /// Open file descriptors.
    #[schemars(range(max = MAX_FDS))]
    pub open_fds: u64,
    /// Soft RLIMIT_NOFILE, when finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_COUNT))]
    pub soft_limit: Option<u64>,
    /// openFds / softLimit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub usage_ratio: Option<f64>,
    /// Growth in fds per minute over the growth window (a Theil–Sen fit of
    /// the samples), once the window is half full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_per_minute: Option<f64>,
    /// Seconds until openFds reaches softLimit at the fitted growth rate.
    /// Absent without a finite soft limit, before the fit window is half
    /// full, and when fd usage is not rising significantly (Mann–Kendall,
    /// one-sided 99.9%); 0 when at the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub exhaustion_eta_seconds: Option<u64>,
    /// Whether usageRatio, the growth rule or exhaustionWithin is exceeded
    /// under any policy.
    pub exceeded: bool,
    /// Policies under whose thresholds it exceeds (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = MAX_NAME)))]
    pub exceeded_under: Vec<String>,
    /// Policies under which it exceeds that did not fit into exceededUnder.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = MAX_POLICIES))]
    pub exceeded_under_omitted: u32,
}

/// A throttled container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuThrottlingFinding {
    /// Pod and container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// cgroup path relative to the cgroup mount.
    #[schemars(length(max = MAX_PATH))]
    pub cgroup: String,
    /// CPU limit in cores (quota / period); absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_cores: Option<f64>,
    /// CFS periods elapsed in the window.
    #[schemars(range(max = MAX_COUNT))]
    pub periods: u64,
    /// Periods in which the container was throttled.
    #[schemars(range(max = MAX_COUNT))]
    pub throttled_periods: u64,
    /// throttledPeriods / periods.
    #[schemars(range(min = 0, max = 1))]
    pub throttled_ratio: f64,
    /// Total time throttled in the window, seconds.
    #[schemars(range(min = 0))]
    pub throttled_seconds: f64,
    /// cpu.pressure some avg10 of the cgroup (cgroup v2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub pressure_some_avg10: Option<f64>,
    /// Whether throttledRatio is exceeded under any policy.
    pub exceeded: bool,
    /// Policies under whose thresholds it exceeds (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = MAX_NAME)))]
    pub exceeded_under: Vec<String>,
    /// Policies under which it exceeds that did not fit into exceededUnder.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = MAX_POLICIES))]
    pub exceeded_under_omitted: u32,
}

/// Whether a detector fires for a node under one policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// Policy name.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// ZombiesDetected, HungTasksDetected, FdLeakDetected or CpuThrottlingDetected.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// True while firing (exceeded for the detector's `for`, and until it has
    /// been clear for as long), otherwise False.
    pub status: ConditionStatus,
    /// ThresholdExceeded, Clearing (True); Pending, BelowThreshold (False).
    pub reason: ConditionReason,
    /// Human explanation with the worst offender.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub message: String,
    /// When status last changed: for a True condition, when the detector
    /// started firing. Survives agent restarts.
    pub last_transition_time: Time,
    /// Since when the threshold has been exceeded without a break (absent
    /// while below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceeded_since: Option<Time>,
    /// Where the problem lives while the threshold is exceeded: Pod when
    /// every offender is in one pod (named in `culprit`), Node for host
    /// processes or offenders in two or more pods. Absent while nothing
    /// exceeds, and from agents older than this field (read as Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ProblemScope>,
    /// The pod a Pod-scoped problem lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<CulpritPod>,
}

/// Outcome of an action request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// The request id.
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// What happened.
    pub outcome: ActionResultOutcome,
    /// Details, e.g. the refusal reason.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub message: String,
    /// Why the agent did not carry it out (outcomes Refused, TargetChanged
    /// and TargetGone): a stable word for alerts and dashboards, also the
    /// `reason` label of the agent's actions metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ActionRefusal>,
    /// When the agent finished handling it (for InProgress: when it accepted it).
    pub completed_at: Time,
    /// For a delivered SignalParent: what became of the zombies under the
    /// signalled parent, from the scans after the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<SignalFollowUp>,
}

// Why the agent did not carry out a request. The agent re-verifies every
// request against its own view (its watched policies and its latest scan)
// before acting: the operator's word is necessary, never sufficient. No
// type-level doc: on an optional enum it would replace the field's doc in
// the generated schema.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionRefusal {
    /// The request is incomplete or contradictory (e.g. SignalParent
    /// without target or signal, a target or signal on RequestReboot).
    MalformedRequest,
    /// No policy of that name exists in the agent's view.
    UnknownPolicy,
    /// The named policy cannot be evaluated (a threshold, duration or
    /// selector it cannot read).
    PolicyInvalid,
    /// The named policy does not select this node.
    PolicyDoesNotSelectNode,
    /// The named policy is in Observe or DryRun mode.
    PolicyNotEnforcing,
    /// The policy's ladder has no step with this action (for SignalParent:
    /// the zombies ladder).
    StepNotInLadder,
    /// The policy's zombies ladder has SignalParent, but not with this
    /// signal (a step without `signal` means SIGCHLD).
    SignalNotInLadder,
    /// In the agent's latest scan the target is not the parent of any zombie.
    NotAZombieParent,
    /// The target has fewer zombies older than the policy's minAge than its
    /// perParentThreshold.
    BelowPerParentThreshold,
    /// The target runs in a pod of one of the policy's excludeNamespaces.
    ExcludedNamespace,
    /// The target runs in a pod whose namespace the agent cannot tell, and
    /// the policy excludes namespaces.
    NamespaceUnknown,
    /// The target's name matches a built-in protected process or the
    /// policy's protectedProcesses.
    ProtectedProcess,
    /// PID 1 of the host, or a non-positive pid.
    InitProcess,
    /// The target is a kernel thread.
    KernelThread,
    /// The target is the agent itself.
    OwnProcess,
    /// The pid now belongs to another process than the requested one.
    TargetChanged,
    /// The target has exited.
    TargetGone,
    /// The agent saw the request, without executing it, for longer than its
    /// action TTL (measured on the agent's own monotonic clock).
    Expired,
    /// RequestReboot on an agent without a reboot sentinel configured.
    RebootNotEnabled,
    /// The reboot sentinel path exists but is a symbolic link or not a
    /// regular file.
    SentinelUnsafe,
    /// RequestReboot: in the agent's latest report no detector whose ladder
    /// holds the step is firing, or none has fired for the step's `after`.
    NotFiring,
    /// RequestReboot: the firing problem is contained in one pod and the
    /// step's ladder offers no pod-level step (SignalParent, EvictPod)
    /// before it; or the step is for the other scope.
    OutOfScope,
}

impl ActionRefusal {
    /// The stable name (as serialized, and as the metric label).
    pub fn name(self) -> &'static str {
        match self {
            ActionRefusal::MalformedRequest => "MalformedRequest",
            ActionRefusal::UnknownPolicy => "UnknownPolicy",
            ActionRefusal::PolicyInvalid => "PolicyInvalid",
            ActionRefusal::PolicyDoesNotSelectNode => "PolicyDoesNotSelectNode",
            ActionRefusal::PolicyNotEnforcing => "PolicyNotEnforcing",
            ActionRefusal::StepNotInLadder => "StepNotInLadder",
            ActionRefusal::SignalNotInLadder => "SignalNotInLadder",
            ActionRefusal::NotAZombieParent => "NotAZombieParent",
            ActionRefusal::BelowPerParentThreshold => "BelowPerParentThreshold",
            ActionRefusal::ExcludedNamespace => "ExcludedNamespace",
            ActionRefusal::NamespaceUnknown => "NamespaceUnknown",
            ActionRefusal::ProtectedProcess => "ProtectedProcess",
            ActionRefusal::InitProcess => "InitProcess",
            ActionRefusal::KernelThread => "KernelThread",
            ActionRefusal::OwnProcess => "OwnProcess",
            ActionRefusal::TargetChanged => "TargetChanged",
            ActionRefusal::TargetGone => "TargetGone",
            ActionRefusal::Expired => "Expired",
            ActionRefusal::RebootNotEnabled => "RebootNotEnabled",
            ActionRefusal::SentinelUnsafe => "SentinelUnsafe",
            ActionRefusal::NotFiring => "NotFiring",
            ActionRefusal::OutOfScope => "OutOfScope",
        }
    }

    /// The outcome a request with this refusal gets.
    pub fn outcome(self) -> ActionResultOutcome {
        match self {
            ActionRefusal::TargetChanged => ActionResultOutcome::TargetChanged,
            ActionRefusal::TargetGone => ActionResultOutcome::TargetGone,
            _ => ActionResultOutcome::Refused,
        }
    }
}

/// What the scans after a SignalParent saw.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignalFollowUp {
    /// Zombies under the parent when it was signalled.
    #[schemars(range(max = MAX_TASKS))]
    pub zombies_before: u32,
    /// Zombies under the same parent (pid and start time) now; 0 once the
    /// parent has exited.
    #[schemars(range(max = MAX_TASKS))]
    pub zombies_now: u32,
    /// The parent process has exited.
    pub parent_exited: bool,
    /// Every zombie that was there at signal time has been reaped.
    pub reaped: bool,
    /// When the agent last checked.
    pub checked_at: Time,
}

/// Outcomes of a node-local action.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionResultOutcome {
    /// Accepted and being carried out. Written before acting, so that a
    /// restarted agent never executes the same request twice.
    InProgress,
    /// The signal was delivered to the verified target.
    Signalled,
    /// A non-signal action (RequestReboot) was carried out.
    Completed,
    /// The target had exited.
    TargetGone,
    /// The pid now belongs to another process (start time or parent differ).
    TargetChanged,
    /// Refused: the agent's own checks do not back the request (see
    /// `reason`): policy, ladder, target, protection, or the action TTL.
    Refused,
    /// The attempt failed (e.g. permission denied), or an InProgress request
    /// was interrupted by an agent restart and is not retried.
    Failed,
}

impl ActionResultOutcome {
    /// Whether the agent is done with the request.
    pub fn is_final(self) -> bool {
        self != ActionResultOutcome::InProgress
    }
}

/// Read problems counted during a scan; a scan never aborts on them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScanErrors {
    /// Processes or threads that exited while being read.
    #[schemars(range(max = MAX_COUNT))]
    pub vanished: u64,
    /// Files the agent was not allowed to read.
    #[schemars(range(max = MAX_COUNT))]
    pub permission_denied: u64,
    /// Files whose content could not be parsed.
    #[schemars(range(max = MAX_COUNT))]
    pub unparsable: u64,
    /// Other read errors (EIO and the like, e.g. from a sick disk).
    #[serde(default)]
    #[schemars(range(max = MAX_COUNT))]
    pub io_errors: u64,
    /// cgroup directories not walked because the scan's cgroup bound was hit.
    #[serde(default)]
    #[schemars(range(max = MAX_COUNT))]
    pub cgroups_truncated: u64,
}
