//! A time-stepped projection of what a policy would do if it were applied
//! now and nothing else changed: the operator's own planner ([`plan::plan`]
//! and [`plan::settle`]) run in process on a copy of the cluster's nodes,
//! reports and ledgers, with every effect assumed to succeed, every agent
//! answering its requests within a scan interval, and every problem found
//! now persisting. Pure: nothing here talks to the API server.
//!
//! `kubectl nodemedic simulate` reads the cluster and calls [`project`].

pub mod predict;
pub mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, Detector};
use nodemedic_crds::policy::{ActionKind, ActionOutcome, ActionRecord};
use nodemedic_crds::remediation::StepPhase;
use nodemedic_crds::report::{ActionResult, ActionResultOutcome, NodeAction, PolicyCondition};
use nodemedic_crds::thresholds::EffectiveThresholds;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeRemediation, PolicyMode};

use crate::plan::facts::{self, Freshness};
use crate::plan::policy::{PolicyError, PolicyView};
use crate::plan::{
    self, DrainPassEnd, Effect, EffectOutcome, NodeInput, NodeState, OtherPolicy, PlanInput,
    Settings,
};
use predict::Prediction;

/// The cluster as read: every policy, Node, report and ledger.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub policies: Vec<NodeHealthPolicy>,
    pub nodes: Vec<Node>,
    pub reports: Vec<NodeHealthReport>,
    pub ledgers: Vec<NodeRemediation>,
}

/// How far and how finely to project.
#[derive(Debug, Clone)]
pub struct Options {
    pub now: Timestamp,
    pub horizon: Duration,
    pub settings: Settings,
    /// How soon an agent answers a request (its scan interval).
    pub answer_within: Duration,
}

/// One thing that would happen.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    pub at: Timestamp,
    pub node: String,
    pub detector: Option<Detector>,
    pub what: What,
    pub message: String,
}

/// What would happen.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The detector's condition turns True.
    Fires,
    /// A ladder step, with the outcome recorded for it (Planned in DryRun).
    Step(ActionKind, ActionOutcome),
    /// A ladder step waits, and why (a hold reason code).
    Held(ActionKind, String),
}

impl What {
    /// One word for tables: Fires, Planned, Executed, Failed, Skipped, Held.
    pub fn verdict(&self) -> String {
        match self {
            What::Fires => "Fires".into(),
            What::Step(_, o) => format!("{o:?}"),
            What::Held(_, _) => "Held".into(),
        }
    }

    pub fn action(&self) -> Option<ActionKind> {
        match self {
            What::Fires => None,
            What::Step(a, _) | What::Held(a, _) => Some(*a),
        }
    }
}

/// A node the policy selects, and what is predicted for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOutlook {
    pub node: String,
    pub stale: bool,
    pub missing_report: bool,
    pub predictions: Vec<Prediction>,
}

/// The projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub policy: String,
    pub mode: PolicyMode,
    /// The policy exists in the cluster (this is an edit).
    pub applied: bool,
    pub now: Timestamp,
    pub until: Timestamp,
    pub nodes: Vec<NodeOutlook>,
    /// Storm limit (maxUnhealthy resolved against the selected nodes).
    pub storm_limit: u32,
    pub timeline: Vec<Projected>,
    /// Planner rounds run (a bound keeps a pathological policy finite).
    pub rounds: u32,
}

/// Rounds after which a projection stops, whatever its horizon.
pub const MAX_ROUNDS: u32 = 5_000;

struct SimNode {
    node: Node,
    report: Option<NodeHealthReport>,
    ledger: Option<NodeRemediation>,
    fresh: bool,
    predictions: Vec<Prediction>,
    /// Requests answered at a time (id → when the agent answers).
    answers: BTreeMap<String, Timestamp>,
}

/// Projects `candidate` over `opts.horizon` from `opts.now`.
pub fn project(
    candidate: &NodeHealthPolicy,
    world: &World,
    opts: &Options,
) -> Result<Projection, PolicyError> {
    let view = PolicyView::from_policy(candidate)?;
    let thresholds = EffectiveThresholds::from_spec(&candidate.spec)?;
    let name = view.name.clone();
    let now = plan::truncate(opts.now);
    let until = plan::plus(now, opts.horizon);
    let applied = world.policies.iter().find(|p| p.name_any() == name);
    let same_detector = |d: Detector| {
        applied.is_some_and(|p| {
            let a = &p.spec.detectors;
            let b = &candidate.spec.detectors;
            match d {
                Detector::Zombies => a.zombies == b.zombies,
                Detector::HungTasks => a.hung_tasks == b.hung_tasks,
                Detector::FdLeak => a.fd_leak == b.fd_leak,
                Detector::CpuThrottling => a.cpu_throttling == b.cpu_throttling,
            }
        })
    };

    let mut others: Vec<OtherPolicy> = Vec::new();
    let mut invalid: Vec<String> = Vec::new();
    for p in world.policies.iter().filter(|p| p.name_any() != name) {
        match PolicyView::from_policy(p) {
            Ok(v) => others.push(OtherPolicy {
                view: Arc::new(v),
                storm_active: crate::controller::index::storm_active(p),
            }),
            Err(_) => invalid.push(p.name_any()),
        }
    }

    let no_labels = BTreeMap::new();
    let reports: BTreeMap<String, &NodeHealthReport> =
        world.reports.iter().map(|r| (r.name_any(), r)).collect();
    let ledgers: BTreeMap<String, &NodeRemediation> =
        world.ledgers.iter().map(|l| (l.name_any(), l)).collect();
    // The operator's periodic resync is a safety net for missed changes;
    // in a world where nothing changes it decides nothing, so the
    // projection wakes only when something falls due.
    let settings = Settings {
        resync: opts.horizon.max(Duration::from_secs(1)),
        ..opts.settings.clone()
    };
    let mut nodes: Vec<SimNode> = Vec::new();
    for n in &world.nodes {
        let node_name = n.name_any();
        let selected = view.selects(n.metadata.labels.as_ref().unwrap_or(&no_labels));
        let report = reports.get(&node_name).copied();
        let ledger = ledgers.get(&node_name).copied();
        if !selected && !facts::mentions(&name, report, ledger, Some(n)) {
            continue;
        }
        let fresh = report.is_some_and(|r| {
            matches!(
                facts::freshness(r.status.as_ref(), None, now),
                Freshness::Fresh { .. }
            )
        });
        let predictions = match report {
            Some(r) if selected && fresh => {
                predict::predict(r, &name, &thresholds, same_detector, now)
            }
            _ => Vec::new(),
        };
        let mut report = report.cloned();
        if let Some(r) = report.as_mut() {
            mark_exceeding(r, &name, &predictions);
        }
        nodes.push(SimNode {
            node: n.clone(),
            report,
            ledger: ledger.cloned(),
            fresh,
            predictions,
            answers: BTreeMap::new(),
        });
    }
    nodes.sort_by_key(|n| n.node.name_any());

    let mut timeline: Vec<Projected> = Vec::new();
    for n in &nodes {
        for p in &n.predictions {
            if let Some(at) = p.fires_at.filter(|t| *t <= until) {
                timeline.push(Projected {
                    at: at.max(now),
                    node: n.node.name_any(),
                    detector: Some(p.detector),
                    what: What::Fires,
                    message: format!("{} ({})", p.note, p.basis.as_str()),
                });
            }
        }
    }

    let names: Vec<String> = nodes.iter().map(|n| n.node.name_any()).collect();
    let mut t = now;
    let mut rounds = 0;
    let mut storm_limit = 0;
    while t <= until && rounds < MAX_ROUNDS {
        rounds += 1;
        for n in nodes.iter_mut() {
            set_conditions(n, &name, t, opts.answer_within);
        }
        let inputs: Vec<NodeInput<'_>> = nodes
            .iter()
            .zip(&names)
            .map(|(n, node_name)| NodeInput {
                name: node_name,
                selected: view.selects(n.node.metadata.labels.as_ref().unwrap_or(&no_labels)),
                node: Some(&n.node),
                report: n.report.as_ref(),
                ledger: n.ledger.as_ref(),
                observed_scan: None,
                observed_clear: &[],
            })
            .collect();
        let planned = plan::plan(&PlanInput {
            policy: &view,
            others: &others,
            invalid: &invalid,
            deleting: false,
            nodes: &inputs,
            settings: &settings,
            now: t,
        });
        drop(inputs);
        if rounds == 1 {
            storm_limit = planned.summary.storm_limit;
        }
        for work in &planned.work {
            let Ok(i) = names.binary_search(&work.node) else {
                continue;
            };
            let n = &mut nodes[i];
            let outcomes: Vec<EffectOutcome> = work.effects.iter().map(assumed_outcome).collect();
            for (e, o) in work.effects.iter().zip(&outcomes) {
                world::apply_to_node(&mut n.node, e, o);
            }
            let (state, settled, _notices) = plan::settle(work, &outcomes, &view, &settings, t);
            timeline.extend(holds(&work.before, &state, &name, &work.node, t));
            for r in work.records.iter().chain(&settled) {
                // Held and skipped steps come from the ledger (with their
                // reason codes), not from their records.
                if r.outcome != ActionOutcome::Skipped {
                    timeline.push(record_entry(r));
                }
            }
            store(n, &state, t, opts.answer_within);
        }
        let mut next = planned.wake_at;
        for n in &nodes {
            for p in &n.predictions {
                if let Some(f) = p.fires_at.filter(|f| *f > t) {
                    next = next.min(f);
                }
            }
            for a in n.answers.values().filter(|a| **a > t) {
                next = next.min(*a);
            }
        }
        t = next.max(plan::plus(t, Duration::from_secs(1)));
    }
    timeline.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.node.cmp(&b.node)));
    timeline.dedup();
    Ok(Projection {
        policy: name,
        mode: view.mode,
        applied: applied.is_some(),
        now,
        until,
        nodes: nodes
            .iter()
            .filter(|n| view.selects(n.node.metadata.labels.as_ref().unwrap_or(&no_labels)))
            .map(|n| NodeOutlook {
                node: n.node.name_any(),
                stale: n.report.is_some() && !n.fresh,
                missing_report: n.report.is_none(),
                predictions: n.predictions.clone(),
            })
            .collect(),
        storm_limit,
        timeline,
        rounds,
    })
}

/// Steps of `policy` newly held or skipped in `after` (with their reason
/// codes), compared with `before`.
fn holds(
    before: &NodeState,
    after: &NodeState,
    policy: &str,
    node: &str,
    t: Timestamp,
) -> Vec<Projected> {
    let mut out = Vec::new();
    for e in after
        .remediation
        .episodes
        .iter()
        .filter(|e| e.policy == policy)
    {
        let old = before
            .remediation
            .episodes
            .iter()
            .find(|b| b.policy == policy && b.detector == e.detector && b.since == e.since);
        for step in &e.steps {
            let (held, skipped) = (
                step.phase == StepPhase::Held,
                step.phase == StepPhase::Skipped,
            );
            if !held && !skipped {
                continue;
            }
            let unchanged = old.is_some_and(|o| {
                o.steps.iter().any(|s| {
                    s.index == step.index && s.phase == step.phase && s.reason == step.reason
                })
            });
            if unchanged {
                continue;
            }
            let reason = step.reason.clone().unwrap_or_else(|| "Held".into());
            out.push(Projected {
                at: t,
                node: node.to_owned(),
                detector: Some(e.detector),
                what: if held {
                    What::Held(step.action, reason)
                } else {
                    What::Step(step.action, ActionOutcome::Skipped)
                },
                message: step.message.clone().unwrap_or_default(),
            });
        }
    }
    out
}

fn record_entry(r: &ActionRecord) -> Projected {
    Projected {
        at: r.time.0,
        node: r.node.clone(),
        detector: Detector::ALL.into_iter().find(|d| d.name() == r.detector),
        what: What::Step(r.action, r.outcome),
        message: r.message.clone().unwrap_or_default(),
    }
}

/// Every effect succeeds: the projection asks what the policy would do,
/// not what could go wrong on the way.
fn assumed_outcome(e: &Effect) -> EffectOutcome {
    match e {
        Effect::Drain { .. } => EffectOutcome::Drained {
            progress: Default::default(),
            end: DrainPassEnd::Complete,
            message: "projected".into(),
        },
        _ => EffectOutcome::Done("projected".into()),
    }
}

/// Adds the policy to the `exceededUnder` of the findings a prediction
/// counts (so that a zombie parent is named for it, as the agent would).
fn mark_exceeding(report: &mut NodeHealthReport, policy: &str, predictions: &[Prediction]) {
    let Some(s) = report.status.as_mut() else {
        return;
    };
    let mark = |exceeded: &mut bool, under: &mut Vec<String>| {
        if !under.is_empty() && !under.iter().any(|p| p == policy) {
            under.push(policy.to_owned());
        }
        *exceeded = true;
    };
    for p in predictions.iter().filter(|p| p.fires_at.is_some()) {
        for &i in &p.exceeding {
            let f = &mut s.findings;
            match p.detector {
                Detector::Zombies => {
                    if let Some(z) = f.zombies.get_mut(i) {
                        mark(&mut z.exceeded, &mut z.exceeded_under);
                    }
                }
                Detector::HungTasks => {
                    if let Some(h) = f.hung_tasks.get_mut(i) {
                        mark(&mut h.exceeded, &mut h.exceeded_under);
                    }
                }
                Detector::FdLeak => {
                    if let Some(x) = f.fd_leak.get_mut(i) {
                        mark(&mut x.exceeded, &mut x.exceeded_under);
                    }
                }
                Detector::CpuThrottling => {
                    if let Some(c) = f.cpu_throttling.get_mut(i) {
                        mark(&mut c.exceeded, &mut c.exceeded_under);
                    }
                }
            }
        }
    }
}

/// The report at `t`: the agent keeps scanning (a fresh report stays
/// fresh), the policy's conditions as predicted, and the answers to the
/// requests that are due.
fn set_conditions(n: &mut SimNode, policy: &str, t: Timestamp, answer_within: Duration) {
    let fresh = n.fresh;
    let predictions = &n.predictions;
    let answers = &mut n.answers;
    let Some(report) = n.report.as_mut() else {
        return;
    };
    let Some(status) = report.status.as_mut() else {
        return;
    };
    if fresh {
        status.last_scan_time = Some(Time(t));
    }
    if predictions.is_empty() {
        return;
    }
    status.conditions.retain(|c| c.policy != policy);
    for p in predictions {
        let firing = p.fires_at.filter(|f| *f <= t);
        status.conditions.push(PolicyCondition {
            policy: policy.to_owned(),
            type_: p.detector.condition_type(),
            status: if firing.is_some() {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: match (firing, p.fires_at) {
                (Some(_), _) => ConditionReason::ThresholdExceeded,
                (None, Some(_)) => ConditionReason::Pending,
                (None, None) => ConditionReason::BelowThreshold,
            },
            message: p.note.clone(),
            last_transition_time: Time(firing.unwrap_or(t)),
            exceeded_since: p.fires_at.map(|_| Time(firing.unwrap_or(t))),
            scope: p.fires_at.and(p.scope.as_ref().map(|s| s.0)),
            culprit: p.fires_at.and(p.scope.as_ref().and_then(|s| s.1.clone())),
        });
    }
    for r in &report.spec.action_requests {
        let due = *answers
            .entry(r.id.clone())
            .or_insert_with(|| plan::plus(t, answer_within));
        if due <= t && !status.action_results.iter().any(|a| a.id == r.id) {
            status.action_results.push(ActionResult {
                id: r.id.clone(),
                outcome: match r.action {
                    NodeAction::SignalParent => ActionResultOutcome::Signalled,
                    _ => ActionResultOutcome::Completed,
                },
                message: "assumed carried out by the agent".into(),
                reason: None,
                completed_at: Time(due),
                follow_up: None,
            });
        }
    }
}

/// Stores a settled state the way the operator writes it.
fn store(n: &mut SimNode, state: &NodeState, t: Timestamp, answer_within: Duration) {
    let name = n.node.name_any();
    let ledger = n
        .ledger
        .get_or_insert_with(|| NodeRemediation::new(&name, Default::default()));
    ledger.spec = state.remediation.clone();
    if let Some(r) = n.report.as_mut() {
        r.spec.action_requests = state.action_requests.clone();
        for req in &state.action_requests {
            n.answers
                .entry(req.id.clone())
                .or_insert_with(|| plan::plus(t, answer_within));
        }
    }
}
