//! The planner's stable codes: why a step does not run (hold), why the
//! planner ended a step, and the reason of each Event it publishes. They
//! appear in step records, Events and docs; renaming one is an API change.

use nodemedic_crds::conditions::Detector;

/// Why a due step does not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// Nothing to act on: no zombie parent, no attributed pod (or not
    /// named with its uid).
    NoTarget,
    /// The target is in an excluded namespace (the step is Skipped).
    ExcludedNamespace,
    /// The target process is protected (the step is Skipped).
    ProtectedProcess,
    /// The Node object is gone.
    NodeMissing,
    /// A selecting policy is in storm: node-level actions wait.
    StormActive,
    /// The policy's maxConcurrentActions nodes are already in progress.
    MaxConcurrentActions,
    /// The last disruptive action on the node was within the cooldown.
    Cooldown,
    /// The node's signal budget for the hour is spent.
    MaxSignalsPerHour,
    /// A node-wide step, a problem contained in one pod, and no pod-level
    /// step of the episode carried out yet.
    PodContained,
    /// A step for problems in one pod, and the problem is node-wide.
    NodeWide,
    /// The policy or the node is paused (`nodemedic.io/paused`).
    Paused,
}

impl HoldReason {
    pub const ALL: [HoldReason; 11] = [
        HoldReason::NoTarget,
        HoldReason::ExcludedNamespace,
        HoldReason::ProtectedProcess,
        HoldReason::NodeMissing,
        HoldReason::StormActive,
        HoldReason::MaxConcurrentActions,
        HoldReason::Cooldown,
        HoldReason::MaxSignalsPerHour,
        HoldReason::PodContained,
        HoldReason::NodeWide,
        HoldReason::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::NoTarget => "NoTarget",
            HoldReason::ExcludedNamespace => "ExcludedNamespace",
            HoldReason::ProtectedProcess => "ProtectedProcess",
            HoldReason::NodeMissing => "NodeMissing",
            HoldReason::StormActive => "StormActive",
            HoldReason::MaxConcurrentActions => "MaxConcurrentActions",
            HoldReason::Cooldown => "Cooldown",
            HoldReason::MaxSignalsPerHour => "MaxSignalsPerHour",
            HoldReason::PodContained => "PodContained",
            HoldReason::NodeWide => "NodeWide",
            HoldReason::Paused => "Paused",
        }
    }
}

/// Why the planner ended a Started step (outcomes of the executors carry
/// their own reasons, from the error or refusal they met).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The ladder no longer has the step (the policy was edited).
    LadderEdited,
    /// The agent reported the request Failed.
    AgentFailed,
    /// The agent found the target gone.
    TargetGone,
    /// The agent found another process under the target's pid.
    TargetChanged,
    /// The agent refused the request.
    Refused,
    /// No result (request) or no end (eviction, drain) within the timeout.
    Timeout,
}

impl EndReason {
    pub const ALL: [EndReason; 6] = [
        EndReason::LadderEdited,
        EndReason::AgentFailed,
        EndReason::TargetGone,
        EndReason::TargetChanged,
        EndReason::Refused,
        EndReason::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::LadderEdited => "LadderEdited",
            EndReason::AgentFailed => "AgentFailed",
            EndReason::TargetGone => "TargetGone",
            EndReason::TargetChanged => "TargetChanged",
            EndReason::Refused => "Refused",
            EndReason::Timeout => "Timeout",
        }
    }
}

/// The reason of an Event the operator publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// The Event step: the detector's condition type.
    Detected(Detector),
    RemediationPlanned,
    RemediationHeld,
    RemediationSkipped,
    RemediationFailed,
    SignalRequested,
    ParentSignalled,
    RebootRequested,
    NodeConditionSet,
    NodeCordoned,
    NodeTainted,
    PodEvicted,
    NodeDrained,
    NodeUncordoned,
    NodeUntainted,
    NeedsAttention,
    /// On the policy: the operator saw the policy paused.
    Paused,
    /// On the policy: the operator saw the policy's pause lifted.
    Resumed,
}

impl EventReason {
    pub const ALL: [EventReason; 21] = [
        EventReason::Detected(Detector::Zombies),
        EventReason::Detected(Detector::HungTasks),
        EventReason::Detected(Detector::FdLeak),
        EventReason::Detected(Detector::CpuThrottling),
        EventReason::RemediationPlanned,
        EventReason::RemediationHeld,
        EventReason::RemediationSkipped,
        EventReason::RemediationFailed,
        EventReason::SignalRequested,
        EventReason::ParentSignalled,
        EventReason::RebootRequested,
        EventReason::NodeConditionSet,
        EventReason::NodeCordoned,
        EventReason::NodeTainted,
        EventReason::PodEvicted,
        EventReason::NodeDrained,
        EventReason::NodeUncordoned,
        EventReason::NodeUntainted,
        EventReason::NeedsAttention,
        EventReason::Paused,
        EventReason::Resumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Detected(Detector::Zombies) => "ZombiesDetected",
            EventReason::Detected(Detector::HungTasks) => "HungTasksDetected",
            EventReason::Detected(Detector::FdLeak) => "FdLeakDetected",
            EventReason::Detected(Detector::CpuThrottling) => "CpuThrottlingDetected",
            EventReason::RemediationPlanned => "RemediationPlanned",
            EventReason::RemediationHeld => "RemediationHeld",
            EventReason::RemediationSkipped => "RemediationSkipped",
            EventReason::RemediationFailed => "RemediationFailed",
            EventReason::SignalRequested => "SignalRequested",
            EventReason::ParentSignalled => "ParentSignalled",
            EventReason::RebootRequested => "RebootRequested",
            EventReason::NodeConditionSet => "NodeConditionSet",
            EventReason::NodeCordoned => "NodeCordoned",
            EventReason::NodeTainted => "NodeTainted",
            EventReason::PodEvicted => "PodEvicted",
            EventReason::NodeDrained => "NodeDrained",
            EventReason::NodeUncordoned => "NodeUncordoned",
            EventReason::NodeUntainted => "NodeUntainted",
            EventReason::NeedsAttention => "NeedsAttention",
            EventReason::Paused => "Paused",
            EventReason::Resumed => "Resumed",
        }
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// docs/operator.md is where SREs look codes up: every code is there.
    #[test]
    fn every_code_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md"))
                .unwrap();
        let codes = HoldReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(EndReason::ALL.iter().map(|r| r.as_str()))
            .chain(EventReason::ALL.iter().map(|r| r.as_str()));
        let missing: Vec<&str> = codes.filter(|c| !doc.contains(&format!("`{c}`"))).collect();
        assert!(missing.is_empty(), "not in docs/operator.md: {missing:?}");
    }

    #[test]
    fn codes_are_distinct_within_their_kind() {
        let mut events: Vec<&str> = EventReason::ALL.iter().map(|r| r.as_str()).collect();
        events.sort();
        events.dedup();
        assert_eq!(events.len(), EventReason::ALL.len());
        let mut steps: Vec<&str> = HoldReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(EndReason::ALL.iter().map(|r| r.as_str()))
            .collect();
        steps.sort();
        steps.dedup();
        assert_eq!(steps.len(), HoldReason::ALL.len() + EndReason::ALL.len());
    }
}
