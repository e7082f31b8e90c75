//! `NodeHealthPolicy`: what an SRE declares — which nodes, which detectors
//! with which thresholds, what to do about it, and within which safety limits.

// Printer columns legitimately repeat `type_ = "integer"`; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::{
    MAX_ACTIONS, MAX_FDS, MAX_MESSAGE, MAX_MIN_PERIODS, MAX_NAME, MAX_NODES, MAX_TASKS, MAX_WORD,
};
use crate::duration::KubeDuration;

/// Desired behaviour of nodemedic for the nodes this policy selects.
/// Finalizer the operator puts on every policy it manages: a deleted policy
/// stays until the operator has released what it holds (its episodes and
/// requests, its cordons and taints where no other policy holds them).
pub const RELEASE_FINALIZER: &str = "nodemedic.io/release";

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodemedic.io",
    version = "v1alpha1",
    kind = "NodeHealthPolicy",
    plural = "nodehealthpolicies",
    singular = "nodehealthpolicy",
    shortname = "nhp",
    category = "nodemedic",
    status = "NodeHealthPolicyStatus",
    cel,
    doc = "Declares which nodes nodemedic watches, which process-level problems it detects there (zombies, hung D-state tasks, file-descriptor leaks, CPU throttling), and which remediations it may take within safety budgets.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Observe, DryRun or Enforce"
    ),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        json_path = ".status.matchedNodes",
        description = "Nodes selected by this policy"
    ),
    printcolumn(
        name = "Unhealthy",
        type_ = "integer",
        json_path = ".status.unhealthyNodes",
        description = "Selected nodes with at least one detector firing"
    ),
    printcolumn(
        name = "Actions",
        type_ = "integer",
        json_path = ".status.actionsLast24h",
        description = "Remediation actions taken or planned in the last 24 hours"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.actions) || !has(self.actions.zombies) || size(self.actions.zombies) == 0 || has(self.detectors.zombies)"
).message("actions.zombies needs detectors.zombies to be configured"))]
#[x_kube(validation = Rule::new(
    "!has(self.actions) || !has(self.actions.hungTasks) || size(self.actions.hungTasks) == 0 || has(self.detectors.hungTasks)"
).message("actions.hungTasks needs detectors.hungTasks to be configured"))]
#[x_kube(validation = Rule::new(
    "!has(self.actions) || !has(self.actions.fdLeak) || size(self.actions.fdLeak) == 0 || has(self.detectors.fdLeak)"
).message("actions.fdLeak needs detectors.fdLeak to be configured"))]
#[x_kube(validation = Rule::new(
    "!has(self.actions) || !has(self.actions.cpuThrottling) || size(self.actions.cpuThrottling) == 0 || has(self.detectors.cpuThrottling)"
).message("actions.cpuThrottling needs detectors.cpuThrottling to be configured"))]
#[serde(rename_all = "camelCase")]
pub struct NodeHealthPolicySpec {
    /// Selects the Nodes (by their labels) this policy applies to. Omitted or
    /// empty selects every node. Full LabelSelector semantics: all matchLabels
    /// and all matchExpressions (In, NotIn, Exists, DoesNotExist) must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::bounded::label_selector")]
    pub node_selector: Option<LabelSelector>,

    /// Observe: report findings only. DryRun: also plan remediations and record
    /// them (status, Events) without executing any. Enforce: execute them
    /// within the safety budgets. Defaults to DryRun.
    #[serde(default)]
    pub mode: PolicyMode,

    /// Problem detectors. A detector that is omitted is not evaluated for the
    /// selected nodes. At least one must be configured.
    pub detectors: Detectors,

    /// Escalation ladders: per detector, the actions to take while it keeps
    /// firing on a node. Omitted ladders mean report only.
    #[serde(default)]
    #[x_kube(validation = Rule::new(
        "(!has(self.hungTasks) || self.hungTasks.all(s, s.action != 'SignalParent')) && (!has(self.fdLeak) || self.fdLeak.all(s, s.action != 'SignalParent')) && (!has(self.cpuThrottling) || self.cpuThrottling.all(s, s.action != 'SignalParent'))"
    ).message("SignalParent applies only to the zombies detector"))]
    pub actions: Actions,

    /// Limits that keep remediation from making an incident worse.
    #[serde(default)]
    pub safety: Safety,
}

/// How far nodemedic may go for nodes selected by a policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PolicyMode {
    /// Report findings only; plan nothing.
    Observe,
    /// Plan and record remediations, execute none.
    #[default]
    DryRun,
    /// Execute remediations within the safety budgets.
    Enforce,
}

/// The four detectors. Each is optional; an omitted detector is off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.zombies) || has(self.hungTasks) || has(self.fdLeak) || has(self.cpuThrottling)"
).message("at least one detector must be configured: zombies, hungTasks, fdLeak or cpuThrottling"))]
pub struct Detectors {
    /// Zombie (defunct) processes whose parent never calls wait(). They hold
    /// PID slots; a buildup exhausts pid_max or the pids cgroup limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombies: Option<ZombieDetector>,

    /// Threads stuck in uninterruptible sleep (state D), typically behind a
    /// dead NFS server or a failing disk. They cannot be killed and inflate
    /// the load average while the CPU idles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hung_tasks: Option<HungTaskDetector>,

    /// Processes whose open file descriptors approach their soft
    /// RLIMIT_NOFILE (ulimit -n), and the node-wide file table (file-nr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_leak: Option<FdLeakDetector>,

    /// Containers throttled by their CFS quota: latency spikes with low
    /// average CPU use. cgroup v1 and v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttling: Option<CpuThrottlingDetector>,
}

/// Zombie buildup thresholds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZombieDetector {
    /// Fires when the node holds at least this many zombies (each older than
    /// minAge). Default 50.
    #[serde(default = "defaults::zombie_threshold")]
    #[schemars(range(min = 1, max = MAX_TASKS))]
    pub threshold: u32,

    /// Fires when a single parent holds at least this many zombies, whatever
    /// the node total. This is the signal SignalParent acts on. Default 20.
    #[serde(default = "defaults::zombie_per_parent_threshold")]
    #[schemars(range(min = 1, max = MAX_TASKS))]
    pub per_parent_threshold: u32,

    /// Zombies younger than this are ignored: a healthy parent reaps its
    /// children within moments. Default "60s".
    #[serde(default = "defaults::zombie_min_age")]
    pub min_age: KubeDuration,

    /// The condition must hold continuously for this long before the detector
    /// fires (and clear for as long before it resolves). Default "2m".
    #[serde(rename = "for", default = "defaults::zombie_for")]
    pub for_duration: KubeDuration,
}

/// Hung (D-state) task thresholds, per thread.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.minDuration) >= duration('1s')")
    .message("hungTasks.minDuration must be at least 1s"))]
pub struct HungTaskDetector {
    /// A thread counts as hung once it has been in state D, without a single
    /// context switch, for this long. Default "120s", like the kernel's
    /// hung_task_timeout_secs.
    #[serde(default = "defaults::hung_min_duration")]
    pub min_duration: KubeDuration,

    /// Fires when at least this many threads on the node are hung. Default 1.
    #[serde(default = "defaults::hung_threshold")]
    #[schemars(range(min = 1, max = MAX_TASKS))]
    pub threshold: u32,

    /// The condition must hold continuously for this long before the
    /// detector fires. Default "0s": minDuration already demands persistence.
    #[serde(rename = "for", default = "defaults::hung_for")]
    pub for_duration: KubeDuration,
}

/// File-descriptor leak thresholds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.usageRatio > 0.0 && self.usageRatio <= 1.0")
    .message("usageRatio must be in (0, 1]"))]
#[x_kube(validation = Rule::new("self.nodeFileRatio > 0.0 && self.nodeFileRatio <= 1.0")
    .message("nodeFileRatio must be in (0, 1]"))]
#[x_kube(validation = Rule::new("!has(self.exhaustionWithin) || (duration(self.exhaustionWithin) >= duration('1m') && duration(self.exhaustionWithin) <= duration('168h'))")
    .message("exhaustionWithin must be from 1m to 168h"))]
pub struct FdLeakDetector {
    /// Fires for a process whose open fds reach this fraction of its soft
    /// RLIMIT_NOFILE. In (0, 1]. Default 0.8.
    #[serde(default = "defaults::fd_usage_ratio")]
    pub usage_ratio: f64,

    /// Processes with fewer open fds than this are never reported as
    /// leaking, whatever their limit. Default 256.
    #[serde(default = "defaults::fd_min_open")]
    #[schemars(range(max = MAX_FDS))]
    pub min_open_fds: u64,

    /// Optional growth rule: also fire when a process keeps opening fds
    /// faster than this over the window, before it reaches the ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth: Option<FdGrowth>,

    /// Optional time-to-exhaustion rule: also fire for a process (with at
    /// least minOpenFds) that reaches its soft RLIMIT_NOFILE within this
    /// long at its fd growth rate, e.g. "1h". The rate is a robust fit
    /// (Theil–Sen) over growth.window (10m when growth is omitted); a
    /// process without a significant rising trend has no ETA and never
    /// fires this rule. From 1m to 168h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhaustion_within: Option<KubeDuration>,

    /// Fires for the node when allocated file handles (/proc/sys/fs/file-nr)
    /// reach this fraction of fs.file-max. In (0, 1]. Default 0.9.
    #[serde(default = "defaults::fd_node_file_ratio")]
    pub node_file_ratio: f64,

    /// The condition must hold continuously for this long before the
    /// detector fires. Default "2m".
    #[serde(rename = "for", default = "defaults::fd_for")]
    pub for_duration: KubeDuration,
}

/// Fd growth-rate rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minFdsPerMinute > 0.0")
    .message("growth.minFdsPerMinute must be greater than 0"))]
#[x_kube(validation = Rule::new("duration(self.window) >= duration('1m')")
    .message("growth.window must be at least 1m so that bursts are not mistaken for leaks"))]
pub struct FdGrowth {
    /// Minimum sustained growth, in open fds per minute, averaged over the
    /// window. At most 2147483647 (no process holds more fds).
    #[schemars(range(max = MAX_FDS))]
    pub min_fds_per_minute: f64,

    /// Window over which growth is measured. Default "10m".
    #[serde(default = "defaults::fd_growth_window")]
    pub window: KubeDuration,
}

/// CFS throttling thresholds, per container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.throttledRatio > 0.0 && self.throttledRatio <= 1.0")
    .message("throttledRatio must be in (0, 1]"))]
#[x_kube(validation = Rule::new("duration(self.window) >= duration('10s')")
    .message("cpuThrottling.window must be at least 10s (CFS periods are 100ms by default)"))]
pub struct CpuThrottlingDetector {
    /// Fires for a container when throttled periods / elapsed periods over
    /// the window reach this ratio. In (0, 1]. Default 0.25.
    #[serde(default = "defaults::throttled_ratio")]
    pub throttled_ratio: f64,

    /// Ignore containers that ran fewer CFS periods than this in the window
    /// (idle containers have meaningless ratios). Default 100.
    #[serde(default = "defaults::throttle_min_periods")]
    #[schemars(range(max = MAX_MIN_PERIODS))]
    pub min_periods: u64,

    /// Window over which the ratio is computed. Default "5m".
    #[serde(default = "defaults::throttle_window")]
    pub window: KubeDuration,

    /// The condition must hold continuously for this long before the
    /// detector fires. Default "5m".
    #[serde(rename = "for", default = "defaults::throttle_for")]
    pub for_duration: KubeDuration,
}

/// Per-detector escalation ladders.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Actions {
    /// Ladder for the zombies detector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.map(s, has(s.after) ? duration(s.after) : duration('0s')).isSorted()")
        .message("ladder steps must be in increasing `after` order"))]
    pub zombies: Vec<ActionStep>,

    /// Ladder for the hungTasks detector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.map(s, has(s.after) ? duration(s.after) : duration('0s')).isSorted()")
        .message("ladder steps must be in increasing `after` order"))]
    pub hung_tasks: Vec<ActionStep>,

    /// Ladder for the fdLeak detector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.map(s, has(s.after) ? duration(s.after) : duration('0s')).isSorted()")
        .message("ladder steps must be in increasing `after` order"))]
    pub fd_leak: Vec<ActionStep>,

    /// Ladder for the cpuThrottling detector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.map(s, has(s.after) ? duration(s.after) : duration('0s')).isSorted()")
        .message("ladder steps must be in increasing `after` order"))]
    pub cpu_throttling: Vec<ActionStep>,
}

impl Actions {
    /// The ladder of `detector` (empty when none).
    pub fn ladder(&self, detector: crate::conditions::Detector) -> &[ActionStep] {
        use crate::conditions::Detector;
        match detector {
            Detector::Zombies => &self.zombies,
            Detector::HungTasks => &self.hung_tasks,
            Detector::FdLeak => &self.fd_leak,
            Detector::CpuThrottling => &self.cpu_throttling,
        }
    }
}

/// One rung of an escalation ladder.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.action == 'SignalParent' || !has(self.signal)")
    .message("signal is only meaningful for SignalParent"))]
#[x_kube(validation = Rule::new("self.action != 'Taint' || has(self.taint)")
    .message("a Taint step needs taint.key and taint.effect"))]
#[x_kube(validation = Rule::new("self.action == 'Taint' || !has(self.taint)")
    .message("taint is only meaningful for the Taint action"))]
#[x_kube(validation = Rule::new("!has(self.drain) || self.action == 'Drain' || self.action == 'EvictPod'")
    .message("drain is only meaningful for the Drain and EvictPod actions"))]
#[x_kube(validation = Rule::new("!has(self.scope) || self.scope != 'Pod' || !(self.action in ['Taint', 'Cordon', 'Drain', 'RequestReboot'])")
    .message("a node-level action (Taint, Cordon, Drain, RequestReboot) cannot have scope Pod: use Node (the default: after a pod-level step for a problem in one pod) or Any"))]
pub struct ActionStep {
    /// What to do.
    pub action: ActionKind,

    /// How long the detector must have been firing on the node before this
    /// step runs. Steps run in order; later steps need longer. Omitted means
    /// "0s" (immediately). Not defaulted by the server on purpose: a default
    /// inside a list item makes every `kubectl apply` and GitOps sync see a
    /// diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<KubeDuration>,

    /// For SignalParent: the signal sent to the zombies' parent. SIGCHLD
    /// nudges a parent that lost a wakeup into reaping; SIGTERM and SIGKILL
    /// end it so that its zombies reparent to a subreaper that reaps them.
    /// Default SIGCHLD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<ParentSignal>,

    /// For Taint: the taint to put on the node (removed when it is healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint: Option<TaintTemplate>,

    /// For Drain and EvictPod: which pods may be evicted beyond what
    /// `kubectl drain` evicts by default. Omitted means neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainOptions>,

    /// Which problems the step is for, by where they live (the condition's
    /// `scope`). Node: node-wide problems (host processes, or offenders in
    /// two or more pods); a problem contained in one pod reaches the step
    /// only after a pod-level step of the same episode (SignalParent,
    /// EvictPod) was carried out and the problem persisted. Pod: only
    /// problems contained in one pod. Any: both, without that condition.
    /// Default: Node for the node-level actions (Taint, Cordon, Drain,
    /// RequestReboot), Any for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<StepScope>,
}

// No type-level doc: on an optional enum it would replace the field's doc in
// the generated schema (the `kubectl explain` text).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepScope {
    /// Problems contained in one pod only.
    Pod,
    /// Node-wide problems; pod-contained ones after a pod-level step.
    Node,
    /// Both.
    Any,
}

impl ActionStep {
    /// The step's scope, defaulted by its action.
    pub fn effective_scope(&self) -> StepScope {
        self.scope.unwrap_or(if self.action.affects_whole_node() {
            StepScope::Node
        } else {
            StepScope::Any
        })
    }
}

/// Opt-ins of a Drain (or EvictPod) step. Like `kubectl drain`, by default a
/// drain refuses pods with emptyDir volumes (their data is lost) and pods
/// without a controller (they are gone for good); these opt in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct DrainOptions {
    /// Also evict pods that use emptyDir volumes; the data in those volumes
    /// is deleted with the pod (`kubectl drain --delete-emptydir-data`).
    /// Default false: such pods are refused and the step reports them.
    #[serde(
        rename = "deleteEmptyDirData",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub delete_emptydir_data: bool,

    /// Also evict pods that no controller (ReplicaSet, StatefulSet, Job,
    /// ...) owns; nothing recreates them (`kubectl drain --force`).
    /// Default false: such pods are refused and the step reports them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evict_unmanaged_pods: bool,
}

/// Remediation actions, from least to most disruptive.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum ActionKind {
    /// Emit a Kubernetes Event on the Node.
    Event,
    /// Set a nodemedic condition on the Node status.
    NodeCondition,
    /// Signal the parent of the zombies (zombies detector only).
    SignalParent,
    /// Evict the offending pod through the Eviction API (respects PDBs).
    EvictPod,
    /// Taint the node.
    Taint,
    /// Mark the node unschedulable.
    Cordon,
    /// Cordon, then evict every evictable pod through the Eviction API.
    Drain,
    /// Hand a reboot to a reboot daemon (such as kured) via its sentinel.
    RequestReboot,
}

// No type-level doc: on an optional enum it would replace the field's doc in
// the generated schema (the `kubectl explain` text).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum ParentSignal {
    /// Ask the parent to reap (harmless).
    #[default]
    SIGCHLD,
    /// Ask the parent to exit.
    SIGTERM,
    /// Kill the parent.
    SIGKILL,
}

/// A taint nodemedic puts on a node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.effect != 'NoExecute' || (has(self.allowNoExecute) && self.allowNoExecute)")
    .message("a NoExecute taint evicts pods through the taint manager, bypassing PodDisruptionBudgets, excludeNamespaces, the protect annotation and the DaemonSet exemption; use a Drain step instead, or set allowNoExecute: true"))]
pub struct TaintTemplate {
    /// Taint key, e.g. "nodemedic.io/unhealthy".
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Optional taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute. NoExecute needs
    /// allowNoExecute.
    pub effect: TaintEffect,
    /// Confirms a NoExecute effect. A NoExecute taint makes the taint
    /// manager evict every pod that does not tolerate it, bypassing
    /// PodDisruptionBudgets, excludeNamespaces, the protect annotation and
    /// the DaemonSet exemption that a Drain step honours. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_no_execute: bool,
}

/// Kubernetes taint effects.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// Do not schedule new pods.
    NoSchedule,
    /// Avoid scheduling new pods.
    PreferNoSchedule,
    /// Evict pods that do not tolerate the taint.
    NoExecute,
}

/// Safety budgets and exclusions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "string(self.maxUnhealthy).matches('^([0-9]+|(100|[1-9]?[0-9])%)$')"
).message("maxUnhealthy must be a non-negative integer or a percentage from 0% to 100%"))]
pub struct Safety {
    /// When more selected nodes than this are unhealthy at once (a count, or
    /// a percentage of selected nodes), node-level actions (Taint, Cordon,
    /// Drain, RequestReboot, EvictPod) pause and the StormActive condition is
    /// set: a cluster-wide problem is not fixed by draining the cluster.
    /// Default "10%".
    #[serde(default = "defaults::max_unhealthy")]
    #[schemars(schema_with = "crate::bounded::max_unhealthy")]
    pub max_unhealthy: IntOrString,

    /// Maximum remediation actions in flight cluster-wide for this policy.
    /// Default 1.
    #[serde(default = "defaults::max_concurrent_actions")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_actions: u32,

    /// Minimum time between two actions on the same node. Default "30m".
    #[serde(default = "defaults::cooldown")]
    pub cooldown: KubeDuration,

    /// Maximum signals sent to processes on one node per hour. Default 10.
    #[serde(default = "defaults::max_signals_per_hour")]
    #[schemars(range(max = 1000))]
    pub max_signals_per_hour: u32,

    /// Pods in these namespaces are never evicted or signalled.
    /// Default ["kube-system"].
    #[serde(default = "defaults::exclude_namespaces")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub exclude_namespaces: Vec<String>,

    /// Pods carrying this annotation with value "true" are never evicted or
    /// signalled. Default "nodemedic.io/protect".
    #[serde(default = "defaults::protect_annotation")]
    #[schemars(length(min = 1, max = 316))]
    pub protect_annotation: String,

    /// Process names (comm, at most 15 characters; a trailing * matches a
    /// prefix) that are never signalled, in addition to the built-ins:
    /// kubelet, kube-proxy, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, etcd, containerd, containerd-shim*, crio, cri-o,
    /// conmon, conmonrs, dockerd, runc*, crun, pause, systemd*, sshd*,
    /// nodemedic-agent, nodemedic-operator. Names are compared as the kernel
    /// stores comm, cut to 15 bytes: a longer entry matches its first 15
    /// bytes (kube-controller-manager protects comm kube-controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 16)))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) >= 1 && size(p) <= 16)")
        .message("protectedProcesses entries must be 1 to 15 characters (the kernel comm length), plus an optional trailing *"))]
    pub protected_processes: Vec<String>,

    /// Remove cordons and taints nodemedic placed once the node has been
    /// healthy for one cooldown. Nodes cordoned by someone else are never
    /// uncordoned. Default true.
    #[serde(default = "defaults::yes")]
    pub uncordon_when_healthy: bool,
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            max_unhealthy: defaults::max_unhealthy(),
            max_concurrent_actions: defaults::max_concurrent_actions(),
            cooldown: defaults::cooldown(),
            max_signals_per_hour: defaults::max_signals_per_hour(),
            exclude_namespaces: defaults::exclude_namespaces(),
            protect_annotation: defaults::protect_annotation(),
            protected_processes: Vec::new(),
            uncordon_when_healthy: true,
        }
    }
}

/// What the operator observed and did for a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealthPolicyStatus {
    /// The metadata.generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_COUNT))]
    pub observed_generation: Option<i64>,

    /// Ready: the policy is valid and being enforced. StormActive: more nodes
    /// than safety.maxUnhealthy are unhealthy, node-level actions paused.
    /// Degraded: some reports are stale or actions are failing. Paused: True
    /// while the policy carries the nodemedic.io/paused annotation (False
    /// with reason NodesPaused names selected nodes that carry it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::bounded::policy_conditions")]
    pub conditions: Vec<Condition>,

    /// Number of nodes the nodeSelector selects.
    #[serde(default)]
    #[schemars(range(max = MAX_NODES))]
    pub matched_nodes: u32,

    /// Number of selected nodes with at least one detector firing.
    #[serde(default)]
    #[schemars(range(max = MAX_NODES))]
    pub unhealthy_nodes: u32,

    /// Actions executed (Enforce) or planned (DryRun) in the last 24 hours.
    #[serde(default)]
    #[schemars(range(max = MAX_ACTIONS))]
    pub actions_last24h: u32,

    /// Unhealthy nodes first, at most 50 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub nodes: Vec<PolicyNodeSummary>,

    /// Most recent actions first, at most 20 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent_actions: Vec<ActionRecord>,

    /// Set while the policy is paused (the `nodemedic.io/paused` annotation
    /// on the policy): no new ladder step starts on any of its nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PolicyPause>,
}

/// A pause of a policy, as the operator recorded it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPause {
    /// The reason (the `nodemedic.io/paused` annotation; may be empty).
    #[serde(default)]
    #[schemars(length(max = MAX_MESSAGE))]
    pub reason: String,
    /// Who paused (the `nodemedic.io/paused-by` annotation), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE))]
    pub by: Option<String>,
    /// Since when: the `nodemedic.io/paused-at` annotation or, when that is
    /// missing or malformed, when the operator first saw the pause.
    pub since: Time,
    /// What is wrong with the pause annotations, when something is (the
    /// pause holds all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE))]
    pub problem: Option<String>,
}

/// One node's health under a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyNodeSummary {
    /// Node name.
    #[schemars(length(max = MAX_NAME))]
    pub node: String,
    /// Detectors currently firing on the node (empty when healthy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = MAX_WORD)))]
    pub firing: Vec<String>,
    /// When the oldest of the firing detectors started firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The highest ladder step reached, e.g. "Cordon".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub escalation: Option<String>,
    /// Where the firing problems live: Pod when every firing detector's
    /// offenders are in one pod (named in `culprit`), else Node. It decides
    /// which ladder steps apply (see ActionStep.scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::scope::ProblemScope>,
    /// The pod of a Pod-scoped problem, "namespace/name".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME))]
    pub culprit: Option<String>,
    /// Why every new step on this node waits, when one reason holds them
    /// all: `Paused` while the Node carries the `nodemedic.io/paused`
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WORD))]
    pub held: Option<String>,
}

/// A remediation decided by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// When the action was decided.
    pub time: Time,
    /// Node acted on.
    #[schemars(length(max = MAX_NAME))]
    pub node: String,
    /// Detector that triggered it.
    #[schemars(length(max = MAX_WORD))]
    pub detector: String,
    /// The action.
    pub action: ActionKind,
    /// Planned (DryRun), Executed, Failed or Skipped (budget, exclusion).
    pub outcome: ActionOutcome,
    /// Target detail: pod namespace/name or process, and the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE))]
    pub message: Option<String>,
}

/// What became of a decided action.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionOutcome {
    /// Recorded only (DryRun).
    Planned,
    /// Carried out.
    Executed,
    /// Attempted and failed.
    Failed,
    /// Not attempted: a budget, cooldown, storm or exclusion held it back.
    Skipped,
}

/// Defaults, shared by serde (client side) and the schema (server side).
pub mod defaults {
    use super::*;

    pub fn zombie_threshold() -> u32 {
        50
    }
    pub fn zombie_per_parent_threshold() -> u32 {
        20
    }
    pub fn zombie_min_age() -> KubeDuration {
        KubeDuration::from_static("60s")
    }
    pub fn zombie_for() -> KubeDuration {
        KubeDuration::from_static("2m")
    }
    pub fn hung_min_duration() -> KubeDuration {
        KubeDuration::from_static("120s")
    }
    pub fn hung_threshold() -> u32 {
        1
    }
    pub fn hung_for() -> KubeDuration {
        KubeDuration::from_static("0s")
    }
    pub fn fd_usage_ratio() -> f64 {
        0.8
    }
    pub fn fd_min_open() -> u64 {
        256
    }
    pub fn fd_node_file_ratio() -> f64 {
        0.9
    }
    pub fn fd_for() -> KubeDuration {
        KubeDuration::from_static("2m")
    }
    pub fn fd_growth_window() -> KubeDuration {
        KubeDuration::from_static("10m")
    }
    pub fn throttled_ratio() -> f64 {
        0.25
    }
    pub fn throttle_min_periods() -> u64 {
        100
    }
    pub fn throttle_window() -> KubeDuration {
        KubeDuration::from_static("5m")
    }
    pub fn throttle_for() -> KubeDuration {
        KubeDuration::from_static("5m")
    }
    pub fn max_unhealthy() -> IntOrString {
        IntOrString::String("10%".to_owned())
    }
    pub fn max_concurrent_actions() -> u32 {
        1
    }
    pub fn cooldown() -> KubeDuration {
        KubeDuration::from_static("30m")
    }
    pub fn max_signals_per_hour() -> u32 {
        10
    }
    pub fn exclude_namespaces() -> Vec<String> {
        vec!["kube-system".to_owned()]
    }
    pub fn protect_annotation() -> String {
        "nodemedic.io/protect".to_owned()
    }
    pub fn yes() -> bool {
        true
    }
}

impl ActionStep {
    /// How long the detector must have fired before this step runs.
    pub fn after(&self) -> Result<std::time::Duration, crate::duration::DurationError> {
        self.after
            .as_ref()
            .map_or(Ok(std::time::Duration::ZERO), KubeDuration::to_std)
    }
}

impl Default for ZombieDetector {
    fn default() -> Self {
        Self {
            threshold: defaults::zombie_threshold(),
            per_parent_threshold: defaults::zombie_per_parent_threshold(),
            min_age: defaults::zombie_min_age(),
            for_duration: defaults::zombie_for(),
        }
    }
}

impl Default for HungTaskDetector {
    fn default() -> Self {
        Self {
            min_duration: defaults::hung_min_duration(),
            threshold: defaults::hung_threshold(),
            for_duration: defaults::hung_for(),
        }
    }
}

impl Default for FdLeakDetector {
    fn default() -> Self {
        Self {
            usage_ratio: defaults::fd_usage_ratio(),
            min_open_fds: defaults::fd_min_open(),
            growth: None,
            exhaustion_within: None,
            node_file_ratio: defaults::fd_node_file_ratio(),
            for_duration: defaults::fd_for(),
        }
    }
}

impl Default for CpuThrottlingDetector {
    fn default() -> Self {
        Self {
            throttled_ratio: defaults::throttled_ratio(),
            min_periods: defaults::throttle_min_periods(),
            window: defaults::throttle_window(),
            for_duration: defaults::throttle_for(),
        }
    }
}
