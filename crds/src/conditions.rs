//! The API's vocabulary: detectors, condition types, statuses and reasons,
//! field managers and annotations. The agent writes these values and the
//! operator matches on them, so both take them from here.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The four detectors, named as in `spec.detectors` and `spec.actions`.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum Detector {
    /// Zombie buildup under parents that never reap.
    Zombies,
    /// Threads hung in uninterruptible sleep (D state).
    HungTasks,
    /// Processes approaching their open-file limit.
    FdLeak,
    /// Containers throttled by their CFS quota.
    CpuThrottling,
}

impl Detector {
    /// Every detector, in the order reports list them.
    pub const ALL: [Detector; 4] = [
        Detector::Zombies,
        Detector::HungTasks,
        Detector::FdLeak,
        Detector::CpuThrottling,
    ];

    /// The field name in `spec.detectors` and `spec.actions`.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Zombies => "zombies",
            Detector::HungTasks => "hungTasks",
            Detector::FdLeak => "fdLeak",
            Detector::CpuThrottling => "cpuThrottling",
        }
    }

    /// The report condition type this detector sets.
    pub fn condition_type(self) -> ConditionType {
        match self {
            Detector::Zombies => ConditionType::ZombiesDetected,
            Detector::HungTasks => ConditionType::HungTasksDetected,
            Detector::FdLeak => ConditionType::FdLeakDetected,
            Detector::CpuThrottling => ConditionType::CpuThrottlingDetected,
        }
    }

    /// The Node condition type the `NodeCondition` action sets, so that tools
    /// remediating on node conditions (e.g. medik8s NodeHealthCheck) can use it.
    pub fn node_condition_type(self) -> &'static str {
        match self {
            Detector::Zombies => "NodemedicZombies",
            Detector::HungTasks => "NodemedicHungTasks",
            Detector::FdLeak => "NodemedicFdLeak",
            Detector::CpuThrottling => "NodemedicCpuThrottling",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no detector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown detector {0:?}; expected zombies, hungTasks, fdLeak or cpuThrottling")]
pub struct UnknownDetector(pub String);

impl FromStr for Detector {
    type Err = UnknownDetector;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Detector::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDetector(s.to_owned()))
    }
}

/// Type of a report condition: one per detector.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The zombies detector fires.
    ZombiesDetected,
    /// The hungTasks detector fires.
    HungTasksDetected,
    /// The fdLeak detector fires.
    FdLeakDetected,
    /// The cpuThrottling detector fires.
    CpuThrottlingDetected,
}

impl ConditionType {
    /// The detector behind this condition.
    pub fn detector(self) -> Detector {
        match self {
            ConditionType::ZombiesDetected => Detector::Zombies,
            ConditionType::HungTasksDetected => Detector::HungTasks,
            ConditionType::FdLeakDetected => Detector::FdLeak,
            ConditionType::CpuThrottlingDetected => Detector::CpuThrottling,
        }
    }
}

/// Kubernetes condition status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known.
    Unknown,
}

impl ConditionStatus {
    /// `True` for `true`, `False` for `false`.
    pub fn from_bool(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }

    /// The string Kubernetes conditions use.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Why a report condition has its status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionReason {
    /// Firing: the threshold has been exceeded for the detector's `for`.
    ThresholdExceeded,
    /// Still firing: below the threshold, but not yet for the detector's
    /// `for` (hysteresis on resolution).
    Clearing,
    /// Not firing yet: exceeded, but not yet for the detector's `for`.
    Pending,
    /// Not firing: below the threshold.
    BelowThreshold,
}

impl ConditionReason {
    /// The reason for a detector that is `firing` (hysteresis applied) and
    /// whose threshold is `exceeded` in the current scan.
    pub fn of(firing: bool, exceeded: bool) -> Self {
        match (firing, exceeded) {
            (true, true) => ConditionReason::ThresholdExceeded,
            (true, false) => ConditionReason::Clearing,
            (false, true) => ConditionReason::Pending,
            (false, false) => ConditionReason::BelowThreshold,
        }
    }
}

/// Types of `NodeHealthPolicy.status.conditions`.
pub mod policy_condition {
    /// The policy is valid and being acted on.
    pub const READY: &str = "Ready";
    /// More selected nodes than `safety.maxUnhealthy` are unhealthy:
    /// node-level actions are paused.
    pub const STORM_ACTIVE: &str = "StormActive";
    /// Some selected nodes have stale or no reports, or actions fail.
    pub const DEGRADED: &str = "Degraded";
    /// The policy is paused (True), or only some of its nodes are (False,
    /// reason `NodesPaused`): no new ladder step starts where paused.
    pub const PAUSED: &str = "Paused";
}

/// Field managers for server-side apply; each component owns only its fields.
pub mod field_manager {
    /// The agent: the report's status (and creating the report).
    pub const AGENT: &str = "nodemedic-agent";
    /// The operator: policy status, report spec, cordons, taints.
    pub const OPERATOR: &str = "nodemedic-operator";
    /// The operator's Node conditions (one per detector), kept apart so that
    /// applying them never touches conditions other components own.
    pub const NODE_CONDITIONS: &str = "nodemedic-node-conditions";
}

/// Annotation on a process's pod that protects it from eviction and signals
/// (the default of `safety.protectAnnotation`).
pub const PROTECT_ANNOTATION: &str = "nodemedic.io/protect";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_names_round_trip_and_match_serde() {
        for d in Detector::ALL {
            assert_eq!(d.name().parse::<Detector>(), Ok(d));
            let json = serde_json::to_string(&d).expect("serializes");
            assert_eq!(json, format!("\"{}\"", d.name()));
            assert_eq!(d.condition_type().detector(), d);
        }
        assert!("zombie".parse::<Detector>().is_err());
    }

    #[test]
    fn reasons_cover_the_hysteresis_states() {
        assert_eq!(
            ConditionReason::of(true, true),
            ConditionReason::ThresholdExceeded
        );
        assert_eq!(ConditionReason::of(true, false), ConditionReason::Clearing);
        assert_eq!(ConditionReason::of(false, true), ConditionReason::Pending);
        assert_eq!(
            ConditionReason::of(false, false),
            ConditionReason::BelowThreshold
        );
        assert_eq!(ConditionStatus::from_bool(true).as_str(), "True");
    }
}
