//! The operator's durable remediation state for one node: the
//! `NodeRemediation` object named after the Node (the remediation ledger),
//! written only by the operator (field manager `nodemedic-operator`) and
//! read by nothing else. Agents do not watch it, and deleting a
//! NodeHealthReport does not touch it: cooldowns, signal budgets and a
//! running ladder survive `kubectl delete nhr`.
//!
//! Everything the budgets and ladders depend on lives here, in the API and not
//! in the operator's memory, so that a restarted operator or a new leader
//! neither repeats nor skips a step: which firing episodes are open, which
//! ladder steps each has taken (a step is recorded as `Started` before it is
//! carried out and `Done` after), and which actions were taken on the node
//! recently (cooldown, `maxSignalsPerHour`, `actionsLast24h`).
//!
//! What nodemedic placed on the Node itself (cordon, taints) is recorded on the
//! Node, in the annotations below, in the same write that places it.

// Printer columns legitimately repeat `type_`; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Detector;
use crate::policy::{ActionKind, ParentSignal, TaintEffect};
use crate::process::ProcessTarget;

/// Bound on open episodes per node (policies × detectors).
pub const MAX_EPISODES: usize = 64;
/// Bound on step records per episode (the longest ladder).
pub const MAX_STEPS: usize = 8;
/// Bound on remembered actions per node.
pub const MAX_HISTORY: usize = 128;

/// Node annotation: the policies on whose behalf nodemedic cordoned the node,
/// comma-separated. Written together with `spec.unschedulable: true`; a node
/// cordoned without it was cordoned by someone else and is never uncordoned
/// by nodemedic.
pub const CORDONED_BY_ANNOTATION: &str = "nodemedic.io/cordoned-by";

/// Node annotation: the taints nodemedic placed and for which policies, as a
/// JSON list of [`OwnedTaint`]. Written together with the taints.
pub const TAINTED_BY_ANNOTATION: &str = "nodemedic.io/tainted-by";

/// The operator's bookkeeping for one node (the spec of its
/// `NodeRemediation`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "nodemedic.io",
    version = "v1alpha1",
    kind = "NodeRemediation",
    plural = "noderemediations",
    singular = "noderemediation",
    shortname = "nrm",
    category = "nodemedic",
    cel,
    doc = "The nodemedic operator's remediation ledger for one node: open firing episodes with the ladder steps taken in each, and recent actions (the basis of cooldown and maxSignalsPerHour). Named after its Node and owned by it; written only by the operator. Deleting it resets the node's budgets and ladders.",
    printcolumn(
        name = "Policies",
        type_ = "string",
        json_path = ".spec.episodes[*].policy",
        description = "Policies with an open episode on the node"
    ),
    printcolumn(
        name = "Attention",
        type_ = "date",
        json_path = ".spec.episodes[*].needsAttentionSince",
        description = "When a ladder ran out while the node was still unhealthy"
    ),
    printcolumn(
        name = "Last-Action",
        type_ = "string",
        json_path = ".spec.history[-1:].action",
        description = "The latest action taken or planned on the node"
    ),
    printcolumn(
        name = "Last-Action-At",
        type_ = "date",
        json_path = ".spec.history[-1:].at",
        description = "When it was taken"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeRemediationSpec {
    /// Open firing episodes: one per policy and detector whose condition
    /// is True, recorded when the operator first sees it. An episode starts when the
    /// policy's detector condition in this report turns True and ends when it
    /// turns False; its steps are forgotten with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["policy".into(), "detector".into()]))]
    pub episodes: Vec<Episode>,

    /// Actions taken (or, in DryRun, planned) on this node, oldest first:
    /// the last 24 hours, at most 128 entries, and always the latest
    /// disruptive one. Cooldown, maxSignalsPerHour and actionsLast24h are
    /// computed from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub history: Vec<HistoryEntry>,
}

/// The ledger's content, as the planner and the legacy report field use it.
pub type Remediation = NodeRemediationSpec;

impl NodeRemediationSpec {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty() && self.history.is_empty()
    }

    /// The open episode of `policy` for `detector`.
    pub fn episode(&self, policy: &str, detector: Detector) -> Option<&Episode> {
        self.episodes
            .iter()
            .find(|e| e.policy == policy && e.detector == detector)
    }
}

/// One firing episode of a policy's detector on the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Episode {
    /// Policy name.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// Detector whose condition fires.
    pub detector: Detector,
    /// The lastTransitionTime of the report condition when it turned True:
    /// identifies the episode. A condition with another lastTransitionTime
    /// is a new episode.
    pub since: Time,
    /// When the operator first saw the condition True, on its own clock.
    /// Ladder steps come due `after` from `since` taken within the skew
    /// tolerance (30s) of this observation, so that an agent whose clock is
    /// off neither collapses a ladder nor stretches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// Ladder steps touched in this episode, by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["index".into()]))]
    pub steps: Vec<StepRecord>,
    /// When the episode took one of its policy's maxConcurrentActions
    /// slots (it started a disruptive step). Cleared when the ladder is
    /// exhausted or nothing it started disrupted anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_since: Option<Time>,
    /// When every step of the ladder had reached a final phase while the
    /// detector still fired, after at least one disruptive step was carried
    /// out: nodemedic does nothing more in this episode, the node no longer
    /// holds a maxConcurrentActions slot, and a NeedsAttention Event was
    /// published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_attention_since: Option<Time>,
}

impl Episode {
    /// The record of ladder step `index` if it is for `action` (a record for
    /// another action at that index predates an edit of the ladder).
    pub fn step(&self, index: u32, action: ActionKind) -> Option<&StepRecord> {
        self.steps
            .iter()
            .find(|s| s.index == index && s.action == action)
    }
}

/// What became of one ladder step in an episode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Position of the step in the policy's ladder for the detector.
    #[schemars(range(max = 7))]
    pub index: u32,
    /// The step's action.
    pub action: ActionKind,
    /// Planned (DryRun; not done, uses no budget), Held (due but held back
    /// by a budget; retried), Started (being carried out), Done, Failed or
    /// Skipped (an exclusion or protection applies; not retried).
    pub phase: StepPhase,
    /// When the step entered its phase.
    pub since: Time,
    /// When carrying it out began; the budgets count from here. Absent for
    /// a step that joined a cordon or taint already in place (it disrupted
    /// nothing and holds no budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// For SignalParent and RequestReboot: the id of the request in
    /// spec.actionRequests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub request_id: Option<String>,
    /// Attempts so far (EvictPod and Drain retry while a
    /// PodDisruptionBudget refuses).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = crate::bounds::MAX_ACTIONS))]
    pub attempts: u32,
    /// When the last attempt was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    /// Stable code of why the step is Held, Skipped or Failed, e.g.
    /// StormActive, Cooldown, MaxConcurrentActions, MaxSignalsPerHour,
    /// ExcludedNamespace, Protected, Timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,
    /// What the step acts on: a pod (namespace/name) or a process
    /// (pid, comm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub target: Option<String>,
    /// For EvictPod: the pod the step acts on, with the uid it had when the
    /// step started. Every attempt evicts with that uid as precondition, so
    /// a replacement pod of the same name (a StatefulSet's) is never
    /// evicted in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodTarget>,
    /// For SignalParent: the process the request names (pid, start time,
    /// comm), so that a request lost with its report is asked again for
    /// exactly the same process, never for whatever the findings name now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessTarget>,
    /// For SignalParent: the signal requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<ParentSignal>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// For Drain: pods evicted, still to evict, and left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
}

/// A pod, named the way an eviction's precondition needs it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodTarget {
    /// Namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// metadata.uid of the pod meant.
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Phases of a ladder step.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepPhase {
    /// DryRun recorded it; it is not done and used no budget.
    Planned,
    /// Due, but held back by a budget (storm, concurrency, cooldown, signal
    /// rate) or missing a target; retried while the episode lasts.
    Held,
    /// Being carried out (recorded before acting).
    Started,
    /// Carried out.
    Done,
    /// Attempted and failed; not retried in this episode.
    Failed,
    /// Not attempted because an exclusion or protection applies; not retried.
    Skipped,
}

impl StepPhase {
    /// Whether the step will not run again in this episode.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepPhase::Done | StepPhase::Failed | StepPhase::Skipped
        )
    }
}

/// Progress of a drain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainProgress {
    /// Pods evicted (or already terminating).
    #[schemars(range(max = crate::bounds::MAX_PODS))]
    pub evicted: u32,
    /// Evictable pods still on the node (refused by a PodDisruptionBudget,
    /// or failed).
    #[schemars(range(max = crate::bounds::MAX_PODS))]
    pub remaining: u32,
    /// Pods never evicted: DaemonSet-owned, mirror pods, excluded
    /// namespaces, protected.
    #[schemars(range(max = crate::bounds::MAX_PODS))]
    pub skipped: u32,
}

/// An action taken or planned on the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When it was taken (for disruptive actions: when it started).
    pub at: Time,
    /// Policy that took it.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// Detector whose ladder it belongs to.
    pub detector: Detector,
    /// The action.
    pub action: ActionKind,
    /// Ladder step index.
    #[schemars(range(max = 7))]
    pub step: u32,
    /// Only planned (DryRun): counts for actionsLast24h, not for budgets.
    #[serde(default, skip_serializing_if = "is_false")]
    pub planned: bool,
}

/// One taint nodemedic placed on a node, and the policies it placed it for
/// (the value of the [`TAINTED_BY_ANNOTATION`] annotation is a JSON list of
/// these).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OwnedTaint {
    /// Taint key.
    pub key: String,
    /// Taint effect.
    pub effect: TaintEffect,
    /// Policies that asked for it.
    pub policies: Vec<String>,
}

impl ActionKind {
    /// Disruptive actions count against the cooldown and
    /// maxConcurrentActions: everything but Event and NodeCondition.
    pub fn is_disruptive(self) -> bool {
        !matches!(self, ActionKind::Event | ActionKind::NodeCondition)
    }

    /// Actions on the whole node (every pod on it feels them), as opposed
    /// to actions on one process or pod; by default a problem contained in
    /// one pod reaches them only after a pod-level step (see StepScope).
    pub fn affects_whole_node(self) -> bool {
        matches!(
            self,
            ActionKind::Taint | ActionKind::Cordon | ActionKind::Drain | ActionKind::RequestReboot
        )
    }

    /// Node-level actions pause while a storm is active (maxUnhealthy).
    pub fn is_node_level(self) -> bool {
        matches!(
            self,
            ActionKind::EvictPod
                | ActionKind::Taint
                | ActionKind::Cordon
                | ActionKind::Drain
                | ActionKind::RequestReboot
        )
    }

    /// The name used in the API and in Events.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Event => "Event",
            ActionKind::NodeCondition => "NodeCondition",
            ActionKind::SignalParent => "SignalParent",
            ActionKind::EvictPod => "EvictPod",
            ActionKind::Taint => "Taint",
            ActionKind::Cordon => "Cordon",
            ActionKind::Drain => "Drain",
            ActionKind::RequestReboot => "RequestReboot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_classes_match_the_documented_semantics() {
        use ActionKind::*;
        let disruptive: Vec<_> = [
            Event,
            NodeCondition,
            SignalParent,
            EvictPod,
            Taint,
            Cordon,
            Drain,
            RequestReboot,
        ]
        .into_iter()
        .filter(|a| a.is_disruptive())
        .collect();
        assert_eq!(
            disruptive,
            [SignalParent, EvictPod, Taint, Cordon, Drain, RequestReboot]
        );
        assert!(!SignalParent.is_node_level());
        assert!(EvictPod.is_node_level() && RequestReboot.is_node_level());
        for a in disruptive {
            let json = serde_json::to_string(&a).expect("serializes");
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
    }

    #[test]
    fn empty_state_is_omitted() {
        let spec = crate::NodeHealthReportSpec::default();
        let json = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(json, serde_json::json!({}));
    }
}
