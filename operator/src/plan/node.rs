//! Planning one node under one policy: its episodes, the ladder steps that
//! are due, the budgets and holds that stop them, and the write-ahead record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::{ConditionReason, Detector};
use nodemedic_crds::duration::format_duration;
use nodemedic_crds::policy::{ActionKind, ActionOutcome, ActionRecord, StepScope, TaintEffect};
use nodemedic_crds::remediation::{
    Episode, HistoryEntry, MAX_HISTORY, PodTarget, StepPhase, StepRecord,
};
use nodemedic_crds::report::{PolicyCondition, ProcessTarget};
use nodemedic_crds::{NodeHealthReport, PolicyMode};

use super::facts::{Freshness, NodeFacts, PodRef};
use super::policy::{PolicyView, Step};
use super::*;

mod eviction;
mod hold;
mod node_effect;
mod notice;
mod request;
mod steps;

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

/// Mutable planning state of one node.
struct NodeCtx<'r> {
    name: String,
    report: &'r NodeHealthReport,
    /// See [`NodeInput::observed_clear`].
    observed_clear: &'r [(String, Timestamp)],
    /// See [`NodeInput::observed_scan`].
    observed_scan: Option<Timestamp>,
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
            observed_clear: n.observed_clear,
            observed_scan: n.observed_scan,
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
                scope: facts::node_scope(firing.iter().map(|(_, c)| *c)),
                paused: hold::node_paused(&cx),
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
            self.orphan(cx, &mut episode, record, wake);
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
        if (hold::node_paused(cx) && !self.input.deleting)
            || owners.iter().any(|o| self.policy_paused(o))
        {
            // Paused: the node stays as it is (a deleted policy still
            // releases what it holds). The resume reconciles again.
            return None;
        }
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
            let reported = conditions.iter().map(|c| c.last_transition_time.0).max()?;
            // The later of the agent's transition time and the operator's
            // own first sight: an agent clock behind cannot shorten the
            // cooldown, and one ahead only lengthens it.
            let seen = cx
                .observed_clear
                .iter()
                .find(|(p, _)| p == owner)
                .map(|(_, at)| *at);
            let since = seen.map_or(reported, |s| s.max(reported));
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
                message: Some(truncate_note(&format!(
                    "policy {}: {message}{}",
                    p.name,
                    pod_suffix(pod.as_ref(), message)
                ))),
            });
        }
        // Which scope drove the decision, for the person reading the Event.
        let scope = facts::condition(cx.report, &p.name, step.detector)
            .and_then(facts::scope_text)
            .map_or_else(String::new, |s| format!(", scope {s}"));
        cx.notices.push(Notice {
            node: cx.name.clone(),
            pod,
            warning,
            reason: event_reason,
            action: step.action,
            note: truncate_note(&format!(
                "policy {} ({}{scope}): {message}",
                p.name, step.detector
            )),
        });
    }
}

/// " (pod ns/name)" for a record whose step targets a pod its message does
/// not name: the policy status then says whose problem it was even after the
/// episode (and its findings) are gone.
pub(super) fn pod_suffix(pod: Option<&PodRef>, message: &str) -> String {
    match pod {
        Some(p) if !message.contains(&p.to_string()) => format!(" (pod {p})"),
        _ => String::new(),
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

/// A step's record as it enters `phase` now; the strategies fill in the rest.
fn new_record(step: &Step, phase: StepPhase, now: Timestamp) -> StepRecord {
    StepRecord {
        index: step.index,
        action: step.action,
        phase,
        since: Time(now),
        started_at: None,
        request_id: None,
        attempts: 0,
        last_attempt_at: None,
        reason: None,
        target: None,
        pod: None,
        process: None,
        signal: None,
        message: None,
        drain: None,
    }
}

/// The history entry of a step planned (DryRun) or started now.
fn history_entry(step: &StepRef, now: Timestamp, planned: bool) -> HistoryEntry {
    HistoryEntry {
        at: Time(now),
        policy: step.policy.clone(),
        detector: step.detector,
        action: step.action,
        step: step.index,
        planned,
    }
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
