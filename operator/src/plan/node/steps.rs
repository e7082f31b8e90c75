//! One ladder step's transitions, whatever its action: a due step is held,
//! skipped, planned (DryRun) or started (Enforce, write-ahead); a Started
//! step is resumed by its action's strategy; a step the ladder lost ends.
//! What is specific to an action kind lives in its module (request,
//! eviction, node_effect, notice); the budgets every disruptive step
//! passes are in `hold`.

use nodemedic_crds::PolicyMode;
use nodemedic_crds::policy::ActionOutcome;
use nodemedic_crds::report::PolicyCondition;

use super::eviction::{resolve_evict, start_drain, start_evict};
use super::hold::{Hold, node_missing, scope_hold};
use super::node_effect::{resolve_cordon, resolve_taint};
use super::request::resolve_signal;
use super::*;

/// What a due step would act on, and what (if anything) stops it.
#[derive(Default)]
pub(super) struct Resolved {
    /// The target as people read it (messages and the record's `target`).
    pub(super) target: Option<String>,
    /// SignalParent: the process, by pid and start time.
    pub(super) process: Option<ProcessTarget>,
    /// The pod the step concerns (evicted, or named in Events).
    pub(super) pod: Option<PodRef>,
    /// The cordon or taint is already there (nodemedic's, joined, or
    /// someone else's): no disruption, no budget.
    pub(super) in_effect: Option<String>,
    /// Something stops the step before any budget is asked.
    pub(super) hold: Option<Hold>,
}

impl Resolved {
    pub(super) fn held(hold: Hold) -> Self {
        Self {
            hold: Some(hold),
            ..Self::default()
        }
    }
}

impl NodePlanner<'_, '_> {
    /// A step that is due and not done: hold it, skip it, plan it or start it.
    pub(super) fn due(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        record: Option<StepRecord>,
        cond: &PolicyCondition,
        wake: &mut Wake,
    ) {
        let p = self.policy();
        let detector = episode.detector;
        if let Some(hold) = self.pause_hold(cx) {
            // Paused: nothing new starts, whatever the action (docs/operator.md, "Pausing").
            let sref = StepRef::of(&p.name, detector, step);
            self.hold_step(cx, episode, step, &sref, record, hold, Resolved::default());
            return;
        }
        // The culprit of a pod-contained problem first, else the pod the
        // findings attribute.
        let attributed = facts::culprit_pod(cond)
            .or_else(|| facts::attributed_pod(cx.report, &p.name, detector));
        let mut resolved = match step.action {
            ActionKind::SignalParent => resolve_signal(cx, p),
            ActionKind::EvictPod => resolve_evict(p, detector, attributed.clone()),
            ActionKind::Cordon => resolve_cordon(cx),
            ActionKind::Taint => resolve_taint(cx, step),
            ActionKind::Drain | ActionKind::RequestReboot if cx.facts.is_none() => {
                Resolved::held(node_missing())
            }
            _ => Resolved::default(),
        };
        if step.action != ActionKind::SignalParent && resolved.pod.is_none() {
            resolved.pod = attributed;
        }
        let disruptive = step.action.is_disruptive() && resolved.in_effect.is_none();
        let hold = resolved
            .hold
            .take()
            .or_else(|| {
                let scanned = cx.observed_scan.or_else(|| facts::scan_time(cx.report));
                let hold = scope_hold(episode, step, cond, scanned)?;
                // Waiting for the next scan: look again a scan interval on.
                wake.at(plus(self.now(), facts::scan_interval(cx.report)));
                Some(hold)
            })
            .or_else(|| {
                disruptive
                    .then(|| self.budget_hold(cx, step.action, wake))
                    .flatten()
            });
        let sref = StepRef::of(&p.name, detector, step);
        match hold {
            Some(hold) => self.hold_step(cx, episode, step, &sref, record, hold, resolved),
            None if p.mode == PolicyMode::DryRun => {
                self.plan_step(cx, episode, step, &sref, resolved);
            }
            None => self.start_step(cx, episode, step, sref, resolved, disruptive, cond),
        }
    }

    /// Records a hold (once per reason) and says so in an Event.
    #[allow(clippy::too_many_arguments)]
    fn hold_step(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        sref: &StepRef,
        record: Option<StepRecord>,
        hold: Hold,
        resolved: Resolved,
    ) {
        let same = record.as_ref().is_some_and(|r| {
            r.reason.as_deref() == Some(hold.reason.as_str())
                && matches!(r.phase, StepPhase::Held | StepPhase::Skipped)
        });
        if same {
            return;
        }
        let dry = self.policy().mode == PolicyMode::DryRun;
        let message = if dry {
            format!("DryRun: would be held: {}", hold.message)
        } else if hold.skip {
            format!("skipped: {}", hold.message)
        } else {
            format!("held: {}", hold.message)
        };
        let mut rec = new_record(
            step,
            if hold.skip && !dry {
                StepPhase::Skipped
            } else {
                StepPhase::Held
            },
            self.now(),
        );
        rec.reason = Some(hold.reason.as_str().to_owned());
        rec.target = resolved.target;
        rec.message = Some(hold.message);
        upsert_step(episode, rec);
        self.record(
            cx,
            sref,
            Some(ActionOutcome::Skipped),
            &message,
            resolved.pod,
            true,
            if hold.skip {
                EventReason::RemediationSkipped
            } else {
                EventReason::RemediationHeld
            },
        );
    }

    /// DryRun: records what would happen (counted in actionsLast24h as
    /// planned, never against a budget).
    fn plan_step(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        sref: &StepRef,
        resolved: Resolved,
    ) {
        let now = self.now();
        let what = describe(
            step,
            resolved.target.as_deref(),
            resolved.in_effect.as_deref(),
        );
        let mut rec = new_record(step, StepPhase::Planned, now);
        rec.target = resolved.target;
        rec.message = Some(format!("would {what}"));
        upsert_step(episode, rec);
        cx.ahead
            .remediation
            .history
            .push(history_entry(sref, now, true));
        self.record(
            cx,
            sref,
            Some(ActionOutcome::Planned),
            &format!("DryRun: would {what}"),
            resolved.pod,
            false,
            EventReason::RemediationPlanned,
        );
    }

    /// Enforce: the step starts (write-ahead for anything disruptive or
    /// handed to the agent), then its action's strategy carries it out.
    #[allow(clippy::too_many_arguments)]
    fn start_step(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        sref: StepRef,
        resolved: Resolved,
        disruptive: bool,
        cond: &PolicyCondition,
    ) {
        let p = self.policy();
        let now = self.now();
        let mut rec = new_record(step, StepPhase::Started, now);
        // Joining a cordon or taint that is already there disrupts nothing:
        // no budget starts (see `slots`).
        rec.started_at = resolved.in_effect.is_none().then_some(Time(now));
        rec.target = resolved.target.clone();
        if disruptive {
            self.in_progress.insert(cx.name.clone());
            episode.slot_since.get_or_insert(Time(now));
            cx.write_ahead = true;
        }
        // Budget basis (disruptive ones) and actionsLast24h (all).
        if resolved.in_effect.is_none() {
            cx.ahead
                .remediation
                .history
                .push(history_entry(&sref, now, false));
        }
        let exclusions = Exclusions::of(p, step);
        let in_effect = resolved.in_effect.clone();
        match step.action {
            ActionKind::Event => self.start_event(cx, episode, sref, resolved.pod, cond),
            // Applied with the node-level conditions.
            ActionKind::NodeCondition => {}
            ActionKind::SignalParent | ActionKind::RequestReboot => {
                self.start_request(cx, episode, step, resolved, cond, &mut rec);
            }
            ActionKind::Cordon => self.start_cordon(cx, sref, in_effect.as_deref(), &mut rec),
            ActionKind::Taint => self.start_taint(cx, step, sref, in_effect.as_deref(), &mut rec),
            ActionKind::EvictPod => start_evict(cx, sref, resolved.pod, exclusions, &mut rec),
            ActionKind::Drain => start_drain(cx, episode, sref, &p.name, exclusions, &mut rec),
        }
        upsert_step(episode, rec);
    }

    /// A Started step: its action's strategy takes it further.
    pub(super) fn in_flight(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        rec: StepRecord,
        cond: &PolicyCondition,
        wake: &mut Wake,
    ) {
        match step.action {
            ActionKind::SignalParent | ActionKind::RequestReboot => {
                self.resume_request(cx, episode, step, rec, wake);
            }
            ActionKind::EvictPod | ActionKind::Drain if self.paused_here(cx) => {
                self.paused_eviction(cx, episode, step, rec, wake);
            }
            ActionKind::EvictPod | ActionKind::Drain => {
                self.resume_eviction(cx, episode, step, rec, wake);
            }
            ActionKind::Event => self.resume_event(cx, episode, step, cond),
            ActionKind::Cordon | ActionKind::Taint => self.resume_node_effect(cx, episode, step),
            ActionKind::NodeCondition => {}
        }
    }

    /// A step in flight whose rung the ladder no longer has (the policy was
    /// edited). A request already handed to the agent is still followed to
    /// its result or timeout (the agent may be acting on it); anything else
    /// stops here, Failed with reason LadderEdited, so that no step stays
    /// Started with nothing left to finish it.
    pub(super) fn orphan(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        mut rec: StepRecord,
        wake: &mut Wake,
    ) {
        if matches!(
            rec.action,
            ActionKind::SignalParent | ActionKind::RequestReboot
        ) {
            let step = Step {
                index: rec.index,
                action: rec.action,
                after: Duration::ZERO,
                signal: Default::default(),
                taint: None,
                drain: Default::default(),
                scope: StepScope::Any,
            };
            self.resume_request(cx, episode, &step, rec, wake);
            return;
        }
        let sref = StepRef {
            policy: self.policy().name.clone(),
            detector: episode.detector,
            index: rec.index,
            action: rec.action,
        };
        rec.phase = StepPhase::Failed;
        rec.since = Time(self.now());
        rec.reason = Some(EndReason::LadderEdited.as_str().into());
        rec.message = Some(format!(
            "the policy's ladder no longer has {} at step {}; stopped",
            rec.action.as_str(),
            rec.index
        ));
        let message = rec.message.clone().unwrap_or_default();
        upsert_step(episode, rec);
        self.record(
            cx,
            &sref,
            Some(ActionOutcome::Failed),
            &message,
            None,
            true,
            EventReason::RemediationFailed,
        );
    }
}

fn describe(step: &Step, target: Option<&str>, in_effect: Option<&str>) -> String {
    let base = match step.action {
        ActionKind::Event => "emit an Event".to_owned(),
        ActionKind::NodeCondition => "set the node condition".to_owned(),
        ActionKind::SignalParent => format!(
            "send {:?} to {}",
            step.signal,
            target.unwrap_or("the zombies' parent")
        ),
        ActionKind::EvictPod => format!("evict pod {}", target.unwrap_or("?")),
        ActionKind::Taint => format!("taint the node {}", target.unwrap_or("")),
        ActionKind::Cordon => "cordon the node".to_owned(),
        ActionKind::Drain => "drain the node".to_owned(),
        ActionKind::RequestReboot => "request a reboot from the reboot daemon".to_owned(),
    };
    match in_effect {
        Some(m) => format!("{base} ({m})"),
        None => base,
    }
}
