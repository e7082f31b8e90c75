//! Leader election and durable state: two operator processes, only one
//! acts; the leader is killed mid-ladder and the standby takes over within
//! the lease duration without repeating a step; an operator restarted
//! mid-ladder neither repeats nor skips a step.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};

use common::*;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::ActionKind;
use nodemedic_crds::remediation::StepPhase;
use nodemedic_crds::report::ActionResultOutcome;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn ladder() -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "detectors": {"zombies": {}},
        "actions": {"zombies": [
            {"action": "Event"},
            {"action": "SignalParent"},
            {"action": "Cordon", "after": "12s"},
        ]},
        "safety": {"cooldown": "1s", "maxUnhealthy": "100%"},
    })
}

async fn events(w: &World, node: &str, reason: &str) -> usize {
    w.events_about("Node", node)
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count as usize))
        .sum()
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_over_without_repeating() {
    let w = World::new("leader").await;
    let policy = format!("{}-p", w.id);
    w.policy(&policy, ladder()).await;
    let node = w.node("leader").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];

    let mut a = w.operator("replica-a").lease_duration("4s").start();
    let mut b = w.operator("replica-b").lease_duration("4s").start();
    let (leader, standby) = eventually(T, "exactly one leader", || async {
        match (a.is_leader().await, b.is_leader().await) {
            (true, false) => Some(("a", "b")),
            (false, true) => Some(("b", "a")),
            _ => None,
        }
    })
    .await;
    stays(Duration::from_secs(3), "never two leaders", || async {
        !(a.is_leader().await && b.is_leader().await)
    })
    .await;
    // The standby is ready (warm caches) but not leading.
    let (lead, stand) = if leader == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(
        stand.http_get("/readyz").await.map(|x| x.0),
        Some(200),
        "standby {standby} is ready"
    );
    assert_eq!(
        stand.metric("nodemedic_operator_is_leader ").await,
        Some(0.0)
    );

    let since = agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    let req = eventually(T, "the leader requests the signal", || async {
        w.get_report(&node)
            .await
            .spec
            .action_requests
            .into_iter()
            .next()
    })
    .await;
    agent.result(&req.id, ActionResultOutcome::Signalled);
    agent.write().await;
    eventually(T, "signal step done", || async {
        let r = w.get_ledger(&node).await;
        let s = step_record(&r, &policy, Detector::Zombies, 1, ActionKind::SignalParent)?;
        (s.phase == StepPhase::Done).then_some(())
    })
    .await;
    let acted = |m: String| {
        m.contains(&format!(
            "nodemedic_operator_actions_total{{policy=\"{policy}\""
        ))
    };
    assert!(acted(lead.metrics().await), "the leader acted");
    assert!(!acted(stand.metrics().await), "the standby did not act");

    // The leader dies (SIGKILL: no lease release) before the Cordon is due.
    lead.kill().await;
    let killed = Instant::now();
    stand
        .leads_as(Duration::from_secs(15), "the standby leads")
        .await;
    let takeover = killed.elapsed();
    // Within the lease duration (4s) after the last renewal, plus the
    // lease manager's random wait (≤ 1s) and polling.
    assert!(
        takeover <= Duration::from_secs(6),
        "took over after {takeover:?}"
    );

    let n = eventually(T, "the new leader cordons when due", || async {
        let n = w.get_node(&node).await;
        unschedulable(&n).then_some(n)
    })
    .await;
    assert!(
        Timestamp::now().as_second() >= since.as_second() + 12,
        "not before `after`"
    );
    assert_eq!(cordoned_by(&n).as_deref(), Some(policy.as_str()));
    // Nothing repeated: one Event, one signal, one cordon.
    stays(Duration::from_secs(2), "no repeats", || async {
        let r = w.get_report(&node).await;
        w.carried_out(&node).await
            == [
                ActionKind::Event,
                ActionKind::SignalParent,
                ActionKind::Cordon,
            ]
            && r.spec.action_requests.is_empty()
    })
    .await;
    assert_eq!(events(&w, &node, "ZombiesDetected").await, 1);
    assert_eq!(events(&w, &node, "SignalRequested").await, 1);
    stand.terminate().await;
}

#[tokio::test]
async fn an_operator_restarted_mid_ladder_neither_repeats_nor_skips_a_step() {
    let w = World::new("restart").await;
    let policy = format!("{}-p", w.id);
    w.policy(&policy, ladder()).await;
    let node = w.node("restart").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    let mut op = w.operator("restart-a").start();
    op.leads(T).await;
    let since = agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    let req = eventually(T, "signal requested", || async {
        w.get_report(&node)
            .await
            .spec
            .action_requests
            .into_iter()
            .next()
    })
    .await;

    // Crash while the request is in flight, and come back. (Once the
    // Event step is recorded Done: an Event published just before a crash
    // and not yet recorded is published again — Events are at least once,
    // docs/operator.md.)
    eventually(T, "the Event step is recorded", || async {
        let r = w.get_ledger(&node).await;
        let s = step_record(&r, &policy, Detector::Zombies, 0, ActionKind::Event)?;
        (s.phase == StepPhase::Done).then_some(())
    })
    .await;
    // And the request's Event is out (it follows the request's write; a
    // crash between the two would lose or repeat it: at least once).
    eventually(T, "the SignalRequested Event is out", || async {
        (events(&w, &node, "SignalRequested").await >= 1).then_some(())
    })
    .await;
    op.kill().await;
    let mut op = w.operator("restart-a").start();
    op.leads_as(T, "the restarted operator leads").await;
    // The agent answers the request the first process made.
    agent.result(&req.id, ActionResultOutcome::Signalled);
    agent.write().await;
    eventually(T, "the restarted operator consumes the result", || async {
        let r = w.get_ledger(&node).await;
        let s = step_record(&r, &policy, Detector::Zombies, 1, ActionKind::SignalParent)?;
        let requests = w.get_report(&node).await.spec.action_requests;
        (s.phase == StepPhase::Done && requests.is_empty()).then_some(())
    })
    .await;
    // Crash again before the Cordon is due; restart.
    op.kill().await;
    let mut op = w.operator("restart-a").start();
    eventually(T, "cordon when due, not skipped", || async {
        unschedulable(&w.get_node(&node).await).then_some(())
    })
    .await;
    assert!(Timestamp::now().as_second() >= since.as_second() + 12);
    stays(Duration::from_secs(2), "no repeats", || async {
        w.carried_out(&node).await
            == [
                ActionKind::Event,
                ActionKind::SignalParent,
                ActionKind::Cordon,
            ]
    })
    .await;
    assert_eq!(
        events(&w, &node, "ZombiesDetected").await,
        1,
        "the Event step ran once"
    );
    assert_eq!(events(&w, &node, "SignalRequested").await, 1, "one request");
    op.terminate().await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_acting_at_once() {
    let w = World::new("stolen").await;
    let policy = format!("{}-p", w.id);
    w.policy(&policy, ladder()).await;
    let node = w.node("stolen").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    let mut op = w.operator("stolen-a").lease_duration("6s").start();
    op.leads(T).await;

    // Another holder takes the Lease (as a partitioned leader would find
    // when it comes back): the fence closes as soon as the watch shows it.
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.namespace);
    let lease_name = format!("nodemedic-{}", w.id);
    let stolen_at = Instant::now();
    leases
        .patch(
            &lease_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": "thief",
                "renewTime": MicroTime(Timestamp::now()),
                "leaseDurationSeconds": 6,
            }})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "acting stops", || async {
        (!op.is_leader().await).then_some(())
    })
    .await;
    assert!(
        stolen_at.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        stolen_at.elapsed()
    );

    // While the thief's lease is valid, nothing happens on a firing node.
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    stays(
        Duration::from_secs(3),
        "no action without the lease",
        || async {
            let r = w.get_ledger(&node).await;
            r.is_empty() && w.events_about("Node", &node).await.is_empty()
        },
    )
    .await;
    // The thief never renews: the operator takes the Lease back and acts.
    eventually(
        Duration::from_secs(20),
        "the operator leads again and acts",
        || async {
            let r = w.get_report(&node).await;
            (!r.spec.action_requests.is_empty()).then_some(())
        },
    )
    .await;
    op.terminate().await;
}
