//! Objects that do not decode never stop the operator.
//!
//! A policy with `zombies.threshold: 4294967296` and a report whose status
//! holds a task count of 4294967296 are stored under an older, looser CRD
//! (the current one without those two `maximum`s); the current CRD is then
//! applied, and both stay stored as they are. No `u32` holds them: a typed
//! watch list fails as a whole. The real operator binary (chart RBAC) must
//! reconcile the good policy and the other node, and name both objects: log
//! lines, `nodemedic_operator_undecodable_objects{kind}`, and on the policy
//! a `Ready=False` condition with reason `Undecodable` and a Warning Event.
//! This binary changes its control plane's CRDs, so it is a binary of its own.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::ActionOutcome;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(45);

/// The generated CRD of `kind` as JSON; `loose`: without the `maximum` of
/// the field at `path`.
fn crd(kind: &str, path: &[&str], loose: bool) -> Value {
    let (_, crd) = nodemedic_crds::crd_yaml::all()
        .into_iter()
        .find(|(_, c)| c.spec.names.kind == kind)
        .unwrap();
    let mut v = serde_json::to_value(crd).unwrap();
    if loose {
        let mut at = &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for p in path {
            at = &mut at["properties"][*p];
        }
        assert!(
            at.as_object_mut()
                .and_then(|o| o.remove("maximum"))
                .is_some(),
            "{kind}: no maximum at {path:?}"
        );
    }
    v
}

/// Applies a CRD and waits until `probe` (a write that only the loose CRD
/// accepts) is accepted (`loose`) or refused.
async fn apply_crd<F, Fut>(w: &World, crd: &Value, loose: bool, probe: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let crds: Api<CustomResourceDefinition> = Api::all(w.client.clone());
    let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
    crds.patch(
        &name,
        &PatchParams::apply("undecodable-test").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe().await != loose {
        assert!(Instant::now() < deadline, "{name} not in effect after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const THRESHOLD: [&str; 4] = ["spec", "detectors", "zombies", "threshold"];
const ZOMBIE_COUNT: [&str; 4] = ["status", "summary", "tasks", "zombie"];

fn policy_body(w: &World, name: &str, threshold: u64) -> Value {
    json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name, "labels": {"nodemedic.io/test": w.id}},
        "spec": {
            "mode": "DryRun",
            "nodeSelector": {"matchLabels": {"nodemedic.io/test": w.id}},
            "detectors": {"zombies": {"threshold": threshold}},
            "actions": {"zombies": [{"action": "Event"}]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
        },
    })
}

fn tasks(zombie: u64) -> Value {
    json!({"status": {"summary": {"tasks": {
        "processes": 1, "threads": 1, "running": 0, "sleeping": 1,
        "uninterruptible": 0, "zombie": zombie, "stopped": 0, "idle": 0,
    }}}})
}

#[tokio::test]
async fn undecodable_objects_do_not_stop_the_operator() {
    let w = World::new("undecodable").await;
    let policies: Api<DynamicObject> = Api::all_with(
        w.client.clone(),
        &ApiResource::erase::<NodeHealthPolicy>(&()),
    );
    let reports: Api<DynamicObject> = Api::all_with(
        w.client.clone(),
        &ApiResource::erase::<NodeHealthReport>(&()),
    );
    let good_node = w.node("good").await;
    let bad_node = w.node("bad").await;
    let good = format!("{}-good", w.id);
    let bad = format!("{}-bad", w.id);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let policy_probe = || {
        let body: DynamicObject =
            serde_json::from_value(policy_body(&w, &format!("{}-probe", w.id), 1 << 32)).unwrap();
        let policies = policies.clone();
        let dry = dry.clone();
        async move { policies.create(&dry, &body).await.is_ok() }
    };

    // The bad report's node: a report the operator can read, then a status
    // no u32 holds, written while the loose CRD is in effect.
    let mut bad_agent = Agent::start(&w.client, &bad_node).await;
    bad_agent.write().await;
    let report_probe = || {
        let reports = reports.clone();
        let bad_node = bad_node.clone();
        async move {
            let params = PatchParams {
                dry_run: true,
                ..PatchParams::default()
            };
            // Another value than the stored one: the API server lets an
            // unchanged invalid value stay (validation ratcheting).
            reports
                .patch_status(&bad_node, &params, &Patch::Merge(tasks((1 << 32) + 1)))
                .await
                .is_ok()
        }
    };

    apply_crd(
        &w,
        &crd("NodeHealthPolicy", &THRESHOLD, true),
        true,
        policy_probe,
    )
    .await;
    apply_crd(
        &w,
        &crd("NodeHealthReport", &ZOMBIE_COUNT, true),
        true,
        report_probe,
    )
    .await;
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(policy_body(&w, &bad, 1 << 32)).unwrap(),
        )
        .await
        .unwrap();
    reports
        .patch_status(
            &bad_node,
            &PatchParams::default(),
            &Patch::Merge(tasks(1 << 32)),
        )
        .await
        .unwrap();
    apply_crd(
        &w,
        &crd("NodeHealthPolicy", &THRESHOLD, false),
        false,
        policy_probe,
    )
    .await;
    apply_crd(
        &w,
        &crd("NodeHealthReport", &ZOMBIE_COUNT, false),
        false,
        report_probe,
    )
    .await;
    assert!(
        Api::<NodeHealthPolicy>::all(w.client.clone())
            .list(&Default::default())
            .await
            .is_err()
            && Api::<NodeHealthReport>::all(w.client.clone())
                .list(&Default::default())
                .await
                .is_err(),
        "typed lists should fail on the stored objects"
    );

    // The good policy, firing on the good node.
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(policy_body(&w, &good, 50)).unwrap(),
        )
        .await
        .unwrap();
    let mut agent = Agent::start(&w.client, &good_node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    agent.set(&good, Detector::Zombies, true);
    agent.write().await;

    let op = w.operator("undecodable-a").start();
    // On failure, the operator's log explains.
    struct LogOnPanic<'a>(&'a Operator);
    impl Drop for LogOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("--- operator log ---\n{}", self.0.log_tail(80));
            }
        }
    }
    let _log = LogOnPanic(&op);

    // The good policy is reconciled: its status says what happened on the
    // good node.
    eventually(
        T,
        "a Planned Event for the good node in the good policy",
        || async {
            let s = w.get_policy(&good).await.status?;
            s.recent_actions
                .iter()
                .any(|a| a.node == good_node && a.outcome == ActionOutcome::Planned)
                .then_some(())
        },
    )
    .await;

    // The bad policy is named on itself.
    let condition = eventually(T, "Ready=False/Undecodable on the bad policy", || async {
        let p = policies.get(&bad).await.ok()?;
        let conditions = p.data["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find(|c| c["type"] == "Ready" && c["reason"] == "Undecodable")
    })
    .await;
    assert_eq!(condition["status"], "False", "{condition}");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("4294967296") && message.contains("spec.detectors.zombies.threshold"),
        "the condition should name the value and the field: {message}"
    );
    eventually(
        T,
        "a Warning Event Undecodable on the bad policy",
        || async {
            let events = w.events_about("NodeHealthPolicy", &bad).await;
            events
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Undecodable")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        },
    )
    .await;

    // Counted and logged, both kinds.
    for kind in ["NodeHealthPolicy", "NodeHealthReport"] {
        let series = format!("nodemedic_operator_undecodable_objects{{kind=\"{kind}\"}} ");
        eventually(T, &format!("{series}= 1"), || async {
            (op.metric(&series).await == Some(1.0)).then_some(())
        })
        .await;
    }
    let log = op.log_text();
    for name in [&bad, &bad_node] {
        assert!(
            log.lines()
                .any(|l| l.contains(name.as_str()) && l.contains("does not decode")),
            "no log line naming {name}:\n{}",
            op.log_tail(80)
        );
    }
    drop(_log);
    drop(op);
    policies.delete(&bad, &Default::default()).await.unwrap();
    reports
        .delete(&bad_node, &Default::default())
        .await
        .unwrap();
}
