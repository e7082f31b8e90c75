//! Evictions and drains through the real Eviction API: a PodDisruptionBudget
//! that allows no disruption blocks (retried, then Failed, the pod stays);
//! excluded namespaces, the protect annotation, DaemonSet and mirror pods
//! are never evicted; like `kubectl drain`, a pod without a controller or
//! with emptyDir data is refused unless the step opts in.
//!
//! No disruption controller runs in the harness, so the tests fill in each
//! PDB's status themselves. The Eviction API ignores PDBs for pods that are
//! not Running, so the pods are set Running and Ready.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::{ActionKind, ActionOutcome};
use nodemedic_crds::remediation::StepPhase;
use serde_json::json;

const T: Duration = Duration::from_secs(40);

async fn pdb(w: &World, ns: &str, app: &str, allowed: i32) {
    let api: Api<PodDisruptionBudget> = Api::namespaced(w.client.clone(), ns);
    let body: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &body).await.unwrap();
    let status = json!({"status": {
        "observedGeneration": created.metadata.generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": 1,
        "desiredHealthy": 1,
        "expectedPods": 1,
    }});
    api.patch_status(app, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn evict_policy() -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "detectors": {"zombies": {}},
        "actions": {"zombies": [{"action": "EvictPod"}]},
        "safety": {"cooldown": "0s", "maxUnhealthy": "100%", "maxConcurrentActions": 10},
    })
}

async fn step_of(
    w: &World,
    node: &str,
    policy: &str,
) -> Option<nodemedic_crds::remediation::StepRecord> {
    w.get_ledger(node)
        .await
        .episode(policy, Detector::Zombies)?
        .step(0, ActionKind::EvictPod)
        .cloned()
}

#[tokio::test]
async fn a_pdb_that_allows_no_disruption_blocks_the_eviction_until_it_fails() {
    let w = World::new("pdb").await;
    let ns = w.namespace.clone();
    let policy = format!("{}-p", w.id);
    w.policy(&policy, evict_policy()).await;
    let node = w.node("pdb").await;
    let pod = w.pod(&ns, "guarded", &node, json!({})).await;
    pdb(&w, &ns, "guarded", 0).await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(
        31,
        99,
        "app",
        Some((&ns, "guarded", &pod.metadata.uid.clone().unwrap())),
    )];
    let mut op = w.operator("pdb-a").arg("--eviction-timeout=6s").start();
    op.leads(T).await;
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;

    // Retried while refused …
    eventually(T, "several refused attempts", || async {
        let s = step_of(&w, &node, &policy).await?;
        (s.phase == StepPhase::Started && s.attempts >= 2).then_some(())
    })
    .await;
    // … then Failed at the timeout.
    let s = eventually(T, "Failed after the eviction timeout", || async {
        let s = step_of(&w, &node, &policy).await?;
        (s.phase == StepPhase::Failed).then_some(s)
    })
    .await;
    assert_eq!(s.reason.as_deref(), Some("Timeout"));
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .contains("disruption budget"),
        "{s:?}"
    );
    let p: Pod = Api::namespaced(w.client.clone(), &ns)
        .get("guarded")
        .await
        .unwrap();
    assert!(
        p.metadata.deletion_timestamp.is_none(),
        "the pod is still there"
    );
    eventually(
        T,
        "a Failed EvictPod in the status, Degraded=ActionsFailing",
        || async {
            let p = w.get_policy(&policy).await;
            let failed =
                p.status.as_ref()?.recent_actions.iter().any(|a| {
                    a.action == ActionKind::EvictPod && a.outcome == ActionOutcome::Failed
                });
            (failed && condition(&p, "Degraded").map(|c| c.1).as_deref() == Some("ActionsFailing"))
                .then_some(())
        },
    )
    .await;
    // The Event also goes to the pod.
    eventually(T, "RemediationFailed Event on the pod", || async {
        w.events_about("Pod", "guarded")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RemediationFailed"))
    })
    .await;
    op.terminate().await;
}

#[tokio::test]
async fn excluded_namespaces_and_protected_pods_are_skipped_and_evictable_pods_are_evicted() {
    let w = World::new("excl").await;
    let ns = w.namespace.clone();
    let excluded = w.cp.create_namespace("excluded").await.unwrap();
    let policy = format!("{}-p", w.id);
    let mut spec = evict_policy();
    spec["safety"]["excludeNamespaces"] = json!([excluded]);
    w.policy(&policy, spec).await;

    let cases = [
        (
            excluded.as_str(),
            "in-excluded",
            json!({}),
            Some("ExcludedNamespace"),
        ),
        (
            ns.as_str(),
            "protected",
            json!({"annotations": {"nodemedic.io/protect": "true"}}),
            Some("Protected"),
        ),
        (ns.as_str(), "plain", json!({}), None),
    ];
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for (pod_ns, name, meta, _) in &cases {
        let node = w.node("excl").await;
        let pod = w.pod(pod_ns, name, &node, meta.clone()).await;
        let mut agent = Agent::start(&w.client, &node).await;
        agent.status.findings.zombies = vec![zombie_parent(
            31,
            99,
            "app",
            Some((pod_ns, name, &pod.metadata.uid.clone().unwrap())),
        )];
        agent.set(&policy, Detector::Zombies, true);
        agent.write().await;
        nodes.push(node);
        agents.push(agent);
    }
    let mut op = w.operator("excl-a").start();
    for ((pod_ns, name, _, skipped), node) in cases.iter().zip(&nodes) {
        let s = eventually(T, &format!("EvictPod step of {name} settled"), || async {
            let s = step_of(&w, node, &policy).await?;
            s.phase.is_final().then_some(s)
        })
        .await;
        let p: Pod = Api::namespaced(w.client.clone(), pod_ns)
            .get(name)
            .await
            .unwrap();
        match skipped {
            Some(reason) => {
                assert_eq!(
                    (s.phase, s.reason.as_deref()),
                    (StepPhase::Skipped, Some(*reason)),
                    "{name}"
                );
                assert!(
                    p.metadata.deletion_timestamp.is_none(),
                    "{name} must not be evicted"
                );
            }
            None => {
                assert_eq!(s.phase, StepPhase::Done, "{name}: {s:?}");
                assert!(
                    p.metadata.deletion_timestamp.is_some(),
                    "{name} evicted (terminating)"
                );
            }
        }
    }
    eventually(T, "two Skipped EvictPod records in the status", || async {
        let status = w.get_policy(&policy).await.status?;
        let skipped = status
            .recent_actions
            .iter()
            .filter(|a| a.action == ActionKind::EvictPod && a.outcome == ActionOutcome::Skipped)
            .count();
        (skipped == 2).then_some(())
    })
    .await;
    op.terminate().await;
}

#[tokio::test]
async fn a_drain_cordons_and_evicts_every_evictable_pod() {
    let w = World::new("drain").await;
    let ns = w.namespace.clone();
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"hungTasks": {}},
            "actions": {"hungTasks": [{"action": "Drain"}]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let node = w.node("drain").await;
    w.pod(&ns, "web-1", &node, json!({})).await;
    w.pod(&ns, "web-2", &node, json!({})).await;
    pdb(&w, &ns, "web-2", 1).await;
    w.pod(
        &ns,
        "agent-ds",
        &node,
        json!({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "0b6f6a8e-0000-4000-8000-000000000001"}]}),
    )
    .await;
    w.pod(
        &ns,
        "static",
        &node,
        json!({"annotations": {"kubernetes.io/config.mirror": "abc"}}),
    )
    .await;
    let mut agent = Agent::start(&w.client, &node).await;
    let mut op = w.operator("drain-a").start();
    op.leads(T).await;
    agent.set(&policy, Detector::HungTasks, true);
    agent.write().await;
    let s = eventually(T, "drain done", || async {
        let s = step_record(
            &w.get_ledger(&node).await,
            &policy,
            Detector::HungTasks,
            0,
            ActionKind::Drain,
        )?;
        (s.phase == StepPhase::Done).then_some(s)
    })
    .await;
    let progress = s.drain.clone().unwrap();
    assert_eq!(
        (progress.evicted, progress.remaining, progress.skipped),
        (2, 0, 2),
        "{s:?}"
    );
    let n = w.get_node(&node).await;
    assert!(unschedulable(&n));
    assert_eq!(cordoned_by(&n).as_deref(), Some(policy.as_str()));
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &ns);
    for (name, evicted) in [
        ("web-1", true),
        ("web-2", true),
        ("agent-ds", false),
        ("static", false),
    ] {
        let p = pods.get(name).await.unwrap();
        assert_eq!(p.metadata.deletion_timestamp.is_some(), evicted, "{name}");
    }
    op.terminate().await;
}

#[tokio::test]
async fn a_drain_refuses_bare_pods_and_emptydir_data_like_kubectl_drain() {
    let w = World::new("refuse").await;
    let ns = w.namespace.clone();
    let strict = format!("{}-strict", w.id);
    let opted = format!("{}-opted", w.id);
    let spec = |drain: serde_json::Value, pool: &str| {
        let mut step = json!({"action": "Drain"});
        if !drain.is_null() {
            step["drain"] = drain;
        }
        json!({
            "mode": "Enforce",
            "nodeSelector": {"matchLabels": {"refuse-pool": pool}},
            "detectors": {"hungTasks": {}},
            "actions": {"hungTasks": [step]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%", "maxConcurrentActions": 10},
        })
    };
    w.policy(&strict, spec(serde_json::Value::Null, "strict"))
        .await;
    w.policy(
        &opted,
        spec(
            json!({"deleteEmptyDirData": true, "evictUnmanagedPods": true}),
            "opted",
        ),
    )
    .await;
    let emptydir = json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}});
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for (pool, policy) in [("strict", &strict), ("opted", &opted)] {
        let node = w.node("refuse").await;
        let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(w.client.clone());
        nodes_api
            .patch(
                &node,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"refuse-pool": pool}}})),
            )
            .await
            .unwrap();
        w.pod(&ns, &format!("{pool}-managed"), &node, json!({}))
            .await;
        w.pod(
            &ns,
            &format!("{pool}-bare"),
            &node,
            json!({"ownerReferences": []}),
        )
        .await;
        w.pod(&ns, &format!("{pool}-scratch"), &node, emptydir.clone())
            .await;
        let mut agent = Agent::start(&w.client, &node).await;
        agent.set(policy, Detector::HungTasks, true);
        agent.write().await;
        nodes.push(node);
        agents.push(agent);
    }
    let mut op = w.operator("refuse-a").start();
    let drain_of = |node: String, policy: String| {
        let w = &w;
        async move {
            eventually(T, "drain settled", || async {
                let s = step_record(
                    &w.get_ledger(&node).await,
                    &policy,
                    Detector::HungTasks,
                    0,
                    ActionKind::Drain,
                )?;
                s.phase.is_final().then_some(s)
            })
            .await
        }
    };
    let strict_step = drain_of(nodes[0].clone(), strict.clone()).await;
    assert_eq!(
        (strict_step.phase, strict_step.reason.as_deref()),
        (StepPhase::Failed, Some("DrainRefused")),
        "{strict_step:?}"
    );
    let message = strict_step.message.clone().unwrap_or_default();
    assert!(
        message.contains("strict-bare") && message.contains("strict-scratch"),
        "{message}"
    );
    let opted_step = drain_of(nodes[1].clone(), opted.clone()).await;
    assert_eq!(opted_step.phase, StepPhase::Done, "{opted_step:?}");
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &ns);
    for (name, evicted) in [
        ("strict-managed", false),
        ("strict-bare", false),
        ("strict-scratch", false),
        ("opted-managed", true),
        ("opted-bare", true),
        ("opted-scratch", true),
    ] {
        let p = pods.get(name).await.unwrap();
        assert_eq!(p.metadata.deletion_timestamp.is_some(), evicted, "{name}");
    }
    op.terminate().await;
}

/// A drain pass is bounded: with a zero budget and two evictions at a time,
/// each pass evicts one batch and yields, and the next pass takes up the
/// rest without backing off. Every pass is a ledger write, so watching the
/// ledger shows each one.
#[tokio::test]
async fn a_drain_yields_after_its_pass_budget_and_the_next_pass_goes_on() {
    use futures::StreamExt;
    use kube::runtime::watcher;
    use nodemedic_crds::remediation::NodeRemediation;

    let w = World::new("passes").await;
    let ns = w.namespace.clone();
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"hungTasks": {}},
            "actions": {"hungTasks": [{"action": "Drain"}]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let node = w.node("passes").await;
    for i in 0..5 {
        w.pod(&ns, &format!("web-{i}"), &node, json!({})).await;
    }
    let ledgers: Api<NodeRemediation> = Api::all(w.client.clone());
    // The operator starts once the watch is established, so that no write
    // is missed.
    let (watching, established) = tokio::sync::oneshot::channel();
    let seen = tokio::spawn({
        let node = node.clone();
        let policy = policy.clone();
        let mut watching = Some(watching);
        async move {
            let mut passes: Vec<(u32, u32, u32, StepPhase)> = Vec::new();
            let mut events = watcher(
                ledgers,
                watcher::Config::default().fields(&format!("metadata.name={node}")),
            )
            .boxed();
            while let Some(ev) = events.next().await {
                if let Ok(watcher::Event::InitDone) = ev
                    && let Some(tx) = watching.take()
                {
                    let _ = tx.send(());
                }
                let Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = ev else {
                    continue;
                };
                let Some(s) =
                    step_record(&l.spec, &policy, Detector::HungTasks, 0, ActionKind::Drain)
                else {
                    continue;
                };
                let Some(d) = s.drain.clone() else { continue };
                let pass = (d.evicted, d.remaining, s.attempts, s.phase);
                if passes.last() != Some(&pass) {
                    passes.push(pass);
                }
                if s.phase != StepPhase::Started {
                    return passes;
                }
            }
            passes
        }
    });
    tokio::time::timeout(T, established).await.unwrap().unwrap();
    let mut agent = Agent::start(&w.client, &node).await;
    let mut op = w
        .operator("passes-a")
        .arg("--drain-pass-budget=0s")
        .arg("--drain-parallelism=2")
        .start();
    agent.set(&policy, Detector::HungTasks, true);
    agent.write().await;
    let passes = tokio::time::timeout(T, seen).await.unwrap().unwrap();
    // (evicted so far, remaining after the pass, attempts, phase): the
    // write-ahead, two passes cut short (no attempt counted, so no
    // backoff), then the last.
    assert_eq!(
        passes,
        vec![
            (0, 0, 0, StepPhase::Started),
            (2, 3, 0, StepPhase::Started),
            (4, 1, 0, StepPhase::Started),
            (5, 0, 1, StepPhase::Done),
        ]
    );
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &ns);
    for i in 0..5 {
        let p = pods.get(&format!("web-{i}")).await.unwrap();
        assert!(p.metadata.deletion_timestamp.is_some(), "web-{i}");
    }
    op.terminate().await;
}
