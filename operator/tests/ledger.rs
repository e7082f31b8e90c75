//! The remediation ledger (a node's NodeRemediation) against a real API
//! server: it is the operator's alone, survives `kubectl delete nhr` with
//! every budget it holds, and a request lost with its report is asked again
//! under the same id for the same process.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams};
use nodemedic_crds::NodeHealthReport;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::ActionKind;
use nodemedic_crds::remediation::StepPhase;
use nodemedic_crds::report::ActionResultOutcome;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

async fn delete_report(w: &World, node: &str) {
    let api: Api<NodeHealthReport> = Api::all(w.client.clone());
    api.delete(node, &DeleteParams::default()).await.unwrap();
    eventually(T, "the report is gone", || async {
        api.get_opt(node).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Before the ledger had its own object, deleting a report erased the
/// history the cooldown is computed from and the record of a pending
/// request: the held Cordon below ran at once, and the signal was
/// forgotten.
#[tokio::test]
async fn deleting_the_report_keeps_the_ledger_and_its_budgets() {
    let w = World::new("ledger").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "SignalParent", "signal": "SIGTERM"},
                {"action": "Cordon", "after": "2s"},
            ]},
            "safety": {"cooldown": "10m", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let node = w.node("ledger").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 98_765, "php-fpm", None)];
    let mut op = w.operator("ledger-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;

    let first = eventually(T, "the signal is requested", || async {
        w.get_report(&node)
            .await
            .spec
            .action_requests
            .into_iter()
            .next()
    })
    .await;
    let target = first.target.clone().unwrap();
    assert_eq!((target.pid, target.start_time), (4242, 98_765));

    // The report goes before the agent answered: the ledger keeps the
    // Started step, and the request comes back under the same id, for the
    // same process, even though the findings now name another one.
    delete_report(&w, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(5151, 11_111, "php-fpm", None)];
    agent.recreate().await;
    let deadline = std::time::Instant::now() + T;
    let again = loop {
        let requests = w.get_report(&node).await.spec.action_requests;
        if let Some(r) = requests.into_iter().next() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the request was not asked again within {T:?}:\n{}",
            op.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(again.id, first.id, "same id: the agent executes it once");
    assert_eq!(
        again.target, first.target,
        "the recorded process, not today's"
    );
    assert_eq!(again.signal, first.signal);
    let step = step_record(
        &w.get_ledger(&node).await,
        &policy,
        Detector::Zombies,
        0,
        ActionKind::SignalParent,
    )
    .unwrap();
    assert_eq!(step.phase, StepPhase::Started);

    agent.result(&first.id, ActionResultOutcome::Signalled);
    agent.write().await;
    eventually(
        T,
        "the signal step is Done and the Cordon held by the cooldown",
        || async {
            let l = w.get_ledger(&node).await;
            let signal = step_record(&l, &policy, Detector::Zombies, 0, ActionKind::SignalParent)?;
            let cordon = step_record(&l, &policy, Detector::Zombies, 1, ActionKind::Cordon)?;
            (signal.phase == StepPhase::Done
                && cordon.phase == StepPhase::Held
                && cordon.reason.as_deref() == Some("Cooldown"))
            .then_some(())
        },
    )
    .await;

    // The report goes again: the cooldown still holds the Cordon.
    delete_report(&w, &node).await;
    agent.recreate().await;
    stays(
        Duration::from_secs(5),
        "the cooldown survives the report",
        || async {
            let l = w.get_ledger(&node).await;
            let held = step_record(&l, &policy, Detector::Zombies, 1, ActionKind::Cordon)
                .is_some_and(|s| s.phase == StepPhase::Held);
            !unschedulable(&w.get_node(&node).await)
                && held
                && l.history
                    .iter()
                    .any(|h| h.action == ActionKind::SignalParent)
        },
    )
    .await;
    assert!(
        w.get_report(&node).await.spec.remediation.is_empty(),
        "nothing of the ledger is streamed to the agent"
    );
    op.terminate().await;
}

/// An operator from before the ledger kind kept it in the report's spec:
/// the first reconcile moves it into the NodeRemediation (cooldown and
/// all) and drops it from the report.
#[tokio::test]
async fn a_ledger_kept_in_the_report_is_moved_to_its_own_object() {
    let w = World::new("migrate").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [{"action": "Cordon"}]},
            "safety": {"cooldown": "10m", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let node = w.node("migrate").await;
    let mut agent = Agent::start(&w.client, &node).await;
    // What the previous operator wrote (its field manager): a disruptive
    // action a minute ago.
    let a_minute_ago = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(60))
        .unwrap();
    let legacy = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthReport",
        "metadata": {"name": node},
        "spec": {"remediation": {"history": [{
            "at": Time(a_minute_ago), "policy": policy, "detector": "zombies",
            "action": "SignalParent", "step": 0,
        }]}},
    });
    let api: Api<NodeHealthReport> = Api::all(w.client.clone());
    api.patch(
        &node,
        &kube::api::PatchParams::apply(nodemedic_crds::conditions::field_manager::OPERATOR),
        &kube::api::Patch::Apply(&legacy),
    )
    .await
    .unwrap();
    let mut op = w.operator("migrate-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    eventually(T, "the ledger moved out of the report", || async {
        let moved = w
            .get_ledger(&node)
            .await
            .history
            .iter()
            .any(|h| h.action == ActionKind::SignalParent);
        let dropped = w.get_report(&node).await.spec.remediation.is_empty();
        (moved && dropped).then_some(())
    })
    .await;
    // The moved history still governs: the Cordon waits for the cooldown.
    stays(
        Duration::from_secs(3),
        "held by the migrated cooldown",
        || async { !unschedulable(&w.get_node(&node).await) },
    )
    .await;
    let cordon = step_record(
        &w.get_ledger(&node).await,
        &policy,
        Detector::Zombies,
        0,
        ActionKind::Cordon,
    )
    .unwrap();
    assert_eq!(cordon.reason.as_deref(), Some("Cooldown"));
    op.terminate().await;
}

/// Before the finalizer, a deleted policy's cordon stayed until another
/// policy's reconcile happened to touch the node, and forever on a node no
/// other policy selects. Now the deleted policy releases it before it goes:
/// uncordoned where it was the only owner, disowned where another policy
/// still holds the cordon.
#[tokio::test]
async fn a_deleted_policy_releases_its_cordons_through_its_finalizer() {
    let w = World::new("final").await;
    let spec = |selector: serde_json::Value| {
        json!({
            "mode": "Enforce",
            "nodeSelector": selector,
            "detectors": {"zombies": {}},
            // The Drain an hour later keeps the ladder from running out.
            "actions": {"zombies": [{"action": "Cordon"}, {"action": "Drain", "after": "1h"}]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%", "maxConcurrentActions": 10},
        })
    };
    let (a, b) = (format!("{}-a", w.id), format!("{}-b", w.id));
    let shared = w.node("final-shared").await;
    let only_a =
        w.cp.create_node(
            "final-only-a",
            &[("nodemedic.io/test", &w.id), ("pool", "a")],
        )
        .await
        .unwrap();
    w.policy(
        &a,
        spec(json!({"matchLabels": {"nodemedic.io/test": w.id}})),
    )
    .await;
    w.policy(
        &b,
        spec(json!({"matchLabels": {"nodemedic.io/test": w.id},
                    "matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]})),
    )
    .await;
    let mut agents = Vec::new();
    for n in [&shared, &only_a] {
        let mut agent = Agent::start(&w.client, n).await;
        agent.set(&a, Detector::Zombies, true);
        agent.set(&b, Detector::Zombies, true);
        agent.write().await;
        agents.push(agent);
    }
    let mut op = w.operator("final-a").start();
    eventually(
        T,
        "both nodes cordoned, the shared one for both",
        || async {
            let s = cordoned_by(&w.get_node(&shared).await);
            let o = cordoned_by(&w.get_node(&only_a).await);
            (s.as_deref() == Some(&format!("{a},{b}")) && o.as_deref() == Some(a.as_str()))
                .then_some(())
        },
    )
    .await;
    assert!(
        w.get_policy(&a)
            .await
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&nodemedic_crds::policy::RELEASE_FINALIZER.to_owned()),
        "the operator puts its finalizer on the policies it manages"
    );

    let api: Api<nodemedic_crds::NodeHealthPolicy> = Api::all(w.client.clone());
    api.delete(&a, &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + T;
    while api.get_opt(&a).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted policy is still there after {T:?}:\n{}",
            op.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = w.get_node(&only_a).await;
    assert!(
        !unschedulable(&o) && cordoned_by(&o).is_none(),
        "the node only the deleted policy cordoned is uncordoned"
    );
    let s = w.get_node(&shared).await;
    assert!(
        unschedulable(&s),
        "the other policy still holds the shared cordon"
    );
    assert_eq!(
        cordoned_by(&s).as_deref(),
        Some(b.as_str()),
        "disowned, not removed"
    );
    assert!(
        step_record(
            &w.get_ledger(&only_a).await,
            &a,
            Detector::Zombies,
            0,
            ActionKind::Cordon
        )
        .is_none(),
        "its episodes are gone"
    );
    op.terminate().await;
}

/// A policy deleted and created again under the same name is a new object:
/// it gets its own status. (Status writes were skipped when the new status
/// equalled the one last written under that name, so the new object stayed
/// without one; found by the three-node kind tier.)
#[tokio::test]
async fn a_policy_created_again_under_the_same_name_gets_its_status() {
    use nodemedic_crds::NodeHealthPolicy;

    let w = World::new("again").await;
    let policy = format!("{}-p", w.id);
    let spec = json!({
        "mode": "Enforce",
        "detectors": {"zombies": {}},
        "actions": {"zombies": [{"action": "Event"}]},
    });
    w.node("again").await;
    let mut op = w.operator("again-a").start();
    op.leads(T).await;
    w.policy(&policy, spec.clone()).await;
    let first = eventually(T, "the first policy's status", || async {
        let p = w.get_policy(&policy).await;
        p.status.is_some().then_some(p)
    })
    .await;
    let api: Api<NodeHealthPolicy> = Api::all(w.client.clone());
    api.delete(&policy, &DeleteParams::default()).await.unwrap();
    eventually(T, "the first policy is gone", || async {
        api.get_opt(&policy).await.unwrap().is_none().then_some(())
    })
    .await;
    w.policy(&policy, spec).await;
    let second = eventually(T, "the second policy's status", || async {
        let p = w.get_policy(&policy).await;
        (p.metadata.uid != first.metadata.uid && p.status.is_some()).then_some(p)
    })
    .await;
    assert_eq!(
        second.status.and_then(|s| s.observed_generation),
        second.metadata.generation
    );
    op.terminate().await;
}
