//! A ladder through an outage: the API server restarted (etcd kept), or an
//! agent that stops writing for longer than its report stays fresh. Either
//! way the operator must resume the ladder as soon as the report is current
//! again — neither stall on what it judged during the outage nor repeat a
//! step. Both failed against the operator as it was: in kind the ladder
//! stood still for over two minutes after a kube-apiserver restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use nodemedic_crds::NodeHealthPolicy;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::ActionKind;
use nodemedic_tests::{ControlPlane, ControlPlaneOptions};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const TAINT: &str = "nodemedic.io/outage-ladder";

enum Outage {
    /// kube-apiserver stopped for this long, then started again.
    ApiServer(&'static ControlPlane, Duration),
    /// The agent writes nothing (its node cut off, its pod restarting).
    AgentSilent,
}

fn tainted(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

/// Event → Taint → Cordon on a node whose agent scans every second with a
/// 2 s heartbeat (stale after 6 s); the outage falls between the Taint and
/// the Cordon and lasts until the policy says the report is stale. Then
/// the agent writes again and the Cordon — overdue by then — must follow
/// within a few seconds, and every step must have run once.
async fn ladder_through(w: &World, outage: Outage) {
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "Taint", "after": "2s", "taint": {"key": TAINT, "effect": "NoSchedule"}},
                {"action": "Cordon", "after": "10s"},
            ]},
            "safety": {"cooldown": "1s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let node = w.node("outage").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.heartbeat_interval = Some("2s".into());
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    let op = w.operator("outage-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    let writing = Arc::new(AtomicBool::new(true));
    let scanning = tokio::spawn({
        let writing = writing.clone();
        async move {
            loop {
                if writing.load(Ordering::Relaxed) {
                    let _ = agent.try_write().await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    eventually(T, "the Taint step (2 of 3) runs", || async {
        tainted(&w.get_node(&node).await).then_some(())
    })
    .await;
    assert!(
        !unschedulable(&w.get_node(&node).await),
        "the outage must fall between the Taint and the Cordon"
    );

    writing.store(false, Ordering::Relaxed);
    if let Outage::ApiServer(cp, away) = outage {
        cp.stop_apiserver().await.unwrap();
        tokio::time::sleep(away).await;
        cp.start_apiserver().await.unwrap();
        op.leads_as(T, "the operator leads again").await;
    }
    eventually(T, "the policy says the node's report is stale", || async {
        let p = Api::<NodeHealthPolicy>::all(w.client.clone())
            .get(&policy)
            .await
            .ok()?;
        let degraded = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded")?;
        (degraded.status == "True" && degraded.reason == "StaleReports").then_some(())
    })
    .await;
    writing.store(true, Ordering::Relaxed);
    let back = Instant::now();

    let deadline = back + Duration::from_secs(20);
    loop {
        let n = Api::<Node>::all(w.client.clone()).get(&node).await;
        if n.as_ref().is_ok_and(unschedulable) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "want the overdue Cordon (3 of 3) within 20 s of the agent's return; \
             the operator's log:\n{}",
            op.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("cordoned {:?} after the agent was back", back.elapsed());
    stays(Duration::from_secs(4), "each step once", || async {
        w.carried_out(&node).await == [ActionKind::Event, ActionKind::Taint, ActionKind::Cordon]
    })
    .await;
    scanning.abort();
}

#[tokio::test]
async fn a_ladder_resumes_after_an_api_server_restart_without_repeating_a_step() {
    // A private control plane: stopping its API server must disturb no
    // other test.
    let cp: &'static ControlPlane = Box::leak(Box::new(
        ControlPlane::start(ControlPlaneOptions::from_env().unwrap())
            .await
            .unwrap_or_else(|e| panic!("private control plane: {e}")),
    ));
    let w = World::on(cp, "apiserver").await;
    ladder_through(&w, Outage::ApiServer(cp, Duration::from_secs(10))).await;
    cp.shutdown();
}

#[tokio::test]
async fn a_ladder_resumes_as_soon_as_a_silent_agent_writes_again() {
    let w = World::new("silent").await;
    ladder_through(&w, Outage::AgentSilent).await;
}

/// A status write that fails must not hide what its reconcile did: the
/// steps are in the ledger by then (so they are never recorded again), and
/// the next status that is written must still list them. Status writes of
/// one policy are refused by an admission policy while its Event and Taint
/// steps run; once writes are accepted again, `recentActions` shows both.
/// Failed against the operator as it was: the records of a reconcile whose
/// status write failed were dropped.
#[tokio::test]
async fn actions_taken_while_status_writes_fail_show_in_the_next_status() {
    let w = World::new("status-refused").await;
    let policy = format!("{}-p", w.id);
    let admission = format!("{}-refuse-status", w.id);
    let manifests = format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {admission}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [nodemedic.io]
        apiVersions: ["*"]
        operations: [CREATE, UPDATE]
        resources: [nodehealthpolicies/status]
  validations:
    - expression: "object.metadata.name != '{policy}'"
      message: "test: status writes of this policy are refused"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {admission}}}
spec:
  policyName: {admission}
  validationActions: [Deny]
"#
    );
    let out =
        w.cp.kubectl_with(
            w.cp.admin_kubeconfig(),
            &["apply", "-f", "-"],
            Some(manifests.as_bytes()),
        )
        .await
        .unwrap();
    assert!(out.success, "apply the admission policy: {out}");
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "Taint", "taint": {"key": TAINT, "effect": "NoSchedule"}},
            ]},
            "safety": {"cooldown": "1s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    // The refusal is in force (admission policies take a moment). The
    // probe is a dry run: admission judges it, nothing is stored.
    let api: Api<NodeHealthPolicy> = Api::all(w.client.clone());
    let status_write_accepted = || async {
        let body = json!({"apiVersion": "nodemedic.io/v1alpha1", "kind": "NodeHealthPolicy",
                          "metadata": {"name": policy}, "status": {"matchedNodes": 0}});
        api.patch_status(
            &policy,
            &kube::api::PatchParams::apply("nodemedic-tests-probe")
                .force()
                .dry_run(),
            &kube::api::Patch::Apply(&body),
        )
        .await
        .is_ok()
    };
    eventually(T, "status writes of the policy are refused", || async {
        (!status_write_accepted().await).then_some(())
    })
    .await;
    let node = w.node("refused").await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    let op = w.operator("refused-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    eventually(T, "the Event and Taint steps ran (ledger)", || async {
        (w.carried_out(&node).await == [ActionKind::Event, ActionKind::Taint]).then_some(())
    })
    .await;
    // The ledger is written ahead of the steps it records.
    eventually(T, "the node is tainted", || async {
        tainted(&w.get_node(&node).await).then_some(())
    })
    .await;
    let listed = |p: &NodeHealthPolicy| -> Vec<ActionKind> {
        p.status
            .iter()
            .flat_map(|s| &s.recent_actions)
            .filter(|a| a.node == node)
            .map(|a| a.action)
            .collect()
    };
    assert_eq!(
        listed(&w.get_policy(&policy).await),
        [],
        "the status was written while writes were to be refused"
    );

    let out =
        w.cp.kubectl_with(
            w.cp.admin_kubeconfig(),
            &[
                "delete",
                &format!("validatingadmissionpolicybinding/{admission}"),
                &format!("validatingadmissionpolicy/{admission}"),
            ],
            None,
        )
        .await
        .unwrap();
    assert!(out.success, "delete the admission policy: {out}");
    // The API server enforces a deleted admission policy for a moment yet.
    eventually(
        T,
        "status writes of the policy are accepted again",
        || async { status_write_accepted().await.then_some(()) },
    )
    .await;
    // Each refused write doubled the policy's error backoff, and a scan
    // that changes nothing but lastScanTime reconciles nothing; an edit of
    // the policy does at once (no step is left for it to change).
    api.patch(
        &policy,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"safety": {"cooldown": "2s"}}})),
    )
    .await
    .expect("edit the policy");
    let deadline = Instant::now() + T;
    loop {
        let _ = agent.try_write().await;
        let p = w.get_policy(&policy).await;
        let mut have = listed(&p);
        have.sort_by_key(|a| format!("{a:?}"));
        if have == [ActionKind::Event, ActionKind::Taint] {
            eprintln!("recentActions: {:?}", p.status.map(|s| s.recent_actions));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "want the Event and the Taint in recentActions once status writes are accepted; have {have:?}; the operator's log:\n{}",
            op.log_tail(30)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
