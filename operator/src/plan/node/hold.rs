//! The holds that stop a due step: the shared budgets (storm, concurrency,
//! cooldown, signal budget) every disruptive action passes, in one place.

use nodemedic_crds::PolicyMode;
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::ActionKind;
use nodemedic_crds::report::{PolicyCondition, ProblemScope};

use super::*;

/// Why a due step does not run now.
pub(super) struct Hold {
    pub(super) reason: HoldReason,
    pub(super) message: String,
    /// Final: Skipped, not retried.
    pub(super) skip: bool,
}

impl Hold {
    /// Waits; tried again on a later reconcile.
    pub(super) fn wait(reason: HoldReason, message: String) -> Self {
        Self {
            reason,
            message,
            skip: false,
        }
    }

    /// Final: the step is Skipped (DryRun: held).
    pub(super) fn skip(reason: HoldReason, message: String) -> Self {
        Self {
            reason,
            message,
            skip: true,
        }
    }
}

pub(super) fn node_missing() -> Hold {
    Hold {
        reason: HoldReason::NodeMissing,
        message: "the Node object does not exist".into(),
        skip: false,
    }
}

impl NodePlanner<'_, '_> {
    /// The pause that holds every new step of this policy on this node: the
    /// policy's own, else the node's. It comes before every other hold (no
    /// target is resolved, nothing is skipped while paused) and holds every
    /// action kind, Event and NodeCondition included.
    pub(super) fn pause_hold(&self, cx: &NodeCtx<'_>) -> Option<Hold> {
        let p = self.policy();
        let (what, pause) = match (&p.pause, cx.facts.as_ref().and_then(|f| f.pause.as_ref())) {
            (Some(pause), _) => (format!("policy {}", p.name), pause),
            (None, Some(pause)) => (format!("node {}", cx.name), pause),
            (None, None) => return None,
        };
        Some(Hold::wait(
            HoldReason::Paused,
            truncate_note(&format!(
                "remediation is paused on {what}{}; no new step starts until it is resumed",
                pause_detail(pause)
            )),
        ))
    }

    /// Whether this policy's remediation on this node is paused (by the
    /// policy or by the node).
    pub(super) fn paused_here(&self, cx: &NodeCtx<'_>) -> bool {
        self.policy().pause.is_some() || node_paused(cx)
    }

    /// Whether policy `name` is paused, as far as this reconcile knows (its
    /// own view, or another policy's).
    pub(super) fn policy_paused(&self, name: &str) -> bool {
        let p = self.policy();
        if p.name == name {
            return p.pause.is_some() && !self.input.deleting;
        }
        self.input
            .others
            .iter()
            .any(|o| o.view.name == name && o.view.pause.is_some())
    }

    /// Budget checks for a disruptive action on this node.
    pub(super) fn budget_hold(
        &self,
        cx: &NodeCtx<'_>,
        action: ActionKind,
        wake: &mut Wake,
    ) -> Option<Hold> {
        let p = self.policy();
        let now = self.now();
        if action.is_node_level() {
            if self.storm {
                return Some(Hold {
                    reason: HoldReason::StormActive,
                    message: format!(
                        "more than maxUnhealthy {} of the selected nodes are unhealthy or unknown; node-level actions are held",
                        p.safety.max_unhealthy
                    ),
                    skip: false,
                });
            }
            if let Some(other) = &cx.budget.storm {
                return Some(Hold {
                    reason: HoldReason::StormActive,
                    message: format!(
                        "policy {other}, which also selects this node, has an active storm; node-level actions are held"
                    ),
                    skip: false,
                });
            }
        }
        if p.mode == PolicyMode::Enforce
            && !self.in_progress.contains(&cx.name)
            && self.in_progress.len() >= p.safety.max_concurrent_actions as usize
        {
            return Some(Hold {
                reason: HoldReason::MaxConcurrentActions,
                message: format!(
                    "{} node(s) already have a remediation by this policy in progress (maxConcurrentActions {})",
                    self.in_progress.len(),
                    p.safety.max_concurrent_actions
                ),
                skip: false,
            });
        }
        let history = &cx.ahead.remediation.history;
        if let Some(last) = history
            .iter()
            .filter(|h| !h.planned && h.action.is_disruptive())
            .map(|h| h.at.0)
            .max()
        {
            let until = plus(last, cx.budget.cooldown);
            if now < until {
                wake.at(until);
                return Some(Hold {
                    reason: HoldReason::Cooldown,
                    message: format!(
                        "the last disruptive action on this node was less than the cooldown {} ago (strictest of the policies selecting it)",
                        format_duration(cx.budget.cooldown)
                    ),
                    skip: false,
                });
            }
        }
        if action == ActionKind::SignalParent {
            let window_start = minus(now, SIGNAL_WINDOW);
            let mut recent: Vec<Timestamp> = history
                .iter()
                .filter(|h| {
                    !h.planned && h.action == ActionKind::SignalParent && h.at.0 > window_start
                })
                .map(|h| h.at.0)
                .collect();
            recent.sort();
            let limit = cx.budget.max_signals_per_hour as usize;
            if recent.len() >= limit {
                if let Some(first) = recent.get(recent.len() - limit.max(1).min(recent.len())) {
                    wake.at(plus(*first, SIGNAL_WINDOW));
                }
                return Some(Hold {
                    reason: HoldReason::MaxSignalsPerHour,
                    message: format!(
                        "{} signal(s) sent on this node in the last hour (maxSignalsPerHour {}, strictest of the policies selecting it)",
                        recent.len(),
                        cx.budget.max_signals_per_hour
                    ),
                    skip: false,
                });
            }
        }
        None
    }
}

/// The step's scope against where the problem lives (the condition's
/// `scope`; agents older than the field count as Node). A node-wide step
/// (the default of Taint, Cordon, Drain, RequestReboot) reaches a problem
/// contained in one pod only after a pod-level step of this episode was
/// carried out (Done or Failed) and the problem persisted: the condition
/// comes from a scan made after that step ended (`scanned`: when the
/// operator first saw the report's current scan, else the agent's stamp).
/// Until that scan arrives the hold asks to be woken a scan interval later.
pub(super) fn scope_hold(
    episode: &Episode,
    step: &Step,
    cond: &PolicyCondition,
    scanned: Option<Timestamp>,
) -> Option<Hold> {
    let problem = cond.scope.unwrap_or(ProblemScope::Node);
    let culprit = || {
        cond.culprit
            .as_ref()
            .map_or_else(|| "?".to_owned(), ToString::to_string)
    };
    match (step.scope, problem) {
        (StepScope::Any, _)
        | (StepScope::Node, ProblemScope::Node)
        | (StepScope::Pod, ProblemScope::Pod) => None,
        (StepScope::Pod, ProblemScope::Node) => Some(Hold::wait(
            HoldReason::NodeWide,
            "the problem is node-wide (host processes or several pods); this step is for problems contained in one pod".into(),
        )),
        (StepScope::Node, ProblemScope::Pod) => match pod_level_ended(episode) {
            Some(ended) if scanned.is_some_and(|s| s > ended) => None,
            Some(ended) => Some(Hold::wait(
                HoldReason::PodContained,
                format!(
                    "the problem is contained in pod {}; a pod-level step ended at {ended}, and node-wide steps wait for a scan after it that still finds the problem",
                    culprit()
                ),
            )),
            None => Some(Hold::wait(
                HoldReason::PodContained,
                format!(
                    "the problem is contained in pod {}; node-wide steps wait until a pod-level step (SignalParent, EvictPod) of this episode has been carried out and the problem persisted (or set scope: Any on the step)",
                    culprit()
                ),
            )),
        },
    }
}

/// When the last pod-level step of the episode that was carried out ended.
fn pod_level_ended(episode: &Episode) -> Option<Timestamp> {
    episode
        .steps
        .iter()
        .filter(|s| {
            matches!(s.action, ActionKind::SignalParent | ActionKind::EvictPod)
                && matches!(s.phase, StepPhase::Done | StepPhase::Failed)
        })
        .map(|s| s.since.0)
        .max()
}

/// The node carries a pause.
pub(super) fn node_paused(cx: &NodeCtx<'_>) -> bool {
    cx.facts.as_ref().is_some_and(|f| f.pause.is_some())
}

/// " by alice (kernel upgrade)" for messages.
fn pause_detail(pause: &nodemedic_crds::pause::Pause) -> String {
    let mut text = String::new();
    if let Some(by) = &pause.by {
        text.push_str(&format!(" by {by}"));
    }
    if !pause.reason.is_empty() {
        text.push_str(&format!(" ({})", pause.reason));
    }
    text
}
