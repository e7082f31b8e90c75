//! Planning one node under one policy: its episodes, the ladder steps that
//! are due, the budgets and holds that stop them, and the write-ahead record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::{ConditionReason, Detector};
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::{ActionKind, ActionOutcome, ActionRecord, TaintEffect};
use nodemedic_crds::remediation::{
    DrainProgress, Episode, HistoryEntry, MAX_HISTORY, PodTarget, StepPhase, StepRecord,
};
use nodemedic_crds::report::{
    ActionRequest, ActionResultOutcome, NodeAction, PolicyCondition, ProcessTarget,
};
use nodemedic_crds::{NodeHealthReport, PolicyMode};

use super::facts::{Freshness, NodeFacts, PodRef};
use super::policy::{PolicyView, Step};
use super::*;

pub(super) struct NodePlanner<'i, 'a> {
    pub(super) input: &'i PlanInput<'a>,
    pub(super) existing: BTreeSet<&'i str>,
    pub(super) storm: bool,
    pub(super) in_progress: BTreeSet<String>,
}

#[derive(Default)]
pub(super) struct NodeResult {
    pub(super) work: Option<NodeWork>,
    pub(super) summary: Option<NodeSummary>,
    pub(super) failing: bool,
    pub(super) needs_attention: bool,
}

/// Why a due step does not run now.
struct Hold {
    reason: HoldReason,
    message: String,
    /// Final: Skipped, not retried.
    skip: bool,
}

/// Mutable planning state of one node.
struct NodeCtx<'r> {
    name: String,
    report: &'r NodeHealthReport,
    facts: Option<NodeFacts>,
    budget: NodeBudget,
    before: NodeState,
    ahead: NodeState,
    effects: Vec<Effect>,
    notices: Vec<Notice>,
    records: Vec<ActionRecord>,
    write_ahead: bool,
}

impl<'i, 'a> NodePlanner<'i, 'a> {
    fn policy(&self) -> &'a PolicyView {
        self.input.policy
    }

    fn now(&self) -> Timestamp {
        self.input.now
    }

    fn node_budget(&self, n: &NodeInput<'_>) -> NodeBudget {
        let p = self.policy();
        let labels = n
            .node
            .and_then(|node| node.metadata.labels.clone())
            .unwrap_or_default();
        let mut budget = NodeBudget {
            cooldown: Duration::ZERO,
            max_signals_per_hour: u32::MAX,
            storm: None,
            here: BTreeMap::new(),
        };
        let mut add = |view: &PolicyView, storm: bool| {
            budget.cooldown = budget.cooldown.max(view.safety.cooldown);
            budget.max_signals_per_hour = budget
                .max_signals_per_hour
                .min(view.safety.max_signals_per_hour);
            if storm && budget.storm.is_none() {
                budget.storm = Some(view.name.clone());
            }
            budget
                .here
                .insert(view.name.clone(), view.safety.uncordon_when_healthy);
        };
        if n.selected && !self.input.deleting {
            add(p, self.storm);
        }
        for o in self.input.others {
            if o.view.selects(&labels) {
                add(&o.view, o.storm_active);
            }
        }
        if budget.here.is_empty() {
            // Not selected by anything: this policy's own budget governs
            // what it still does there (cleanup only).
            budget.cooldown = p.safety.cooldown;
            budget.max_signals_per_hour = p.safety.max_signals_per_hour;
        }
        budget
    }

    /// The common case, decided cheaply: a fresh report in which no detector
    /// of this policy fires, no remediation state or request, and nothing of
    /// nodemedic's on the Node. Nothing to plan, nothing to clean up.
    fn nothing_to_do(&self, n: &NodeInput<'_>, report: &NodeHealthReport) -> bool {
        let p = self.policy();
        let spec = &report.spec;
        if !spec.remediation.is_empty() || !spec.action_requests.is_empty() {
            // Requests to follow, or a ledger still to move out of the report.
            return false;
        }
        if n.ledger.is_some_and(|l| !l.spec.episodes.is_empty()) {
            return false;
        }
        if n.selected
            && p.detectors
                .iter()
                .any(|d| facts::condition(report, &p.name, *d).is_some_and(facts::is_true))
        {
            return false;
        }
        if p.mode != PolicyMode::Enforce && !self.input.deleting {
            return true;
        }
        let Some(node) = n.node else {
            return true;
        };
        let annotated = node.metadata.annotations.as_ref().is_some_and(|a| {
            a.contains_key(nodemedic_crds::remediation::CORDONED_BY_ANNOTATION)
                || a.contains_key(nodemedic_crds::remediation::TAINTED_BY_ANNOTATION)
        });
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    Detector::ALL
                        .iter()
                        .any(|d| d.node_condition_type() == c.type_)
                })
            });
        !annotated && !conditions
    }

    pub(super) fn node(&mut self, n: &NodeInput<'_>, wake: &mut Wake) -> NodeResult {
        let p = self.policy();
        let now = self.now();
        let mut result = NodeResult::default();
        // A deleted policy lets go of what it holds even where the agent
        // is silent: releasing acts on nothing the report says.
        let placeholder;
        let report = match n.report {
            Some(r) => r,
            None if self.input.deleting => {
                placeholder = NodeHealthReport::new(n.name, Default::default());
                &placeholder
            }
            None => return result,
        };
        let stale =
            facts::freshness(report.status.as_ref(), n.observed_scan, now) == Freshness::Stale;
        if stale && !self.input.deleting {
            // No action is ever planned from stale data.
            return result;
        }
        if self.nothing_to_do(n, report) {
            return result;
        }
        let before = NodeState::of(report, n.ledger);
        let mut cx = NodeCtx {
            name: n.name.to_owned(),
            report,
            facts: n.node.map(NodeFacts::from_node),
            budget: self.node_budget(n),
            ahead: before.clone(),
            before,
            effects: Vec::new(),
            notices: Vec::new(),
            records: Vec::new(),
            write_ahead: false,
        };

        // Episodes and requests of deleted policies go.
        let existing = self.existing.clone();
        cx.ahead
            .remediation
            .episodes
            .retain(|e| existing.contains(e.policy.as_str()));

        if self.input.deleting {
            // Nothing new: only what the policy holds is let go.
            cx.ahead.remediation.episodes.retain(|e| e.policy != p.name);
        } else if p.mode != PolicyMode::Observe {
            if n.selected {
                for detector in p.detectors.clone() {
                    self.detector(&mut cx, detector, wake);
                }
                let configured = p.detectors.clone();
                cx.ahead
                    .remediation
                    .episodes
                    .retain(|e| e.policy != p.name || configured.contains(&e.detector));
            } else {
                cx.ahead.remediation.episodes.retain(|e| e.policy != p.name);
            }
        }

        // Requests: keep those a Started step still waits for, and other
        // existing policies' (their reconcile prunes them).
        let referenced: BTreeSet<String> = cx
            .ahead
            .remediation
            .episodes
            .iter()
            .flat_map(|e| e.steps.iter())
            .filter(|s| s.phase == StepPhase::Started)
            .filter_map(|s| s.request_id.clone())
            .collect();
        cx.ahead.action_requests.retain(|r| {
            referenced.contains(&r.id)
                || (r.policy != p.name && existing.contains(r.policy.as_str()))
        });

        if p.mode == PolicyMode::Enforce || self.input.deleting {
            self.node_level(&mut cx, n, wake);
        }

        if cx.ahead != cx.before {
            prune_history(&mut cx.ahead.remediation.history, now, cx.budget.cooldown);
        }

        // Status summary and failing steps.
        let firing: Vec<(Detector, &PolicyCondition)> = p
            .detectors
            .iter()
            .filter_map(|d| facts::condition(report, &p.name, *d).map(|c| (*d, c)))
            .filter(|(_, c)| facts::is_true(c))
            .collect();
        let episodes: Vec<&Episode> = cx
            .ahead
            .remediation
            .episodes
            .iter()
            .filter(|e| e.policy == p.name)
            .collect();
        result.failing = episodes
            .iter()
            .any(|e| e.steps.iter().any(|s| s.phase == StepPhase::Failed));
        result.needs_attention = episodes.iter().any(|e| e.needs_attention_since.is_some());
        if n.selected && !firing.is_empty() {
            result.summary = Some(NodeSummary {
                node: n.name.to_owned(),
                firing: firing.iter().map(|(d, _)| *d).collect(),
                since: firing.iter().map(|(_, c)| c.last_transition_time.0).min(),
                escalation: escalation(&episodes, p.mode),
                stale: false,
            });
        }

        // A ledger still in the report moves to its own object now.
        let legacy_in_report = !report.spec.remediation.is_empty();
        if cx.ahead != cx.before
            || legacy_in_report
            || !cx.effects.is_empty()
            || !cx.notices.is_empty()
            || !cx.records.is_empty()
        {
            result.work = Some(NodeWork {
                node: cx.name,
                versions: Versions {
                    report: report.metadata.resource_version.clone(),
                    ledger: n.ledger.and_then(|l| l.metadata.resource_version.clone()),
                    legacy_in_report,
                    node_uid: n.node.and_then(|node| node.metadata.uid.clone()),
                },
                before: cx.before,
                ahead: cx.ahead,
                write_ahead: cx.write_ahead,
                effects: cx.effects,
                notices: cx.notices,
                records: cx.records,
            });
        }
        result
    }

    fn detector(&mut self, cx: &mut NodeCtx<'_>, detector: Detector, wake: &mut Wake) {
        let p = self.policy();
        let cond = facts::condition(cx.report, &p.name, detector).filter(|c| facts::is_true(c));
        let ladder = p.ladder(detector);
        let Some(cond) = cond.filter(|_| !ladder.is_empty()) else {
            // Not firing (or nothing to do): the episode is over.
            cx.ahead
                .remediation
                .episodes
                .retain(|e| !(e.policy == p.name && e.detector == detector));
            return;
        };
        let since = cond.last_transition_time.clone();
        let clearing = cond.reason == ConditionReason::Clearing;
        let mut episode = match cx.ahead.remediation.episode(&p.name, detector) {
            Some(e) if e.since == since => e.clone(),
            _ => Episode {
                policy: p.name.clone(),
                detector,
                since: since.clone(),
                observed_at: Some(Time(self.now())),
                steps: Vec::new(),
                slot_since: None,
                needs_attention_since: None,
            },
        };
        let orphans: Vec<StepRecord> = episode
            .steps
            .iter()
            .filter(|r| {
                r.phase == StepPhase::Started
                    && !ladder
                        .iter()
                        .any(|s| s.index == r.index && s.action == r.action)
            })
            .cloned()
            .collect();
        for record in orphans {
            self.orphan(cx, &mut episode, record, cond, wake);
        }
        for step in ladder {
            let record = episode.step(step.index, step.action).cloned();
            let phase = record.as_ref().map(|r| r.phase);
            match phase {
                Some(ph) if ph.is_final() => continue,
                Some(StepPhase::Started) => {
                    if let Some(record) = record {
                        self.in_flight(cx, &mut episode, step, record, cond, wake);
                    }
                    continue;
                }
                Some(StepPhase::Planned) if p.mode == PolicyMode::DryRun => continue,
                _ => {}
            }
            if clearing {
                // Still True only through the hysteresis on resolution: the
                // threshold is no longer exceeded, so nothing new starts.
                continue;
            }
            let due_at = plus(facts::ladder_start(&episode), step.after);
            if self.now() < due_at {
                wake.at(due_at);
                continue;
            }
            self.due(cx, &mut episode, step, record, cond, wake);
        }
        if slots::exhausted(&episode, ladder) || !episode.steps.iter().any(slots::carried_out) {
            // Nothing more to do here, or nothing was done: the slot is free.
            episode.slot_since = None;
        }
        if episode.needs_attention_since.is_some() && !slots::exhausted(&episode, ladder) {
            // The ladder was edited and has new rungs to run.
            episode.needs_attention_since = None;
        }
        if !clearing
            && episode.needs_attention_since.is_none()
            && episode.steps.iter().any(slots::carried_out)
            && slots::exhausted(&episode, ladder)
        {
            // Nothing more nodemedic will do: the slot is free again and a
            // person has to look.
            episode.needs_attention_since = Some(Time(self.now()));
            cx.notices.push(Notice {
                node: cx.name.clone(),
                pod: facts::attributed_pod(cx.report, &p.name, detector),
                warning: true,
                reason: EventReason::NeedsAttention,
                action: ladder.last().map_or(ActionKind::Event, |s| s.action),
                note: truncate_note(&format!(
                    "policy {} ({detector}): every step of the ladder has run and the node is still unhealthy; nodemedic will do nothing more in this episode: {}",
                    p.name, cond.message
                )),
            });
        }
        cx.ahead
            .remediation
            .episodes
            .retain(|e| !(e.policy == p.name && e.detector == detector));
        {
            // Kept from the first sight on: its observation times the ladder.
            cx.ahead.remediation.episodes.push(episode);
            cx.ahead
                .remediation
                .episodes
                .sort_by(|a, b| (&a.policy, a.detector).cmp(&(&b.policy, b.detector)));
        }
    }

    /// A step that is due and not done: hold it, skip it, plan it or start it.
    fn due(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        record: Option<StepRecord>,
        cond: &PolicyCondition,
        wake: &mut Wake,
    ) {
        let p = self.policy();
        let now = self.now();
        let detector = episode.detector;
        let mut target: Option<String> = None;
        let mut process: Option<ProcessTarget> = None;
        let mut pod: Option<PodRef> = facts::attributed_pod(cx.report, &p.name, detector);
        // Joining nodemedic's own cordon or taint, or finding the node
        // already cordoned/tainted by someone else: no disruption, no budget.
        let mut in_effect: Option<String> = None;

        let hold = match step.action {
            ActionKind::SignalParent => match facts::zombie_target(cx.report, &p.name) {
                None => Some(Hold {
                    reason: HoldReason::NoTarget,
                    message: "no zombie parent is attributed in the report".into(),
                    skip: false,
                }),
                Some((t, workload)) => {
                    target = Some(format!("pid {} ({})", t.pid, t.comm));
                    let ns = workload.as_ref().and_then(|w| w.pod_namespace.clone());
                    pod = workload.as_ref().and_then(|w| {
                        Some(PodRef {
                            namespace: w.pod_namespace.clone()?,
                            name: w.pod_name.clone()?,
                            uid: w.pod_uid.clone(),
                        })
                    });
                    let hold = if let Some(ns) =
                        ns.filter(|ns| p.safety.exclude_namespaces.contains(ns))
                    {
                        Some(Hold {
                            reason: HoldReason::ExcludedNamespace,
                            message: format!("the parent's pod is in excluded namespace {ns}"),
                            skip: true,
                        })
                    } else if is_protected_process(&t.comm, &p.safety.protected_processes) {
                        Some(Hold {
                            reason: HoldReason::ProtectedProcess,
                            message: format!("{} is a protected process", t.comm),
                            skip: true,
                        })
                    } else {
                        None
                    };
                    process = Some(t);
                    hold
                }
            },
            ActionKind::EvictPod => match &pod {
                None => Some(Hold {
                    reason: HoldReason::NoTarget,
                    message: format!("no pod is attributed to the {detector} findings"),
                    skip: false,
                }),
                Some(pr) => {
                    target = Some(pr.to_string());
                    if p.safety.exclude_namespaces.contains(&pr.namespace) {
                        Some(Hold {
                            reason: HoldReason::ExcludedNamespace,
                            message: format!("pod {pr} is in an excluded namespace"),
                            skip: true,
                        })
                    } else if pr.uid.is_none() {
                        // Without the uid precondition an eviction could
                        // hit a same-name replacement of the pod meant.
                        Some(Hold {
                            reason: HoldReason::NoTarget,
                            message: format!(
                                "the {detector} findings name pod {pr} but not its uid"
                            ),
                            skip: false,
                        })
                    } else {
                        None
                    }
                }
            },
            ActionKind::Cordon => match &cx.facts {
                None => Some(node_missing()),
                Some(f) if f.unschedulable => {
                    in_effect = Some(match &f.cordoned_by {
                        Some(owners) => format!(
                            "node already cordoned by nodemedic (for {}); joined",
                            facts::format_policy_list(owners)
                        ),
                        None => "node already cordoned by someone else; nodemedic does not own this cordon and will never uncordon it".into(),
                    });
                    None
                }
                Some(_) => None,
            },
            ActionKind::Taint => match (&cx.facts, &step.taint) {
                (None, _) => Some(node_missing()),
                (Some(f), Some(t)) if f.has_taint(&t.key, t.effect) => {
                    let owned = f
                        .owned_taints
                        .iter()
                        .any(|o| o.key == t.key && o.effect == t.effect);
                    in_effect = Some(if owned {
                        format!(
                            "taint {}:{} already placed by nodemedic; joined",
                            t.key,
                            facts::effect_str(t.effect)
                        )
                    } else {
                        format!(
                            "taint {}:{} already present, placed by someone else; nodemedic will not remove it",
                            t.key,
                            facts::effect_str(t.effect)
                        )
                    });
                    None
                }
                _ => None,
            },
            ActionKind::Drain | ActionKind::RequestReboot => cx.facts.is_none().then(node_missing),
            ActionKind::Event | ActionKind::NodeCondition => None,
        };
        if let Some(t) = step
            .action
            .eq(&ActionKind::Taint)
            .then_some(())
            .and(step.taint.as_ref())
        {
            target = Some(format!("{}:{}", t.key, facts::effect_str(t.effect)));
        }

        let disruptive = step.action.is_disruptive() && in_effect.is_none();
        let hold = hold.or_else(|| {
            if !disruptive {
                return None;
            }
            self.budget_hold(cx, step.action, wake)
        });

        let sref = StepRef {
            policy: p.name.clone(),
            detector,
            index: step.index,
            action: step.action,
        };
        if let Some(hold) = hold {
            let same = record.as_ref().is_some_and(|r| {
                r.reason.as_deref() == Some(hold.reason.as_str())
                    && matches!(r.phase, StepPhase::Held | StepPhase::Skipped)
            });
            if same {
                return;
            }
            let dry = p.mode == PolicyMode::DryRun;
            let message = if dry {
                format!("DryRun: would be held: {}", hold.message)
            } else if hold.skip {
                format!("skipped: {}", hold.message)
            } else {
                format!("held: {}", hold.message)
            };
            upsert_step(
                episode,
                StepRecord {
                    index: step.index,
                    action: step.action,
                    phase: if hold.skip && !dry {
                        StepPhase::Skipped
                    } else {
                        StepPhase::Held
                    },
                    since: Time(now),
                    started_at: None,
                    request_id: None,
                    attempts: 0,
                    last_attempt_at: None,
                    reason: Some(hold.reason.as_str().to_owned()),
                    target: target.clone(),
                    pod: None,
                    process: None,
                    signal: None,
                    message: Some(hold.message.clone()),
                    drain: None,
                },
            );
            let event = if hold.skip {
                EventReason::RemediationSkipped
            } else {
                EventReason::RemediationHeld
            };
            self.record(
                cx,
                &sref,
                Some(ActionOutcome::Skipped),
                &message,
                pod,
                true,
                event,
            );
            return;
        }

        if p.mode == PolicyMode::DryRun {
            let what = describe(step, target.as_deref(), in_effect.as_deref());
            upsert_step(
                episode,
                StepRecord {
                    index: step.index,
                    action: step.action,
                    phase: StepPhase::Planned,
                    since: Time(now),
                    started_at: None,
                    request_id: None,
                    attempts: 0,
                    last_attempt_at: None,
                    reason: None,
                    target,
                    pod: None,
                    process: None,
                    signal: None,
                    message: Some(format!("would {what}")),
                    drain: None,
                },
            );
            cx.ahead.remediation.history.push(HistoryEntry {
                at: Time(now),
                policy: p.name.clone(),
                detector,
                action: step.action,
                step: step.index,
                planned: true,
            });
            self.record(
                cx,
                &sref,
                Some(ActionOutcome::Planned),
                &format!("DryRun: would {what}"),
                pod,
                false,
                EventReason::RemediationPlanned,
            );
            return;
        }

        // Enforce: start the step (write-ahead), then carry it out.
        let mut rec = StepRecord {
            index: step.index,
            action: step.action,
            phase: StepPhase::Started,
            since: Time(now),
            // Joining a cordon or taint that is already there disrupts
            // nothing: no budget starts (see `slots`).
            started_at: in_effect.is_none().then_some(Time(now)),
            request_id: None,
            attempts: 0,
            last_attempt_at: None,
            reason: None,
            target: target.clone(),
            pod: None,
            process: None,
            signal: None,
            message: None,
            drain: None,
        };
        if disruptive {
            self.in_progress.insert(cx.name.clone());
            episode.slot_since.get_or_insert(Time(now));
            cx.write_ahead = true;
        }
        // Budget basis (disruptive ones) and actionsLast24h (all).
        if in_effect.is_none() {
            cx.ahead.remediation.history.push(HistoryEntry {
                at: Time(now),
                policy: p.name.clone(),
                detector,
                action: step.action,
                step: step.index,
                planned: false,
            });
        }
        let exclusions = Exclusions::of(p, step);
        match step.action {
            ActionKind::Event => {
                let notice = Notice {
                    node: cx.name.clone(),
                    pod,
                    warning: true,
                    reason: EventReason::Detected(detector),
                    action: ActionKind::Event,
                    note: truncate_note(&format!(
                        "policy {}: {} firing for {}: {}",
                        p.name,
                        detector,
                        format_duration(elapsed(episode.since.0, now)),
                        cond.message
                    )),
                };
                cx.effects.push(Effect::Event { step: sref, notice });
            }
            ActionKind::NodeCondition => {
                // Applied with the node-level conditions below.
            }
            ActionKind::SignalParent | ActionKind::RequestReboot => {
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
                    target: if signal { process } else { None },
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
                        target.as_deref().unwrap_or("the parent")
                    )
                } else {
                    "requested a reboot from the node's reboot daemon".into()
                });
                self.record(
                    cx,
                    &sref,
                    None,
                    rec.message.as_deref().unwrap_or_default(),
                    pod,
                    false,
                    if signal {
                        EventReason::SignalRequested
                    } else {
                        EventReason::RebootRequested
                    },
                );
            }
            ActionKind::Cordon => {
                if let Some(msg) = &in_effect {
                    rec.message = Some(msg.clone());
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
                        in_effect.as_deref().unwrap_or_default(),
                        None,
                        false,
                        EventReason::NodeCordoned,
                    );
                } else {
                    cx.effects.push(Effect::Cordon {
                        step: sref,
                        owner: p.name.clone(),
                    });
                }
            }
            ActionKind::Taint => {
                let foreign = match (&cx.facts, &step.taint) {
                    (Some(f), Some(t)) => {
                        f.has_taint(&t.key, t.effect)
                            && !f
                                .owned_taints
                                .iter()
                                .any(|o| o.key == t.key && o.effect == t.effect)
                    }
                    _ => false,
                };
                if let Some(msg) = &in_effect {
                    rec.message = Some(msg.clone());
                }
                match (&step.taint, foreign) {
                    (Some(_), true) | (None, _) => {
                        rec.phase = StepPhase::Done;
                        self.record(
                            cx,
                            &sref,
                            Some(ActionOutcome::Executed),
                            in_effect.as_deref().unwrap_or("no taint configured"),
                            None,
                            false,
                            EventReason::NodeTainted,
                        );
                    }
                    (Some(t), false) => cx.effects.push(Effect::Taint {
                        step: sref,
                        owner: p.name.clone(),
                        taint: t.clone(),
                    }),
                }
            }
            ActionKind::EvictPod => {
                if let Some(pod) = pod {
                    rec.pod = pod_target(&pod);
                    cx.effects.push(Effect::Evict {
                        step: sref,
                        pod,
                        exclusions,
                    });
                }
            }
            ActionKind::Drain => {
                rec.drain = Some(DrainProgress::default());
                cx.effects.push(Effect::Drain {
                    step: sref,
                    episode: episode.since.0,
                    owner: p.name.clone(),
                    exclusions,
                });
            }
        }
        upsert_step(episode, rec);
    }

    /// Budget checks for a disruptive action on this node.
    fn budget_hold(&self, cx: &NodeCtx<'_>, action: ActionKind, wake: &mut Wake) -> Option<Hold> {
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

    /// A step in flight whose rung the ladder no longer has (the policy was
    /// edited). A request already handed to the agent is still followed to
    /// its result or timeout (the agent may be acting on it); anything else
    /// stops here, Failed with reason LadderEdited, so that no step stays
    /// Started with nothing left to finish it.
    fn orphan(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        mut rec: StepRecord,
        cond: &PolicyCondition,
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
            };
            self.in_flight(cx, episode, &step, rec, cond, wake);
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

    /// A Started step: read the agent's result, retry an eviction, continue
    /// a drain, or redo an interrupted idempotent action.
    fn in_flight(
        &mut self,
        cx: &mut NodeCtx<'_>,
        episode: &mut Episode,
        step: &Step,
        mut rec: StepRecord,
        cond: &PolicyCondition,
        wake: &mut Wake,
    ) {
        let p = self.policy();
        let now = self.now();
        let sref = StepRef {
            policy: p.name.clone(),
            detector: episode.detector,
            index: step.index,
            action: step.action,
        };
        let pod = facts::attributed_pod(cx.report, &p.name, episode.detector);
        match step.action {
            ActionKind::SignalParent | ActionKind::RequestReboot => {
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
                        (ActionKind::RequestReboot, StepPhase::Done) => {
                            EventReason::RebootRequested
                        }
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
                    // The request went with its report (`kubectl delete
                    // nhr`) or its write was lost: ask again, for exactly
                    // the recorded target, under the same id (the agent
                    // executes an id once and re-publishes its result).
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
            ActionKind::EvictPod | ActionKind::Drain => {
                if p.mode != PolicyMode::Enforce {
                    return;
                }
                let next = rec.last_attempt_at.as_ref().map_or(now, |t| {
                    plus(t.0, retry_delay(rec.attempts.saturating_sub(1)))
                });
                if now < next {
                    wake.at(next);
                    return;
                }
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
                // Always the pod of the first attempt, never whatever the
                // findings name now.
                let target = match &rec.pod {
                    Some(t) => PodRef {
                        namespace: t.namespace.clone(),
                        name: t.name.clone(),
                        uid: Some(t.uid.clone()),
                    },
                    // A record written before pods were recorded with their
                    // uid: the eviction refuses a target without one.
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
            ActionKind::Event => {
                if p.mode == PolicyMode::Enforce {
                    cx.effects.push(Effect::Event {
                        step: sref,
                        notice: Notice {
                            node: cx.name.clone(),
                            pod,
                            warning: true,
                            reason: EventReason::Detected(episode.detector),
                            action: ActionKind::Event,
                            note: truncate_note(&format!(
                                "policy {}: {} firing: {}",
                                p.name, episode.detector, cond.message
                            )),
                        },
                    });
                }
            }
            ActionKind::Cordon => {
                if p.mode == PolicyMode::Enforce {
                    cx.effects.push(Effect::Cordon {
                        step: sref,
                        owner: p.name.clone(),
                    });
                }
            }
            ActionKind::Taint => {
                if let (PolicyMode::Enforce, Some(t)) = (p.mode, &step.taint) {
                    cx.effects.push(Effect::Taint {
                        step: sref,
                        owner: p.name.clone(),
                        taint: t.clone(),
                    });
                }
            }
            ActionKind::NodeCondition => {}
        }
    }

    /// Node conditions, and undoing nodemedic's own cordon and taints once
    /// every policy that asked for them is released (Enforce only).
    fn node_level(&mut self, cx: &mut NodeCtx<'_>, n: &NodeInput<'_>, wake: &mut Wake) {
        let p = self.policy();
        let Some(f) = cx.facts.clone() else {
            return;
        };

        // Node conditions: True for a detector while any open episode (of
        // any policy) has taken its NodeCondition step; False once none has
        // and nodemedic set it True before.
        let mut settles: Vec<StepRef> = Vec::new();
        let mut desired: Vec<DesiredCondition> = Vec::new();
        let mut changed = false;
        for d in Detector::ALL {
            let wanting: Vec<&Episode> = cx
                .ahead
                .remediation
                .episodes
                .iter()
                .filter(|e| {
                    e.detector == d
                        && e.steps.iter().any(|s| {
                            s.action == ActionKind::NodeCondition
                                && matches!(s.phase, StepPhase::Started | StepPhase::Done)
                        })
                })
                .collect();
            for e in &wanting {
                if e.policy == p.name {
                    for s in e.steps.iter().filter(|s| {
                        s.action == ActionKind::NodeCondition && s.phase == StepPhase::Started
                    }) {
                        settles.push(StepRef {
                            policy: p.name.clone(),
                            detector: d,
                            index: s.index,
                            action: ActionKind::NodeCondition,
                        });
                    }
                }
            }
            let current = f.condition(d);
            let want = !wanting.is_empty();
            if !want && current.is_none() {
                continue;
            }
            if current != Some(want) {
                changed = true;
            }
            let message = if want {
                let names: Vec<&str> = wanting.iter().map(|e| e.policy.as_str()).collect();
                let detail = wanting
                    .iter()
                    .find_map(|e| facts::condition(cx.report, &e.policy, d))
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                truncate_note(&format!(
                    "{d} firing under policy {}: {detail}",
                    names.join(", ")
                ))
            } else {
                format!("{d} no longer firing")
            };
            desired.push(DesiredCondition {
                detector: d,
                status: want,
                reason: if want {
                    "ThresholdExceeded".into()
                } else {
                    "Cleared".into()
                },
                message,
            });
        }
        if changed || !settles.is_empty() {
            cx.effects.push(Effect::NodeConditions {
                steps: settles,
                desired,
            });
        }

        let mut disown = false;
        let cordoning_now = cx
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Cordon { .. } | Effect::Drain { .. }));
        if let Some(owners) = &f.cordoned_by
            && !cordoning_now
        {
            let responsible = owners.contains(&p.name)
                || (n.selected && owners.iter().all(|o| !cx.budget.here.contains_key(o)));
            if responsible {
                if !f.unschedulable {
                    cx.effects.push(Effect::ForgetCordon);
                } else if let Some(message) = self.released(cx, owners, wake) {
                    cx.effects.push(Effect::Uncordon { message });
                } else if self.input.deleting && owners.contains(&p.name) {
                    disown = true;
                }
            }
        }
        let tainting_now: Vec<(String, TaintEffect)> = cx
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Taint { taint, .. } => Some((taint.key.clone(), taint.effect)),
                _ => None,
            })
            .collect();
        for owned in &f.owned_taints {
            if tainting_now.contains(&(owned.key.clone(), owned.effect)) {
                continue;
            }
            let owners: BTreeSet<String> = owned.policies.iter().cloned().collect();
            let responsible = owners.contains(&p.name)
                || (n.selected && owners.iter().all(|o| !cx.budget.here.contains_key(o)));
            if !responsible {
                continue;
            }
            if !f.has_taint(&owned.key, owned.effect) {
                cx.effects.push(Effect::ForgetTaint {
                    key: owned.key.clone(),
                    effect: owned.effect,
                });
            } else if let Some(message) = self.released(cx, &owners, wake) {
                cx.effects.push(Effect::Untaint {
                    key: owned.key.clone(),
                    effect: owned.effect,
                    message,
                });
            } else if self.input.deleting && owners.contains(&p.name) {
                disown = true;
            }
        }
        if disown {
            cx.effects.push(Effect::Disown {
                policy: p.name.clone(),
            });
        }
    }

    /// Whether every owner has let go of a node-level effect: it no longer
    /// exists or selects the node, or (with uncordonWhenHealthy) its
    /// detectors have been clear for the node's cooldown. Returns the
    /// message for the record, or None (with a wake-up when it will be).
    fn released(
        &self,
        cx: &NodeCtx<'_>,
        owners: &BTreeSet<String>,
        wake: &mut Wake,
    ) -> Option<String> {
        let now = self.now();
        let mut latest: Option<Timestamp> = None;
        for owner in owners {
            if self.input.invalid.contains(owner) {
                // An owner that exists but cannot be evaluated still holds
                // what it placed.
                return None;
            }
            let Some(uncordon) = cx.budget.here.get(owner) else {
                continue;
            };
            if !uncordon {
                return None;
            }
            let conditions: Vec<&PolicyCondition> = cx
                .report
                .status
                .as_ref()
                .map(|s| s.conditions.iter().filter(|c| &c.policy == owner).collect())
                .unwrap_or_default();
            if conditions.is_empty() || conditions.iter().any(|c| facts::is_true(c)) {
                return None;
            }
            let since = conditions.iter().map(|c| c.last_transition_time.0).max()?;
            latest = Some(latest.map_or(since, |l: Timestamp| l.max(since)));
        }
        let cooldown = cx.budget.cooldown;
        match latest {
            None => Some(format!(
                "no policy that asked for it ({}) selects the node any more",
                owners.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(since) => {
                let at = plus(since, cooldown);
                if now >= at {
                    Some(format!(
                        "healthy for {} under {}",
                        format_duration(cooldown),
                        owners.iter().cloned().collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    wake.at(at);
                    None
                }
            }
        }
    }

    /// Records an outcome for the policy status (when `outcome` is set) and
    /// an Event for the node (and the attributed pod).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        cx: &mut NodeCtx<'_>,
        step: &StepRef,
        outcome: Option<ActionOutcome>,
        message: &str,
        pod: Option<PodRef>,
        warning: bool,
        event_reason: EventReason,
    ) {
        let p = self.policy();
        if let Some(outcome) = outcome {
            cx.records.push(ActionRecord {
                time: Time(self.now()),
                node: cx.name.clone(),
                detector: step.detector.name().to_owned(),
                action: step.action,
                outcome,
                message: Some(truncate_note(&format!("policy {}: {message}", p.name))),
            });
        }
        cx.notices.push(Notice {
            node: cx.name.clone(),
            pod,
            warning,
            reason: event_reason,
            action: step.action,
            note: truncate_note(&format!("policy {} ({}): {message}", p.name, step.detector)),
        });
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

fn pod_target(pod: &PodRef) -> Option<PodTarget> {
    Some(PodTarget {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone()?,
    })
}

fn node_missing() -> Hold {
    Hold {
        reason: HoldReason::NodeMissing,
        message: "the Node object does not exist".into(),
        skip: false,
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

fn escalation(episodes: &[&Episode], mode: PolicyMode) -> Option<String> {
    let text = step_escalation(episodes, mode)?;
    Some(
        if episodes.iter().any(|e| e.needs_attention_since.is_some()) {
            format!("{text}; ladder exhausted, needs attention")
        } else {
            text
        },
    )
}

fn step_escalation(episodes: &[&Episode], mode: PolicyMode) -> Option<String> {
    let reached = |s: &&StepRecord| {
        matches!(
            s.phase,
            StepPhase::Started | StepPhase::Done | StepPhase::Failed
        ) || (mode == PolicyMode::DryRun && s.phase == StepPhase::Planned)
    };
    let best = episodes
        .iter()
        .flat_map(|e| e.steps.iter())
        .filter(reached)
        .max_by_key(|s| (s.action, s.index))?;
    let mut text = best.action.as_str().to_owned();
    match best.phase {
        StepPhase::Planned => text.push_str(" (planned)"),
        StepPhase::Failed => text.push_str(" (failed)"),
        StepPhase::Started => {
            if let Some(d) = &best.drain {
                text.push_str(&format!(
                    " ({} evicted, {} remaining, {} skipped)",
                    d.evicted, d.remaining, d.skipped
                ));
            } else {
                text.push_str(" (in progress)");
            }
        }
        _ => {}
    }
    Some(text)
}

fn upsert_step(episode: &mut Episode, rec: StepRecord) {
    episode.steps.retain(|s| s.index != rec.index);
    episode.steps.push(rec);
    episode.steps.sort_by_key(|s| s.index);
}

/// Removes the history entry of a step that turned out to do nothing.
pub(super) fn refund(history: &mut Vec<HistoryEntry>, step: &StepRef, started: Option<&Time>) {
    if let Some(pos) = history.iter().rposition(|h| {
        !h.planned
            && h.policy == step.policy
            && h.detector == step.detector
            && h.step == step.index
            && h.action == step.action
            && started.is_none_or(|t| &h.at == t)
    }) {
        history.remove(pos);
    }
}

/// Drops history older than 24 h (and the cooldown), keeping the latest
/// disruptive entry; then caps the list, dropping planned entries first.
pub fn prune_history(history: &mut Vec<HistoryEntry>, now: Timestamp, cooldown: Duration) {
    let horizon = minus(now, HISTORY_WINDOW.max(cooldown));
    let latest_disruptive = history
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.planned && h.action.is_disruptive())
        .max_by_key(|(_, h)| h.at.0)
        .map(|(i, _)| i);
    let mut i = 0;
    history.retain(|h| {
        let keep = h.at.0 > horizon || Some(i) == latest_disruptive;
        i += 1;
        keep
    });
    history.sort_by_key(|h| h.at.0);
    while history.len() > MAX_HISTORY {
        let pos = history.iter().position(|h| h.planned).unwrap_or(0);
        history.remove(pos);
    }
}

/// Notes, messages and reasons are bounded by the API (1 KiB).
pub fn truncate_note(text: &str) -> String {
    const MAX: usize = 1000;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
