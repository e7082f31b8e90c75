//! Cordon and Taint: node-level effects nodemedic owns through annotations.
//! Joining nodemedic's own cordon or taint, or finding one someone else
//! placed, disrupts nothing and uses no budget; someone else's is never
//! removed (undoing is in `node_level`, once every owner let go).

use nodemedic_crds::PolicyMode;
use nodemedic_crds::policy::ActionOutcome;

use super::hold::node_missing;
use super::steps::Resolved;
use super::*;
use crate::plan::settle::{Settler, phase_of, step_message, step_started, update_step};

/// Whether a Cordon step has anything to do, and if the node is already
/// cordoned, by whom.
pub(super) fn resolve_cordon(cx: &NodeCtx<'_>) -> Resolved {
    let Some(f) = &cx.facts else {
        return Resolved::held(node_missing());
    };
    let in_effect = f.unschedulable.then(|| match &f.cordoned_by {
        Some(owners) => format!(
            "node already cordoned by nodemedic (for {}); joined",
            facts::format_policy_list(owners)
        ),
        None => "node already cordoned by someone else; nodemedic does not own this cordon and will never uncordon it".into(),
    });
    Resolved {
        in_effect,
        ..Resolved::default()
    }
}

/// Whether a Taint step has anything to do, and if the taint is already
/// there, whose it is.
pub(super) fn resolve_taint(cx: &NodeCtx<'_>, step: &Step) -> Resolved {
    let Some(f) = &cx.facts else {
        return Resolved::held(node_missing());
    };
    let target = step
        .taint
        .as_ref()
        .map(|t| format!("{}:{}", t.key, facts::effect_str(t.effect)));
    let in_effect = step.taint.as_ref().and_then(|t| {
        if !f.has_taint(&t.key, t.effect) {
            return None;
        }
        let what = format!("taint {}:{}", t.key, facts::effect_str(t.effect));
        Some(if owned_taint(f, t) {
            format!("{what} already placed by nodemedic; joined")
        } else {
            format!("{what} already present, placed by someone else; nodemedic will not remove it")
        })
    });
    Resolved {
        target,
        in_effect,
        ..Resolved::default()
    }
}

fn owned_taint(f: &NodeFacts, t: &nodemedic_crds::policy::TaintTemplate) -> bool {
    f.owned_taints
        .iter()
        .any(|o| o.key == t.key && o.effect == t.effect)
}

impl NodePlanner<'_, '_> {
    /// Cordons the node (as an owner), or records a cordon someone else
    /// placed as done: nodemedic never owns it.
    pub(super) fn start_cordon(
        &mut self,
        cx: &mut NodeCtx<'_>,
        sref: StepRef,
        in_effect: Option<&str>,
        rec: &mut StepRecord,
    ) {
        if let Some(msg) = in_effect {
            rec.message = Some(msg.to_owned());
        }
        let owned_elsewhere = cx
            .facts
            .as_ref()
            .is_some_and(|f| f.unschedulable && f.cordoned_by.is_none());
        if owned_elsewhere {
            rec.phase = StepPhase::Done;
            self.record(
                cx,
                &sref,
                Some(ActionOutcome::Executed),
                in_effect.unwrap_or_default(),
                None,
                false,
                EventReason::NodeCordoned,
            );
        } else {
            let owner = self.policy().name.clone();
            cx.effects.push(Effect::Cordon { step: sref, owner });
        }
    }

    /// Taints the node (as an owner), or records a taint someone else
    /// placed (or a step without a taint) as done.
    pub(super) fn start_taint(
        &mut self,
        cx: &mut NodeCtx<'_>,
        step: &Step,
        sref: StepRef,
        in_effect: Option<&str>,
        rec: &mut StepRecord,
    ) {
        let foreign = match (&cx.facts, &step.taint) {
            (Some(f), Some(t)) => f.has_taint(&t.key, t.effect) && !owned_taint(f, t),
            _ => false,
        };
        if let Some(msg) = in_effect {
            rec.message = Some(msg.to_owned());
        }
        match (&step.taint, foreign) {
            (Some(_), true) | (None, _) => {
                rec.phase = StepPhase::Done;
                self.record(
                    cx,
                    &sref,
                    Some(ActionOutcome::Executed),
                    in_effect.unwrap_or("no taint configured"),
                    None,
                    false,
                    EventReason::NodeTainted,
                );
            }
            (Some(t), false) => cx.effects.push(Effect::Taint {
                step: sref,
                owner: self.policy().name.clone(),
                taint: t.clone(),
            }),
        }
    }

    /// A Started cordon or taint (its write was interrupted): apply again;
    /// it is idempotent.
    pub(super) fn resume_node_effect(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &Episode,
        step: &Step,
    ) {
        let p = self.policy();
        if p.mode != PolicyMode::Enforce {
            return;
        }
        let sref = StepRef::of(&p.name, episode.detector, step);
        match (step.action, &step.taint) {
            (ActionKind::Cordon, _) => cx.effects.push(Effect::Cordon {
                step: sref,
                owner: p.name.clone(),
            }),
            (ActionKind::Taint, Some(t)) => cx.effects.push(Effect::Taint {
                step: sref,
                owner: p.name.clone(),
                taint: t.clone(),
            }),
            _ => {}
        }
    }
}

/// Settling: what an outcome makes of the step (see `plan::settle`).
impl Settler<'_> {
    /// Cordon, Taint, EvictPod: Done, Skipped or Failed; evictions refused
    /// (Retry) are tried again until the eviction timeout.
    pub(in crate::plan) fn node_effect(
        &mut self,
        step: &StepRef,
        evicted: Option<&PodRef>,
        outcome: &EffectOutcome,
    ) {
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

    /// nodemedic's cordon or taint removed (no step: every owner let go).
    pub(in crate::plan) fn undo(&mut self, action: ActionKind, outcome: &EffectOutcome) {
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
