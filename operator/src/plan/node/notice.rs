//! The Event step: a Warning Event on the node (and the attributed pod)
//! naming the detector; not disruptive, no budget.

use nodemedic_crds::PolicyMode;
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::report::PolicyCondition;

use super::*;
use crate::plan::settle::{Settler, update_step};

impl NodePlanner<'_, '_> {
    /// Publishes the Event (settled Done or Failed by its outcome).
    pub(super) fn start_event(
        &self,
        cx: &mut NodeCtx<'_>,
        episode: &Episode,
        sref: StepRef,
        pod: Option<PodRef>,
        cond: &PolicyCondition,
    ) {
        let p = self.policy();
        let detector = episode.detector;
        let note = format!(
            "policy {}: {} firing for {}: {}",
            p.name,
            detector,
            format_duration(elapsed(episode.since.0, self.now())),
            cond.message
        );
        cx.effects.push(event(cx, sref, detector, pod, &note));
    }

    /// A Started Event step (its publication was interrupted): again.
    pub(super) fn resume_event(
        &self,
        cx: &mut NodeCtx<'_>,
        episode: &Episode,
        step: &Step,
        cond: &PolicyCondition,
    ) {
        let p = self.policy();
        if p.mode != PolicyMode::Enforce {
            return;
        }
        let detector = episode.detector;
        let pod = facts::attributed_pod(cx.report, &p.name, detector);
        let note = format!("policy {}: {} firing: {}", p.name, detector, cond.message);
        let sref = StepRef::of(&p.name, detector, step);
        cx.effects.push(event(cx, sref, detector, pod, &note));
    }
}

fn event(
    cx: &NodeCtx<'_>,
    step: StepRef,
    detector: Detector,
    pod: Option<PodRef>,
    note: &str,
) -> Effect {
    Effect::Event {
        step,
        notice: Notice {
            node: cx.name.clone(),
            pod,
            warning: true,
            reason: EventReason::Detected(detector),
            action: ActionKind::Event,
            note: truncate_note(note),
        },
    }
}

/// Settling: what an outcome makes of the step (see `plan::settle`).
impl Settler<'_> {
    /// The Event step: Done once published.
    pub(in crate::plan) fn event(
        &mut self,
        step: &StepRef,
        notice: &Notice,
        outcome: &EffectOutcome,
    ) {
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
}
