//! EvictPod and Drain: steps the operator carries out through the Eviction
//! API. An eviction always targets the pod of its first attempt (namespace,
//! name and uid from the durable record); a drain is passes retried until
//! the node has no evictable pod or the drain's timeout.

use nodemedic_crds::PolicyMode;
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::ActionOutcome;
use nodemedic_crds::remediation::DrainProgress;

use super::hold::Hold;
use super::steps::Resolved;
use super::*;
use crate::plan::settle::{Settler, drain_timed_out, eviction_deadline, phase_of, update_step};

/// The pod an EvictPod step would evict: the one the findings attribute,
/// named with its uid (without it an eviction could hit a same-name
/// replacement).
pub(super) fn resolve_evict(p: &PolicyView, detector: Detector, pod: Option<PodRef>) -> Resolved {
    let Some(pr) = pod else {
        return Resolved::held(Hold::wait(
            HoldReason::NoTarget,
            format!("no pod is attributed to the {detector} findings"),
        ));
    };
    let hold = if p.safety.exclude_namespaces.contains(&pr.namespace) {
        Some(Hold::skip(
            HoldReason::ExcludedNamespace,
            format!("pod {pr} is in an excluded namespace"),
        ))
    } else if pr.uid.is_none() {
        Some(Hold::wait(
            HoldReason::NoTarget,
            format!("the {detector} findings name pod {pr} but not its uid"),
        ))
    } else {
        None
    };
    Resolved {
        target: Some(pr.to_string()),
        pod: Some(pr),
        hold,
        ..Resolved::default()
    }
}

/// Starts an eviction of the resolved pod (recorded with its uid).
pub(super) fn start_evict(
    cx: &mut NodeCtx<'_>,
    sref: StepRef,
    pod: Option<PodRef>,
    exclusions: Exclusions,
    rec: &mut StepRecord,
) {
    if let Some(pod) = pod {
        rec.pod = pod_target(&pod);
        cx.effects.push(Effect::Evict {
            step: sref,
            pod,
            exclusions,
        });
    }
}

/// Starts a drain: its first pass.
pub(super) fn start_drain(
    cx: &mut NodeCtx<'_>,
    episode: &Episode,
    sref: StepRef,
    owner: &str,
    exclusions: Exclusions,
    rec: &mut StepRecord,
) {
    rec.drain = Some(DrainProgress::default());
    cx.effects.push(Effect::Drain {
        step: sref,
        episode: episode.since.0,
        owner: owner.to_owned(),
        exclusions,
    });
}

impl NodePlanner<'_, '_> {
    /// A Started eviction or drain: the next attempt or pass once its
    /// backoff has passed; past the step's timeout no further one starts
    /// and the step ends Failed (`Timeout`) at once, not when the next
    /// backed-off attempt would have come.
    pub(super) fn resume_eviction(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        rec: StepRecord,
        wake: &mut Wake,
    ) {
        let p = self.policy();
        let now = self.now();
        if p.mode != PolicyMode::Enforce {
            return;
        }
        let (timeout, deadline) = eviction_deadline(&rec, self.input.settings);
        if now >= deadline {
            let last = rec
                .message
                .clone()
                .unwrap_or_else(|| "no attempt finished".into());
            let message = format!(
                "{} did not finish within {}: {last}",
                eviction_noun(step.action),
                format_duration(timeout)
            );
            self.time_out_eviction(cx, episode, step, rec, message);
            return;
        }
        let next = rec.last_attempt_at.as_ref().map_or(now, |t| {
            plus(t.0, retry_delay(rec.attempts.saturating_sub(1)))
        });
        if now < next {
            wake.at(next.min(deadline));
            return;
        }
        let sref = StepRef::of(&p.name, episode.detector, step);
        let exclusions = Exclusions::of(p, step);
        if step.action == ActionKind::Drain {
            cx.effects.push(Effect::Drain {
                step: sref,
                episode: episode.since.0,
                owner: p.name.clone(),
                exclusions,
            });
            return;
        }
        // Always the pod of the first attempt, never whatever the findings
        // name now.
        let target = match &rec.pod {
            Some(t) => PodRef {
                namespace: t.namespace.clone(),
                name: t.name.clone(),
                uid: Some(t.uid.clone()),
            },
            // A record written before pods were recorded with their uid:
            // the eviction refuses a target without one.
            None => match rec.target.as_deref().and_then(|t| t.split_once('/')) {
                Some((ns, name)) => PodRef {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                    uid: None,
                },
                None => return,
            },
        };
        cx.effects.push(Effect::Evict {
            step: sref,
            pod: target,
            exclusions,
        });
    }
}

impl NodePlanner<'_, '_> {
    /// A Started eviction or drain while paused: no further attempt or
    /// pass starts (a pass already running finishes in the background and
    /// is taken up after the resume), and the step's timeout keeps
    /// counting: past it, the step ends Failed (`Timeout`) as it would
    /// had every attempt been refused.
    pub(super) fn paused_eviction(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        rec: StepRecord,
        wake: &mut Wake,
    ) {
        let p = self.policy();
        let now = self.now();
        if p.mode != PolicyMode::Enforce {
            return;
        }
        let (timeout, deadline) = eviction_deadline(&rec, self.input.settings);
        if now < deadline {
            wake.at(deadline);
            return;
        }
        let message = format!(
            "{} did not finish within {}: remediation is paused, so no further {} was started",
            eviction_noun(step.action),
            format_duration(timeout),
            if step.action == ActionKind::Drain {
                "pass"
            } else {
                "attempt"
            }
        );
        self.time_out_eviction(cx, episode, step, rec, message);
    }

    /// Ends a Started eviction or drain Failed with reason `Timeout`.
    fn time_out_eviction(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        mut rec: StepRecord,
        message: String,
    ) {
        let p = self.policy();
        let now = self.now();
        let pod = rec.pod.as_ref().map(|t| PodRef {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            uid: Some(t.uid.clone()),
        });
        rec.phase = StepPhase::Failed;
        rec.since = Time(now);
        rec.reason = Some(EndReason::Timeout.as_str().into());
        rec.message = Some(truncate_note(&message));
        upsert_step(episode, rec);
        let sref = StepRef::of(&p.name, episode.detector, step);
        self.record(
            cx,
            &sref,
            Some(ActionOutcome::Failed),
            &message,
            pod,
            true,
            EventReason::RemediationFailed,
        );
    }
}

fn eviction_noun(action: ActionKind) -> &'static str {
    if action == ActionKind::Drain {
        "drain"
    } else {
        "eviction"
    }
}

fn pod_target(pod: &PodRef) -> Option<PodTarget> {
    Some(PodTarget {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone()?,
    })
}

/// Settling: what an outcome makes of the step (see `plan::settle`).
impl Settler<'_> {
    /// A drain pass still running: nothing to settle, unless the drain's
    /// time is up (then the pass's result, when it comes, is for a step
    /// that has ended).
    pub(in crate::plan) fn drain_pending(&mut self, step: &StepRef) {
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
    pub(in crate::plan) fn drain_pass(
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
    pub(in crate::plan) fn drain_other(&mut self, step: &StepRef, outcome: &EffectOutcome) {
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
}
