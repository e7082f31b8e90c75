//! A policy as the planner needs it: durations parsed, ladders indexed,
//! the selector validated. Building it is the "validate" step; a policy that
//! fails here gets `Ready=False` and nothing is planned for it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::duration::{DurationError, parse_duration};
use nodemedic_crds::pause::{Pause, pause_from_annotations};
use nodemedic_crds::policy::{
    ActionKind, ActionStep, DrainOptions, ParentSignal, StepScope, TaintEffect, TaintTemplate,
};
use nodemedic_crds::selector::{SelectorError, selects};
use nodemedic_crds::thresholds::{EffectiveThresholds, ThresholdError};
use nodemedic_crds::{NodeHealthPolicy, PolicyMode};

/// Why a stored policy cannot be acted on. The API server's schema and CEL
/// rules reject most of these; the operator re-checks because a stored object
/// may predate a rule or slip past a rule the server does not evaluate (an
/// unknown selector operator, for one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("nodeSelector: {0}")]
    Selector(#[from] SelectorError),
    #[error("{0}")]
    Thresholds(#[from] ThresholdError),
    #[error("actions.{detector}[{index}].after: {source}")]
    After {
        detector: Detector,
        index: usize,
        #[source]
        source: DurationError,
    },
    #[error("actions.{detector}[{index}]: a Taint step needs taint.key and taint.effect")]
    TaintMissing { detector: Detector, index: usize },
    #[error(
        "actions.{detector}[{index}].taint: a NoExecute taint evicts pods through the taint manager, bypassing PodDisruptionBudgets, excludeNamespaces, the protect annotation and the DaemonSet exemption; use a Drain step instead, or set allowNoExecute: true"
    )]
    NoExecute { detector: Detector, index: usize },
    #[error("actions.{detector}[{index}]: SignalParent applies only to the zombies detector")]
    SignalNotZombies { detector: Detector, index: usize },
    #[error("actions.{0}: the ladder needs detectors.{0} to be configured")]
    LadderWithoutDetector(Detector),
    #[error("safety.cooldown: {0}")]
    Cooldown(#[source] DurationError),
    #[error(
        "safety.maxUnhealthy: {0:?} is not a non-negative integer or a percentage from 0% to 100%"
    )]
    MaxUnhealthy(String),
}

impl PolicyError {
    /// Stable reason for the Ready condition.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Selector(_) => "InvalidSelector",
            _ => "InvalidSpec",
        }
    }
}

/// `safety.maxUnhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnhealthy {
    /// An absolute number of nodes.
    Count(u32),
    /// A percentage of the selected nodes, rounded down but at least one
    /// node when the percentage and the pool are not zero.
    Percent(u32),
}

impl MaxUnhealthy {
    /// Parses the API value.
    pub fn parse(value: &IntOrString) -> Result<Self, PolicyError> {
        match value {
            IntOrString::Int(n) => u32::try_from(*n)
                .map(MaxUnhealthy::Count)
                .map_err(|_| PolicyError::MaxUnhealthy(n.to_string())),
            IntOrString::String(s) => {
                let bad = || PolicyError::MaxUnhealthy(s.clone());
                if let Some(p) = s.strip_suffix('%') {
                    let p: u32 = p.parse().map_err(|_| bad())?;
                    if p > 100 {
                        return Err(bad());
                    }
                    Ok(MaxUnhealthy::Percent(p))
                } else {
                    s.parse().map(MaxUnhealthy::Count).map_err(|_| bad())
                }
            }
        }
    }

    /// The number of unhealthy nodes allowed among `selected`; a storm is
    /// more than this. A non-zero percentage of a non-empty pool allows at
    /// least one node: rounding down alone would make "10%" of a pool of
    /// fewer than ten nodes a storm as soon as one node is sick, and no
    /// node-level step could ever run there. Two sick nodes out of three are
    /// still a storm.
    pub fn limit(self, selected: u32) -> u32 {
        match self {
            MaxUnhealthy::Count(n) => n,
            MaxUnhealthy::Percent(0) => 0,
            MaxUnhealthy::Percent(_) if selected == 0 => 0,
            MaxUnhealthy::Percent(p) => u32::try_from(u64::from(selected) * u64::from(p) / 100)
                .unwrap_or(u32::MAX)
                .max(1),
        }
    }
}

impl std::fmt::Display for MaxUnhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnhealthy::Count(n) => write!(f, "{n}"),
            MaxUnhealthy::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One rung of a ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Position in the ladder.
    pub index: u32,
    /// The action.
    pub action: ActionKind,
    /// How long the detector must have fired.
    pub after: Duration,
    /// SignalParent's signal.
    pub signal: ParentSignal,
    /// Taint's taint.
    pub taint: Option<TaintTemplate>,
    /// Drain's and EvictPod's opt-ins (default: refuse like `kubectl drain`).
    pub drain: DrainOptions,
    /// Which problems the step is for (defaulted by the action).
    pub scope: StepScope,
}

/// `spec.safety`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyView {
    pub max_unhealthy: MaxUnhealthy,
    pub max_concurrent_actions: u32,
    pub cooldown: Duration,
    pub max_signals_per_hour: u32,
    pub exclude_namespaces: Vec<String>,
    pub protect_annotation: String,
    pub protected_processes: Vec<String>,
    pub uncordon_when_healthy: bool,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyView {
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub mode: PolicyMode,
    pub selector: Option<LabelSelector>,
    /// Configured detectors, in API order.
    pub detectors: Vec<Detector>,
    /// Ladders of the configured detectors (empty = report only).
    pub ladders: BTreeMap<Detector, Vec<Step>>,
    pub safety: SafetyView,
    /// The policy is paused (its `nodemedic.io/paused` annotation): no new
    /// ladder step starts and nothing it placed is undone.
    pub pause: Option<Pause>,
}

impl PolicyView {
    /// Validates and parses a policy.
    pub fn from_policy(policy: &NodeHealthPolicy) -> Result<Self, PolicyError> {
        let spec = &policy.spec;
        // An invalid requirement errors whatever the labels.
        selects(spec.node_selector.as_ref(), &BTreeMap::new())?;
        let thresholds = EffectiveThresholds::from_spec(spec)?;
        let detectors: Vec<Detector> = Detector::ALL
            .into_iter()
            .filter(|d| thresholds.enabled(*d))
            .collect();
        let mut ladders = BTreeMap::new();
        for detector in Detector::ALL {
            let steps = spec.actions.ladder(detector);
            if steps.is_empty() {
                continue;
            }
            if !thresholds.enabled(detector) {
                return Err(PolicyError::LadderWithoutDetector(detector));
            }
            let mut parsed = Vec::with_capacity(steps.len());
            for (index, step) in steps.iter().enumerate() {
                parsed.push(parse_step(detector, index, step)?);
            }
            ladders.insert(detector, parsed);
        }
        let s = &spec.safety;
        Ok(Self {
            name: policy.metadata.name.clone().unwrap_or_default(),
            uid: policy.metadata.uid.clone(),
            generation: policy.metadata.generation,
            mode: spec.mode,
            selector: spec.node_selector.clone(),
            detectors,
            ladders,
            safety: SafetyView {
                max_unhealthy: MaxUnhealthy::parse(&s.max_unhealthy)?,
                max_concurrent_actions: s.max_concurrent_actions.max(1),
                cooldown: parse_duration(s.cooldown.as_str()).map_err(PolicyError::Cooldown)?,
                max_signals_per_hour: s.max_signals_per_hour,
                exclude_namespaces: s.exclude_namespaces.clone(),
                protect_annotation: s.protect_annotation.clone(),
                protected_processes: s.protected_processes.clone(),
                uncordon_when_healthy: s.uncordon_when_healthy,
            },
            pause: policy
                .metadata
                .annotations
                .as_ref()
                .and_then(pause_from_annotations),
        })
    }

    /// Whether the policy selects a node with `labels` (the selector was
    /// validated when the view was built).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        selects(self.selector.as_ref(), labels).unwrap_or(false)
    }

    /// The ladder of `detector` (empty when none).
    pub fn ladder(&self, detector: Detector) -> &[Step] {
        self.ladders.get(&detector).map_or(&[], Vec::as_slice)
    }
}

fn parse_step(detector: Detector, index: usize, step: &ActionStep) -> Result<Step, PolicyError> {
    let after = step.after().map_err(|source| PolicyError::After {
        detector,
        index,
        source,
    })?;
    if step.action == ActionKind::Taint && step.taint.is_none() {
        return Err(PolicyError::TaintMissing { detector, index });
    }
    if step.action == ActionKind::SignalParent && detector != Detector::Zombies {
        return Err(PolicyError::SignalNotZombies { detector, index });
    }
    if let Some(t) = &step.taint
        && t.effect == TaintEffect::NoExecute
        && !t.allow_no_execute
    {
        // The API server refuses this; a stored object may predate the rule.
        return Err(PolicyError::NoExecute { detector, index });
    }
    Ok(Step {
        // Ladders hold at most 8 steps (schema).
        index: u32::try_from(index).unwrap_or(u32::MAX),
        action: step.action,
        after,
        signal: step.signal.unwrap_or_default(),
        taint: step.taint.clone(),
        drain: step.drain.unwrap_or_default(),
        scope: step.effective_scope(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unhealthy_rounds_percentages_down_to_at_least_one_node() {
        let p = |s: &str| MaxUnhealthy::parse(&IntOrString::String(s.into()));
        assert_eq!(p("20%").map(|m| m.limit(10)), Ok(2));
        assert_eq!(p("10%").map(|m| m.limit(9)), Ok(1));
        assert_eq!(p("15%").map(|m| m.limit(10)), Ok(1));
        assert_eq!(p("100%").map(|m| m.limit(7)), Ok(7));
        assert_eq!(p("3").map(|m| m.limit(100)), Ok(3));
        assert_eq!(
            MaxUnhealthy::parse(&IntOrString::Int(4)).map(|m| m.limit(1)),
            Ok(4)
        );
        assert!(p("101%").is_err());
        assert!(p("ten").is_err());
        assert!(MaxUnhealthy::parse(&IntOrString::Int(-1)).is_err());
    }
}
