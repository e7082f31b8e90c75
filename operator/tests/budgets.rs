//! Safety budgets against a real API server: storm (maxUnhealthy),
//! maxConcurrentActions, cooldown, maxSignalsPerHour, stale reports, several
//! policies on one node, and a selector the server accepted but that is
//! invalid.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::{ActionKind, ActionOutcome};
use nodemedic_crds::remediation::StepPhase;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn cordon_ladder(extra_safety: serde_json::Value) -> serde_json::Value {
    let mut safety = json!({"cooldown": "0s", "maxUnhealthy": "100%", "maxConcurrentActions": 100});
    for (k, v) in extra_safety.as_object().into_iter().flatten() {
        safety[k] = v.clone();
    }
    json!({
        "mode": "Enforce",
        "detectors": {"zombies": {}},
        // The Drain an hour later never comes due in a test; it keeps the
        // ladder from being exhausted by the Cordon (an exhausted ladder
        // frees its concurrency slot and needs attention).
        "actions": {"zombies": [{"action": "Event"}, {"action": "Cordon"}, {"action": "Drain", "after": "1h"}]},
        "safety": safety,
    })
}

async fn cordoned(w: &World, nodes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes {
        if unschedulable(&w.get_node(n).await) {
            out.push(n.clone());
        }
    }
    out
}

#[tokio::test]
async fn a_storm_holds_node_level_actions_until_back_under_the_budget() {
    let w = World::new("storm").await;
    let policy = format!("{}-p", w.id);
    // Cordon after 3s: by then all five are unhealthy (a node that fell
    // sick while the budget still allowed it would rightly be cordoned).
    let mut spec = cordon_ladder(json!({"maxUnhealthy": "20%"}));
    spec["actions"]["zombies"][1]["after"] = json!("3s");
    w.policy(&policy, spec).await;
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..10 {
        let n = w.node("storm").await;
        agents.push(Agent::start(&w.client, &n).await);
        nodes.push(n);
    }
    for a in agents.iter_mut() {
        a.set(&policy, Detector::Zombies, false);
        a.write().await;
    }
    let mut op = w.operator("storm-a").start();
    eventually(T, "10 matched nodes", || async {
        (w.get_policy(&policy).await.status?.matched_nodes == 10).then_some(())
    })
    .await;
    for a in agents.iter_mut().take(5) {
        a.set(&policy, Detector::Zombies, true);
        a.write().await;
    }
    let p = eventually(T, "StormActive=True with 5 unhealthy", || async {
        let p = w.get_policy(&policy).await;
        let c = condition(&p, "StormActive")?;
        (c.0 == "True" && c.2.contains("5 of 10")).then_some(p)
    })
    .await;
    let (_, reason, message) = condition(&p, "StormActive").unwrap();
    assert_eq!(reason, "MaxUnhealthyExceeded");
    assert!(message.contains("5 of 10"), "{message}");
    // Events still run; cordons are held, with the reason recorded.
    eventually(T, "5 held Cordon steps", || async {
        let mut held = 0;
        for n in &nodes[..5] {
            let r = w.get_ledger(n).await;
            let s = step_record(&r, &policy, Detector::Zombies, 1, ActionKind::Cordon);
            if s.is_some_and(|s| {
                s.phase == StepPhase::Held && s.reason.as_deref() == Some("StormActive")
            }) {
                held += 1;
            }
        }
        (held == 5).then_some(())
    })
    .await;
    for n in &nodes[..5] {
        assert!(
            w.events_about("Node", n)
                .await
                .iter()
                .any(|e| e.reason.as_deref() == Some("ZombiesDetected")),
            "Event step ran on {n}"
        );
    }
    stays(
        Duration::from_secs(3),
        "no node cordoned during the storm",
        || async { cordoned(&w, &nodes).await.is_empty() },
    )
    .await;
    assert_eq!(
        op.metric(&format!(
            "nodemedic_operator_storm_active{{policy=\"{policy}\"}} "
        ))
        .await,
        Some(1.0)
    );

    // Four recover: 1 unhealthy ≤ 2 allowed; the held Cordon runs.
    for a in agents.iter_mut().take(4) {
        a.set(&policy, Detector::Zombies, false);
        a.write().await;
    }
    eventually(T, "StormActive=False", || async {
        let p = w.get_policy(&policy).await;
        (condition(&p, "StormActive").map(|c| c.0).as_deref() == Some("False")).then_some(())
    })
    .await;
    let c = eventually(T, "the still-unhealthy node is cordoned", || async {
        let c = cordoned(&w, &nodes).await;
        (!c.is_empty()).then_some(c)
    })
    .await;
    // The recoveries are written one by one: once three have recovered, two
    // nodes are unhealthy (within the budget) and the held Cordon may run on
    // nodes[3] too before its own recovery arrives. Never on the others.
    assert!(c.contains(&nodes[4]), "{c:?}");
    assert!(c.iter().all(|n| nodes[3..].contains(n)), "{c:?}");
    op.terminate().await;
}

#[tokio::test]
async fn max_concurrent_actions_one_remediates_one_node_at_a_time() {
    let w = World::new("conc").await;
    let policy = format!("{}-p", w.id);
    w.policy(&policy, cordon_ladder(json!({"maxConcurrentActions": 1})))
        .await;
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..3 {
        let n = w.node("conc").await;
        agents.push(Agent::start(&w.client, &n).await);
        nodes.push(n);
    }
    let mut op = w.operator("conc-a").start();
    op.leads(T).await;
    for a in agents.iter_mut() {
        a.set(&policy, Detector::Zombies, true);
        a.write().await;
    }
    let first = eventually(T, "one node cordoned", || async {
        let c = cordoned(&w, &nodes).await;
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(first.len(), 1, "{first:?}");
    stays(Duration::from_secs(3), "still only one", || async {
        cordoned(&w, &nodes).await == first
    })
    .await;
    let held = w.get_policy(&policy).await.status.unwrap().recent_actions;
    assert_eq!(
        held.iter()
            .filter(|a| a.outcome == ActionOutcome::Skipped
                && a.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("maxConcurrentActions"))
            .count(),
        2,
        "{held:?}"
    );

    // The first recovers (and is uncordoned): the next gets the slot.
    let i = nodes.iter().position(|n| *n == first[0]).unwrap();
    agents[i].set(&policy, Detector::Zombies, false);
    agents[i].write().await;
    let second = eventually(T, "another node cordoned", || async {
        let c = cordoned(&w, &nodes).await;
        (c.len() == 1 && c != first).then_some(c)
    })
    .await;
    stays(Duration::from_secs(2), "one at a time", || async {
        cordoned(&w, &nodes).await == second
    })
    .await;
    op.terminate().await;
}

#[tokio::test]
async fn cooldown_and_max_signals_per_hour_are_respected() {
    let w = World::new("cool").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "SignalParent", "signal": "SIGCHLD"},
                {"action": "SignalParent", "signal": "SIGTERM", "after": "1s"},
                {"action": "SignalParent", "signal": "SIGKILL", "after": "2s"},
            ]},
            "safety": {"cooldown": "4s", "maxSignalsPerHour": 2, "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let node = w.node("cool").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(777, 1234, "worker", None)];
    let mut op = w.operator("cool-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;

    let mut seen: Vec<(String, Timestamp)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(16);
    while std::time::Instant::now() < deadline {
        let r = w.get_report(&node).await;
        for req in r.spec.action_requests {
            if !seen.iter().any(|(id, _)| *id == req.id) {
                seen.push((req.id.clone(), req.requested_at.0));
                agent.result(
                    &req.id,
                    nodemedic_crds::report::ActionResultOutcome::Signalled,
                );
                agent.write().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        seen.len(),
        2,
        "maxSignalsPerHour 2: {seen:?}\n{}",
        op.log_tail(40)
    );
    let gap = seen[1].1.as_second() - seen[0].1.as_second();
    assert!(gap >= 4, "cooldown 4s between two signals, got {gap}s");
    let r = w.get_ledger(&node).await;
    let third = step_record(&r, &policy, Detector::Zombies, 2, ActionKind::SignalParent).unwrap();
    assert_eq!(
        (third.phase, third.reason.as_deref()),
        (StepPhase::Held, Some("MaxSignalsPerHour"))
    );
    op.terminate().await;
}

#[tokio::test]
async fn a_stale_report_plans_nothing_and_degrades_the_policy() {
    let w = World::new("stale").await;
    let policy = format!("{}-p", w.id);
    w.policy(&policy, cordon_ladder(json!({}))).await;
    let node = w.node("stale").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.set(&policy, Detector::Zombies, true);
    // Last scan 10 heartbeats ago: stale by its own stamp, whatever the
    // skew tolerance.
    agent.status.last_scan_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(Timestamp::now().as_second() - 600).unwrap(),
    ));
    agent.write_as_is().await;
    let mut op = w.operator("stale-a").start();
    let p = eventually(T, "Degraded=True naming the node", || async {
        let p = w.get_policy(&policy).await;
        (condition(&p, "Degraded").map(|c| c.0).as_deref() == Some("True")).then_some(p)
    })
    .await;
    let (_, reason, message) = condition(&p, "Degraded").unwrap();
    assert_eq!(reason, "StaleReports");
    assert!(message.contains(&node), "{message}");
    stays(
        Duration::from_secs(3),
        "no action from stale data",
        || async {
            let r = w.get_ledger(&node).await;
            !unschedulable(&w.get_node(&node).await) && r.episodes.is_empty()
        },
    )
    .await;
    assert!(w.events_about("Node", &node).await.is_empty());
    assert_eq!(
        op.metric(&format!(
            "nodemedic_operator_stale_reports{{policy=\"{policy}\"}} "
        ))
        .await,
        Some(1.0)
    );

    // A fresh scan: acted on.
    agent.write().await;
    eventually(T, "cordon once the report is fresh", || async {
        unschedulable(&w.get_node(&node).await).then_some(())
    })
    .await;
    eventually(T, "Degraded=False", || async {
        let p = w.get_policy(&policy).await;
        (condition(&p, "Degraded").map(|c| c.0).as_deref() == Some("False")).then_some(())
    })
    .await;
    op.terminate().await;
}

#[tokio::test]
async fn several_policies_share_one_cordon_and_the_longest_cooldown() {
    let w = World::new("multi").await;
    let a = format!("{}-a", w.id);
    let b = format!("{}-b", w.id);
    w.policy(&a, cordon_ladder(json!({"cooldown": "1s"}))).await;
    w.policy(&b, cordon_ladder(json!({"cooldown": "6s"}))).await;
    let node = w.node("multi").await;
    let mut agent = Agent::start(&w.client, &node).await;
    let mut op = w.operator("multi-a").start();
    op.leads(T).await;
    agent.set(&a, Detector::Zombies, true);
    agent.set(&b, Detector::Zombies, true);
    agent.write().await;
    let n = eventually(T, "cordoned for both policies", || async {
        let n = w.get_node(&node).await;
        (cordoned_by(&n).as_deref() == Some(&format!("{a},{b}"))).then_some(n)
    })
    .await;
    assert!(unschedulable(&n));
    let r = w.get_ledger(&node).await;
    let disruptive = r
        .history
        .iter()
        .filter(|h| h.action == ActionKind::Cordon)
        .count();
    assert_eq!(disruptive, 1, "cordoned once: {:?}", r.history);

    // a recovers: b still firing keeps the node cordoned.
    agent.set(&a, Detector::Zombies, false);
    agent.write().await;
    stays(
        Duration::from_secs(3),
        "cordon kept while b fires",
        || async { unschedulable(&w.get_node(&node).await) },
    )
    .await;
    // b recovers: uncordoned after the longer cooldown (6s), not a's (1s).
    let healed = agent.set(&b, Detector::Zombies, false);
    agent.write().await;
    eventually(T, "uncordoned", || async {
        (!unschedulable(&w.get_node(&node).await)).then_some(())
    })
    .await;
    let waited = Timestamp::now().as_second() - healed.as_second();
    assert!(
        waited >= 6,
        "the longest cooldown governs: waited {waited}s"
    );
    op.terminate().await;
}

#[tokio::test]
async fn a_selector_the_server_accepted_but_that_is_invalid_makes_the_policy_unready() {
    let w = World::new("badsel").await;
    let policy = format!("{}-p", w.id);
    let mut spec = cordon_ladder(json!({}));
    // The schema refuses unknown operators; an In without values passes it.
    spec["nodeSelector"] = json!({"matchExpressions": [{"key": "pool", "operator": "In"}]});
    w.policy(&policy, spec).await;
    let node = w.node("badsel").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    let mut op = w.operator("badsel-a").start();
    let p = eventually(T, "Ready=False", || async {
        let p = w.get_policy(&policy).await;
        (condition(&p, "Ready").map(|c| c.0).as_deref() == Some("False")).then_some(p)
    })
    .await;
    let (_, reason, message) = condition(&p, "Ready").unwrap();
    assert_eq!(reason, "InvalidSelector");
    assert!(message.contains("needs at least one value"), "{message}");
    stays(Duration::from_secs(2), "nothing planned", || async {
        w.get_ledger(&node).await.is_empty()
    })
    .await;
    op.terminate().await;
}
