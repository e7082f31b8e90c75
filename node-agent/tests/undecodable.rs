//! One policy (or its own report) that does not decode never keeps the
//! agent from working.
//!
//! A policy stored under an older, looser CRD (here: the current one without
//! the `maximum` of `zombies.threshold`) with `threshold: 4294967296` stays
//! stored as it is when the current CRD is applied, and no `u32` holds it.
//! Before, the agent's policy watch failed to list as a whole and the agent
//! never became ready; now the agent leaves that policy out, names it (log
//! line, `nodemedic_agent_undecodable_objects`) and works under the others.
//! Runs the real agent binary with the chart's RBAC against the real API
//! server; its own control plane's CRDs are changed, so this is a test
//! binary of its own.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport};
use nodemedic_tests::chart::{agent_kubeconfig, install_chart_rbac};
use nodemedic_tests::{ControlPlane, unique_name};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AGENT: &str = env!("CARGO_BIN_EXE_nodemedic-agent");

async fn cp() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

/// The generated CRD of `kind`, as JSON, with the `maximum` of the field at
/// `path` (property names from the version's schema root) removed when
/// `loose`.
fn crd(kind: &str, path: &[&str], loose: bool) -> Value {
    let (_, crd) = nodemedic_crds::crd_yaml::all()
        .into_iter()
        .find(|(_, c)| c.spec.names.kind == kind)
        .expect("generated CRD");
    let mut v = serde_json::to_value(crd).expect("CRD JSON");
    if loose {
        let mut at = &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for p in path {
            at = &mut at["properties"][*p];
        }
        let removed = at.as_object_mut().and_then(|o| o.remove("maximum"));
        assert!(removed.is_some(), "{kind}: no maximum at {path:?}");
    }
    v
}

/// Applies a CRD and waits until the API server validates with it: `probe`
/// (a dry-run write only the loose CRD accepts) must be accepted (`loose`)
/// or refused.
async fn apply_crd<F, Fut>(crd: &Value, loose: bool, probe: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let client = cp().await.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let name = crd["metadata"]["name"].as_str().expect("name").to_owned();
    crds.patch(
        &name,
        &PatchParams::apply("undecodable-test").force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("apply CRD");
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe().await != loose {
        assert!(Instant::now() < deadline, "{name} not in effect after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tasks(zombie: u64) -> Value {
    json!({"status": {"summary": {"tasks": {
        "processes": 1, "threads": 1, "running": 0, "sleeping": 1,
        "uninterruptible": 0, "zombie": zombie, "stopped": 0, "idle": 0,
    }}}})
}

fn policy_object(name: &str, label: &str, threshold: u64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "DryRun",
            "nodeSelector": {"matchLabels": {"nodemedic.io/test-node": label}},
            "detectors": {"zombies": {"threshold": threshold, "minAge": "0s", "for": "0s"}},
        },
    }))
    .expect("policy object")
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test]
async fn undecodable_policy_leaves_the_agent_ready() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    let policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<NodeHealthPolicy>(&()));
    let label = unique_name("undecodable");
    let node = cp
        .create_node("undecodable", &[("nodemedic.io/test-node", label.as_str())])
        .await
        .expect("node");
    let reports_dyn: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<NodeHealthReport>(&()));
    let probe = policy_object(&unique_name("probe"), &label, 4_294_967_296);
    let policy_probe = || {
        let policies = policies.clone();
        let probe = probe.clone();
        async move {
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            policies.create(&dry, &probe).await.is_ok()
        }
    };
    let report_probe = || {
        let reports = reports_dyn.clone();
        let node = node.clone();
        async move {
            let dry = PatchParams {
                dry_run: true,
                ..PatchParams::default()
            };
            // Another value than the stored one (validation ratcheting).
            reports
                .patch_status(&node, &dry, &Patch::Merge(tasks((1 << 32) + 1)))
                .await
                .is_ok()
        }
    };
    let path = ["spec", "detectors", "zombies", "threshold"];
    let zombie_count = ["status", "summary", "tasks", "zombie"];

    // The agent's own report with a status no u32 holds, and a policy with
    // a threshold no u32 holds, stored under older, looser CRDs; the current
    // ones keep them stored as they are.
    let report: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthReport",
        "metadata": {"name": node},
        "spec": {},
    }))
    .expect("report object");
    reports_dyn
        .create(&PostParams::default(), &report)
        .await
        .expect("create the report");
    apply_crd(&crd("NodeHealthPolicy", &path, true), true, policy_probe).await;
    apply_crd(
        &crd("NodeHealthReport", &zombie_count, true),
        true,
        report_probe,
    )
    .await;
    reports_dyn
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(tasks(1 << 32)),
        )
        .await
        .expect("write the bad report status under the loose CRD");
    let bad = unique_name("bad");
    let good = unique_name("good");
    policies
        .create(
            &PostParams::default(),
            &policy_object(&bad, &label, 4_294_967_296),
        )
        .await
        .expect("create the bad policy under the loose CRD");
    policies
        .create(
            &PostParams::default(),
            &policy_object(&good, &label, 100_000),
        )
        .await
        .expect("create the good policy");
    apply_crd(&crd("NodeHealthPolicy", &path, false), false, policy_probe).await;
    apply_crd(
        &crd("NodeHealthReport", &zombie_count, false),
        false,
        report_probe,
    )
    .await;
    assert!(
        Api::<NodeHealthReport>::all(client.clone())
            .get(&node)
            .await
            .is_err(),
        "the stored report should not decode"
    );
    assert!(
        Api::<NodeHealthPolicy>::all(client.clone())
            .list(&Default::default())
            .await
            .is_err(),
        "a typed list of policies should fail on the stored bad policy"
    );

    let rbac = install_chart_rbac(cp, "undecodable-rbac")
        .await
        .expect("chart RBAC");
    let kubeconfig = agent_kubeconfig(cp, &rbac, &node)
        .await
        .expect("agent kubeconfig");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("agent")));
    let child = Command::new(AGENT)
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("NODE_NAME", &node)
        .env("NODEMEDIC_HOST_ROOT", "/")
        .env("NODEMEDIC_INTERVAL", "1s")
        .env("NODEMEDIC_ADMIN_ADDR", admin.to_string())
        .env("NODEMEDIC_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the agent");
    let agent = Running { child, log };

    // Ready, and reporting under the good policy: its own report, which did
    // not decode, is written over and decodes again.
    let reports: Api<NodeHealthReport> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http_get(admin, "/readyz")
            .await
            .is_some_and(|(c, _)| c == 200);
        let under_good = reports
            .get_opt(&node)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.status)
            .is_some_and(|s| s.conditions.iter().any(|c| c.policy == good));
        if ready && under_good {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent not ready ({ready}) or not reporting under {good} ({under_good}) within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = reports
        .get(&node)
        .await
        .expect("report")
        .status
        .expect("status");
    assert!(
        status.conditions.iter().all(|c| c.policy != bad),
        "the undecodable policy must not be evaluated: {:?}",
        status.conditions
    );

    // Named: metric and log line.
    let (_, metrics) = http_get(admin, "/metrics").await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "nodemedic_agent_undecodable_objects{kind=\"NodeHealthPolicy\"} 1"),
        "metric missing:\n{metrics}"
    );
    let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains(&bad) && l.contains("does not decode") && l.contains("4294967296")),
        "no log line naming {bad} and its error:\n{text}"
    );

    // The report decodes again: no longer counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http_get(admin, "/metrics").await.expect("metrics");
        if metrics
            .lines()
            .any(|l| l == "nodemedic_agent_undecodable_objects{kind=\"NodeHealthReport\"} 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "report still counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Deleted, the policy is no longer counted.
    policies
        .delete(&bad, &Default::default())
        .await
        .expect("delete the bad policy");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http_get(admin, "/metrics").await.expect("metrics");
        if metrics
            .lines()
            .any(|l| l == "nodemedic_agent_undecodable_objects{kind=\"NodeHealthPolicy\"} 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "still counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(agent);
}
