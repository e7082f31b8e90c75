//! Pausing remediation (issue 16) end to end: the operator binary against a
//! real API server, a ladder stopped by a pause and continued after the
//! resume, the status, the Events and the metrics; and a node pause that
//! holds one node only.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use nodemedic_crds::NodeHealthPolicy;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::pause::{PAUSE_ANNOTATIONS, pause_annotations};
use nodemedic_crds::policy::ActionKind;
use nodemedic_crds::remediation::StepPhase;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn pause_patch(reason: &str) -> Value {
    let now = Timestamp::now();
    json!({"metadata": {"annotations": pause_annotations(reason, "alice", now)}})
}

fn resume_patch() -> Value {
    let nulls: BTreeMap<&str, Value> = PAUSE_ANNOTATIONS
        .iter()
        .map(|k| (*k, Value::Null))
        .collect();
    json!({"metadata": {"annotations": nulls}})
}

async fn annotate_policy(w: &World, name: &str, patch: &Value) {
    Api::<NodeHealthPolicy>::all(w.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

async fn annotate_node(w: &World, name: &str, patch: &Value) {
    Api::<Node>::all(w.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

async fn policy_events(w: &World, policy: &str, reason: &str) -> Vec<String> {
    w.events_about("NodeHealthPolicy", policy)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// "pause tested end to end (a ladder stops at a pause and resumes after)":
/// Event, then Cordon after 5s. Paused after the Event, the Cordon does not
/// start past its `after`; the status, the Event and the metrics say so, a
/// restarted operator does not announce the pause again; resumed, the
/// Cordon runs exactly once and `Resumed` is announced.
#[tokio::test]
async fn a_paused_ladder_stops_and_resumes_after() {
    let w = World::new("pause").await;
    let node = w.node("pause").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "Cordon", "after": "5s"},
            ]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    let mut op = w.operator("pause-a").start();
    op.leads(T).await;
    let since = agent.set(&policy, Detector::Zombies, true);
    agent.write().await;

    // The first step runs.
    eventually(T, "the Event step Done", || async {
        let r = w.get_ledger(&node).await;
        step_record(&r, &policy, Detector::Zombies, 0, ActionKind::Event)
            .is_some_and(|s| s.phase == StepPhase::Done)
            .then_some(())
    })
    .await;
    assert!(
        Timestamp::now().as_second() < since.as_second() + 5,
        "the test was too slow to pause before the Cordon came due"
    );

    // Paused.
    annotate_policy(&w, &policy, &pause_patch("kernel rollout")).await;
    let status = eventually(T, "status.paused and Paused=True", || async {
        let p = w.get_policy(&policy).await;
        let c = condition(&p, "Paused")?;
        (c.0 == "True" && c.1 == "PolicyPaused").then_some(p.status?)
    })
    .await;
    let paused = status.paused.clone().expect("status.paused");
    assert_eq!(paused.reason, "kernel rollout");
    assert_eq!(paused.by.as_deref(), Some("alice"));
    assert_eq!(paused.problem, None);
    let notes = eventually(T, "a Paused Event on the policy", || async {
        let n = policy_events(&w, &policy, "Paused").await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert!(
        notes[0].contains("by alice") && notes[0].contains("kernel rollout"),
        "{notes:?}"
    );
    assert_eq!(
        op.metric("nodemedic_operator_pauses{kind=\"policy\"} ")
            .await,
        Some(1.0)
    );
    assert!(
        op.metrics().await.contains(&format!(
            "nodemedic_operator_pause_start_timestamp_seconds{{kind=\"policy\",name=\"{policy}\"}} {}",
            paused.since.0.as_second()
        )),
        "{}",
        op.metrics().await
    );

    // The Cordon comes due (5s after the episode began) and is held.
    let held = eventually(T, "the Cordon step Held (Paused)", || async {
        let r = w.get_ledger(&node).await;
        step_record(&r, &policy, Detector::Zombies, 1, ActionKind::Cordon)
            .filter(|s| s.phase == StepPhase::Held && s.reason.as_deref() == Some("Paused"))
    })
    .await;
    assert!(
        held.since.0.as_second() >= since.as_second() + 5,
        "{held:?}"
    );
    stays(
        Duration::from_secs(3),
        "no cordon while paused, past the step's after",
        || async { !unschedulable(&w.get_node(&node).await) },
    )
    .await;
    // The agent keeps reporting; nothing starts.
    agent.write().await;

    // A restarted operator does not announce the pause again.
    op.terminate().await;
    let mut op = w.operator("pause-b").start();
    op.leads_as(T, "the new operator leads").await;
    stays(
        Duration::from_secs(3),
        "one Paused Event, no cordon, across a restart",
        || async {
            policy_events(&w, &policy, "Paused").await.len() == 1
                && !unschedulable(&w.get_node(&node).await)
        },
    )
    .await;

    // Resumed: the Cordon runs, once.
    annotate_policy(&w, &policy, &resume_patch()).await;
    let n = eventually(T, "cordon after the resume", || async {
        let n = w.get_node(&node).await;
        unschedulable(&n).then_some(n)
    })
    .await;
    assert_eq!(cordoned_by(&n).as_deref(), Some(policy.as_str()));
    eventually(T, "a Resumed Event, status.paused gone", || async {
        let resumed = policy_events(&w, &policy, "Resumed").await;
        let p = w.get_policy(&policy).await;
        let c = condition(&p, "Paused")?;
        (resumed.len() == 1 && p.status?.paused.is_none() && c.0 == "False" && c.1 == "NotPaused")
            .then_some(())
    })
    .await;
    stays(
        Duration::from_secs(2),
        "the Cordon ran exactly once, the Event step was not repeated",
        || async {
            let r = w.get_ledger(&node).await;
            let cordons = r
                .history
                .iter()
                .filter(|h| h.policy == policy && h.action == ActionKind::Cordon)
                .count();
            let cordon_events = w
                .events_about("Node", &node)
                .await
                .iter()
                .filter(|e| e.reason.as_deref() == Some("NodeCordoned"))
                .count();
            let detected = w
                .events_about("Node", &node)
                .await
                .iter()
                .filter(|e| e.reason.as_deref() == Some("ZombiesDetected"))
                .count();
            cordons == 1 && cordon_events == 1 && detected == 1
        },
    )
    .await;
    assert_eq!(
        op.metric("nodemedic_operator_pauses{kind=\"policy\"} ")
            .await,
        Some(0.0)
    );
    assert_eq!(policy_events(&w, &policy, "Paused").await.len(), 1);
    op.terminate().await;
}

/// A pause on a Node holds that node only, for every policy; the policy
/// status names it (Paused=False/NodesPaused, nodes[].held) and the node
/// is remediated after its resume.
#[tokio::test]
async fn a_node_pause_holds_only_that_node_against_the_server() {
    let w = World::new("nodepause").await;
    let held_node = w.node("held").await;
    let free_node = w.node("free").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [{"action": "Cordon"}]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%", "maxConcurrentActions": 2},
        }),
    )
    .await;
    annotate_node(&w, &held_node, &pause_patch("hardware check")).await;
    let mut agents = Vec::new();
    for n in [&held_node, &free_node] {
        let mut a = Agent::start(&w.client, n).await;
        a.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
        a.set(&policy, Detector::Zombies, true);
        a.write().await;
        agents.push(a);
    }
    let mut op = w.operator("nodepause-a").start();

    eventually(T, "the free node cordoned", || async {
        unschedulable(&w.get_node(&free_node).await).then_some(())
    })
    .await;
    let status = eventually(T, "the paused node shown held", || async {
        let p = w.get_policy(&policy).await;
        let c = condition(&p, "Paused")?;
        let s = p.status?;
        let held = s
            .nodes
            .iter()
            .any(|n| n.node == held_node && n.held.as_deref() == Some("Paused"));
        (held && c.0 == "False" && c.1 == "NodesPaused" && c.2.contains(&held_node)).then_some(s)
    })
    .await;
    assert!(status.paused.is_none());
    assert!(
        status
            .nodes
            .iter()
            .any(|n| n.node == free_node && n.held.is_none())
    );
    let r = w.get_ledger(&held_node).await;
    let rec = step_record(&r, &policy, Detector::Zombies, 0, ActionKind::Cordon).unwrap();
    assert_eq!(
        (rec.phase, rec.reason.as_deref()),
        (StepPhase::Held, Some("Paused"))
    );
    assert!(!unschedulable(&w.get_node(&held_node).await));
    eventually(T, "the node pause in the metrics", || async {
        (op.metric("nodemedic_operator_pauses{kind=\"node\"} ").await == Some(1.0)).then_some(())
    })
    .await;

    annotate_node(&w, &held_node, &resume_patch()).await;
    eventually(T, "the resumed node cordoned", || async {
        unschedulable(&w.get_node(&held_node).await).then_some(())
    })
    .await;
    eventually(T, "no node pause left", || async {
        let p = w.get_policy(&policy).await;
        let c = condition(&p, "Paused")?;
        (c.1 == "NotPaused"
            && op.metric("nodemedic_operator_pauses{kind=\"node\"} ").await == Some(0.0))
        .then_some(())
    })
    .await;
    op.terminate().await;
}
