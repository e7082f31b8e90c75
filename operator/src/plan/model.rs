//! The planner's inputs and outputs: what the controller hands `plan()`,
//! the effects it asks for, and their outcomes as `settle()` takes them back.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::NodeHealthReport;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::{ActionKind, ActionRecord, TaintEffect, TaintTemplate};
use nodemedic_crds::remediation::{DrainProgress, NodeRemediation, Remediation};
use nodemedic_crds::report::{ActionRequest, ProblemScope};

use super::facts::PodRef;
use super::policy::PolicyView;
use super::reasons::EventReason;

/// Operator-wide settings the planner depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How long an EvictPod step retries while a PodDisruptionBudget refuses.
    pub eviction_timeout: Duration,
    /// How long a Drain may take before it is Failed.
    pub drain_timeout: Duration,
    /// The agent's action-request TTL: a request without a final result
    /// after this (plus a minute) is Failed.
    pub request_ttl: Duration,
    /// Reconcile every policy at least this often.
    pub resync: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            eviction_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(900),
            request_ttl: Duration::from_secs(600),
            resync: Duration::from_secs(300),
        }
    }
}

/// Extra wait after the request TTL before a request without result fails.
pub const REQUEST_GRACE: Duration = Duration::from_secs(60);
/// First retry delay of a refused eviction; doubles per attempt.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay of a refused eviction.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// History is kept this long (actionsLast24h).
pub const HISTORY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// maxSignalsPerHour window.
pub const SIGNAL_WINDOW: Duration = Duration::from_secs(3600);

/// Another policy, as far as the planner of this one needs it.
#[derive(Debug, Clone)]
pub struct OtherPolicy {
    pub view: Arc<PolicyView>,
    /// Its status says StormActive=True.
    pub storm_active: bool,
}

/// One node the policy selects, or on which the policy left state.
#[derive(Debug, Clone, Copy)]
pub struct NodeInput<'a> {
    pub name: &'a str,
    /// The policy's selector selects the node.
    pub selected: bool,
    /// The Node (absent when deleted).
    pub node: Option<&'a Node>,
    /// Its report (absent when the agent has not created it).
    pub report: Option<&'a NodeHealthReport>,
    /// The operator's remediation ledger for it (absent before the first
    /// step, or when an operator before the ledger kind kept it in the
    /// report: see [`NodeState::of`]).
    pub ledger: Option<&'a NodeRemediation>,
    /// When the operator first saw the report's current `lastScanTime`, on
    /// its own clock (see [`super::facts::freshness`]).
    pub observed_scan: Option<Timestamp>,
    /// Per policy: when the operator first saw all of the policy's
    /// conditions on the node not True, on its own clock (the healthy
    /// cooldown before an uncordon counts from the later of this and the
    /// agent's transition time).
    pub observed_clear: &'a [(String, Timestamp)],
}

impl<'a> NodeInput<'a> {
    /// The node's remediation ledger as stored: the NodeRemediation or,
    /// while there is none, the report's deprecated copy.
    pub fn remediation(&self) -> Option<&'a Remediation> {
        self.ledger
            .map(|l| &l.spec)
            .or(self.report.map(|r| &r.spec.remediation))
    }
}

/// Everything [`plan`] decides from.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub policy: &'a PolicyView,
    /// Every other valid policy.
    pub others: &'a [OtherPolicy],
    /// Policies that exist but cannot be acted on (they fail validation or
    /// do not decode). They are not deleted: their episodes, requests,
    /// cordons and taints are kept as they are until they are valid again
    /// or deleted.
    pub invalid: &'a [String],
    /// The policy is being deleted (its finalizer holds it): plan only the
    /// release of what it holds — its episodes and requests go, its
    /// cordons and taints are removed where no other policy holds them and
    /// disowned where one does — whatever its mode.
    pub deleting: bool,
    /// Nodes, sorted by name.
    pub nodes: &'a [NodeInput<'a>],
    pub settings: &'a Settings,
    /// Now, truncated to whole seconds (what the API stores).
    pub now: Timestamp,
}

/// Identifies a ladder step in the durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub policy: String,
    pub detector: Detector,
    pub index: u32,
    pub action: ActionKind,
}

impl StepRef {
    /// The step `step` of `policy`'s ladder for `detector`.
    pub fn of(policy: &str, detector: Detector, step: &super::policy::Step) -> Self {
        Self {
            policy: policy.to_owned(),
            detector,
            index: step.index,
            action: step.action,
        }
    }
}

/// A Kubernetes Event to publish, on the Node and on the attributed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub node: String,
    pub pod: Option<PodRef>,
    pub warning: bool,
    pub reason: EventReason,
    pub action: ActionKind,
    pub note: String,
}

/// A nodemedic Node condition as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    pub detector: Detector,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Something to carry out against the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The Event step: publish the problem as an Event.
    Event { step: StepRef, notice: Notice },
    /// Apply every nodemedic Node condition as listed (server-side apply,
    /// own field manager); settles the NodeCondition steps listed.
    NodeConditions {
        steps: Vec<StepRef>,
        desired: Vec<DesiredCondition>,
    },
    /// Cordon the node (or join nodemedic's cordon) for `owner`.
    Cordon { step: StepRef, owner: String },
    /// Taint the node (or join nodemedic's taint) for `owner`.
    Taint {
        step: StepRef,
        owner: String,
        taint: TaintTemplate,
    },
    /// Evict a pod through the Eviction API.
    Evict {
        step: StepRef,
        pod: PodRef,
        exclusions: Exclusions,
    },
    /// Cordon, then evict every evictable pod (one pass).
    Drain {
        step: StepRef,
        /// When the step's episode began: a pass's result belongs to this
        /// episode only.
        episode: Timestamp,
        owner: String,
        exclusions: Exclusions,
    },
    /// Remove nodemedic's cordon (every owner released).
    Uncordon { message: String },
    /// Remove nodemedic's taint (every owner released).
    Untaint {
        key: String,
        effect: TaintEffect,
        message: String,
    },
    /// Someone else uncordoned the node: drop nodemedic's annotation.
    ForgetCordon,
    /// A deleted policy lets go of a cordon or taints other policies still
    /// hold: its name leaves the ownership annotations, the cordon and
    /// taints stay.
    Disown { policy: String },
    /// Someone else removed nodemedic's taint: drop it from the annotation.
    ForgetTaint { key: String, effect: TaintEffect },
}

/// Pods an eviction never touches, and those it refuses by default the way
/// `kubectl drain` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusions {
    pub namespaces: Vec<String>,
    pub protect_annotation: String,
    /// The step's `drain.deleteEmptyDirData`: evict pods with emptyDir
    /// volumes (their data is lost).
    pub delete_emptydir_data: bool,
    /// The step's `drain.evictUnmanagedPods`: evict pods no controller owns
    /// (nothing recreates them).
    pub evict_unmanaged_pods: bool,
}

impl Exclusions {
    /// The exclusions of a policy's step.
    pub fn of(policy: &PolicyView, step: &super::policy::Step) -> Self {
        Self {
            namespaces: policy.safety.exclude_namespaces.clone(),
            protect_annotation: policy.safety.protect_annotation.clone(),
            delete_emptydir_data: step.drain.delete_emptydir_data,
            evict_unmanaged_pods: step.drain.evict_unmanaged_pods,
        }
    }
}

/// What came of an [`Effect`].
#[derive(Debug, Clone, PartialEq)]
pub enum EffectOutcome {
    Done(String),
    Skipped {
        reason: String,
        message: String,
    },
    Failed {
        reason: String,
        message: String,
    },
    /// Refused for now (PodDisruptionBudget); try again later.
    Retry(String),
    /// A drain pass is running in the background; its result is taken up
    /// by a later reconcile.
    Pending,
    /// A drain pass.
    Drained {
        progress: DrainProgress,
        end: DrainPassEnd,
        message: String,
    },
}

/// How a drain pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPassEnd {
    /// No evictable pod is left on the node: the drain is done.
    Complete,
    /// Every evictable pod was tried; some were refused (a
    /// PodDisruptionBudget) or failed. The next pass backs off.
    Blocked,
    /// The pass's time budget ran out before every pod was tried; the next
    /// pass follows without backing off.
    OutOfTime,
}

/// What the operator keeps for one node, in two objects: the requests its
/// agent is to carry out (the report's spec, which the agent watches) and
/// the remediation ledger (the node's NodeRemediation, which nothing but
/// the operator reads).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeState {
    pub action_requests: Vec<ActionRequest>,
    pub remediation: Remediation,
}

impl NodeState {
    /// The state as stored: the requests from the report, the ledger from
    /// the NodeRemediation or, while there is none, from the report's
    /// deprecated `spec.remediation` (moved on the next write).
    pub fn of(report: &NodeHealthReport, ledger: Option<&NodeRemediation>) -> Self {
        Self {
            action_requests: report.spec.action_requests.clone(),
            remediation: match ledger {
                Some(l) => l.spec.clone(),
                None => report.spec.remediation.clone(),
            },
        }
    }
}

/// Where a node's state was read from: the preconditions of its writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Versions {
    /// resourceVersion of the report the plan was made from.
    pub report: Option<String>,
    /// resourceVersion of the NodeRemediation, None when there is none yet
    /// (the write creates it, and fails if one appeared meanwhile).
    pub ledger: Option<String>,
    /// The report still holds the deprecated `spec.remediation`: the next
    /// report write drops it (after the ledger holds its content).
    pub legacy_in_report: bool,
    /// The Node's uid, for the ledger's owner reference (so that a deleted
    /// Node takes its ledger with it).
    pub node_uid: Option<String>,
}

/// The work for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeWork {
    pub node: String,
    /// Where `before` was read from (the writes' preconditions).
    pub versions: Versions,
    /// The state as read.
    pub before: NodeState,
    /// The state to write: before effects when `write_ahead`, else together
    /// with their outcomes.
    pub ahead: NodeState,
    /// Steps were started that must be durable before they are carried out.
    pub write_ahead: bool,
    pub effects: Vec<Effect>,
    /// Events decided at plan time (Planned, Held, Skipped, agent results).
    pub notices: Vec<Notice>,
    /// Records decided at plan time, for the policy status; they count
    /// only once the node's state is written.
    pub records: Vec<ActionRecord>,
}

/// One node in the policy status.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub node: String,
    pub firing: Vec<Detector>,
    pub since: Option<Timestamp>,
    pub escalation: Option<String>,
    pub stale: bool,
    /// Pod (with its culprit) when every firing detector's problem is in
    /// the same pod, else Node.
    pub scope: Option<(ProblemScope, Option<String>)>,
    /// The Node carries a pause (`nodemedic.io/paused`).
    pub paused: bool,
}

/// Counts and lists for the policy status and metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub matched: u32,
    pub unhealthy: u32,
    pub stale: Vec<String>,
    pub missing: Vec<String>,
    pub failing: Vec<String>,
    /// Nodes whose ladder ran out while still unhealthy.
    pub needs_attention: Vec<String>,
    /// Storm limit (maxUnhealthy resolved against matched).
    pub storm_limit: u32,
    pub storm: bool,
    pub actions_last_24h: u32,
    /// Unhealthy first, then stale, then healthy; at most 50.
    pub nodes: Vec<NodeSummary>,
    /// Selected nodes that carry a pause, by name.
    pub paused_nodes: Vec<String>,
}

/// The decision for one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub work: Vec<NodeWork>,
    pub summary: Summary,
    /// When to look again (a step falls due, a hold may lift, a report goes
    /// stale), at the latest after `settings.resync`.
    pub wake_at: Timestamp,
}

impl Plan {
    /// Every record decided at plan time, in node order.
    pub fn records(&self) -> Vec<ActionRecord> {
        self.work
            .iter()
            .flat_map(|w| w.records.iter().cloned())
            .collect()
    }
}
