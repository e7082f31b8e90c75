//! The operator binary against a real API server: modes and a zombie ladder
//! end to end. Reports are written as the agent writes them; the operator
//! runs as a ServiceAccount with exactly the chart's RBAC.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::{ActionKind, ActionOutcome};
use nodemedic_crds::remediation::StepPhase;
use nodemedic_crds::report::{ActionResultOutcome, NodeAction};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn dry_run_records_planned_actions_and_changes_nothing_then_enforce_runs_them_at_once() {
    let w = World::new("dryrun").await;
    let node = w.node("dry").await;
    let policy = format!("{}-p", w.id);
    let spec = json!({
        "mode": "DryRun",
        "detectors": {"zombies": {}},
        "actions": {"zombies": [
            {"action": "Event"},
            {"action": "NodeCondition"},
            {"action": "SignalParent", "signal": "SIGTERM"},
            {"action": "Cordon"},
        ]},
        "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
    });
    w.policy(&policy, spec.clone()).await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    let mut op = w.operator("dry-a").start();

    let status = eventually(T, "four Planned actions in the policy status", || async {
        let p = w.get_policy(&policy).await;
        let s = p.status?;
        let planned: Vec<ActionKind> = s
            .recent_actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Planned && a.node == node)
            .map(|a| a.action)
            .collect();
        (planned.len() == 4).then_some(s)
    })
    .await;
    assert_eq!(status.actions_last24h, 4, "{status:?}");
    assert_eq!(status.unhealthy_nodes, 1);
    let events = eventually(T, "RemediationPlanned Events on the node", || async {
        let ev = w.events_about("Node", &node).await;
        let planned: Vec<String> = ev
            .iter()
            .filter(|e| e.reason.as_deref() == Some("RemediationPlanned"))
            .filter_map(|e| e.note.clone())
            .collect();
        (planned.len() == 4).then_some(planned)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|n| n.contains("would send SIGTERM to pid 4242 (php-fpm)")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|n| n.contains("would cordon the node")),
        "{events:?}"
    );

    // Nothing changed: no cordon, no request, no node condition, and it stays so.
    stays(Duration::from_secs(3), "DryRun changes nothing", || async {
        let n = w.get_node(&node).await;
        let r = w.get_report(&node).await;
        !unschedulable(&n)
            && node_condition(&n, "NodemedicZombies").is_none()
            && r.spec.action_requests.is_empty()
    })
    .await;
    let before = w.events_about("Node", &node).await.len();

    // Enforce: the steps already due run at once.
    let mut enforce = spec.clone();
    enforce["mode"] = json!("Enforce");
    w.policy(&policy, enforce).await;
    let n = eventually(T, "cordon after switching to Enforce", || async {
        let n = w.get_node(&node).await;
        unschedulable(&n).then_some(n)
    })
    .await;
    assert_eq!(cordoned_by(&n).as_deref(), Some(policy.as_str()));
    eventually(T, "node condition NodemedicZombies=True", || async {
        let n = w.get_node(&node).await;
        (node_condition(&n, "NodemedicZombies")
            .map(|c| c.0)
            .as_deref()
            == Some("True"))
        .then_some(())
    })
    .await;
    let r = w.get_report(&node).await;
    let [req] = r.spec.action_requests.as_slice() else {
        panic!("one request: {:?}", r.spec.action_requests)
    };
    assert_eq!(req.action, NodeAction::SignalParent);
    assert!(w.events_about("Node", &node).await.len() > before);
    op.terminate().await;
}

#[tokio::test]
async fn enforce_runs_a_zombie_ladder_end_to_end() {
    let w = World::new("ladder").await;
    let node = w.node("ladder").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "NodeCondition"},
                {"action": "SignalParent"},
                {"action": "Cordon", "after": "6s"},
            ]},
            "safety": {"cooldown": "3s", "maxUnhealthy": "100%", "uncordonWhenHealthy": true},
        }),
    )
    .await;
    let ns = w.namespace.clone();
    let pod = w.pod(&ns, "php-0", &node, json!({})).await;
    let uid = pod.metadata.uid.clone().unwrap();
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(
        4242,
        987_654,
        "php-fpm",
        Some((&ns, "php-0", &uid)),
    )];
    let mut op = w.operator("ladder-a").start();
    op.leads(T).await;
    let since = agent.set(&policy, Detector::Zombies, true);
    agent.write().await;

    // 1. Event on the Node and on the attributed pod.
    let ev = eventually(T, "ZombiesDetected Event on the node", || async {
        w.events_about("Node", &node)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ZombiesDetected"))
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(
        ev.note
            .as_deref()
            .unwrap_or_default()
            .contains("120 zombies"),
        "{ev:?}"
    );
    assert_eq!(
        ev.related.as_ref().and_then(|r| r.name.clone()),
        Some(policy.clone())
    );
    eventually(T, "the Event on the pod too", || async {
        w.events_about("Pod", "php-0")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ZombiesDetected"))
    })
    .await;

    // 2. Node condition, other conditions untouched.
    let n = eventually(T, "NodemedicZombies=True", || async {
        let n = w.get_node(&node).await;
        (node_condition(&n, "NodemedicZombies")
            .map(|c| c.0)
            .as_deref()
            == Some("True"))
        .then_some(n)
    })
    .await;
    assert_eq!(
        node_condition(&n, "Ready"),
        Some(("True".into(), "NodemedicTestHarness".into())),
        "the harness's Ready condition is untouched"
    );

    // 3. The action request with the right target.
    let req = eventually(T, "a SignalParent request in the report", || async {
        w.get_report(&node)
            .await
            .spec
            .action_requests
            .into_iter()
            .next()
    })
    .await;
    let target = req.target.clone().unwrap();
    assert_eq!(
        (target.pid, target.start_time, target.comm.as_str()),
        (4242, 987_654, "php-fpm")
    );
    assert_eq!(
        req.signal,
        Some(nodemedic_crds::policy::ParentSignal::SIGCHLD)
    );
    assert_eq!(req.policy, policy);
    assert!(req.id.len() <= 128);
    assert!(
        !unschedulable(&w.get_node(&node).await),
        "Cordon is not due yet"
    );

    // The agent executes it and reports.
    agent.result(&req.id, ActionResultOutcome::Signalled);
    agent.write().await;
    eventually(T, "the request is consumed and the step Done", || async {
        let r = w.get_ledger(&node).await;
        let done = step_record(&r, &policy, Detector::Zombies, 2, ActionKind::SignalParent)
            .is_some_and(|s| s.phase == StepPhase::Done);
        let requests = w.get_report(&node).await.spec.action_requests;
        (done && requests.is_empty()).then_some(())
    })
    .await;

    // 4. Cordon after `after`, owned by nodemedic.
    let n = eventually(T, "cordon", || async {
        let n = w.get_node(&node).await;
        unschedulable(&n).then_some(n)
    })
    .await;
    let cordoned_at = Timestamp::now();
    assert!(
        cordoned_at.as_second() >= since.as_second() + 6,
        "cordoned before `after`"
    );
    assert_eq!(cordoned_by(&n).as_deref(), Some(policy.as_str()));

    // 5. Healthy again: uncordoned after one cooldown, condition False.
    let healed = agent.set(&policy, Detector::Zombies, false);
    agent.write().await;
    eventually(T, "NodemedicZombies=False", || async {
        let n = w.get_node(&node).await;
        (node_condition(&n, "NodemedicZombies")
            .map(|c| c.0)
            .as_deref()
            == Some("False"))
        .then_some(())
    })
    .await;
    let n = eventually(T, "uncordon after the cooldown", || async {
        let n = w.get_node(&node).await;
        (!unschedulable(&n)).then_some(n)
    })
    .await;
    assert!(
        Timestamp::now().as_second() >= healed.as_second() + 3,
        "uncordoned before the cooldown"
    );
    assert_eq!(cordoned_by(&n), None, "annotation removed");

    // Status and metrics tell the story.
    let p = w.get_policy(&policy).await;
    let s = p.status.clone().unwrap();
    let executed: Vec<ActionKind> = s
        .recent_actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Executed)
        .map(|a| a.action)
        .collect();
    for a in [
        ActionKind::Event,
        ActionKind::NodeCondition,
        ActionKind::SignalParent,
        ActionKind::Cordon,
    ] {
        assert!(executed.contains(&a), "{a:?} missing in {executed:?}");
    }
    assert_eq!(condition(&p, "Ready").map(|c| c.0).as_deref(), Some("True"));
    assert_eq!(
        condition(&p, "StormActive").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(s.observed_generation, p.metadata.generation);
    let m = op.metrics().await;
    for needle in [
        &format!(
            "nodemedic_operator_actions_total{{policy=\"{policy}\",action=\"Cordon\",outcome=\"Executed\"}}"
        ),
        &format!("nodemedic_operator_unhealthy_nodes{{policy=\"{policy}\"}} 0"),
        &format!("nodemedic_operator_storm_active{{policy=\"{policy}\"}} 0"),
        &"nodemedic_operator_reconcile_duration_seconds_count".to_owned(),
        &"nodemedic_operator_is_leader 1".to_owned(),
    ] {
        assert!(m.contains(needle.as_str()), "metrics lack {needle}:\n{m}");
    }
    assert_eq!(op.http_get("/livez").await.map(|x| x.0), Some(200));
    assert_eq!(op.http_get("/readyz").await.map(|x| x.0), Some(200));
    op.terminate().await;
}

#[tokio::test]
async fn a_node_cordoned_by_someone_else_is_never_uncordoned() {
    let w = World::new("foreign").await;
    let node = w.node("foreign").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [{"action": "Cordon"}]},
            "safety": {"cooldown": "1s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    // An SRE cordons the node first.
    let out = w.cp.kubectl(&["cordon", &node]).await.unwrap();
    assert!(out.success, "{out}");
    let mut agent = Agent::start(&w.client, &node).await;
    let mut op = w.operator("foreign-a").start();
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    eventually(
        T,
        "the Cordon step is Done without owning the cordon",
        || async {
            let r = w.get_ledger(&node).await;
            let s = step_record(&r, &policy, Detector::Zombies, 0, ActionKind::Cordon)?;
            (s.phase == StepPhase::Done).then_some(())
        },
    )
    .await;
    assert_eq!(cordoned_by(&w.get_node(&node).await), None, "not claimed");
    agent.set(&policy, Detector::Zombies, false);
    agent.write().await;
    // Healthy for many cooldowns: still cordoned.
    stays(Duration::from_secs(4), "the SRE's cordon stays", || async {
        unschedulable(&w.get_node(&node).await)
    })
    .await;
    op.terminate().await;
}

#[tokio::test]
async fn taint_and_reboot_hand_off_then_untaint_when_healthy() {
    let w = World::new("taint").await;
    let node = w.node("taint").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"hungTasks": {}},
            "actions": {"hungTasks": [
                {"action": "Taint", "taint": {"key": "nodemedic.io/hung-tasks", "effect": "NoSchedule"}},
                {"action": "RequestReboot"},
            ]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    // Someone else's taint must survive everything below.
    let out =
        w.cp.kubectl(&["taint", "node", &node, "team=db:NoSchedule"])
            .await
            .unwrap();
    assert!(out.success, "{out}");
    let mut agent = Agent::start(&w.client, &node).await;
    let mut op = w.operator("taint-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::HungTasks, true);
    agent.write().await;

    let n = eventually(T, "nodemedic's taint", || async {
        let n = w.get_node(&node).await;
        let taints = n.spec.as_ref()?.taints.clone()?;
        taints
            .iter()
            .any(|t| t.key == "nodemedic.io/hung-tasks" && t.effect == "NoSchedule")
            .then_some(n)
    })
    .await;
    let owned = n.metadata.annotations.as_ref().unwrap()["nodemedic.io/tainted-by"].clone();
    assert!(owned.contains(&policy), "{owned}");
    let req = eventually(T, "a RequestReboot request", || async {
        w.get_report(&node)
            .await
            .spec
            .action_requests
            .into_iter()
            .find(|r| r.action == NodeAction::RequestReboot)
    })
    .await;
    assert!(req.target.is_none() && req.signal.is_none());
    agent.result(&req.id, ActionResultOutcome::Completed);
    agent.write().await;
    eventually(T, "reboot step Done, request pruned", || async {
        let r = w.get_report(&node).await;
        let s = step_record(
            &w.get_ledger(&node).await,
            &policy,
            Detector::HungTasks,
            1,
            ActionKind::RequestReboot,
        )?;
        (s.phase == StepPhase::Done && r.spec.action_requests.is_empty()).then_some(())
    })
    .await;

    agent.set(&policy, Detector::HungTasks, false);
    agent.write().await;
    let n = eventually(T, "nodemedic's taint removed", || async {
        let n = w.get_node(&node).await;
        let ours = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == "nodemedic.io/hung-tasks"));
        (!ours).then_some(n)
    })
    .await;
    // (The API server's TaintNodesByCondition admission adds a not-ready
    // taint to new Nodes; it stays too.)
    let taints = n.spec.unwrap().taints.unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "team" && t.value.as_deref() == Some("db")),
        "someone else's taint stays: {taints:?}"
    );
    assert!(
        !n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("nodemedic.io/tainted-by")
    );
    op.terminate().await;
}
