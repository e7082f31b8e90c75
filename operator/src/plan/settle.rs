//! Folding the outcomes of a node's effects back into its durable state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::{ActionKind, ActionOutcome, ActionRecord};
use nodemedic_crds::remediation::{StepPhase, StepRecord};

use super::facts::PodRef;
use super::policy::PolicyView;
use super::*;

/// Folds the outcomes of a node's effects into its durable state. Returns
/// the spec to write, the records for the policy status and the Events.
pub fn settle(
    work: &NodeWork,
    outcomes: &[EffectOutcome],
    policy: &PolicyView,
    settings: &Settings,
    now: Timestamp,
) -> (NodeState, Vec<ActionRecord>, Vec<Notice>) {
    let mut settler = Settler {
        spec: work.ahead.clone(),
        out: Out {
            node: &work.node,
            policy: &policy.name,
            now,
            records: Vec::new(),
            notices: Vec::new(),
        },
        settings,
        now,
    };
    for (effect, outcome) in work.effects.iter().zip(outcomes) {
        match effect {
            Effect::Event { step, notice } => settler.event(step, notice, outcome),
            Effect::NodeConditions { steps, .. } => settler.node_conditions(steps, outcome),
            Effect::Cordon { step, .. } | Effect::Taint { step, .. } => {
                settler.node_effect(step, None, outcome);
            }
            Effect::Evict { step, pod, .. } => settler.node_effect(step, Some(pod), outcome),
            Effect::Drain { step, .. } => match outcome {
                EffectOutcome::Pending => settler.drain_pending(step),
                EffectOutcome::Drained {
                    progress,
                    end,
                    message,
                } => settler.drain_pass(step, progress, *end, message),
                other => settler.drain_other(step, other),
            },
            Effect::Uncordon { .. } => settler.undo(ActionKind::Cordon, outcome),
            Effect::Untaint { .. } => settler.undo(ActionKind::Taint, outcome),
            Effect::ForgetCordon | Effect::ForgetTaint { .. } | Effect::Disown { .. } => {}
        }
    }
    let Settler { mut spec, out, .. } = settler;
    if spec != work.before {
        let cooldown = policy.safety.cooldown;
        prune_history(&mut spec.remediation.history, now, cooldown);
    }
    (spec, out.records, out.notices)
}

/// Settling one node's outcomes: one method per kind of effect, each with
/// its action's strategy (plan/node/*.rs); node conditions here.
pub(super) struct Settler<'a> {
    pub(super) spec: NodeState,
    pub(super) out: Out<'a>,
    pub(super) settings: &'a Settings,
    pub(super) now: Timestamp,
}

impl Settler<'_> {
    /// NodeCondition steps, settled with the node's conditions.
    fn node_conditions(&mut self, steps: &[StepRef], outcome: &EffectOutcome) {
        for step in steps {
            let (phase, rec_outcome, msg, reason) = phase_of(outcome);
            update_step(&mut self.spec, step, |rec| {
                rec.phase = phase;
                rec.since = Time(self.now);
                rec.reason = reason.clone();
                rec.message = Some(truncate_note(&msg));
            });
            self.out.push(
                Some(step),
                ActionKind::NodeCondition,
                rec_outcome,
                &msg,
                None,
                if phase == StepPhase::Done {
                    EventReason::NodeConditionSet
                } else {
                    EventReason::RemediationFailed
                },
                phase != StepPhase::Done,
            );
        }
    }
}

pub(super) struct Out<'a> {
    pub(super) node: &'a str,
    pub(super) policy: &'a str,
    pub(super) now: Timestamp,
    pub(super) records: Vec<ActionRecord>,
    pub(super) notices: Vec<Notice>,
}

impl Out<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
        &mut self,
        step: Option<&StepRef>,
        action: ActionKind,
        outcome: ActionOutcome,
        message: &str,
        pod: Option<PodRef>,
        reason: EventReason,
        warning: bool,
    ) {
        let detector = step.map_or(String::new(), |s| s.detector.name().to_owned());
        self.records.push(ActionRecord {
            time: Time(self.now),
            node: self.node.to_owned(),
            detector: detector.clone(),
            action,
            outcome,
            message: Some(truncate_note(&format!(
                "policy {}: {message}{}",
                self.policy,
                super::node::pod_suffix(pod.as_ref(), message)
            ))),
        });
        self.notices.push(Notice {
            node: self.node.to_owned(),
            pod,
            warning,
            reason,
            action,
            note: truncate_note(&if detector.is_empty() {
                format!("policy {}: {message}", self.policy)
            } else {
                format!("policy {} ({detector}): {message}", self.policy)
            }),
        });
    }
}

/// When the next retry of an eviction or drain of `policy` in `spec` is due
/// (the plan cannot know before the attempt's outcome is settled), or the
/// step's timeout if that comes first: past it the planner ends the step,
/// so a back-off longer than the time left must not delay that.
pub fn next_retry(spec: &NodeState, policy: &str, settings: &Settings) -> Option<Timestamp> {
    spec.remediation
        .episodes
        .iter()
        .filter(|e| e.policy == policy)
        .flat_map(|e| e.steps.iter())
        .filter(|s| {
            s.phase == StepPhase::Started
                && matches!(s.action, ActionKind::EvictPod | ActionKind::Drain)
        })
        .filter_map(|s| {
            let last = s.last_attempt_at.as_ref()?;
            let retry = plus(last.0, retry_delay(s.attempts.saturating_sub(1)));
            Some(retry.min(eviction_deadline(s, settings).1))
        })
        .min()
}

/// An eviction's or a drain's timeout (by the record's action) and when it
/// runs out, counted from when carrying the step out began.
pub(super) fn eviction_deadline(
    rec: &StepRecord,
    settings: &Settings,
) -> (std::time::Duration, Timestamp) {
    let timeout = if rec.action == ActionKind::Drain {
        settings.drain_timeout
    } else {
        settings.eviction_timeout
    };
    (timeout, plus(started_of(rec), timeout))
}

/// When carrying the step out began (its phase's start for older records).
fn started_of(rec: &StepRecord) -> Timestamp {
    rec.started_at.as_ref().map_or(rec.since.0, |t| t.0)
}

/// Fails a drain that has run for its timeout (counted from when it
/// started) and returns the message; `None` while it still has time.
pub(super) fn drain_timed_out(
    rec: &mut StepRecord,
    now: Timestamp,
    timeout: std::time::Duration,
    detail: &str,
) -> Option<String> {
    if now < plus(started_of(rec), timeout) {
        return None;
    }
    let m = format!(
        "drain did not finish within {}: {detail}",
        format_duration(timeout)
    );
    rec.phase = StepPhase::Failed;
    rec.since = Time(now);
    rec.reason = Some(EndReason::Timeout.as_str().into());
    rec.message = Some(truncate_note(&m));
    Some(m)
}

pub(super) fn phase_of(
    outcome: &EffectOutcome,
) -> (StepPhase, ActionOutcome, String, Option<String>) {
    match outcome {
        EffectOutcome::Done(m) => (StepPhase::Done, ActionOutcome::Executed, m.clone(), None),
        EffectOutcome::Skipped { reason, message } => (
            StepPhase::Skipped,
            ActionOutcome::Skipped,
            message.clone(),
            Some(reason.clone()),
        ),
        EffectOutcome::Failed { reason, message } => (
            StepPhase::Failed,
            ActionOutcome::Failed,
            message.clone(),
            Some(reason.clone()),
        ),
        EffectOutcome::Retry(m) => (StepPhase::Started, ActionOutcome::Failed, m.clone(), None),
        EffectOutcome::Drained { message, .. } => (
            StepPhase::Started,
            ActionOutcome::Executed,
            message.clone(),
            None,
        ),
        EffectOutcome::Pending => (
            StepPhase::Started,
            ActionOutcome::Executed,
            String::new(),
            None,
        ),
    }
}

pub(super) fn update_step(spec: &mut NodeState, step: &StepRef, f: impl FnOnce(&mut StepRecord)) {
    if let Some(rec) = spec
        .remediation
        .episodes
        .iter_mut()
        .filter(|e| e.policy == step.policy && e.detector == step.detector)
        .flat_map(|e| e.steps.iter_mut())
        .find(|s| s.index == step.index && s.action == step.action)
    {
        f(rec);
    }
}

pub(super) fn step_message(spec: &NodeState, step: &StepRef) -> String {
    spec.remediation
        .episode(&step.policy, step.detector)
        .and_then(|e| e.step(step.index, step.action))
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

pub(super) fn step_started(spec: &NodeState, step: &StepRef) -> Option<Time> {
    spec.remediation
        .episode(&step.policy, step.detector)
        .and_then(|e| e.step(step.index, step.action))
        .and_then(|s| s.started_at.clone())
}
