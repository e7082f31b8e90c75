//! Table tests of the planner: every budget and ladder rule, without a server.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, Detector};
use nodemedic_crds::duration::KubeDuration;
use nodemedic_crds::policy::{
    ActionKind, ActionOutcome, ActionRecord, ActionStep, Actions, Detectors, NodeHealthPolicySpec,
    ParentSignal, Safety, StepScope, TaintEffect, TaintTemplate, ZombieDetector,
};
use nodemedic_crds::remediation::{
    CORDONED_BY_ANNOTATION, DrainProgress, Episode, HistoryEntry, OwnedTaint, StepPhase,
    TAINTED_BY_ANNOTATION,
};
use nodemedic_crds::report::{
    ActionResult, ActionResultOutcome, CulpritPod, NodeAction, PolicyCondition, ProblemScope,
    ProcessRef, Workload, ZombieFinding,
};
use nodemedic_crds::{
    NodeHealthPolicy, NodeHealthReport, NodeHealthReportSpec, NodeRemediation, PolicyMode,
};

use super::policy::PolicyView;
use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

const NOW: i64 = 10_000;

fn step(action: ActionKind, after: &'static str) -> ActionStep {
    ActionStep {
        action,
        after: Some(KubeDuration::from_static(after)),
        signal: None,
        taint: (action == ActionKind::Taint).then(|| TaintTemplate {
            key: "nodemedic.io/unhealthy".into(),
            value: None,
            effect: TaintEffect::NoSchedule,
            allow_no_execute: false,
        }),
        drain: None,
        scope: None,
    }
}

struct P {
    policy: NodeHealthPolicy,
}

fn policy(name: &str, mode: PolicyMode, ladder: Vec<ActionStep>) -> P {
    let spec = NodeHealthPolicySpec {
        node_selector: Some(LabelSelector {
            match_labels: Some([("pool".to_owned(), "test".to_owned())].into()),
            match_expressions: None,
        }),
        mode,
        detectors: Detectors {
            zombies: Some(ZombieDetector::default()),
            ..Default::default()
        },
        actions: Actions {
            zombies: ladder,
            ..Default::default()
        },
        safety: Safety {
            max_unhealthy: IntOrString::String("100%".into()),
            max_concurrent_actions: 100,
            cooldown: KubeDuration::from_static("0s"),
            max_signals_per_hour: 100,
            ..Default::default()
        },
    };
    let mut policy = NodeHealthPolicy::new(name, spec);
    policy.metadata.generation = Some(1);
    P { policy }
}

impl P {
    fn safety(mut self, f: impl FnOnce(&mut Safety)) -> Self {
        f(&mut self.policy.spec.safety);
        self
    }
    fn view(&self) -> PolicyView {
        PolicyView::from_policy(&self.policy).unwrap()
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("pool".to_owned(), "test".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn cordoned(mut n: Node, by: Option<&str>) -> Node {
    n.spec = Some(NodeSpec {
        unschedulable: Some(true),
        ..Default::default()
    });
    if let Some(by) = by {
        n.metadata.annotations = Some([(CORDONED_BY_ANNOTATION.to_owned(), by.to_owned())].into());
    }
    n
}

fn cond(policy: &str, firing: bool, since: i64) -> PolicyCondition {
    PolicyCondition {
        policy: policy.into(),
        type_: Detector::Zombies.condition_type(),
        status: if firing {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: if firing {
            ConditionReason::ThresholdExceeded
        } else {
            ConditionReason::BelowThreshold
        },
        message: "212 zombies under php-fpm".into(),
        last_transition_time: Time(t(since)),
        exceeded_since: None,
        scope: None,
        culprit: None,
    }
}

fn report(name: &str, conditions: Vec<PolicyCondition>) -> NodeHealthReport {
    let mut r = NodeHealthReport::new(name, NodeHealthReportSpec::default());
    r.metadata.resource_version = Some("7".into());
    let mut status = nodemedic_crds::NodeHealthReportStatus {
        last_scan_time: Some(Time(t(NOW - 5))),
        heartbeat_interval: Some("1h".into()),
        healthy: conditions.iter().all(|c| c.status != ConditionStatus::True),
        conditions,
        ..Default::default()
    };
    status.findings.zombies = vec![ZombieFinding {
        parent: ProcessRef {
            host_pid: 4242,
            ns_pid: Some(1),
            comm: "php-fpm".into(),
            start_time: 987_654,
            workload: Some(Workload {
                pod_uid: Some("pod-uid".into()),
                pod_namespace: Some("web".into()),
                pod_name: Some("php-0".into()),
                container: Some("php".into()),
                ..Default::default()
            }),
        },
        zombies: 212,
        zombies_past_min_age: 200,
        oldest_age_seconds: 600,
        exceeded: true,
        exceeded_under: vec![],
        exceeded_under_omitted: 0,
    }];
    r.status = Some(status);
    r
}

fn firing(name: &str, policy: &str, since: i64) -> NodeHealthReport {
    report(name, vec![cond(policy, true, since)])
}

fn run(p: &PolicyView, others: &[OtherPolicy], nodes: &[(Node, Option<NodeHealthReport>)]) -> Plan {
    run_at(p, others, nodes, t(NOW))
}

fn run_at(
    p: &PolicyView,
    others: &[OtherPolicy],
    nodes: &[(Node, Option<NodeHealthReport>)],
    now: Timestamp,
) -> Plan {
    run_with_invalid(p, others, &[], nodes, now)
}

/// The settings [`run`] plans with.
fn settings_of_run() -> Settings {
    Settings {
        eviction_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(120),
        resync: Duration::from_secs(86_400),
        ..Settings::default()
    }
}

fn run_with_invalid(
    p: &PolicyView,
    others: &[OtherPolicy],
    invalid: &[String],
    nodes: &[(Node, Option<NodeHealthReport>)],
    now: Timestamp,
) -> Plan {
    let settings = settings_of_run();
    // The tests keep a node's whole state in its report's spec; here it is
    // split the way it is stored: requests in the report, the ledger in
    // the node's NodeRemediation.
    let stored: Vec<(Option<NodeHealthReport>, NodeRemediation)> = nodes
        .iter()
        .map(|(n, r)| {
            let mut r = r.clone();
            let spec = r
                .as_mut()
                .map(|r| std::mem::take(&mut r.spec.remediation))
                .unwrap_or_default();
            let mut ledger = NodeRemediation::new(n.metadata.name.as_deref().unwrap(), spec);
            ledger.metadata.resource_version = Some("1".into());
            (r, ledger)
        })
        .collect();
    let inputs: Vec<NodeInput<'_>> = nodes
        .iter()
        .zip(&stored)
        .map(|((n, _), (r, ledger))| NodeInput {
            name: n.metadata.name.as_deref().unwrap(),
            selected: p.selects(n.metadata.labels.as_ref().unwrap()),
            node: Some(n),
            report: r.as_ref(),
            ledger: Some(ledger),
            observed_scan: None,
            observed_clear: &[],
        })
        .collect();
    plan(&PlanInput {
        policy: p,
        others,
        invalid,
        deleting: false,
        nodes: &inputs,
        settings: &settings,
        now,
    })
}

/// Applies a plan's writes as the controller would, with every effect
/// succeeding.
fn apply_ok(plan: &Plan, p: &PolicyView, nodes: &mut [(Node, Option<NodeHealthReport>)]) {
    for w in &plan.work {
        let outcomes: Vec<EffectOutcome> = w
            .effects
            .iter()
            .map(|e| match e {
                Effect::Drain { .. } => EffectOutcome::Drained {
                    progress: Default::default(),
                    end: DrainPassEnd::Complete,
                    message: "drained".into(),
                },
                _ => EffectOutcome::Done("ok".into()),
            })
            .collect();
        let (spec, _, _) = settle(w, &outcomes, p, &Settings::default(), t(NOW));
        for (n, r) in nodes.iter_mut() {
            if n.metadata.name.as_deref() == Some(w.node.as_str()) {
                if let Some(r) = r {
                    r.spec = as_spec(&spec);
                }
                for e in &w.effects {
                    if let Effect::Cordon { owner, .. } = e {
                        let prev = n
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(CORDONED_BY_ANNOTATION).cloned());
                        let mut owners = prev
                            .map(|p| facts::parse_policy_list(&p))
                            .unwrap_or_default();
                        owners.insert(owner.clone());
                        *n = cordoned(n.clone(), Some(&facts::format_policy_list(&owners)));
                    }
                }
            }
        }
    }
}

/// A node's state as the tests keep it (see `run_with_invalid`).
fn as_spec(state: &NodeState) -> NodeHealthReportSpec {
    NodeHealthReportSpec {
        action_requests: state.action_requests.clone(),
        remediation: state.remediation.clone(),
    }
}

fn steps_of<'a>(w: &'a NodeWork, policy: &str) -> Vec<(ActionKind, StepPhase, Option<&'a str>)> {
    w.ahead
        .remediation
        .episode(policy, Detector::Zombies)
        .map(|e| {
            e.steps
                .iter()
                .map(|s| (s.action, s.phase, s.reason.as_deref()))
                .collect()
        })
        .unwrap_or_default()
}

fn work<'a>(plan: &'a Plan, node: &str) -> Option<&'a NodeWork> {
    plan.work.iter().find(|w| w.node == node)
}

fn cordons(plan: &Plan) -> Vec<&str> {
    plan.work
        .iter()
        .filter(|w| w.effects.iter().any(|e| matches!(e, Effect::Cordon { .. })))
        .map(|w| w.node.as_str())
        .collect()
}

#[test]
fn observe_plans_nothing() {
    let p = policy(
        "p",
        PolicyMode::Observe,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::Cordon, "0s"),
        ],
    )
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    assert!(plan.work.is_empty(), "{:?}", plan.work);
    assert!(plan.records().is_empty());
    assert_eq!((plan.summary.matched, plan.summary.unhealthy), (1, 1));
}

#[test]
fn dry_run_records_planned_once_and_changes_nothing() {
    let p = policy(
        "p",
        PolicyMode::DryRun,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::Cordon, "0s"),
        ],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(
        w.effects.is_empty(),
        "DryRun executes nothing: {:?}",
        w.effects
    );
    assert!(w.ahead.action_requests.is_empty());
    assert!(!w.write_ahead);
    assert_eq!(
        steps_of(w, "p"),
        [
            (ActionKind::Event, StepPhase::Planned, None),
            (ActionKind::Cordon, StepPhase::Planned, None)
        ]
    );
    assert!(w.ahead.remediation.history.iter().all(|h| h.planned));
    let outcomes: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.action, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (ActionKind::Event, ActionOutcome::Planned),
            (ActionKind::Cordon, ActionOutcome::Planned)
        ]
    );
    assert!(
        w.notices
            .iter()
            .all(|n| n.reason == EventReason::RemediationPlanned && n.note.contains("would"))
    );
    assert_eq!(
        plan.summary.actions_last_24h, 2,
        "counted from what will be stored"
    );

    apply_ok(&plan, &p, &mut nodes);
    let again = run(&p, &[], &nodes);
    assert!(again.work.is_empty(), "planned once: {:?}", again.work);
    assert_eq!(again.summary.actions_last_24h, 2);
}

#[test]
fn switching_dry_run_to_enforce_runs_the_due_steps_at_once() {
    let dry = policy(
        "p",
        PolicyMode::DryRun,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::Cordon, "30s"),
        ],
    );
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&dry.view(), &[], &nodes);
    apply_ok(&plan, &dry.view(), &mut nodes);

    let mut enforce = dry;
    enforce.policy.spec.mode = PolicyMode::Enforce;
    let p = enforce.view();
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(
        w.write_ahead,
        "Cordon is disruptive: recorded before acting"
    );
    assert!(w.effects.iter().any(|e| matches!(e, Effect::Event { .. })));
    assert!(w.effects.iter().any(|e| matches!(e, Effect::Cordon { .. })));
    assert_eq!(
        steps_of(w, "p"),
        [
            (ActionKind::Event, StepPhase::Started, None),
            (ActionKind::Cordon, StepPhase::Started, None)
        ]
    );
    let real: Vec<_> = w
        .ahead
        .remediation
        .history
        .iter()
        .filter(|h| !h.planned)
        .map(|h| h.action)
        .collect();
    assert_eq!(real, [ActionKind::Event, ActionKind::Cordon]);
}

#[test]
fn a_step_waits_for_its_after_and_the_plan_wakes_then() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::Cordon, "60s"),
        ],
    )
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 10)))]);
    let w = work(&plan, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::Event, StepPhase::Started, None)]
    );
    assert!(!cordons(&plan).contains(&"a"));
    assert_eq!(plan.wake_at, t(NOW + 50));
}

/// The agent's clock is an hour behind the operator's: its condition says
/// it turned True an hour ago, the operator first sees it now. The ladder
/// starts at the operator's observation (less the 30s skew tolerance), not
/// an hour back: a Cordon `after: 10m` does not run at once.
#[test]
fn an_agent_clock_behind_cannot_make_a_step_come_due_early() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "10m")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 3600)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").expect("the episode is recorded at first sight");
    assert!(w.effects.is_empty(), "{:?}", w.effects);
    let episode = w.ahead.remediation.episode("p", Detector::Zombies).unwrap();
    assert_eq!(episode.observed_at, Some(Time(t(NOW))));
    assert_eq!(plan.wake_at, t(NOW + 600 - 30));
    apply_ok(&plan, &p, &mut nodes);

    let plan = run_at(&p, &[], &nodes, t(NOW + 500));
    assert!(!cordons(&plan).contains(&"a"), "not yet due");
    let plan = run_at(&p, &[], &nodes, t(NOW + 600 - 30));
    assert_eq!(
        cordons(&plan),
        ["a"],
        "due 10m after the observation, within the tolerance"
    );
}

/// The agent's clock is an hour ahead: its condition turned True "an hour
/// from now". The ladder starts when the operator sees it, not then.
#[test]
fn an_agent_clock_ahead_cannot_hold_a_step_back() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "60s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW + 3600)))];
    let plan = run(&p, &[], &nodes);
    assert!(cordons(&plan).is_empty());
    assert_eq!(plan.wake_at, t(NOW + 60));
    apply_ok(&plan, &p, &mut nodes);
    let plan = run_at(&p, &[], &nodes, t(NOW + 60));
    assert_eq!(cordons(&plan), ["a"]);
}

#[test]
fn signal_parent_writes_a_deterministic_request_with_the_target() {
    let mut s = step(ActionKind::SignalParent, "0s");
    s.signal = Some(ParentSignal::SIGTERM);
    let p = policy("p", PolicyMode::Enforce, vec![s]).view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(w.write_ahead);
    assert!(w.effects.is_empty(), "the request is the action");
    let [req] = w.ahead.action_requests.as_slice() else {
        panic!("one request: {:?}", w.ahead.action_requests)
    };
    assert_eq!(
        req.id,
        request_id(
            "p",
            Detector::Zombies,
            "a",
            t(NOW - 100),
            0,
            ActionKind::SignalParent
        )
    );
    assert_eq!(req.action, NodeAction::SignalParent);
    assert_eq!(req.signal, Some(ParentSignal::SIGTERM));
    let target = req.target.as_ref().unwrap();
    assert_eq!(
        (target.pid, target.start_time, target.comm.as_str()),
        (4242, 987_654, "php-fpm")
    );
    assert_eq!(req.policy, "p");
    assert!(plan.records().is_empty(), "recorded when the agent answers");

    // Re-planning from the written state requests nothing more.
    apply_ok(&plan, &p, &mut nodes);
    let again = run(&p, &[], &nodes);
    assert!(again.work.is_empty(), "{:?}", again.work);

    // The agent answers: the step is done and the request pruned.
    let id = req.id.clone();
    if let Some(r) = nodes[0].1.as_mut() {
        r.status
            .as_mut()
            .unwrap()
            .action_results
            .push(ActionResult {
                id: id.clone(),
                outcome: ActionResultOutcome::Signalled,
                reason: None,
                message: "SIGTERM delivered".into(),
                completed_at: Time(t(NOW)),
                follow_up: None,
            });
    }
    let done = run(&p, &[], &nodes);
    let w = work(&done, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::SignalParent, StepPhase::Done, None)]
    );
    assert!(
        w.ahead.action_requests.is_empty(),
        "consumed results are pruned"
    );
    assert_eq!(done.records()[0].outcome, ActionOutcome::Executed);
    assert!(
        w.notices
            .iter()
            .any(|n| n.reason == EventReason::ParentSignalled
                && n.pod.as_ref().is_some_and(|p| p.name == "php-0"))
    );
}

#[test]
fn a_refused_signal_is_skipped_and_refunded() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::SignalParent, "0s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    apply_ok(&plan, &p, &mut nodes);
    let id = request_id(
        "p",
        Detector::Zombies,
        "a",
        t(NOW - 100),
        0,
        ActionKind::SignalParent,
    );
    nodes[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .action_results
        .push(ActionResult {
            id,
            outcome: ActionResultOutcome::Refused,
            reason: None,
            message: "protected process".into(),
            completed_at: Time(t(NOW)),
            follow_up: None,
        });
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [(
            ActionKind::SignalParent,
            StepPhase::Skipped,
            Some("Refused")
        )]
    );
    assert!(
        w.ahead.remediation.history.is_empty(),
        "no signal was sent: budget refunded"
    );
}

#[test]
fn a_request_without_answer_fails_after_the_ttl() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::SignalParent, "0s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    apply_ok(&plan, &p, &mut nodes);
    let later = t(NOW + 11 * 60);
    nodes[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .last_scan_time = Some(Time(later));
    let plan = run_at(&p, &[], &nodes, later);
    let w = work(&plan, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::SignalParent, StepPhase::Failed, Some("Timeout"))]
    );
    assert!(w.ahead.action_requests.is_empty());
    assert_eq!(plan.summary.failing, ["a"]);
}

#[test]
fn episodes_end_when_the_condition_clears_and_restart_with_a_new_transition() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Event, "0s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    apply_ok(&plan, &p, &mut nodes);
    assert!(
        run(&p, &[], &nodes).work.is_empty(),
        "each step once per episode"
    );

    let mut cleared = nodes.clone();
    cleared[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .conditions = vec![cond("p", false, NOW - 1)];
    let plan = run(&p, &[], &cleared);
    let w = work(&plan, "a").unwrap();
    assert!(w.ahead.remediation.episodes.is_empty(), "episode over");
    assert!(w.effects.is_empty());

    let mut again = nodes.clone();
    again[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .conditions = vec![cond("p", true, NOW - 2)];
    let plan = run(&p, &[], &again);
    let w = work(&plan, "a").unwrap();
    assert!(
        w.effects.iter().any(|e| matches!(e, Effect::Event { .. })),
        "a new episode runs the ladder again"
    );
    assert_eq!(w.ahead.remediation.episodes[0].since, Time(t(NOW - 2)));
}

#[test]
fn storm_holds_node_level_actions_but_not_events_or_signals() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::SignalParent, "0s"),
            step(ActionKind::Cordon, "0s"),
        ],
    )
    .safety(|s| s.max_unhealthy = IntOrString::String("20%".into()))
    .view();
    let mut nodes: Vec<(Node, Option<NodeHealthReport>)> = (0..10)
        .map(|i| {
            let name = format!("n{i}");
            let r = if i < 5 {
                firing(&name, "p", NOW - 100)
            } else {
                report(&name, vec![cond("p", false, NOW - 500)])
            };
            (node(&name), Some(r))
        })
        .collect();
    let plan = run(&p, &[], &nodes);
    assert!(plan.summary.storm);
    assert_eq!((plan.summary.unhealthy, plan.summary.storm_limit), (5, 2));
    assert!(cordons(&plan).is_empty());
    for i in 0..5 {
        let w = work(&plan, &format!("n{i}")).unwrap();
        assert_eq!(
            steps_of(w, "p"),
            [
                (ActionKind::Event, StepPhase::Started, None),
                (ActionKind::SignalParent, StepPhase::Started, None),
                (ActionKind::Cordon, StepPhase::Held, Some("StormActive"))
            ]
        );
    }
    let held = plan
        .records()
        .iter()
        .filter(|r| r.outcome == ActionOutcome::Skipped)
        .count();
    assert_eq!(held, 5, "the hold is recorded once per node");
    apply_ok(&plan, &p, &mut nodes);
    let again = run(&p, &[], &nodes);
    assert!(
        again.records().is_empty() && cordons(&again).is_empty(),
        "held, not repeated"
    );

    // Back under the budget: held steps run if still due.
    for (_, r) in nodes.iter_mut().take(4) {
        r.as_mut().unwrap().status.as_mut().unwrap().conditions = vec![cond("p", false, NOW - 1)];
    }
    let resumed = run(&p, &[], &nodes);
    assert!(!resumed.summary.storm);
    assert_eq!(cordons(&resumed), ["n4"]);
}

#[test]
fn stale_reports_count_toward_the_storm_and_plan_nothing() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Event, "0s")],
    )
    .safety(|s| s.max_unhealthy = IntOrString::Int(0))
    .view();
    let mut stale = firing("a", "p", NOW - 100);
    stale.status.as_mut().unwrap().last_scan_time = Some(Time(t(NOW - 3 * 3600 - 1)));
    let plan = run(&p, &[], &[(node("a"), Some(stale)), (node("b"), None)]);
    assert!(plan.work.is_empty(), "nothing is planned from stale data");
    assert_eq!(plan.summary.stale, ["a"]);
    assert_eq!(plan.summary.missing, ["b"]);
    assert_eq!(plan.summary.unhealthy, 0);
    assert!(plan.summary.storm, "a stale node counts as unknown");

    // Without heartbeatInterval, 5m is assumed: 14 minutes old is fresh.
    let mut old = firing("c", "p", NOW - 100);
    let st = old.status.as_mut().unwrap();
    st.heartbeat_interval = None;
    st.last_scan_time = Some(Time(t(NOW - 14 * 60)));
    let plan = run(&p, &[], &[(node("c"), Some(old))]);
    assert!(plan.summary.stale.is_empty());
    assert_eq!(
        plan.wake_at,
        t(NOW + 60) + facts::SKEW_TOLERANCE,
        "wakes when it would go stale (with the skew tolerance)"
    );
}

#[test]
fn max_concurrent_actions_one_remediates_one_node_at_a_time() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::Cordon, "0s"),
            step(ActionKind::Drain, "1h"),
        ],
    )
    .safety(|s| s.max_concurrent_actions = 1)
    .view();
    let mut nodes = vec![
        (node("a"), Some(firing("a", "p", NOW - 50))),
        (node("b"), Some(firing("b", "p", NOW - 100))),
        (node("c"), Some(firing("c", "p", NOW - 70))),
    ];
    let plan = run(&p, &[], &nodes);
    assert_eq!(cordons(&plan), ["b"], "the longest-firing node first");
    for n in ["a", "c"] {
        assert_eq!(
            steps_of(work(&plan, n).unwrap(), "p"),
            [(
                ActionKind::Cordon,
                StepPhase::Held,
                Some("MaxConcurrentActions")
            )]
        );
    }
    apply_ok(&plan, &p, &mut nodes);
    assert!(
        cordons(&run(&p, &[], &nodes)).is_empty(),
        "b is still in progress: its ladder has a step to come"
    );

    // b healthy again: the next oldest gets the slot.
    nodes[1]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .conditions = vec![cond("p", false, NOW - 1)];
    let plan = run(&p, &[], &nodes);
    assert_eq!(cordons(&plan), ["c"]);
}

#[test]
fn dry_run_uses_no_concurrency_budget() {
    let p = policy(
        "p",
        PolicyMode::DryRun,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.max_concurrent_actions = 1)
    .view();
    let nodes = vec![
        (node("a"), Some(firing("a", "p", NOW - 50))),
        (node("b"), Some(firing("b", "p", NOW - 100))),
    ];
    let plan = run(&p, &[], &nodes);
    let planned = plan
        .records()
        .iter()
        .filter(|r| r.outcome == ActionOutcome::Planned)
        .count();
    assert_eq!(planned, 2);
}

fn with_history(mut r: NodeHealthReport, entries: &[(i64, &str, ActionKind)]) -> NodeHealthReport {
    r.spec.remediation.history = entries
        .iter()
        .map(|(at, policy, action)| HistoryEntry {
            at: Time(t(*at)),
            policy: (*policy).into(),
            detector: Detector::Zombies,
            action: *action,
            step: 0,
            planned: false,
        })
        .collect();
    r
}

#[test]
fn cooldown_is_the_longest_of_the_policies_selecting_the_node() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.cooldown = KubeDuration::from_static("30s"))
    .view();
    let r = with_history(
        firing("a", "p", NOW - 100),
        &[(NOW - 40, "other", ActionKind::SignalParent)],
    );
    let plan = run(&p, &[], &[(node("a"), Some(r.clone()))]);
    assert_eq!(cordons(&plan), ["a"], "40s > 30s");

    let strict = policy("strict", PolicyMode::Enforce, vec![])
        .safety(|s| s.cooldown = KubeDuration::from_static("1m"))
        .view();
    let others = [OtherPolicy {
        view: Arc::new(strict),
        storm_active: false,
    }];
    let plan = run(&p, &others, &[(node("a"), Some(r))]);
    assert!(cordons(&plan).is_empty());
    assert_eq!(
        steps_of(work(&plan, "a").unwrap(), "p"),
        [(ActionKind::Cordon, StepPhase::Held, Some("Cooldown"))]
    );
    assert_eq!(plan.wake_at, t(NOW + 20), "wakes when the cooldown ends");
}

#[test]
fn events_and_node_conditions_ignore_the_cooldown() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::NodeCondition, "0s"),
        ],
    )
    .safety(|s| s.cooldown = KubeDuration::from_static("1h"))
    .view();
    let r = with_history(
        firing("a", "p", NOW - 100),
        &[(NOW - 1, "p", ActionKind::Cordon)],
    );
    let plan = run(&p, &[], &[(node("a"), Some(r))]);
    let w = work(&plan, "a").unwrap();
    assert!(w.effects.iter().any(|e| matches!(e, Effect::Event { .. })));
    let Some(Effect::NodeConditions { steps, desired }) = w
        .effects
        .iter()
        .find(|e| matches!(e, Effect::NodeConditions { .. }))
    else {
        panic!("node conditions: {:?}", w.effects)
    };
    assert_eq!(steps.len(), 1);
    assert_eq!(desired.len(), 1);
    assert!(desired[0].status && desired[0].detector == Detector::Zombies);
    assert!(!w.write_ahead);
}

#[test]
fn max_signals_per_hour_is_the_smallest_of_the_policies_selecting_the_node() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::SignalParent, "0s")],
    )
    .safety(|s| s.max_signals_per_hour = 3)
    .view();
    let r = with_history(
        firing("a", "p", NOW - 100),
        &[
            (NOW - 4000, "p", ActionKind::SignalParent),
            (NOW - 1800, "p", ActionKind::SignalParent),
            (NOW - 600, "x", ActionKind::SignalParent),
        ],
    );
    let plan = run(&p, &[], &[(node("a"), Some(r.clone()))]);
    assert_eq!(
        work(&plan, "a").unwrap().ahead.action_requests.len(),
        1,
        "2 in the last hour < 3"
    );

    let stingy = policy("stingy", PolicyMode::Enforce, vec![])
        .safety(|s| s.max_signals_per_hour = 2)
        .view();
    let others = [OtherPolicy {
        view: Arc::new(stingy),
        storm_active: false,
    }];
    let plan = run(&p, &others, &[(node("a"), Some(r))]);
    let w = work(&plan, "a").unwrap();
    assert!(w.ahead.action_requests.is_empty());
    assert_eq!(
        steps_of(w, "p"),
        [(
            ActionKind::SignalParent,
            StepPhase::Held,
            Some("MaxSignalsPerHour")
        )]
    );
    assert_eq!(
        plan.wake_at,
        t(NOW - 1800 + 3600),
        "when the older of the two leaves the window"
    );
}

#[test]
fn a_node_cordoned_by_someone_else_is_never_uncordoned() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .view();
    let foreign = cordoned(node("a"), None);
    let plan = run(
        &p,
        &[],
        &[(foreign.clone(), Some(firing("a", "p", NOW - 100)))],
    );
    let w = work(&plan, "a").unwrap();
    assert!(w.effects.is_empty(), "{:?}", w.effects);
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::Cordon, StepPhase::Done, None)]
    );
    assert!(
        plan.records()[0]
            .message
            .as_deref()
            .unwrap()
            .contains("someone else")
    );
    assert!(
        w.ahead.remediation.history.is_empty(),
        "no disruption, no budget"
    );

    let healthy = report("a", vec![cond("p", false, NOW - 10_000)]);
    let plan = run(&p, &[], &[(foreign, Some(healthy))]);
    assert!(plan.work.iter().all(|w| w.effects.is_empty()));
}

#[test]
fn nodemedic_uncordons_after_healthy_for_the_cooldown() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.cooldown = KubeDuration::from_static("5m"))
    .view();
    let ours = cordoned(node("a"), Some("p"));
    let recently = report("a", vec![cond("p", false, NOW - 100)]);
    let plan = run(&p, &[], &[(ours.clone(), Some(recently))]);
    assert!(plan.work.is_empty());
    assert_eq!(plan.wake_at, t(NOW + 200));

    let long_ago = report("a", vec![cond("p", false, NOW - 300)]);
    let plan = run(&p, &[], &[(ours.clone(), Some(long_ago.clone()))]);
    let w = work(&plan, "a").unwrap();
    assert!(
        matches!(w.effects.as_slice(), [Effect::Uncordon { .. }]),
        "{:?}",
        w.effects
    );

    let keep = policy("p", PolicyMode::Enforce, vec![])
        .safety(|s| s.uncordon_when_healthy = false)
        .view();
    assert!(
        run(&keep, &[], &[(ours.clone(), Some(long_ago.clone()))])
            .work
            .is_empty()
    );

    let dry = policy("p", PolicyMode::DryRun, vec![]).view();
    assert!(
        run(&dry, &[], &[(ours, Some(long_ago))]).work.is_empty(),
        "restorations only in Enforce"
    );
}

#[test]
fn several_policies_share_one_cordon_and_the_strictest_budget() {
    let a = policy(
        "a",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.cooldown = KubeDuration::from_static("1m"))
    .view();
    let b = policy(
        "b",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.cooldown = KubeDuration::from_static("10m"))
    .view();
    let others_for_a = [OtherPolicy {
        view: Arc::new(b.clone()),
        storm_active: false,
    }];
    let others_for_b = [OtherPolicy {
        view: Arc::new(a.clone()),
        storm_active: false,
    }];

    // a cordons; b, firing too, joins without waiting for the cooldown.
    let r = report(
        "n",
        vec![cond("a", true, NOW - 100), cond("b", true, NOW - 100)],
    );
    let mut nodes = vec![(node("n"), Some(r))];
    let plan = run(&a, &others_for_a, &nodes);
    assert_eq!(cordons(&plan), ["n"]);
    apply_ok(&plan, &a, &mut nodes);
    let plan = run(&b, &others_for_b, &nodes);
    let w = work(&plan, "n").unwrap();
    assert!(matches!(w.effects.as_slice(), [Effect::Cordon { owner, .. }] if owner == "b"));
    assert!(!w.write_ahead, "joining is not a disruption");
    apply_ok(&plan, &b, &mut nodes);
    assert_eq!(
        nodes[0].0.metadata.annotations.as_ref().unwrap()[CORDONED_BY_ANNOTATION],
        "a,b"
    );

    // a healthy for 20 minutes, b still firing: stays cordoned.
    let conds = vec![cond("a", false, NOW - 1200), cond("b", true, NOW - 100)];
    nodes[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .conditions = conds;
    assert!(
        run(&a, &others_for_a, &nodes)
            .work
            .iter()
            .all(|w| w.effects.is_empty())
    );
    // Both healthy, b for 5 minutes: the longer cooldown (10m) governs.
    let conds = vec![cond("a", false, NOW - 1200), cond("b", false, NOW - 300)];
    nodes[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .conditions = conds;
    let plan = run(&a, &others_for_a, &nodes);
    assert!(plan.work.iter().all(|w| w.effects.is_empty()));
    assert_eq!(plan.wake_at, t(NOW + 300));
    // After 10 minutes: uncordoned once.
    let plan = run_at(&a, &others_for_a, &nodes, t(NOW + 300));
    let w = work(&plan, "n").unwrap();
    assert!(matches!(w.effects.as_slice(), [Effect::Uncordon { .. }]));
}

#[test]
fn another_policys_storm_holds_node_level_actions_on_shared_nodes() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .view();
    let stormy = policy("q", PolicyMode::Enforce, vec![]).view();
    let others = [OtherPolicy {
        view: Arc::new(stormy),
        storm_active: true,
    }];
    let plan = run(
        &p,
        &others,
        &[(node("a"), Some(firing("a", "p", NOW - 100)))],
    );
    assert!(cordons(&plan).is_empty());
    let w = work(&plan, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::Cordon, StepPhase::Held, Some("StormActive"))]
    );
    assert!(
        w.ahead.remediation.episodes[0].steps[0]
            .message
            .as_deref()
            .unwrap()
            .contains("policy q")
    );
}

#[test]
fn eviction_targets_the_attributed_pod_and_respects_excluded_namespaces() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::EvictPod, "0s")],
    )
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let w = work(&plan, "a").unwrap();
    assert!(w.write_ahead);
    let Some(Effect::Evict {
        pod, exclusions, ..
    }) = w.effects.first()
    else {
        panic!("{:?}", w.effects)
    };
    assert_eq!(
        (
            pod.namespace.as_str(),
            pod.name.as_str(),
            pod.uid.as_deref()
        ),
        ("web", "php-0", Some("pod-uid"))
    );
    assert_eq!(exclusions.namespaces, ["kube-system"]);

    let excluded = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::EvictPod, "0s")],
    )
    .safety(|s| s.exclude_namespaces = vec!["web".into()])
    .view();
    let plan = run(
        &excluded,
        &[],
        &[(node("a"), Some(firing("a", "p", NOW - 100)))],
    );
    let w = work(&plan, "a").unwrap();
    assert!(w.effects.is_empty());
    assert_eq!(
        steps_of(w, "p"),
        [(
            ActionKind::EvictPod,
            StepPhase::Skipped,
            Some("ExcludedNamespace")
        )]
    );
    assert_eq!(plan.records()[0].outcome, ActionOutcome::Skipped);
}

#[test]
fn eviction_retries_with_backoff_then_fails_at_the_timeout() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::EvictPod, "0s")],
    )
    .view();
    let settings = Settings {
        eviction_timeout: Duration::from_secs(60),
        ..Settings::default()
    };
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap().clone();
    let (spec, records, _) = settle(
        &w,
        &[EffectOutcome::Retry("429: PDB".into())],
        &p,
        &settings,
        t(NOW),
    );
    assert!(records.is_empty(), "retries are not recorded");
    let rec = &spec.remediation.episodes[0].steps[0];
    assert_eq!((rec.phase, rec.attempts), (StepPhase::Started, 1));
    nodes[0].1.as_mut().unwrap().spec = as_spec(&spec);

    // Not yet time for the next attempt.
    let plan = run(&p, &[], &nodes);
    assert!(plan.work.is_empty());
    assert_eq!(plan.wake_at, t(NOW + 1));
    // Next attempt.
    let plan = run_at(&p, &[], &nodes, t(NOW + 1));
    let w = work(&plan, "a").unwrap().clone();
    assert!(matches!(w.effects.as_slice(), [Effect::Evict { .. }]));
    // At the timeout: Failed.
    let (spec, records, notices) = settle(
        &w,
        &[EffectOutcome::Retry("429: PDB".into())],
        &p,
        &settings,
        t(NOW + 60),
    );
    let rec = &spec.remediation.episodes[0].steps[0];
    assert_eq!(
        (rec.phase, rec.reason.as_deref()),
        (StepPhase::Failed, Some("Timeout"))
    );
    assert_eq!(records[0].outcome, ActionOutcome::Failed);
    assert_eq!(notices[0].reason, EventReason::RemediationFailed);
    assert!(notices[0].pod.is_some(), "the Event also goes to the pod");
}

#[test]
fn drains_report_progress_and_time_out() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Drain, "0s")],
    )
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let w = work(&plan, "a").unwrap();
    assert!(w.write_ahead);
    let progress = DrainProgress {
        evicted: 3,
        remaining: 2,
        skipped: 1,
    };
    let pass = EffectOutcome::Drained {
        progress: progress.clone(),
        end: DrainPassEnd::Blocked,
        message: "2 pods refused by a PodDisruptionBudget".into(),
    };
    let (spec, records, _) = settle(
        w,
        std::slice::from_ref(&pass),
        &p,
        &Settings::default(),
        t(NOW),
    );
    assert!(records.is_empty());
    let rec = &spec.remediation.episodes[0].steps[0];
    assert_eq!(rec.drain.as_ref(), Some(&progress));
    let settings = Settings {
        drain_timeout: Duration::from_secs(120),
        ..Settings::default()
    };
    let (spec, records, _) = settle(w, &[pass], &p, &settings, t(NOW + 120));
    assert_eq!(
        spec.remediation.episodes[0].steps[0].phase,
        StepPhase::Failed
    );
    assert_eq!(records[0].outcome, ActionOutcome::Failed);
}

#[test]
fn taints_are_placed_once_and_removed_when_healthy() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Taint, "0s")],
    )
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let w = work(&plan, "a").unwrap();
    assert!(
        matches!(w.effects.as_slice(), [Effect::Taint { taint, .. }] if taint.key == "nodemedic.io/unhealthy")
    );

    let mut tainted = node("a");
    tainted.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: "nodemedic.io/unhealthy".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let owned = serde_json::to_string(&[OwnedTaint {
        key: "nodemedic.io/unhealthy".into(),
        effect: TaintEffect::NoSchedule,
        policies: vec!["p".into()],
    }])
    .unwrap();
    tainted.metadata.annotations =
        Some(BTreeMap::from([(TAINTED_BY_ANNOTATION.to_owned(), owned)]));
    let healthy = report("a", vec![cond("p", false, NOW - 10)]);
    let plan = run(&p, &[], &[(tainted, Some(healthy))]);
    let w = work(&plan, "a").unwrap();
    assert!(
        matches!(w.effects.as_slice(), [Effect::Untaint { key, .. }] if key == "nodemedic.io/unhealthy")
    );
}

#[test]
fn node_conditions_clear_when_the_episode_ends() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::NodeCondition, "0s")],
    )
    .view();
    let mut n = node("a");
    n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
            type_: "NodemedicZombies".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let plan = run(
        &p,
        &[],
        &[(n, Some(report("a", vec![cond("p", false, NOW - 10)])))],
    );
    let w = work(&plan, "a").unwrap();
    let Some(Effect::NodeConditions { desired, steps }) = w.effects.first() else {
        panic!("{:?}", w.effects)
    };
    assert!(steps.is_empty());
    assert_eq!(desired.len(), 1);
    assert!(!desired[0].status);
}

#[test]
fn a_node_no_longer_selected_loses_the_policys_episodes() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Event, "0s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    apply_ok(&plan, &p, &mut nodes);
    nodes[0].0.metadata.labels = Some([("pool".to_owned(), "other".to_owned())].into());
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(w.ahead.remediation.episodes.is_empty());
    assert_eq!(plan.summary.matched, 0);
}

#[test]
fn an_invalid_selector_makes_the_policy_unready() {
    let mut p = policy("p", PolicyMode::Enforce, vec![]);
    p.policy.spec.node_selector = Some(LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "pool".into(),
            operator: "Near".into(),
            values: None,
        }]),
    });
    let err = PolicyView::from_policy(&p.policy).unwrap_err();
    assert_eq!(err.reason(), "InvalidSelector");
    let status = status::invalid(Some(1), &err, None, None, t(NOW));
    assert_eq!(status.conditions[0].status, "False");
    assert!(
        status.conditions[0].message.contains("unknown operator"),
        "{}",
        status.conditions[0].message
    );
}

#[test]
fn status_keeps_transition_times_and_bounds_lists() {
    let p = policy("p", PolicyMode::Enforce, vec![]).view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let first = status::build(&p, None, &plan.summary, &plan.records(), t(NOW));
    let again = status::build(
        &p,
        Some(&first),
        &plan.summary,
        &plan.records(),
        t(NOW + 60),
    );
    assert_eq!(
        first, again,
        "unchanged facts → identical status (no write)"
    );
    assert_eq!(first.unhealthy_nodes, 1);
    assert_eq!(first.nodes[0].firing, ["zombies"]);
    let many: Vec<_> = (0..30)
        .map(|i| ActionRecord {
            time: Time(t(i)),
            node: "a".into(),
            detector: "zombies".into(),
            action: ActionKind::Event,
            outcome: ActionOutcome::Executed,
            message: None,
        })
        .collect();
    let s = status::build(&p, Some(&first), &plan.summary, &many, t(NOW));
    assert_eq!(s.recent_actions.len(), 20);
    assert_eq!(s.recent_actions[0].time, Time(t(29)), "newest first");
}

#[test]
fn request_ids_are_deterministic_and_bounded() {
    let long = "p".repeat(253);
    let a = request_id(
        &long,
        Detector::Zombies,
        &"n".repeat(253),
        t(0),
        3,
        ActionKind::Drain,
    );
    let b = request_id(
        &long,
        Detector::Zombies,
        &"n".repeat(253),
        t(0),
        3,
        ActionKind::Drain,
    );
    assert_eq!(a, b);
    assert!(a.len() <= 128, "{}", a.len());
    assert_ne!(
        a,
        request_id(
            &long,
            Detector::Zombies,
            &"m".repeat(253),
            t(0),
            3,
            ActionKind::Drain
        )
    );
    assert_eq!(
        request_id(
            "p",
            Detector::Zombies,
            "n",
            t(0),
            1,
            ActionKind::SignalParent
        ),
        "p.zombies.n.1800000000.1.signalparent"
    );
}

#[test]
fn history_pruning_keeps_the_latest_disruptive_entry() {
    let mut h: Vec<HistoryEntry> = [
        (0, ActionKind::Cordon),
        (10, ActionKind::Event),
        (100_000, ActionKind::Event),
    ]
    .into_iter()
    .map(|(at, action)| HistoryEntry {
        at: Time(t(at)),
        policy: "p".into(),
        detector: Detector::Zombies,
        action,
        step: 0,
        planned: false,
    })
    .collect();
    prune_history(&mut h, t(100_000), Duration::ZERO);
    let kept: Vec<_> = h.iter().map(|e| e.action).collect();
    assert_eq!(kept, [ActionKind::Cordon, ActionKind::Event]);
}

#[test]
fn protected_processes_are_not_signalled() {
    assert!(is_protected_process("containerd-shim-runc-v2", &[]));
    assert!(is_protected_process("kubelet", &[]));
    assert!(!is_protected_process("php-fpm", &[]));
    assert!(is_protected_process("php-fpm", &["php*".into()]));
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::SignalParent, "0s")],
    )
    .safety(|s| s.protected_processes = vec!["php-fpm".into()])
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let w = work(&plan, "a").unwrap();
    assert!(w.ahead.action_requests.is_empty());
    assert_eq!(
        steps_of(w, "p"),
        [(
            ActionKind::SignalParent,
            StepPhase::Skipped,
            Some("ProtectedProcess")
        )]
    );
}

// Findings of "Remediation you can trust": each test failed before its fix.

fn clearing(mut r: NodeHealthReport) -> NodeHealthReport {
    for c in &mut r.status.as_mut().unwrap().conditions {
        c.reason = ConditionReason::Clearing;
    }
    r
}

#[test]
fn signal_parent_never_targets_a_parent_below_per_parent_threshold() {
    let mut s = step(ActionKind::SignalParent, "0s");
    s.signal = Some(ParentSignal::SIGKILL);
    let p = policy("p", PolicyMode::Enforce, vec![s]).view();
    // The node total fires, but no single parent reaches perParentThreshold:
    // the parent with the most zombies is not a target.
    let mut r = firing("a", "p", NOW - 100);
    let z = &mut r.status.as_mut().unwrap().findings.zombies[0];
    z.exceeded = false;
    z.zombies = 1;
    z.zombies_past_min_age = 1;
    let plan = run(&p, &[], &[(node("a"), Some(r))]);
    let w = work(&plan, "a").unwrap();
    assert!(
        w.ahead.action_requests.is_empty(),
        "{:?}",
        w.ahead.action_requests
    );
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::SignalParent, StepPhase::Held, Some("NoTarget"))]
    );
}

#[test]
fn request_ids_name_the_action_so_a_ladder_edit_cannot_reuse_one() {
    let since = t(NOW - 100);
    let signal = request_id(
        "p",
        Detector::Zombies,
        "a",
        since,
        1,
        ActionKind::SignalParent,
    );
    let reboot = request_id(
        "p",
        Detector::Zombies,
        "a",
        since,
        1,
        ActionKind::RequestReboot,
    );
    assert_ne!(signal, reboot);

    // The ladder [Event, SignalParent] ran; the agent answered the signal.
    let ladder = |second: ActionKind| {
        policy(
            "p",
            PolicyMode::Enforce,
            vec![step(ActionKind::Event, "0s"), step(second, "0s")],
        )
        .view()
    };
    let before = ladder(ActionKind::SignalParent);
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&before, &[], &nodes);
    apply_ok(&plan, &before, &mut nodes);
    let old_id = nodes[0].1.as_ref().unwrap().spec.action_requests[0]
        .id
        .clone();
    nodes[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .action_results
        .push(ActionResult {
            id: old_id.clone(),
            outcome: ActionResultOutcome::Signalled,
            reason: None,
            message: String::new(),
            completed_at: Time(t(NOW)),
            follow_up: None,
        });
    // Edited: step 1 is now RequestReboot. Its request is new, and the
    // signal's result is not read as the reboot's.
    let after = ladder(ActionKind::RequestReboot);
    let plan = run(&after, &[], &nodes);
    apply_ok(&plan, &after, &mut nodes);
    let spec = &nodes[0].1.as_ref().unwrap().spec;
    let reboot_req = spec
        .action_requests
        .iter()
        .find(|r| r.action == NodeAction::RequestReboot)
        .expect("a reboot request");
    assert_ne!(reboot_req.id, old_id);
    let plan = run(&after, &[], &nodes);
    let phase = plan
        .work
        .iter()
        .find_map(|w| w.ahead.remediation.episode("p", Detector::Zombies))
        .or(spec.remediation.episode("p", Detector::Zombies))
        .and_then(|e| e.step(1, ActionKind::RequestReboot))
        .map(|s| s.phase);
    assert_eq!(
        phase,
        Some(StepPhase::Started),
        "not done: the agent never did it"
    );
}

#[test]
fn no_step_comes_due_while_the_condition_is_clearing() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::Cordon, "1m"),
        ],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 30)))];
    let plan = run(&p, &[], &nodes);
    apply_ok(&plan, &p, &mut nodes);
    // The threshold is no longer exceeded; the condition is True only
    // because of the hysteresis on resolution.
    let r = nodes[0].1.take().unwrap();
    nodes[0].1 = Some(clearing(r));
    let plan = run_at(&p, &[], &nodes, t(NOW + 600));
    assert!(cordons(&plan).is_empty(), "{:?}", plan.work);
}

#[test]
fn max_unhealthy_percent_lets_a_small_pool_remediate_one_node() {
    let p = |s: &str| super::policy::MaxUnhealthy::parse(&IntOrString::String(s.into()));
    // 10% of 3 nodes rounds down to 0: one sick node would be a storm.
    assert_eq!(p("10%").map(|m| m.limit(3)), Ok(1));
    assert_eq!(p("10%").map(|m| m.limit(9)), Ok(1));
    assert_eq!(p("10%").map(|m| m.limit(10)), Ok(1));
    assert_eq!(p("10%").map(|m| m.limit(25)), Ok(2));
    // 0% is an explicit "never", and no selected node means no budget.
    assert_eq!(p("0%").map(|m| m.limit(3)), Ok(0));
    assert_eq!(p("10%").map(|m| m.limit(0)), Ok(0));

    let view = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.max_unhealthy = IntOrString::String("10%".into()))
    .view();
    let nodes = vec![
        (node("a"), Some(firing("a", "p", NOW - 100))),
        (
            node("b"),
            Some(report("b", vec![cond("p", false, NOW - 100)])),
        ),
        (
            node("c"),
            Some(report("c", vec![cond("p", false, NOW - 100)])),
        ),
    ];
    let plan = run(&view, &[], &nodes);
    assert!(!plan.summary.storm);
    assert_eq!(cordons(&plan), ["a"]);
    // Two of three sick is a storm.
    let mut two = nodes.clone();
    two[1].1 = Some(firing("b", "p", NOW - 100));
    let plan = run(&view, &[], &two);
    assert!(plan.summary.storm);
    assert!(cordons(&plan).is_empty());
}

fn slot_policy(ladder: Vec<ActionStep>) -> PolicyView {
    policy("p", PolicyMode::Enforce, ladder)
        .safety(|s| s.max_concurrent_actions = 1)
        .view()
}

#[test]
fn joined_and_foreign_cordons_hold_no_concurrency_slot() {
    let p = slot_policy(vec![
        step(ActionKind::Cordon, "0s"),
        step(ActionKind::Drain, "1h"),
    ]);
    // a was cordoned by someone else: nodemedic's Cordon step is Done and
    // disrupted nothing.
    let mut nodes = vec![
        (cordoned(node("a"), None), Some(firing("a", "p", NOW - 100))),
        (node("b"), Some(firing("b", "p", NOW - 50))),
    ];
    let plan = run(&p, &[], &nodes[..1]);
    apply_ok(&plan, &p, &mut nodes[..1]);
    let rec = nodes[0].1.as_ref().unwrap().spec.remediation.episodes[0].steps[0].clone();
    assert_eq!(
        (rec.action, rec.phase),
        (ActionKind::Cordon, StepPhase::Done)
    );
    assert!(rec.started_at.is_none(), "no budget started: {rec:?}");
    let plan = run(&p, &[], &nodes);
    assert_eq!(cordons(&plan), ["b"], "a holds no slot");
}

#[test]
fn skipped_steps_hold_no_concurrency_slot() {
    let p = slot_policy(vec![
        step(ActionKind::EvictPod, "0s"),
        step(ActionKind::Drain, "1h"),
    ]);
    let mut nodes = vec![
        (node("a"), Some(firing("a", "p", NOW - 100))),
        (node("b"), Some(firing("b", "p", NOW - 50))),
    ];
    let plan = run(&p, &[], &nodes[..1]);
    let w = work(&plan, "a").unwrap();
    // At execution the pod turns out to be protected: Skipped, refunded.
    let (spec, _, _) = settle(
        w,
        &[EffectOutcome::Skipped {
            reason: "Protected".into(),
            message: "pod web/php-0 carries nodemedic.io/protect=true".into(),
        }],
        &p,
        &Settings::default(),
        t(NOW),
    );
    nodes[0].1.as_mut().unwrap().spec = as_spec(&spec);
    let plan = run(&p, &[], &nodes);
    let evicts: Vec<&str> = plan
        .work
        .iter()
        .filter(|w| w.effects.iter().any(|e| matches!(e, Effect::Evict { .. })))
        .map(|w| w.node.as_str())
        .collect();
    assert_eq!(evicts, ["b"], "a's skipped step holds no slot");
}

#[test]
fn an_exhausted_ladder_frees_its_slot_and_needs_attention() {
    let p = slot_policy(vec![step(ActionKind::Cordon, "0s")]);
    let mut nodes = vec![
        (node("a"), Some(firing("a", "p", NOW - 100))),
        (node("b"), Some(firing("b", "p", NOW - 50))),
    ];
    let plan = run(&p, &[], &nodes);
    assert_eq!(cordons(&plan), ["a"]);
    apply_ok(&plan, &p, &mut nodes);
    // a is cordoned and still unhealthy; its ladder has nothing left.
    let plan = run(&p, &[], &nodes);
    assert_eq!(cordons(&plan), ["b"], "a's exhausted ladder frees the slot");
    let w = work(&plan, "a").unwrap();
    assert!(
        w.notices
            .iter()
            .any(|n| n.reason == EventReason::NeedsAttention && n.warning),
        "{:?}",
        w.notices
    );
    assert!(
        w.ahead.remediation.episodes[0]
            .needs_attention_since
            .is_some()
    );
    assert_eq!(plan.summary.needs_attention, ["a"]);
    // Once: the next plan does not repeat the Event.
    apply_ok(&plan, &p, &mut nodes);
    let again = run(&p, &[], &nodes);
    assert!(
        work(&again, "a").is_none_or(|w| w
            .notices
            .iter()
            .all(|n| n.reason != EventReason::NeedsAttention)),
        "a's NeedsAttention is not repeated"
    );
}

#[test]
fn a_drain_that_keeps_getting_retry_fails_at_its_timeout() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Drain, "0s")],
    )
    .view();
    let plan = run(&p, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let w = work(&plan, "a").unwrap();
    let settings = Settings {
        drain_timeout: Duration::from_secs(120),
        ..Settings::default()
    };
    let retry = EffectOutcome::Retry("list pods on a: 503 Service Unavailable".into());
    let (spec, _, _) = settle(w, std::slice::from_ref(&retry), &p, &settings, t(NOW + 10));
    assert_eq!(
        spec.remediation.episodes[0].steps[0].phase,
        StepPhase::Started
    );
    let (spec, records, _) = settle(w, &[retry], &p, &settings, t(NOW + 120));
    let rec = &spec.remediation.episodes[0].steps[0];
    assert_eq!(
        (rec.phase, rec.reason.as_deref()),
        (StepPhase::Failed, Some("Timeout"))
    );
    assert_eq!(records[0].outcome, ActionOutcome::Failed);
}

/// A drain a PodDisruptionBudget keeps blocking backs off between passes;
/// its timeout is not pushed out by the back-off: the step ends at the
/// timeout, not when the next pass would have come (kind's drain-pdb saw
/// 32 s for a 20 s timeout before this).
#[test]
fn a_backed_off_drain_fails_at_its_timeout_not_at_its_next_pass() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Drain, "0s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    let blocked = EffectOutcome::Drained {
        progress: Default::default(),
        end: DrainPassEnd::Blocked,
        message: "guarded/web-0 (429: the PodDisruptionBudget allows 0)".into(),
    };
    let (mut spec, _, _) = settle(w, &[blocked], &p, &Settings::default(), t(NOW));
    // Many blocked passes later: the last at +110 s, the next backed off
    // far beyond the 120 s timeout (tests' settings).
    let rec = &mut spec.remediation.episodes[0].steps[0];
    assert_eq!(rec.phase, StepPhase::Started);
    rec.attempts = 8;
    rec.last_attempt_at = Some(Time(t(NOW + 110)));
    nodes[0].1.as_mut().unwrap().spec = as_spec(&spec);

    // After the blocked pass the controller requeues at the next retry:
    // never later than the timeout.
    assert_eq!(
        next_retry(&spec, "p", &settings_of_run()),
        Some(t(NOW + 120)),
        "the deadline, not the backed-off pass at +110 s + {:?}",
        crate::plan::retry_delay(7)
    );
    let plan = run_at(&p, &[], &nodes, t(NOW + 115));
    assert!(work(&plan, "a").is_none_or(|w| w.effects.is_empty()));
    assert!(
        plan.wake_at <= t(NOW + 120),
        "woken at the timeout, not at the next pass: {}",
        plan.wake_at
    );
    let plan = run_at(&p, &[], &nodes, t(NOW + 120));
    let w = work(&plan, "a").expect("the step ends");
    assert!(
        w.effects.is_empty(),
        "no pass after the timeout: {:?}",
        w.effects
    );
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::Drain, StepPhase::Failed, Some("Timeout"))]
    );
    assert!(
        w.notices
            .iter()
            .any(|n| n.reason == EventReason::RemediationFailed
                && n.note.contains("drain did not finish within 2m")
                && n.note.contains("PodDisruptionBudget"))
    );
}

#[test]
fn an_eviction_retry_keeps_the_pod_uid_of_the_first_attempt() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::EvictPod, "0s")],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap().clone();
    let (spec, _, _) = settle(
        &w,
        &[EffectOutcome::Retry("429: PDB".into())],
        &p,
        &Settings::default(),
        t(NOW),
    );
    nodes[0].1.as_mut().unwrap().spec = as_spec(&spec);
    // The StatefulSet replaced the pod under the same name; the agent now
    // attributes the finding to the new pod (or, after a restart, to no uid).
    for new_uid in [Some("replacement-uid"), None] {
        let mut n = nodes.clone();
        let r = n[0].1.as_mut().unwrap();
        r.status.as_mut().unwrap().findings.zombies[0]
            .parent
            .workload
            .as_mut()
            .unwrap()
            .pod_uid = new_uid.map(str::to_owned);
        let plan = run_at(&p, &[], &n, t(NOW + 5));
        let w = work(&plan, "a").unwrap();
        let Some(Effect::Evict { pod, .. }) = w.effects.first() else {
            panic!("a retry: {:?}", w.effects)
        };
        assert_eq!(
            pod.uid.as_deref(),
            Some("pod-uid"),
            "the first attempt's pod"
        );
    }
}

#[test]
fn eviction_needs_the_pods_uid() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::EvictPod, "0s")],
    )
    .view();
    let mut r = firing("a", "p", NOW - 100);
    r.status.as_mut().unwrap().findings.zombies[0]
        .parent
        .workload
        .as_mut()
        .unwrap()
        .pod_uid = None;
    let plan = run(&p, &[], &[(node("a"), Some(r))]);
    let w = work(&plan, "a").unwrap();
    assert!(w.effects.is_empty(), "{:?}", w.effects);
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::EvictPod, StepPhase::Held, Some("NoTarget"))]
    );
}

#[test]
fn an_invalid_policy_keeps_its_episodes_and_its_cordon() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Event, "0s")],
    )
    .view();
    // q cordoned node a; q has since been edited into an invalid spec (or
    // was stored before a rule it now breaks). Its detector is healthy.
    let mut r = report(
        "a",
        vec![cond("p", true, NOW - 100), {
            let mut c = cond("q", false, NOW - 10_000);
            c.policy = "q".into();
            c
        }],
    );
    r.spec.remediation.episodes.push(Episode {
        policy: "q".into(),
        detector: Detector::Zombies,
        since: Time(t(NOW - 20_000)),
        observed_at: None,
        steps: vec![],
        slot_since: None,
        needs_attention_since: None,
    });
    let nodes = vec![(cordoned(node("a"), Some("q")), Some(r))];
    let plan = run_with_invalid(&p, &[], &["q".to_owned()], &nodes, t(NOW));
    let w = work(&plan, "a").unwrap();
    assert!(
        w.ahead
            .remediation
            .episode("q", Detector::Zombies)
            .is_some(),
        "q's episode is kept"
    );
    assert!(
        !w.effects
            .iter()
            .any(|e| matches!(e, Effect::Uncordon { .. })),
        "q's cordon is kept: {:?}",
        w.effects
    );
    // Deleted (not invalid): released as before.
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(
        w.ahead
            .remediation
            .episode("q", Detector::Zombies)
            .is_none()
    );
    assert!(
        w.effects
            .iter()
            .any(|e| matches!(e, Effect::Uncordon { .. }))
    );
}

#[test]
fn a_stored_no_execute_taint_without_the_opt_in_makes_the_policy_invalid() {
    let mut p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Taint, "0s")],
    );
    if let Some(t) = p.policy.spec.actions.zombies[0].taint.as_mut() {
        t.effect = TaintEffect::NoExecute;
    }
    let err = PolicyView::from_policy(&p.policy).unwrap_err();
    assert!(
        err.to_string().contains("use a Drain step instead"),
        "{err}"
    );
    if let Some(t) = p.policy.spec.actions.zombies[0].taint.as_mut() {
        t.allow_no_execute = true;
    }
    assert!(PolicyView::from_policy(&p.policy).is_ok());
}

fn observed(r: &NodeHealthReport, scan: i64, heartbeat: &str) -> NodeHealthReport {
    let mut r = r.clone();
    let st = r.status.as_mut().unwrap();
    st.last_scan_time = Some(Time(t(scan)));
    st.heartbeat_interval = Some(heartbeat.into());
    r
}

#[test]
fn freshness_is_judged_on_the_operators_clock() {
    let r = firing("a", "p", NOW - 100);
    // The agent's clock runs an hour ahead; it died 20 minutes ago (the
    // operator last saw a new scan then). Its lastScanTime is in the future.
    let ahead = observed(&r, NOW + 3600, "5m");
    assert_eq!(
        facts::freshness(ahead.status.as_ref(), Some(t(NOW - 1200)), t(NOW)),
        facts::Freshness::Stale
    );
    // The agent's clock runs ten minutes behind, and it is alive: the
    // operator saw its newest scan a minute ago.
    let behind = observed(&r, NOW - 600, "5m");
    assert!(matches!(
        facts::freshness(behind.status.as_ref(), Some(t(NOW - 60)), t(NOW)),
        facts::Freshness::Fresh { .. }
    ));
    // An hour behind reads as stale: the safe direction (nothing is planned
    // and the policy is Degraded, naming the node).
    let far_behind = observed(&r, NOW - 3600, "5m");
    assert_eq!(
        facts::freshness(far_behind.status.as_ref(), Some(t(NOW - 60)), t(NOW)),
        facts::Freshness::Stale
    );
    // A heartbeat the agent claims to be a day long is capped.
    let lazy = observed(&r, NOW - 3600, "24h");
    assert_eq!(
        facts::freshness(lazy.status.as_ref(), Some(t(NOW - 3600)), t(NOW)),
        facts::Freshness::Stale
    );
    // The planner uses the observation.
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .view();
    let settings = Settings::default();
    let node = node("a");
    let inputs = [NodeInput {
        name: "a",
        selected: true,
        node: Some(&node),
        report: Some(&ahead),
        ledger: None,
        observed_scan: Some(t(NOW - 1200)),
        observed_clear: &[],
    }];
    let plan = plan(&PlanInput {
        policy: &p,
        others: &[],
        invalid: &[],
        deleting: false,
        nodes: &inputs,
        settings: &settings,
        now: t(NOW),
    });
    assert_eq!(plan.summary.stale, ["a"]);
    assert!(plan.work.is_empty());
}

/// The healthy cooldown before an uncordon runs on the operator's clock:
/// an agent whose clock is hours behind reports a transition to False
/// "long ago", yet the operator saw it a minute ago and keeps the cordon
/// until the cooldown has passed since then.
#[test]
fn an_agent_clock_behind_cannot_make_an_uncordon_come_early() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    )
    .safety(|s| s.cooldown = KubeDuration::from_static("5m"))
    .view();
    let ours = cordoned(node("a"), Some("p"));
    let skewed = report("a", vec![cond("p", false, NOW - 7200)]);
    let settings = Settings::default();
    let plan_with = |observed: &[(String, Timestamp)], now: i64| {
        let inputs = [NodeInput {
            name: "a",
            selected: true,
            node: Some(&ours),
            report: Some(&skewed),
            ledger: None,
            observed_scan: Some(t(now)),
            observed_clear: observed,
        }];
        plan(&PlanInput {
            policy: &p,
            others: &[],
            invalid: &[],
            deleting: false,
            nodes: &inputs,
            settings: &settings,
            now: t(now),
        })
    };
    let seen = [("p".to_owned(), t(NOW - 60))];
    let early = plan_with(&seen, NOW);
    assert!(early.work.is_empty(), "{:?}", early.work);
    assert_eq!(early.wake_at, t(NOW + 240));
    let later = plan_with(&seen, NOW + 240);
    let w = work(&later, "a").unwrap();
    assert!(
        matches!(w.effects.as_slice(), [Effect::Uncordon { .. }]),
        "{:?}",
        w.effects
    );
    // An agent clock ahead only holds the cordon longer: the later of the
    // two times counts.
    let ahead = report("a", vec![cond("p", false, NOW + 100)]);
    let inputs = [NodeInput {
        name: "a",
        selected: true,
        node: Some(&ours),
        report: Some(&ahead),
        ledger: None,
        observed_scan: Some(t(NOW + 240)),
        observed_clear: &seen,
    }];
    let held = plan(&PlanInput {
        policy: &p,
        others: &[],
        invalid: &[],
        deleting: false,
        nodes: &inputs,
        settings: &settings,
        now: t(NOW + 240),
    });
    assert!(held.work.is_empty());
}

/// A report whose zombies condition says where the problem lives.
fn scoped(name: &str, scope: Option<ProblemScope>) -> NodeHealthReport {
    let mut c = cond("p", true, NOW - 100);
    c.scope = scope;
    c.culprit = (scope == Some(ProblemScope::Pod)).then(|| CulpritPod {
        uid: "culprit-uid".into(),
        namespace: Some("shop".into()),
        name: Some("leaky-0".into()),
    });
    report(name, vec![c])
}

/// A tenant's own zombies (all in its pod) do not get the node cordoned:
/// the node-wide step waits until the pod-level one was carried out, and
/// the eviction goes to the culprit the condition names.
#[test]
fn a_pod_contained_problem_reaches_a_node_wide_step_only_after_a_pod_level_one() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::EvictPod, "0s"),
            step(ActionKind::Cordon, "0s"),
        ],
    )
    .view();
    let mut nodes = vec![(node("a"), Some(scoped("a", Some(ProblemScope::Pod))))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(
        matches!(w.effects.as_slice(), [Effect::Evict { pod, .. }] if pod.name == "leaky-0" && pod.uid.as_deref() == Some("culprit-uid")),
        "{:?}",
        w.effects
    );
    assert_eq!(
        steps_of(w, "p"),
        [
            (ActionKind::EvictPod, StepPhase::Started, None),
            (ActionKind::Cordon, StepPhase::Held, Some("PodContained")),
        ]
    );
    assert!(
        w.notices
            .iter()
            .any(|n| n.reason == EventReason::RemediationHeld
                && n.note.contains("scope Pod shop/leaky-0")
                && n.note.contains("contained in pod shop/leaky-0"))
    );
    // The eviction is carried out. The report still shows the scan from
    // before it, which says nothing about whether the problem persisted:
    // the node-wide step waits for a scan after it, and asks to be woken.
    apply_ok(&plan, &p, &mut nodes);
    let plan = run_at(&p, &[], &nodes, t(NOW + 1));
    assert!(
        cordons(&plan).is_empty(),
        "cordoned on the scan before the eviction"
    );
    let w = work(&plan, "a");
    assert!(
        w.is_none_or(|w| w.effects.is_empty()),
        "{:?}",
        w.map(|w| &w.effects)
    );
    assert!(
        plan.wake_at <= t(NOW + 1 + 10),
        "woken within a scan interval: {:?}",
        plan.wake_at
    );
    // A scan after the eviction still finds the problem: now the node-wide
    // step runs.
    if let Some(r) = nodes[0].1.as_mut().and_then(|r| r.status.as_mut()) {
        r.last_scan_time = Some(Time(t(NOW + 5)));
    }
    let plan = run_at(&p, &[], &nodes, t(NOW + 6));
    assert_eq!(cordons(&plan), ["a"]);
    let summary = &plan.summary.nodes[0];
    assert_eq!(
        summary.scope,
        Some((ProblemScope::Pod, Some("shop/leaky-0".to_owned())))
    );
}

#[test]
fn scope_any_lets_a_node_wide_step_act_on_a_pod_problem_at_once() {
    let mut cordon = step(ActionKind::Cordon, "0s");
    cordon.scope = Some(StepScope::Any);
    let p = policy("p", PolicyMode::Enforce, vec![cordon]).view();
    let plan = run(
        &p,
        &[],
        &[(node("a"), Some(scoped("a", Some(ProblemScope::Pod))))],
    );
    assert_eq!(cordons(&plan), ["a"]);
}

#[test]
fn node_wide_problems_and_older_agents_reach_node_wide_steps_as_before() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::EvictPod, "0s"),
            step(ActionKind::Cordon, "0s"),
        ],
    )
    .view();
    for scope in [Some(ProblemScope::Node), None] {
        let plan = run(&p, &[], &[(node("a"), Some(scoped("a", scope)))]);
        assert_eq!(cordons(&plan), ["a"], "{scope:?}");
    }
}

#[test]
fn a_pod_scoped_step_waits_while_the_problem_is_node_wide() {
    let mut evict = step(ActionKind::EvictPod, "0s");
    evict.scope = Some(StepScope::Pod);
    let p = policy("p", PolicyMode::Enforce, vec![evict]).view();
    let plan = run(
        &p,
        &[],
        &[(node("a"), Some(scoped("a", Some(ProblemScope::Node))))],
    );
    let w = work(&plan, "a").unwrap();
    assert!(w.effects.is_empty(), "{:?}", w.effects);
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::EvictPod, StepPhase::Held, Some("NodeWide"))]
    );
    let plan = run(
        &p,
        &[],
        &[(node("a"), Some(scoped("a", Some(ProblemScope::Pod))))],
    );
    assert!(matches!(
        work(&plan, "a").unwrap().effects.as_slice(),
        [Effect::Evict { .. }]
    ));
}

// ---- Pausing (docs/operator.md, "Pausing remediation") ----

fn pause_annotations(reason: &str) -> BTreeMap<String, String> {
    nodemedic_crds::pause::pause_annotations(reason, "alice", t(NOW - 3600))
}

fn paused_policy(mut p: P) -> P {
    p.policy.metadata.annotations = Some(pause_annotations("kernel rollout"));
    p
}

fn paused_node(mut n: Node) -> Node {
    n.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(pause_annotations("hardware check"));
    n
}

fn every_action_ladder() -> Vec<ActionStep> {
    vec![
        step(ActionKind::Event, "0s"),
        step(ActionKind::NodeCondition, "0s"),
        step(ActionKind::SignalParent, "0s"),
        step(ActionKind::EvictPod, "0s"),
        step(ActionKind::Taint, "0s"),
        step(ActionKind::Cordon, "0s"),
        step(ActionKind::Drain, "0s"),
        step(ActionKind::RequestReboot, "0s"),
    ]
}

#[test]
fn a_paused_policy_holds_every_step_with_paused() {
    let p = paused_policy(policy("p", PolicyMode::Enforce, every_action_ladder())).view();
    assert!(p.pause.is_some());
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    assert!(w.effects.is_empty(), "{:?}", w.effects);
    assert!(w.ahead.action_requests.is_empty());
    assert!(!w.write_ahead);
    let steps = steps_of(w, "p");
    assert_eq!(steps.len(), 8, "{steps:?}");
    assert!(
        steps
            .iter()
            .all(|(_, phase, reason)| *phase == StepPhase::Held && *reason == Some("Paused")),
        "{steps:?}"
    );
    assert!(w.ahead.remediation.history.is_empty(), "no budget used");
    assert_eq!(w.notices.len(), 8);
    assert!(w.notices.iter().all(|n| {
        n.reason == EventReason::RemediationHeld
            && n.note
                .contains("paused on policy p by alice (kernel rollout)")
    }));
    assert!(
        plan.records()
            .iter()
            .all(|r| r.outcome == ActionOutcome::Skipped)
    );

    // Held once: planning again from the written state changes nothing.
    apply_ok(&plan, &p, &mut nodes);
    let again = run_at(&p, &[], &nodes, t(NOW + 600));
    assert!(again.work.is_empty(), "{:?}", again.work);

    // DryRun plans nothing either while paused.
    let dry = paused_policy(policy("p", PolicyMode::DryRun, every_action_ladder())).view();
    let plan = run(&dry, &[], &[(node("a"), Some(firing("a", "p", NOW - 100)))]);
    let w = work(&plan, "a").unwrap();
    assert!(
        steps_of(w, "p")
            .iter()
            .all(|(_, phase, reason)| *phase == StepPhase::Held && *reason == Some("Paused"))
    );
    assert!(
        w.notices
            .iter()
            .all(|n| n.reason != EventReason::RemediationPlanned)
    );
}

#[test]
fn a_node_pause_holds_only_that_node() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![
            step(ActionKind::Event, "0s"),
            step(ActionKind::Cordon, "0s"),
        ],
    )
    .view();
    let nodes = vec![
        (paused_node(node("a")), Some(firing("a", "p", NOW - 100))),
        (node("b"), Some(firing("b", "p", NOW - 100))),
        (paused_node(node("c")), Some(report("c", vec![]))),
    ];
    let plan = run(&p, &[], &nodes);
    assert_eq!(cordons(&plan), ["b"]);
    let a = work(&plan, "a").unwrap();
    assert!(a.effects.is_empty(), "{:?}", a.effects);
    assert_eq!(
        steps_of(a, "p"),
        [
            (ActionKind::Event, StepPhase::Held, Some("Paused")),
            (ActionKind::Cordon, StepPhase::Held, Some("Paused")),
        ]
    );
    assert!(
        a.notices
            .iter()
            .all(|n| n.note.contains("paused on node a"))
    );
    let b = work(&plan, "b").unwrap();
    assert!(
        steps_of(b, "p")
            .iter()
            .all(|(_, phase, _)| *phase == StepPhase::Started)
    );
    // Visible in the summary: every paused selected node, healthy or not.
    assert_eq!(plan.summary.paused_nodes, ["a", "c"]);
    let paused: Vec<(&str, bool)> = plan
        .summary
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.paused))
        .collect();
    assert_eq!(paused, [("a", true), ("b", false), ("c", true)]);
}

#[test]
fn nothing_nodemedic_placed_is_undone_while_paused() {
    let p = policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    );
    let healthy = report("a", vec![cond("p", false, NOW - 3600)]);
    let ours = cordoned(node("a"), Some("p"));
    let uncordons = |plan: &Plan| {
        plan.work
            .iter()
            .flat_map(|w| w.effects.iter())
            .filter(|e| matches!(e, Effect::Uncordon { .. }))
            .count()
    };
    // Not paused: uncordoned (the control that makes the rest meaningful).
    let plan = run(&p.view(), &[], &[(ours.clone(), Some(healthy.clone()))]);
    assert_eq!(uncordons(&plan), 1);
    // The policy paused.
    let pp = paused_policy(policy(
        "p",
        PolicyMode::Enforce,
        vec![step(ActionKind::Cordon, "0s")],
    ))
    .view();
    let plan = run(&pp, &[], &[(ours.clone(), Some(healthy.clone()))]);
    assert_eq!(uncordons(&plan), 0, "{:?}", plan.work);
    // The node paused.
    let plan = run(
        &p.view(),
        &[],
        &[(paused_node(ours.clone()), Some(healthy.clone()))],
    );
    assert_eq!(uncordons(&plan), 0, "{:?}", plan.work);
    // Another owner of the cordon paused: it still holds the cordon.
    let q = paused_policy(policy("q", PolicyMode::Enforce, vec![])).view();
    let both = cordoned(node("a"), Some("p,q"));
    let healthy = report(
        "a",
        vec![cond("p", false, NOW - 3600), cond("q", false, NOW - 3600)],
    );
    let plan = run(
        &p.view(),
        &[OtherPolicy {
            view: Arc::new(q.clone()),
            storm_active: false,
        }],
        &[(both.clone(), Some(healthy.clone()))],
    );
    assert_eq!(uncordons(&plan), 0, "{:?}", plan.work);
    let mut q_resumed = q;
    q_resumed.pause = None;
    let plan = run(
        &p.view(),
        &[OtherPolicy {
            view: Arc::new(q_resumed),
            storm_active: false,
        }],
        &[(both, Some(healthy))],
    );
    assert_eq!(uncordons(&plan), 1);
}

#[test]
fn a_resumed_ladder_continues_from_the_next_step() {
    let ladder = vec![
        step(ActionKind::Event, "0s"),
        step(ActionKind::Cordon, "60s"),
        step(ActionKind::Taint, "120s"),
    ];
    let p = policy("p", PolicyMode::Enforce, ladder.clone()).view();
    let pp = paused_policy(policy("p", PolicyMode::Enforce, ladder)).view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 10)))];
    let effects = |plan: &Plan| -> Vec<&'static str> {
        plan.work
            .iter()
            .flat_map(|w| w.effects.iter())
            .map(|e| match e {
                Effect::Event { .. } => "Event",
                Effect::Cordon { .. } => "Cordon",
                Effect::Taint { .. } => "Taint",
                _ => "other",
            })
            .collect()
    };

    // The first step runs.
    let plan = run(&p, &[], &nodes);
    assert_eq!(effects(&plan), ["Event"]);
    apply_ok(&plan, &p, &mut nodes);

    // Paused: the Cordon comes due (at NOW + 50) and is held.
    let plan = run_at(&pp, &[], &nodes, t(NOW + 100));
    assert!(effects(&plan).is_empty());
    assert_eq!(
        steps_of(work(&plan, "a").unwrap(), "p"),
        [
            (ActionKind::Event, StepPhase::Done, None),
            (ActionKind::Cordon, StepPhase::Held, Some("Paused")),
        ]
    );
    apply_ok(&plan, &pp, &mut nodes);
    // Still paused when the Taint comes due too: nothing.
    let plan = run_at(&pp, &[], &nodes, t(NOW + 300));
    assert!(effects(&plan).is_empty(), "{:?}", plan.work);
    assert!(
        plan.work.iter().all(|w| w.effects.is_empty()),
        "{:?}",
        plan.work
    );
    apply_ok(&plan, &pp, &mut nodes);

    // Resumed: the overdue steps run in ladder order, the Event is not
    // repeated.
    let plan = run_at(&p, &[], &nodes, t(NOW + 300));
    assert_eq!(effects(&plan), ["Cordon", "Taint"]);
    apply_ok(&plan, &p, &mut nodes);
    let after = run_at(&p, &[], &nodes, t(NOW + 400));
    assert!(effects(&after).is_empty(), "{:?}", after.work);
    let state = &nodes[0].1.as_ref().unwrap().spec.remediation;
    let steps: Vec<(ActionKind, StepPhase)> = state
        .episode("p", Detector::Zombies)
        .unwrap()
        .steps
        .iter()
        .map(|s| (s.action, s.phase))
        .collect();
    assert_eq!(
        steps,
        [
            (ActionKind::Event, StepPhase::Done),
            (ActionKind::Cordon, StepPhase::Done),
            (ActionKind::Taint, StepPhase::Done),
        ]
    );
}

#[test]
fn a_drain_in_flight_starts_no_pass_while_paused_and_times_out() {
    let ladder = vec![step(ActionKind::Drain, "0s")];
    let p = policy("p", PolicyMode::Enforce, ladder.clone()).view();
    let pp = paused_policy(policy("p", PolicyMode::Enforce, ladder)).view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    let w = work(&plan, "a").unwrap();
    // The first pass is blocked by a PodDisruptionBudget: the step stays
    // Started.
    let outcomes = vec![EffectOutcome::Drained {
        progress: Default::default(),
        end: DrainPassEnd::Blocked,
        message: "1 refused".into(),
    }];
    let (spec, _, _) = settle(w, &outcomes, &p, &Settings::default(), t(NOW));
    nodes[0].1.as_mut().unwrap().spec = as_spec(&spec);
    let drains = |plan: &Plan| {
        plan.work
            .iter()
            .flat_map(|w| w.effects.iter())
            .filter(|e| matches!(e, Effect::Drain { .. }))
            .count()
    };
    // Not paused, the next pass follows its backoff.
    assert_eq!(drains(&run_at(&p, &[], &nodes, t(NOW + 10))), 1);
    // Paused: no pass, and a wake-up at the drain's timeout (120s here).
    let plan = run_at(&pp, &[], &nodes, t(NOW + 10));
    assert_eq!(drains(&plan), 0);
    assert!(plan.work.is_empty(), "{:?}", plan.work);
    assert_eq!(plan.wake_at, t(NOW + 120));
    // Past the timeout while paused: Failed, as a refused drain would.
    let plan = run_at(&pp, &[], &nodes, t(NOW + 120));
    assert_eq!(drains(&plan), 0);
    let w = work(&plan, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [(ActionKind::Drain, StepPhase::Failed, Some("Timeout"))]
    );
    assert!(
        w.notices
            .iter()
            .any(|n| n.reason == EventReason::RemediationFailed && n.note.contains("paused"))
    );
}

#[test]
fn a_request_in_flight_settles_while_paused() {
    let ladder = vec![
        step(ActionKind::SignalParent, "0s"),
        step(ActionKind::Cordon, "0s"),
    ];
    let p = policy("p", PolicyMode::Enforce, ladder.clone())
        .safety(|s| s.cooldown = KubeDuration::from_static("1m"))
        .view();
    let pp = paused_policy(
        policy("p", PolicyMode::Enforce, ladder)
            .safety(|s| s.cooldown = KubeDuration::from_static("1m")),
    )
    .view();
    let mut nodes = vec![(node("a"), Some(firing("a", "p", NOW - 100)))];
    let plan = run(&p, &[], &nodes);
    apply_ok(&plan, &p, &mut nodes);
    let id = nodes[0].1.as_ref().unwrap().spec.action_requests[0]
        .id
        .clone();
    nodes[0]
        .1
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .action_results
        .push(ActionResult {
            id,
            outcome: ActionResultOutcome::Signalled,
            reason: None,
            message: "SIGTERM delivered".into(),
            completed_at: Time(t(NOW)),
            follow_up: None,
        });
    // Paused after the cooldown: the signal's result is taken up, the
    // Cordon does not start.
    let plan = run_at(&pp, &[], &nodes, t(NOW + 120));
    let w = work(&plan, "a").unwrap();
    assert_eq!(
        steps_of(w, "p"),
        [
            (ActionKind::SignalParent, StepPhase::Done, None),
            (ActionKind::Cordon, StepPhase::Held, Some("Paused")),
        ]
    );
    assert!(cordons(&plan).is_empty());
}
