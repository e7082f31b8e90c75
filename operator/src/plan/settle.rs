//! Folding the outcomes of a node's effects back into its durable state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::{ActionKind, ActionOutcome, ActionRecord};
use nodemedic_crds::remediation::{DrainProgress, StepPhase, StepRecord};

use super::facts::PodRef;
use super::node::refund;
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

/// Settling one node's outcomes: one method per kind of effect.
struct Settler<'a> {
    spec: NodeState,
    out: Out<'a>,
    settings: &'a Settings,
    now: Timestamp,
}

impl Settler<'_> {
    /// The Event step: Done once published.
    fn event(&mut self, step: &StepRef, notice: &Notice, outcome: &EffectOutcome) {
        let ok = matches!(outcome, EffectOutcome::Done(_));
        update_step(&mut self.spec, step, |rec| {
            rec.phase = if ok {
                StepPhase::Done
            } else {
                StepPhase::Failed
            };
            rec.since = Time(self.now);
            if let EffectOutcome::Failed { reason, message } = outcome {
                rec.reason = Some(reason.clone());
                rec.message = Some(truncate_note(message));
            }
        });
        self.out.records.push(ActionRecord {
            time: Time(self.now),
            node: self.out.node.to_owned(),
            detector: step.detector.name().to_owned(),
            action: ActionKind::Event,
            outcome: if ok {
                ActionOutcome::Executed
            } else {
                ActionOutcome::Failed
            },
            message: Some(notice.note.clone()),
        });
    }

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

    /// Cordon, Taint, EvictPod: Done, Skipped or Failed; evictions refused
    /// (Retry) are tried again until the eviction timeout.
    fn node_effect(&mut self, step: &StepRef, evicted: Option<&PodRef>, outcome: &EffectOutcome) {
        let pod = evicted.cloned();
        if let EffectOutcome::Retry(message) = outcome {
            let timeout = self.settings.eviction_timeout;
            let mut timed_out = false;
            update_step(&mut self.spec, step, |rec| {
                rec.attempts = rec.attempts.saturating_add(1);
                rec.last_attempt_at = Some(Time(self.now));
                rec.message = Some(truncate_note(message));
                let started = rec.started_at.as_ref().map_or(rec.since.0, |t| t.0);
                if self.now >= plus(started, timeout) {
                    timed_out = true;
                    rec.phase = StepPhase::Failed;
                    rec.since = Time(self.now);
                    rec.reason = Some(EndReason::Timeout.as_str().into());
                    rec.message = Some(truncate_note(&format!(
                        "gave up after {} attempts in {}: {message}",
                        rec.attempts,
                        format_duration(timeout)
                    )));
                }
            });
            if timed_out {
                let msg = step_message(&self.spec, step);
                self.out.push(
                    Some(step),
                    step.action,
                    ActionOutcome::Failed,
                    &msg,
                    pod,
                    EventReason::RemediationFailed,
                    true,
                );
            }
            return;
        }
        let (phase, rec_outcome, msg, reason) = phase_of(outcome);
        update_step(&mut self.spec, step, |rec| {
            rec.phase = phase;
            rec.since = Time(self.now);
            rec.reason = reason.clone();
            rec.message = Some(truncate_note(&msg));
            if evicted.is_some() {
                rec.attempts = rec.attempts.saturating_add(1);
                rec.last_attempt_at = Some(Time(self.now));
            }
        });
        if phase == StepPhase::Skipped {
            let started = step_started(&self.spec, step);
            refund(&mut self.spec.remediation.history, step, started.as_ref());
        }
        let event = match (step.action, phase) {
            (ActionKind::Cordon, StepPhase::Done) => EventReason::NodeCordoned,
            (ActionKind::Taint, StepPhase::Done) => EventReason::NodeTainted,
            (ActionKind::EvictPod, StepPhase::Done) => EventReason::PodEvicted,
            (_, StepPhase::Skipped) => EventReason::RemediationSkipped,
            _ => EventReason::RemediationFailed,
        };
        self.out.push(
            Some(step),
            step.action,
            rec_outcome,
            &msg,
            pod,
            event,
            phase != StepPhase::Done,
        );
    }

    /// A drain pass still running: nothing to settle, unless the drain's
    /// time is up (then the pass's result, when it comes, is for a step
    /// that has ended).
    fn drain_pending(&mut self, step: &StepRef) {
        let timeout = self.settings.drain_timeout;
        let mut timed_out = None;
        update_step(&mut self.spec, step, |rec| {
            timed_out = drain_timed_out(rec, self.now, timeout, "a pass was still running");
        });
        if let Some(m) = timed_out {
            self.out.push(
                Some(step),
                ActionKind::Drain,
                ActionOutcome::Failed,
                &m,
                None,
                EventReason::RemediationFailed,
                true,
            );
        }
    }

    /// A drain pass ended: progress adds up; Done when complete.
    fn drain_pass(
        &mut self,
        step: &StepRef,
        progress: &DrainProgress,
        end: DrainPassEnd,
        message: &str,
    ) {
        let timeout = self.settings.drain_timeout;
        let mut result: Option<(StepPhase, String)> = None;
        update_step(&mut self.spec, step, |rec| {
            // A pass cut short by its time budget made progress
            // and is no reason to back off: only blocked passes
            // count as attempts (next_retry doubles per attempt).
            if end != DrainPassEnd::OutOfTime {
                rec.attempts = rec.attempts.saturating_add(1);
            }
            rec.last_attempt_at = Some(Time(self.now));
            // Pods evicted add up over passes; the rest is this pass.
            let before = rec.drain.as_ref().map_or(0, |d| d.evicted);
            rec.drain = Some(DrainProgress {
                evicted: before.saturating_add(progress.evicted),
                ..progress.clone()
            });
            rec.message = Some(truncate_note(message));
            if end == DrainPassEnd::Complete {
                rec.phase = StepPhase::Done;
                rec.since = Time(self.now);
                result = Some((StepPhase::Done, message.to_owned()));
            } else if let Some(m) = drain_timed_out(rec, self.now, timeout, message) {
                result = Some((StepPhase::Failed, m));
            }
        });
        match result {
            Some((StepPhase::Done, m)) => self.out.push(
                Some(step),
                ActionKind::Drain,
                ActionOutcome::Executed,
                &m,
                None,
                EventReason::NodeDrained,
                false,
            ),
            Some((_, m)) => self.out.push(
                Some(step),
                ActionKind::Drain,
                ActionOutcome::Failed,
                &m,
                None,
                EventReason::RemediationFailed,
                true,
            ),
            None => {}
        }
    }

    /// A drain pass that could not run (Retry counts against the timeout)
    /// or ended the step (Failed, e.g. refused like kubectl drain).
    fn drain_other(&mut self, step: &StepRef, outcome: &EffectOutcome) {
        let (phase, rec_outcome, msg, reason) = phase_of(outcome);
        if matches!(outcome, EffectOutcome::Retry(_)) {
            // A pass that could not even start (the cordon or the
            // pod list failed transiently) still counts against
            // the drain's timeout.
            let timeout = self.settings.drain_timeout;
            let mut timed_out = None;
            update_step(&mut self.spec, step, |rec| {
                rec.attempts = rec.attempts.saturating_add(1);
                rec.last_attempt_at = Some(Time(self.now));
                rec.message = Some(truncate_note(&msg));
                timed_out = drain_timed_out(rec, self.now, timeout, &msg);
            });
            if let Some(m) = timed_out {
                self.out.push(
                    Some(step),
                    ActionKind::Drain,
                    ActionOutcome::Failed,
                    &m,
                    None,
                    EventReason::RemediationFailed,
                    true,
                );
            }
            return;
        }
        update_step(&mut self.spec, step, |rec| {
            rec.phase = phase;
            rec.since = Time(self.now);
            rec.reason = reason.clone();
            rec.message = Some(truncate_note(&msg));
        });
        self.out.push(
            Some(step),
            ActionKind::Drain,
            rec_outcome,
            &msg,
            None,
            if phase == StepPhase::Done {
                EventReason::NodeDrained
            } else {
                EventReason::RemediationFailed
            },
            phase != StepPhase::Done,
        );
    }

    /// nodemedic's cordon or taint removed (no step: every owner let go).
    fn undo(&mut self, action: ActionKind, outcome: &EffectOutcome) {
        match outcome {
            EffectOutcome::Done(m) => self.out.push(
                None,
                action,
                ActionOutcome::Executed,
                m,
                None,
                if action == ActionKind::Cordon {
                    EventReason::NodeUncordoned
                } else {
                    EventReason::NodeUntainted
                },
                false,
            ),
            EffectOutcome::Skipped { message, .. } => self.out.push(
                None,
                action,
                ActionOutcome::Skipped,
                message,
                None,
                EventReason::RemediationSkipped,
                false,
            ),
            EffectOutcome::Failed { message, .. } | EffectOutcome::Retry(message) => self.out.push(
                None,
                action,
                ActionOutcome::Failed,
                message,
                None,
                EventReason::RemediationFailed,
                true,
            ),
            EffectOutcome::Drained { .. } | EffectOutcome::Pending => {}
        }
    }
}

struct Out<'a> {
    node: &'a str,
    policy: &'a str,
    now: Timestamp,
    records: Vec<ActionRecord>,
    notices: Vec<Notice>,
}

impl Out<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
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
            message: Some(truncate_note(&format!("policy {}: {message}", self.policy))),
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
/// (the plan cannot know before the attempt's outcome is settled).
pub fn next_retry(spec: &NodeState, policy: &str) -> Option<Timestamp> {
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
            Some(plus(last.0, retry_delay(s.attempts.saturating_sub(1))))
        })
        .min()
}

/// Fails a drain that has run for its timeout (counted from when it
/// started) and returns the message; `None` while it still has time.
fn drain_timed_out(
    rec: &mut StepRecord,
    now: Timestamp,
    timeout: std::time::Duration,
    detail: &str,
) -> Option<String> {
    let started = rec.started_at.as_ref().map_or(rec.since.0, |t| t.0);
    if now < plus(started, timeout) {
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

fn phase_of(outcome: &EffectOutcome) -> (StepPhase, ActionOutcome, String, Option<String>) {
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

fn update_step(spec: &mut NodeState, step: &StepRef, f: impl FnOnce(&mut StepRecord)) {
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

fn step_message(spec: &NodeState, step: &StepRef) -> String {
    spec.remediation
        .episode(&step.policy, step.detector)
        .and_then(|e| e.step(step.index, step.action))
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn step_started(spec: &NodeState, step: &StepRef) -> Option<Time> {
    spec.remediation
        .episode(&step.policy, step.detector)
        .and_then(|e| e.step(step.index, step.action))
        .and_then(|s| s.started_at.clone())
}
