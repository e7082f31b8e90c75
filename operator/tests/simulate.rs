//! The projection behind `kubectl nodemedic simulate`, pure: a copy of a
//! cluster (nodes, reports, ledgers, policies) and a policy not applied yet
//! (or edited) → what the planner would do over the next hours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::{ActionKind, ActionOutcome};
use nodemedic_crds::report::Findings;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeHealthReportStatus};
use nodemedic_operator::plan::Settings;
use nodemedic_operator::simulate::{self, Options, Projection, What, World};
use serde_json::json;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"pool": "general"}},
    }))
    .unwrap()
}

/// A fresh report; `zombies` parents with 100 zombies each, in pods
/// `web/php-<i>` (or host processes when `pod` is false).
fn report(name: &str, parents: usize, pod: bool) -> NodeHealthReport {
    let findings: Vec<_> = (0..parents)
        .map(|i| {
            let workload = pod.then(|| {
                json!({"podUid": format!("pod-{name}-{i}"), "podNamespace": "web",
                       "podName": format!("php-{i}"), "container": "php"})
            });
            json!({
                "parent": {"hostPid": 4000 + i, "comm": "php-fpm", "startTime": 98765,
                           "workload": workload},
                "zombies": 100, "zombiesPastMinAge": 100, "oldestAgeSeconds": 900,
                "exceeded": false
            })
        })
        .collect();
    let mut r = NodeHealthReport::new(name, Default::default());
    r.status = Some(NodeHealthReportStatus {
        heartbeat_interval: Some("5m".into()),
        healthy: parents == 0,
        findings: Findings {
            zombies: serde_json::from_value(json!(findings)).unwrap(),
            ..Default::default()
        },
        ..Default::default()
    });
    r
}

fn policy(yaml: &str) -> NodeHealthPolicy {
    serde_yaml::from_str(yaml).unwrap()
}

const LADDER: &str = r#"
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: reap}
spec:
  mode: DryRun
  nodeSelector: {matchLabels: {pool: general}}
  detectors:
    zombies: {threshold: 500, perParentThreshold: 50, minAge: 5m, for: 2m}
  actions:
    zombies:
      - action: Event
      - action: SignalParent
        after: 5m
      - action: EvictPod
        after: 10m
  safety: {maxUnhealthy: "50%", cooldown: 1m}
"#;

fn project(candidate: &NodeHealthPolicy, world: &World) -> Projection {
    simulate::project(
        candidate,
        world,
        &Options {
            now: now(),
            horizon: Duration::from_secs(6 * 3600),
            settings: Settings::default(),
            answer_within: Duration::from_secs(30),
        },
    )
    .unwrap()
}

fn steps(p: &Projection) -> Vec<(i64, String, ActionKind, ActionOutcome)> {
    p.timeline
        .iter()
        .filter_map(|e| match e.what {
            What::Step(a, o) => Some((e.at.as_second() - now().as_second(), e.node.clone(), a, o)),
            _ => None,
        })
        .collect()
}

fn world(reports: Vec<NodeHealthReport>) -> World {
    let mut reports = reports;
    for r in &mut reports {
        r.status.as_mut().unwrap().last_scan_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    }
    World {
        policies: Vec::new(),
        nodes: reports
            .iter()
            .map(|r| node(r.metadata.name.as_deref().unwrap()))
            .collect(),
        reports,
        ledgers: Vec::new(),
    }
}

#[test]
fn a_new_policy_is_projected_step_by_step_from_its_for() {
    let w = world(vec![report("a", 1, true), report("b", 0, true)]);
    let p = project(&policy(LADDER), &w);
    assert!(!p.applied);
    let fires: Vec<_> = p
        .timeline
        .iter()
        .filter(|e| e.what == What::Fires)
        .map(|e| (e.node.clone(), e.detector, e.at))
        .collect();
    assert_eq!(
        fires,
        vec![("a".to_owned(), Some(Detector::Zombies), at(120))]
    );
    use ActionKind::*;
    use ActionOutcome::Planned;
    assert_eq!(
        steps(&p),
        vec![
            (120, "a".into(), Event, Planned),
            (420, "a".into(), SignalParent, Planned),
            (720, "a".into(), EvictPod, Planned),
        ],
        "{:#?}",
        p.timeline
    );
    let a = p.nodes.iter().find(|n| n.node == "a").unwrap();
    assert_eq!(a.predictions[0].basis.as_str(), "estimated");
}

#[test]
fn below_the_thresholds_nothing_is_projected() {
    let w = world(vec![report("a", 1, true)]);
    let strict = LADDER.replace("perParentThreshold: 50", "perParentThreshold: 150");
    let p = project(&policy(&strict), &w);
    assert!(p.timeline.is_empty(), "{:#?}", p.timeline);
    assert!(p.nodes[0].predictions[0].fires_at.is_none());
}

#[test]
fn a_storm_holds_node_level_steps_on_every_node() {
    let yaml = r#"
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: fence}
spec:
  mode: Enforce
  nodeSelector: {matchLabels: {pool: general}}
  detectors:
    zombies: {threshold: 50, perParentThreshold: 50, minAge: 1m, for: 1m}
  actions:
    zombies:
      - action: Cordon
        after: 1m
  safety: {maxUnhealthy: 1}
"#;
    // Host processes: node-wide problems on three nodes, one allowed.
    let w = world(vec![
        report("a", 1, false),
        report("b", 1, false),
        report("c", 1, false),
    ]);
    let p = project(&policy(yaml), &w);
    assert!(steps(&p).is_empty(), "{:#?}", p.timeline);
    let held: Vec<_> = p
        .timeline
        .iter()
        .filter_map(|e| match &e.what {
            What::Held(ActionKind::Cordon, code) => Some((e.node.clone(), code.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 3, "{:#?}", p.timeline);
    assert!(held.iter().all(|(_, c)| c == "StormActive"), "{held:?}");
    assert_eq!(p.storm_limit, 1);
}

#[test]
fn enforce_waits_for_the_agent_and_then_escalates() {
    let yaml = LADDER.replace("mode: DryRun", "mode: Enforce");
    let w = world(vec![report("a", 1, true)]);
    let p = project(&policy(&yaml), &w);
    use ActionKind::*;
    use ActionOutcome::Executed;
    assert_eq!(
        steps(&p),
        vec![
            (120, "a".into(), Event, Executed),
            // Requested at 420 s, answered within the scan interval.
            (450, "a".into(), SignalParent, Executed),
            (720, "a".into(), EvictPod, Executed),
        ],
        "{:#?}",
        p.timeline
    );
}

#[test]
fn an_applied_policy_keeps_the_times_its_agents_reported() {
    let mut r = report("a", 1, true);
    let s = r.status.as_mut().unwrap();
    s.findings.zombies[0].exceeded = true;
    s.findings.zombies[0].exceeded_under = vec!["reap".into()];
    s.conditions = vec![
        serde_json::from_value(json!({
            "policy": "reap", "type": "ZombiesDetected", "status": "True",
            "reason": "ThresholdExceeded", "message": "php-fpm holds 100 zombies",
            "lastTransitionTime": "2027-01-15T07:54:00Z",
            "scope": "Pod",
            "culprit": {"uid": "pod-a-0", "namespace": "web", "name": "php-0"}
        }))
        .unwrap(),
    ];
    // lastTransitionTime is 6 minutes before `now`.
    assert_eq!(now().to_string(), "2027-01-15T08:00:00Z");
    let mut w = world(vec![r]);
    w.policies = vec![policy(LADDER)];
    let p = project(&policy(LADDER), &w);
    assert!(p.applied);
    assert_eq!(p.nodes[0].predictions[0].basis.as_str(), "reported");
    use ActionKind::*;
    use ActionOutcome::Planned;
    // The episode is not in the ledger yet: like the operator, the
    // projection counts the ladder from the report's 07:54, held to at most
    // SKEW_TOLERANCE (30 s) before the operator's first observation, now.
    // The Event is due at once, SignalParent 5 min later, EvictPod 10.
    assert_eq!(
        steps(&p),
        vec![
            (0, "a".into(), Event, Planned),
            (270, "a".into(), SignalParent, Planned),
            (570, "a".into(), EvictPod, Planned),
        ]
    );
}
