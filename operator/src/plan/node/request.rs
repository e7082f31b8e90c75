//! SignalParent and RequestReboot: steps the agent carries out. The
//! operator writes an action request into the report's spec (write-ahead),
//! then follows the agent's result to the step's end, or its timeout.

use nodemedic_crds::PolicyMode;
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::{ActionKind, ActionOutcome};
use nodemedic_crds::report::{ActionRequest, ActionResultOutcome, NodeAction, PolicyCondition};

use super::hold::Hold;
use super::steps::Resolved;
use super::*;

/// The zombie parent a SignalParent step would signal, its pod, and
/// whether an exclusion or protection stops it.
pub(super) fn resolve_signal(cx: &NodeCtx<'_>, p: &PolicyView) -> Resolved {
    let Some((t, workload)) = facts::zombie_target(cx.report, &p.name) else {
        return Resolved::held(Hold::wait(
            HoldReason::NoTarget,
            "no zombie parent is attributed in the report".into(),
        ));
    };
    let ns = workload.as_ref().and_then(|w| w.pod_namespace.clone());
    let pod = workload.as_ref().and_then(|w| {
        Some(PodRef {
            namespace: w.pod_namespace.clone()?,
            name: w.pod_name.clone()?,
            uid: w.pod_uid.clone(),
        })
    });
    let hold = if let Some(ns) = ns.filter(|ns| p.safety.exclude_namespaces.contains(ns)) {
        Some(Hold::skip(
            HoldReason::ExcludedNamespace,
            format!("the parent's pod is in excluded namespace {ns}"),
        ))
    } else if is_protected_process(&t.comm, &p.safety.protected_processes) {
        Some(Hold::skip(
            HoldReason::ProtectedProcess,
            format!("{} is a protected process", t.comm),
        ))
    } else {
        None
    };
    Resolved {
        target: Some(format!("pid {} ({})", t.pid, t.comm)),
        process: Some(t),
        pod,
        in_effect: None,
        hold,
    }
}

impl NodePlanner<'_, '_> {
    /// Starts the step: the request goes into the report's spec with the
    /// write-ahead record.
    pub(super) fn start_request(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &Episode,
        step: &Step,
        resolved: Resolved,
        cond: &PolicyCondition,
        rec: &mut StepRecord,
    ) {
        let p = self.policy();
        let now = self.now();
        let detector = episode.detector;
        let sref = StepRef::of(&p.name, detector, step);
        let id = request_id(
            &p.name,
            detector,
            &cx.name,
            episode.since.0,
            step.index,
            step.action,
        );
        let signal = step.action == ActionKind::SignalParent;
        let request = ActionRequest {
            id: id.clone(),
            action: if signal {
                NodeAction::SignalParent
            } else {
                NodeAction::RequestReboot
            },
            target: if signal { resolved.process } else { None },
            signal: signal.then_some(step.signal),
            policy: p.name.clone(),
            requested_at: Time(now),
            reason: Some(truncate_note(&format!(
                "{} firing for {} under policy {}: {}",
                detector,
                format_duration(elapsed(episode.since.0, now)),
                p.name,
                cond.message
            ))),
        };
        rec.process = request.target.clone();
        rec.signal = request.signal;
        cx.ahead.action_requests.retain(|r| r.id != id);
        cx.ahead.action_requests.push(request);
        rec.request_id = Some(id);
        cx.write_ahead = true;
        rec.message = Some(if signal {
            format!(
                "requested {:?} to {}",
                step.signal,
                resolved.target.as_deref().unwrap_or("the parent")
            )
        } else {
            "requested a reboot from the node's reboot daemon".into()
        });
        self.record(
            cx,
            &sref,
            None,
            rec.message.as_deref().unwrap_or_default(),
            resolved.pod,
            false,
            if signal {
                EventReason::SignalRequested
            } else {
                EventReason::RebootRequested
            },
        );
    }

    /// A Started request: take up the agent's final result, ask again for
    /// a request that went missing, or fail the step at the TTL.
    pub(super) fn resume_request(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        mut rec: StepRecord,
        wake: &mut Wake,
    ) {
        let p = self.policy();
        let now = self.now();
        let sref = StepRef::of(&p.name, episode.detector, step);
        let pod = facts::attributed_pod(cx.report, &p.name, episode.detector);
        let Some(id) = rec.request_id.clone() else {
            return;
        };
        let result = cx
            .report
            .status
            .as_ref()
            .and_then(|s| s.action_results.iter().find(|r| r.id == id));
        if let Some(result) = result.filter(|r| r.outcome.is_final()) {
            let (phase, outcome, reason) = match result.outcome {
                ActionResultOutcome::Signalled | ActionResultOutcome::Completed => {
                    (StepPhase::Done, ActionOutcome::Executed, None)
                }
                ActionResultOutcome::Failed => (
                    StepPhase::Failed,
                    ActionOutcome::Failed,
                    Some(EndReason::AgentFailed),
                ),
                ActionResultOutcome::TargetGone => (
                    StepPhase::Skipped,
                    ActionOutcome::Skipped,
                    Some(EndReason::TargetGone),
                ),
                ActionResultOutcome::TargetChanged => (
                    StepPhase::Skipped,
                    ActionOutcome::Skipped,
                    Some(EndReason::TargetChanged),
                ),
                ActionResultOutcome::Refused | ActionResultOutcome::InProgress => (
                    StepPhase::Skipped,
                    ActionOutcome::Skipped,
                    Some(EndReason::Refused),
                ),
            };
            let mut message = format!("agent: {:?}", result.outcome);
            if !result.message.is_empty() {
                message.push_str(": ");
                message.push_str(&result.message);
            }
            if let Some(f) = &result.follow_up {
                message.push_str(&format!(
                    " (zombies under the parent: {} then, {} now{})",
                    f.zombies_before,
                    f.zombies_now,
                    if f.parent_exited {
                        ", parent exited"
                    } else {
                        ""
                    }
                ));
            }
            if phase == StepPhase::Skipped {
                refund(
                    &mut cx.ahead.remediation.history,
                    &sref,
                    rec.started_at.as_ref(),
                );
            }
            rec.phase = phase;
            rec.since = Time(now);
            rec.reason = reason.map(|r| r.as_str().to_owned());
            rec.message = Some(truncate_note(&message));
            let event_reason = match (step.action, phase) {
                (ActionKind::SignalParent, StepPhase::Done) => EventReason::ParentSignalled,
                (ActionKind::RequestReboot, StepPhase::Done) => EventReason::RebootRequested,
                (_, StepPhase::Failed) => EventReason::RemediationFailed,
                _ => EventReason::RemediationSkipped,
            };
            let message = rec.message.clone().unwrap_or_default();
            self.record(
                cx,
                &sref,
                Some(outcome),
                &message,
                pod,
                phase != StepPhase::Done,
                event_reason,
            );
            upsert_step(episode, rec);
            return;
        }
        let requested = cx
            .ahead
            .action_requests
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.requested_at.0)
            .or(rec.started_at.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let deadline = plus(requested, self.input.settings.request_ttl + REQUEST_GRACE);
        if p.mode == PolicyMode::Enforce
            && now < deadline
            && !cx.ahead.action_requests.iter().any(|r| r.id == id)
        {
            // The request went with its report (`kubectl delete nhr`) or
            // its write was lost: ask again, for exactly the recorded
            // target, under the same id (the agent executes an id once and
            // re-publishes its result).
            if let Some(request) = reissue(&rec, &id, &p.name, requested) {
                cx.ahead.action_requests.push(request);
            }
        }
        if now >= deadline {
            rec.phase = StepPhase::Failed;
            rec.since = Time(now);
            rec.reason = Some(EndReason::Timeout.as_str().into());
            rec.message = Some(format!(
                "the agent reported no result for request {id} within {}",
                format_duration(self.input.settings.request_ttl + REQUEST_GRACE)
            ));
            let message = rec.message.clone().unwrap_or_default();
            self.record(
                cx,
                &sref,
                Some(ActionOutcome::Failed),
                &message,
                pod,
                true,
                EventReason::RemediationFailed,
            );
            upsert_step(episode, rec);
        } else {
            wake.at(deadline);
        }
    }
}

/// The request of a Started SignalParent or RequestReboot step, rebuilt
/// from its durable record; None when the record lacks what the request
/// needs (a SignalParent record written before targets were recorded).
fn reissue(
    rec: &StepRecord,
    id: &str,
    policy: &str,
    requested: Timestamp,
) -> Option<ActionRequest> {
    let (action, target, signal) = match rec.action {
        ActionKind::SignalParent => (
            NodeAction::SignalParent,
            Some(rec.process.clone()?),
            Some(rec.signal?),
        ),
        ActionKind::RequestReboot => (NodeAction::RequestReboot, None, None),
        _ => return None,
    };
    Some(ActionRequest {
        id: id.to_owned(),
        action,
        target,
        signal,
        policy: policy.to_owned(),
        requested_at: Time(requested),
        reason: Some("asked again: the request was no longer in the report".into()),
    })
}
