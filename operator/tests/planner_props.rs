//! Invariants of the pure planner, proven over random sequences: nodes that
//! fall sick and recover (or only start clearing), effects that succeed,
//! fail, are refused or time out, an agent that answers or does not, agents
//! that go silent, operator crashes between the write-ahead and the outcome,
//! ladder edits, mode switches, policies that turn invalid and valid again,
//! someone else's cordons, and reports deleted by hand (`kubectl delete
//! nhr`: the requests go, the ledger in the node's NodeRemediation stays).
//!
//! The world below plays the controller, the API and the agent with the
//! planner's own types; `plan()` and `settle()` are the production
//! functions. After every step the invariants listed in docs/operator.md
//! ("Invariants") are checked. `make test` runs a bounded number of cases;
//! a longer run is
//! `PROPTEST_CASES=5000 cargo test -p nodemedic-operator --test planner_props`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, Detector};
use nodemedic_crds::duration::KubeDuration;
use nodemedic_crds::pause::{PAUSE_ANNOTATIONS, PAUSED_AT_ANNOTATION, pause_annotations};
use nodemedic_crds::policy::{
    ActionKind, ActionStep, Actions, Detectors, NodeHealthPolicySpec, ParentSignal, Safety,
    TaintEffect, TaintTemplate, ZombieDetector,
};
use nodemedic_crds::remediation::{DrainProgress, StepPhase};
use nodemedic_crds::report::{
    ActionResult, ActionResultOutcome, CulpritPod, NodeAction, PolicyCondition, ProblemScope,
    ProcessRef, Workload, ZombieFinding,
};
use nodemedic_crds::{
    NodeHealthPolicy, NodeHealthReport, NodeHealthReportSpec, NodeRemediation, PolicyMode,
};
use nodemedic_operator::plan::facts::{self, Freshness, NodeFacts};
use nodemedic_operator::plan::policy::PolicyView;
use nodemedic_operator::plan::{
    self, DrainPassEnd, Effect, EffectOutcome, NodeInput, OtherPolicy, Plan, PlanInput,
    REQUEST_GRACE, Settings, slots,
};
use nodemedic_operator::simulate::world;
use proptest::prelude::*;

const NODES: usize = 4;
const POLICIES: usize = 2;
const HEARTBEAT_SECS: i64 = 300;

fn settings() -> Settings {
    Settings {
        eviction_timeout: Duration::from_secs(300),
        drain_timeout: Duration::from_secs(900),
        request_ttl: Duration::from_secs(600),
        resync: Duration::from_secs(300),
    }
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn step(action: ActionKind, after: &'static str) -> ActionStep {
    ActionStep {
        action,
        after: Some(KubeDuration::from_static(after)),
        signal: (action == ActionKind::SignalParent).then_some(ParentSignal::SIGKILL),
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

/// The ladders a policy can be edited to.
fn ladder(choice: u8) -> Vec<ActionStep> {
    use ActionKind::*;
    match choice % 6 {
        0 => vec![step(Event, "0s")],
        1 => vec![step(SignalParent, "0s"), step(EvictPod, "2m")],
        2 => vec![step(Cordon, "0s"), step(Drain, "5m")],
        3 => vec![
            step(Taint, "0s"),
            step(Cordon, "1m"),
            step(RequestReboot, "10m"),
        ],
        4 => vec![
            step(NodeCondition, "0s"),
            step(SignalParent, "1m"),
            step(Drain, "3m"),
            step(RequestReboot, "10m"),
        ],
        _ => vec![step(EvictPod, "0s"), step(Cordon, "0s")],
    }
}

#[derive(Debug, Clone)]
struct SimPolicy {
    name: String,
    mode: PolicyMode,
    ladder: u8,
    max_concurrent: u32,
    max_unhealthy: IntOrString,
    cooldown_secs: u32,
    /// Stored, but failing validation (as if edited past a rule, or stored
    /// before one): the controller does not plan it.
    invalid: bool,
    /// StormActive as last written to its status.
    storm: bool,
    /// Carries the pause annotations.
    paused: bool,
}

impl SimPolicy {
    fn object(&self) -> NodeHealthPolicy {
        let spec = NodeHealthPolicySpec {
            node_selector: Some(LabelSelector {
                match_labels: Some([("pool".to_owned(), "test".to_owned())].into()),
                match_expressions: None,
            }),
            mode: self.mode,
            detectors: Detectors {
                zombies: Some(ZombieDetector::default()),
                ..Default::default()
            },
            actions: Actions {
                zombies: ladder(self.ladder),
                ..Default::default()
            },
            safety: Safety {
                max_unhealthy: self.max_unhealthy.clone(),
                max_concurrent_actions: self.max_concurrent,
                cooldown: KubeDuration(format!("{}s", self.cooldown_secs)),
                max_signals_per_hour: 100,
                ..Default::default()
            },
        };
        let mut p = NodeHealthPolicy::new(&self.name, spec);
        p.metadata.generation = Some(1);
        if self.paused {
            p.metadata.annotations = Some(pause_annotations("props", "sre", ts(0)));
        }
        p
    }

    fn view(&self) -> PolicyView {
        PolicyView::from_policy(&self.object()).unwrap()
    }
}

#[derive(Debug, Clone)]
struct SimNode {
    node: Node,
    report: NodeHealthReport,
    /// The operator's ledger for the node.
    ledger: NodeRemediation,
    /// The agent stopped writing: lastScanTime no longer advances.
    agent_down: bool,
    /// Cordoned by someone else.
    foreign_cordon: bool,
}

fn new_node(i: usize) -> SimNode {
    let name = format!("n{i}");
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("pool".to_owned(), "test".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut report = NodeHealthReport::new(&name, NodeHealthReportSpec::default());
    let mut status = nodemedic_crds::NodeHealthReportStatus {
        last_scan_time: Some(Time(ts(0))),
        heartbeat_interval: Some(format!("{HEARTBEAT_SECS}s")),
        ..Default::default()
    };
    status.findings.zombies = vec![ZombieFinding {
        parent: ProcessRef {
            host_pid: 4242,
            ns_pid: Some(1),
            comm: "php-fpm".into(),
            start_time: 987_654,
            workload: Some(Workload {
                pod_uid: Some(format!("pod-uid-{i}")),
                pod_namespace: Some("web".into()),
                pod_name: Some(format!("php-{i}")),
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
    report.status = Some(status);
    report.metadata.resource_version = Some("1".into());
    SimNode {
        node,
        report,
        ledger: NodeRemediation::new(&name, Default::default()),
        agent_down: false,
        foreign_cordon: false,
    }
}

impl SimNode {
    /// Writes a node's state the way the operator does: the ledger to the
    /// NodeRemediation, the requests to the report.
    fn store(&mut self, state: &plan::NodeState) {
        self.ledger.spec = state.remediation.clone();
        self.report.spec.action_requests = state.action_requests.clone();
    }
}

#[derive(Debug, Clone)]
enum Event {
    Advance(u16),
    Fire {
        node: usize,
        policy: usize,
    },
    Clearing {
        node: usize,
        policy: usize,
    },
    Clear {
        node: usize,
        policy: usize,
    },
    AgentAnswers {
        node: usize,
        how: u8,
    },
    AgentDown {
        node: usize,
        down: bool,
    },
    ForeignCordon {
        node: usize,
    },
    Mode {
        policy: usize,
        mode: u8,
    },
    EditLadder {
        policy: usize,
        ladder: u8,
    },
    Invalid {
        policy: usize,
        invalid: bool,
    },
    /// `kubectl delete nhr`: the agent recreates the report at once, with
    /// its conditions and the results it still holds, and an empty spec.
    DeleteReport {
        node: usize,
    },
    /// An SRE pauses or resumes a policy.
    PausePolicy {
        policy: usize,
        paused: bool,
    },
    /// An SRE pauses or resumes a node (sometimes without paused-at).
    PauseNode {
        node: usize,
        paused: bool,
        malformed: bool,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let node = 0..NODES;
    let policy = 0..POLICIES;
    prop_oneof![
        4 => (1u16..900).prop_map(Event::Advance),
        3 => (node.clone(), policy.clone()).prop_map(|(node, policy)| Event::Fire { node, policy }),
        1 => (node.clone(), policy.clone()).prop_map(|(node, policy)| Event::Clearing { node, policy }),
        2 => (node.clone(), policy.clone()).prop_map(|(node, policy)| Event::Clear { node, policy }),
        3 => (node.clone(), any::<u8>()).prop_map(|(node, how)| Event::AgentAnswers { node, how }),
        1 => (node.clone(), any::<bool>()).prop_map(|(node, down)| Event::AgentDown { node, down }),
        1 => node.clone().prop_map(|node| Event::ForeignCordon { node }),
        1 => (policy.clone(), any::<u8>()).prop_map(|(policy, mode)| Event::Mode { policy, mode }),
        1 => (policy.clone(), any::<u8>()).prop_map(|(policy, ladder)| Event::EditLadder { policy, ladder }),
        1 => (policy.clone(), any::<bool>()).prop_map(|(policy, invalid)| Event::Invalid { policy, invalid }),
        1 => node.clone().prop_map(|node| Event::DeleteReport { node }),
        1 => (policy, any::<bool>()).prop_map(|(policy, paused)| Event::PausePolicy { policy, paused }),
        1 => (node, any::<bool>(), any::<bool>())
            .prop_map(|(node, paused, malformed)| Event::PauseNode { node, paused, malformed }),
    ]
}

fn sim_policy(i: usize) -> impl Strategy<Value = SimPolicy> {
    (
        0u8..3,
        any::<u8>(),
        1u32..3,
        prop_oneof![
            Just(IntOrString::String("50%".into())),
            Just(IntOrString::String("10%".into())),
            Just(IntOrString::Int(1)),
            Just(IntOrString::Int(4)),
        ],
        prop_oneof![Just(0u32), Just(60), Just(600)],
    )
        .prop_map(
            move |(mode, ladder, max_concurrent, max_unhealthy, cooldown_secs)| SimPolicy {
                name: format!("p{i}"),
                mode: mode_of(mode),
                ladder,
                max_concurrent,
                max_unhealthy,
                cooldown_secs,
                invalid: false,
                storm: false,
                paused: false,
            },
        )
}

fn mode_of(m: u8) -> PolicyMode {
    match m % 3 {
        0 => PolicyMode::Observe,
        1 => PolicyMode::DryRun,
        _ => PolicyMode::Enforce,
    }
}

struct World {
    now: i64,
    nodes: Vec<SimNode>,
    policies: Vec<SimPolicy>,
    /// Every request id ever written, with what it asked for.
    requests: BTreeMap<String, (NodeAction, String, String)>,
    /// Ids the agent carried out.
    executed: BTreeSet<String>,
    /// Drives effect outcomes and crashes.
    dice: u64,
    /// The operator crashed in the current round.
    crashed: bool,
}

impl World {
    fn roll(&mut self, sides: u64) -> u64 {
        // xorshift: deterministic in the case's seed.
        self.dice ^= self.dice << 13;
        self.dice ^= self.dice >> 7;
        self.dice ^= self.dice << 17;
        self.dice % sides
    }

    fn now(&self) -> Timestamp {
        ts(self.now)
    }

    fn condition(
        &mut self,
        node: usize,
        policy: usize,
        status: ConditionStatus,
        reason: ConditionReason,
    ) {
        let now = self.now();
        let name = self.policies[policy].name.clone();
        // Where the problem lives: one pod, node-wide, or an agent older
        // than scopes; it may change while the condition holds.
        let scope = match (status, self.roll(3)) {
            (ConditionStatus::True, 0) => Some(ProblemScope::Pod),
            (ConditionStatus::True, 1) => Some(ProblemScope::Node),
            _ => None,
        };
        let st = self.nodes[node].report.status.as_mut().unwrap();
        let current = st
            .conditions
            .iter()
            .position(|c| c.policy == name && c.type_ == Detector::Zombies.condition_type());
        let transition = match current {
            Some(i) => {
                let c = &st.conditions[i];
                if c.status == status {
                    c.last_transition_time.clone()
                } else {
                    Time(now)
                }
            }
            None => Time(now),
        };
        let cond = PolicyCondition {
            policy: name,
            type_: Detector::Zombies.condition_type(),
            status,
            reason,
            message: "212 zombies under php-fpm".into(),
            last_transition_time: transition,
            exceeded_since: None,
            scope,
            culprit: (scope == Some(ProblemScope::Pod)).then(|| CulpritPod {
                uid: "culprit-uid".into(),
                namespace: Some("web".into()),
                name: Some("php-0".into()),
            }),
        };
        match current {
            Some(i) => st.conditions[i] = cond,
            None => st.conditions.push(cond),
        }
        st.healthy = st
            .conditions
            .iter()
            .all(|c| c.status != ConditionStatus::True);
    }

    fn apply(&mut self, e: &Event) {
        match *e {
            Event::Advance(secs) => {
                self.now += i64::from(secs);
                let now = self.now();
                for n in &mut self.nodes {
                    if !n.agent_down {
                        n.report.status.as_mut().unwrap().last_scan_time = Some(Time(now));
                    }
                }
            }
            Event::Fire { node, policy } => self.condition(
                node,
                policy,
                ConditionStatus::True,
                ConditionReason::ThresholdExceeded,
            ),
            Event::Clearing { node, policy } => {
                let firing = facts::condition(
                    &self.nodes[node].report,
                    &self.policies[policy].name,
                    Detector::Zombies,
                )
                .is_some_and(facts::is_true);
                if firing {
                    self.condition(
                        node,
                        policy,
                        ConditionStatus::True,
                        ConditionReason::Clearing,
                    )
                }
            }
            Event::Clear { node, policy } => self.condition(
                node,
                policy,
                ConditionStatus::False,
                ConditionReason::BelowThreshold,
            ),
            Event::AgentAnswers { node, how } => self.agent_answers(node, how),
            Event::AgentDown { node, down } => self.nodes[node].agent_down = down,
            Event::ForeignCordon { node } => {
                let n = &mut self.nodes[node];
                let spec = n.node.spec.get_or_insert_with(NodeSpec::default);
                if spec.unschedulable != Some(true) {
                    spec.unschedulable = Some(true);
                    n.foreign_cordon = true;
                }
            }
            Event::Mode { policy, mode } => self.policies[policy].mode = mode_of(mode),
            Event::EditLadder { policy, ladder } => self.policies[policy].ladder = ladder,
            Event::Invalid { policy, invalid } => self.policies[policy].invalid = invalid,
            Event::PausePolicy { policy, paused } => self.policies[policy].paused = paused,
            Event::PauseNode {
                node,
                paused,
                malformed,
            } => {
                let ann = self.nodes[node]
                    .node
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new);
                for k in PAUSE_ANNOTATIONS {
                    ann.remove(k);
                }
                if paused {
                    let mut a = pause_annotations("props", "sre", ts(self.now));
                    if malformed {
                        a.remove(PAUSED_AT_ANNOTATION);
                    }
                    ann.extend(a);
                }
            }
            Event::DeleteReport { node } => {
                let r = &mut self.nodes[node].report;
                r.spec = NodeHealthReportSpec::default();
                r.metadata.uid = Some(format!("recreated-{}", self.now));
            }
        }
    }

    /// The agent answers every request it has not answered yet.
    fn agent_answers(&mut self, node: usize, how: u8) {
        let now = self.now();
        let n = &mut self.nodes[node];
        if n.agent_down {
            return;
        }
        let st = n.report.status.as_mut().unwrap();
        for r in &n.report.spec.action_requests {
            if st.action_results.iter().any(|x| x.id == r.id) {
                continue;
            }
            let outcome = match (how % 4, r.action) {
                (0 | 1, NodeAction::SignalParent) => ActionResultOutcome::Signalled,
                (0 | 1, NodeAction::RequestReboot) => ActionResultOutcome::Completed,
                (2, _) => ActionResultOutcome::Refused,
                _ => ActionResultOutcome::Failed,
            };
            assert!(
                self.executed.insert(r.id.clone()),
                "request {} executed twice",
                r.id
            );
            st.action_results.push(ActionResult {
                id: r.id.clone(),
                outcome,
                reason: None,
                message: String::new(),
                completed_at: Time(now),
                follow_up: None,
            });
        }
        let len = st.action_results.len();
        if len > 32 {
            st.action_results.drain(..len - 32);
        }
    }

    fn stale(&self, node: usize) -> bool {
        facts::freshness(self.nodes[node].report.status.as_ref(), None, self.now())
            == Freshness::Stale
    }

    /// One round of reconciles: every valid policy once, in order. An
    /// operator that crashed mid-round restarts at once and reconciles again
    /// from the durable state, as the real one does (a crash delays an
    /// outcome by a round; the timeout invariant is checked after the
    /// restart).
    fn reconcile(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..16 {
            self.crashed = false;
            for pi in 0..POLICIES {
                if self.policies[pi].invalid {
                    continue;
                }
                self.reconcile_one(pi)?;
            }
            if !self.crashed {
                break;
            }
        }
        self.check_world()
    }

    fn reconcile_one(&mut self, pi: usize) -> Result<(), TestCaseError> {
        let sp = self.policies[pi].clone();
        let view = sp.view();
        let others: Vec<OtherPolicy> = self
            .policies
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != pi && !p.invalid)
            .map(|(_, p)| OtherPolicy {
                view: Arc::new(p.view()),
                storm_active: p.storm,
            })
            .collect();
        let invalid: Vec<String> = self
            .policies
            .iter()
            .filter(|p| p.invalid)
            .map(|p| p.name.clone())
            .collect();
        let invalid_before: Vec<_> = self.nodes.iter().map(|n| owned_by(n, &invalid)).collect();
        let settings = settings();
        let now = self.now();
        let plan = {
            let inputs: Vec<NodeInput<'_>> = self
                .nodes
                .iter()
                .map(|n| NodeInput {
                    name: n.node.metadata.name.as_deref().unwrap(),
                    selected: true,
                    node: Some(&n.node),
                    report: Some(&n.report),
                    ledger: Some(&n.ledger),
                    observed_scan: None,
                    observed_clear: &[],
                })
                .collect();
            plan::plan(&PlanInput {
                policy: &view,
                others: &others,
                invalid: &invalid,
                deleting: false,
                nodes: &inputs,
                settings: &settings,
                now,
            })
        };
        self.check_plan(&sp, &view, &others, &plan)?;
        self.policies[pi].storm = plan.summary.storm;

        for work in &plan.work {
            let ni = self
                .nodes
                .iter()
                .position(|n| n.node.metadata.name.as_deref() == Some(work.node.as_str()))
                .unwrap();
            for r in &work.ahead.action_requests {
                let what = (
                    r.action,
                    r.policy.clone(),
                    format!("{:?}", r.target.as_ref().map(|t| (t.pid, t.start_time))),
                );
                if let Some(seen) = self.requests.get(&r.id) {
                    prop_assert_eq!(
                        &seen.0,
                        &what.0,
                        "request id {} reused for another action",
                        r.id
                    );
                    prop_assert_eq!(&seen.1, &what.1, "request id {} reused", r.id);
                } else {
                    self.requests.insert(r.id.clone(), what);
                }
            }
            // The operator may crash after the write-ahead, before acting.
            if work.write_ahead && self.roll(8) == 0 {
                self.nodes[ni].store(&work.ahead);
                self.crashed = true;
                continue;
            }
            let outcomes: Vec<EffectOutcome> =
                work.effects.iter().map(|e| self.outcome(e)).collect();
            for (e, o) in work.effects.iter().zip(&outcomes) {
                self.carry_out(ni, e, o);
            }
            let (state, _, _) = plan::settle(work, &outcomes, &view, &settings, now);
            self.nodes[ni].store(&state);
        }

        // A policy that is invalid loses nothing through the others.
        for (ni, before) in invalid_before.into_iter().enumerate() {
            let after = owned_by(&self.nodes[ni], &invalid);
            prop_assert_eq!(
                &before,
                &after,
                "policy {} reconciled away what an invalid policy holds on {}",
                sp.name,
                ni
            );
        }
        Ok(())
    }

    fn outcome(&mut self, e: &Effect) -> EffectOutcome {
        let roll = self.roll(10);
        let done = || EffectOutcome::Done("ok".into());
        match e {
            Effect::Cordon { .. } | Effect::Taint { .. } => match roll {
                0 => EffectOutcome::Retry("node kept changing".into()),
                1 => EffectOutcome::Failed {
                    reason: "KubeApi".into(),
                    message: "boom".into(),
                },
                _ => done(),
            },
            Effect::Evict { .. } => match roll {
                0..=2 => EffectOutcome::Retry("429: PDB".into()),
                3 => EffectOutcome::Skipped {
                    reason: "Protected".into(),
                    message: "protected".into(),
                },
                4 => EffectOutcome::Failed {
                    reason: "Forbidden".into(),
                    message: "403".into(),
                },
                _ => done(),
            },
            Effect::Drain { .. } => match roll {
                0..=2 => EffectOutcome::Retry("503".into()),
                3..=4 => EffectOutcome::Drained {
                    progress: DrainProgress {
                        evicted: 1,
                        remaining: 1,
                        skipped: 0,
                    },
                    end: DrainPassEnd::Blocked,
                    message: "1 refused".into(),
                },
                5 => EffectOutcome::Drained {
                    progress: DrainProgress {
                        evicted: 2,
                        remaining: 3,
                        skipped: 0,
                    },
                    end: DrainPassEnd::OutOfTime,
                    message: "3 not tried yet".into(),
                },
                6 => EffectOutcome::Failed {
                    reason: "Forbidden".into(),
                    message: "403".into(),
                },
                // A pass still running in the background.
                7..=8 => EffectOutcome::Pending,
                _ => EffectOutcome::Drained {
                    progress: DrainProgress::default(),
                    end: DrainPassEnd::Complete,
                    message: "drained".into(),
                },
            },
            _ => done(),
        }
    }

    /// What a successful effect does to the Node (the same model as the
    /// projection of `kubectl nodemedic simulate`).
    fn carry_out(&mut self, ni: usize, e: &Effect, o: &EffectOutcome) {
        world::apply_to_node(&mut self.nodes[ni].node, e, o);
    }

    /// Invariants of one plan, against the state it was made from.
    fn check_plan(
        &self,
        sp: &SimPolicy,
        view: &PolicyView,
        others: &[OtherPolicy],
        plan: &Plan,
    ) -> Result<(), TestCaseError> {
        let now = self.now();
        for w in &plan.work {
            let n = self
                .nodes
                .iter()
                .find(|n| n.node.metadata.name.as_deref() == Some(w.node.as_str()))
                .unwrap();
            let started_now: Vec<ActionKind> = w
                .ahead
                .remediation
                .episodes
                .iter()
                .filter(|e| e.policy == sp.name)
                .flat_map(|e| e.steps.iter())
                // Started now and carried out (a step that joins a cordon or
                // taint already in place has no startedAt: it acts on nothing).
                .filter(|s| s.phase == StepPhase::Started && s.started_at == Some(Time(now)))
                .filter(|s| {
                    // Newly started, not a step already in flight.
                    !w.before
                        .remediation
                        .episode(&sp.name, Detector::Zombies)
                        .and_then(|e| e.step(s.index, s.action))
                        .is_some_and(|b| b.phase == StepPhase::Started)
                })
                .map(|s| s.action)
                .collect();

            // Nothing is executed in Observe or DryRun.
            if sp.mode != PolicyMode::Enforce {
                prop_assert!(
                    w.effects.is_empty(),
                    "{:?} policy {} has effects on {}: {:?}",
                    sp.mode,
                    sp.name,
                    w.node,
                    w.effects
                );
                let before: BTreeSet<&str> = w
                    .before
                    .action_requests
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect();
                for r in &w.ahead.action_requests {
                    prop_assert!(
                        before.contains(r.id.as_str()),
                        "{:?} policy wrote request {}",
                        sp.mode,
                        r.id
                    );
                }
                prop_assert!(
                    started_now.is_empty(),
                    "{:?} started {:?}",
                    sp.mode,
                    started_now
                );
            }

            // A problem contained in one pod reaches no node-wide step (the
            // props' ladders keep the default scope) before a pod-level step
            // of the episode was carried out and a later scan still found it.
            let pod_contained = facts::condition(&n.report, &sp.name, Detector::Zombies)
                .is_some_and(|c| c.scope == Some(ProblemScope::Pod));
            if pod_contained && started_now.iter().any(|a| a.affects_whole_node()) {
                // As the plan saw the episode (a ladder edit may overwrite
                // the pod-level record by index in the same plan).
                let scanned = facts::scan_time(&n.report);
                let tried = [&w.before, &w.ahead].iter().any(|state| {
                    state
                        .remediation
                        .episode(&sp.name, Detector::Zombies)
                        .is_some_and(|e| {
                            e.steps.iter().any(|s| {
                                matches!(s.action, ActionKind::SignalParent | ActionKind::EvictPod)
                                    && matches!(s.phase, StepPhase::Done | StepPhase::Failed)
                                    && scanned.is_some_and(|at| at > s.since.0)
                            })
                        })
                });
                prop_assert!(
                    tried,
                    "node-wide {:?} started on {} for a pod-contained problem before a pod-level step and a scan after it",
                    started_now,
                    w.node
                );
            }

            // No node-level action starts while a policy selecting the node
            // is in storm.
            let storm = plan.summary.storm || others.iter().any(|o| o.storm_active);
            if storm {
                let node_level: Vec<_> = started_now.iter().filter(|a| a.is_node_level()).collect();
                prop_assert!(
                    node_level.is_empty(),
                    "node-level {:?} started on {} during a storm",
                    node_level,
                    w.node
                );
            }

            // Nothing starts, and nothing nodemedic placed is undone, while
            // the policy or the node is paused (invariant 10); a step in
            // flight only settles.
            let f = NodeFacts::from_node(&n.node);
            if sp.paused || f.pause.is_some() {
                let newly_started: Vec<(ActionKind, u32)> = w
                    .ahead
                    .remediation
                    .episodes
                    .iter()
                    .filter(|e| e.policy == sp.name)
                    .flat_map(|e| {
                        e.steps
                            .iter()
                            // A step that moved on from not started (none,
                            // or Held): started, planned or ended at once.
                            .filter(|s| s.phase != StepPhase::Held)
                            .filter(|s| {
                                let before = w
                                    .before
                                    .remediation
                                    .episode(&e.policy, e.detector)
                                    .and_then(|b| b.step(s.index, s.action));
                                !before.is_some_and(|b| {
                                    b.phase == StepPhase::Started || b.phase == s.phase
                                })
                            })
                            .map(|s| (s.action, s.index))
                    })
                    .collect();
                prop_assert!(
                    newly_started.is_empty(),
                    "steps {:?} of paused {} started on {} (policy paused: {}, node paused: {})",
                    newly_started,
                    sp.name,
                    w.node,
                    sp.paused,
                    f.pause.is_some()
                );
                let forbidden: Vec<&Effect> = w
                    .effects
                    .iter()
                    .filter(|e| {
                        matches!(
                            e,
                            Effect::Uncordon { .. }
                                | Effect::Untaint { .. }
                                | Effect::Evict { .. }
                                | Effect::Drain { .. }
                        )
                    })
                    .collect();
                prop_assert!(
                    forbidden.is_empty(),
                    "paused {} on {} acts: {:?}",
                    sp.name,
                    w.node,
                    forbidden
                );
            }
            let paused_owner = |owners: Vec<&String>| {
                owners
                    .iter()
                    .any(|o| self.policies.iter().any(|p| &p.name == *o && p.paused))
            };
            for e in &w.effects {
                match e {
                    Effect::Uncordon { .. } => prop_assert!(
                        !paused_owner(f.cordoned_by.iter().flatten().collect()),
                        "uncordon of {} while a policy that holds the cordon is paused",
                        w.node
                    ),
                    Effect::Untaint { key, effect, .. } => prop_assert!(
                        !paused_owner(
                            f.owned_taints
                                .iter()
                                .filter(|o| &o.key == key && o.effect == *effect)
                                .flat_map(|o| o.policies.iter())
                                .collect()
                        ),
                        "untaint of {} while a policy that holds the taint is paused",
                        w.node
                    ),
                    _ => {}
                }
            }

            // A cordon or taint nodemedic did not place is never removed.
            for e in &w.effects {
                match e {
                    Effect::Uncordon { .. } => prop_assert!(
                        f.cordoned_by.is_some(),
                        "uncordon of a cordon nodemedic did not place on {}",
                        w.node
                    ),
                    Effect::Untaint { key, effect, .. } => prop_assert!(
                        f.owned_taints
                            .iter()
                            .any(|o| &o.key == key && o.effect == *effect),
                        "untaint of a taint nodemedic did not place on {}",
                        w.node
                    ),
                    _ => {}
                }
            }
        }
        let _ = view;
        Ok(())
    }

    /// Invariants of the durable state after a round.
    fn check_world(&self) -> Result<(), TestCaseError> {
        let now = self.now();
        let s = settings();
        let longest = s
            .eviction_timeout
            .max(s.drain_timeout)
            .max(s.request_ttl + REQUEST_GRACE);
        for sp in self.policies.iter().filter(|p| !p.invalid) {
            let view = sp.view();
            // Never more nodes in progress than maxConcurrentActions.
            let in_progress = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| {
                    n.ledger.spec.episodes.iter().any(|e| {
                        let open = self.stale(*i)
                            || facts::condition(&n.report, &e.policy, e.detector).is_some_and(
                                |c| facts::is_true(c) && c.last_transition_time == e.since,
                            );
                        e.policy == sp.name
                            && open
                            && slots::occupies_slot(e, view.ladder(e.detector))
                    })
                })
                .count();
            prop_assert!(
                in_progress <= sp.max_concurrent as usize,
                "{} nodes in progress under {} (maxConcurrentActions {})",
                in_progress,
                sp.name,
                sp.max_concurrent
            );
        }
        let cooldown = self
            .policies
            .iter()
            .filter(|p| !p.invalid)
            .map(|p| i64::from(p.cooldown_secs))
            .max()
            .unwrap_or(0);
        let min_cooldown = self
            .policies
            .iter()
            .map(|p| i64::from(p.cooldown_secs))
            .min()
            .unwrap_or(0);
        for (i, n) in self.nodes.iter().enumerate() {
            // No two disruptive actions on a node within the cooldown.
            let mut starts: Vec<i64> = n
                .ledger
                .spec
                .history
                .iter()
                .filter(|h| !h.planned && h.action.is_disruptive())
                .map(|h| h.at.0.as_second())
                .collect();
            starts.sort();
            for pair in starts.windows(2) {
                prop_assert!(
                    pair[1] - pair[0] >= min_cooldown.min(cooldown),
                    "two disruptive actions on {} {}s apart (cooldown {}s)",
                    i,
                    pair[1] - pair[0],
                    min_cooldown.min(cooldown)
                );
            }
            // A cordon nodemedic did not place stays.
            if n.foreign_cordon {
                prop_assert_eq!(
                    n.node.spec.as_ref().and_then(|s| s.unschedulable),
                    Some(true),
                    "someone else's cordon on {} was removed",
                    i
                );
            }
            // Every started step reaches a final phase within its timeout
            // while its policy plans it from a fresh report.
            if self.stale(i) {
                continue;
            }
            for e in &n.ledger.spec.episodes {
                let Some(sp) = self.policies.iter().find(|p| p.name == e.policy) else {
                    continue;
                };
                if sp.invalid || sp.mode != PolicyMode::Enforce {
                    continue;
                }
                for st in e.steps.iter().filter(|s| s.phase == StepPhase::Started) {
                    let began = st.started_at.as_ref().unwrap_or(&st.since).0;
                    let age = plan::elapsed(began, now);
                    prop_assert!(
                        age <= longest,
                        "step {:?} of {} on {} started {:?} ago is still Started",
                        st.action,
                        e.policy,
                        i,
                        age
                    );
                }
            }
        }
        Ok(())
    }
}

/// What the invalid policies hold on a node: their episodes, requests,
/// cordon ownership and owned taints.
fn owned_by(n: &SimNode, invalid: &[String]) -> String {
    let mine = |p: &str| invalid.iter().any(|i| i == p);
    let episodes: Vec<_> = n
        .ledger
        .spec
        .episodes
        .iter()
        .filter(|e| mine(&e.policy))
        .collect();
    let requests: Vec<_> = n
        .report
        .spec
        .action_requests
        .iter()
        .filter(|r| mine(&r.policy))
        .map(|r| &r.id)
        .collect();
    let f = NodeFacts::from_node(&n.node);
    let cordon: Vec<_> = f.cordoned_by.iter().flatten().filter(|p| mine(p)).collect();
    let taints: Vec<_> = f
        .owned_taints
        .iter()
        .filter(|t| t.policies.iter().any(|p| mine(p)))
        .map(|t| &t.key)
        .collect();
    format!("{episodes:?} {requests:?} {cordon:?} {taints:?}")
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn planner_invariants_hold_over_random_sequences(
        policies in (sim_policy(0), sim_policy(1)),
        events in proptest::collection::vec(event(), 1..120),
        dice in 1u64..u64::MAX,
    ) {
        let mut world = World {
            now: 0,
            nodes: (0..NODES).map(new_node).collect(),
            policies: vec![policies.0, policies.1],
            requests: BTreeMap::new(),
            executed: BTreeSet::new(),
            dice,
            crashed: false,
        };
        for e in &events {
            world.apply(e);
            world.reconcile()?;
        }
    }
}
