//! Shared helpers of the operator's real-control-plane tests (and the bench):
//! the RBAC the chart ships, the operator binary as a subprocess, an "agent"
//! that writes reports exactly as the node agent does (status by server-side
//! apply with field manager `nodemedic-agent`), and polling with deadlines.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, Detector, field_manager};
use nodemedic_crds::remediation::Remediation;
use nodemedic_crds::report::{ActionResult, PolicyCondition, ProcessRef, Workload, ZombieFinding};
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeHealthReportStatus, NodeRemediation};
use nodemedic_tests::{ControlPlane, unique_name};
use serde_json::json;

pub const OPERATOR_SA: &str = "nodemedic-operator";

pub async fn cp() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The RBAC the Helm chart ships for the operator, exactly: a ClusterRole,
/// and a Role for the Lease in the operator's namespace.
pub fn rbac_manifests(name: &str, namespace: &str) -> Vec<serde_json::Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": ["nodemedic.io"], "resources": ["nodehealthpolicies"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": ["nodemedic.io"], "resources": ["nodehealthpolicies/status"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": ["nodemedic.io"], "resources": ["nodehealthreports"], "verbs": ["get", "list", "watch", "patch", "update"]},
                {"apiGroups": ["nodemedic.io"], "resources": ["nodehealthreports/status"], "verbs": ["get"]},
                {"apiGroups": ["nodemedic.io"], "resources": ["noderemediations"], "verbs": ["get", "list", "watch", "create", "patch", "update"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": namespace}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": namespace}],
        }),
    ]
}

/// One test's world: a namespace for the operator's Lease and pods, a
/// label that the test's policies and nodes carry, and a kubeconfig of the
/// operator's ServiceAccount with exactly the chart's RBAC.
pub struct World {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub id: String,
    pub namespace: String,
    pub kubeconfig: PathBuf,
}

impl World {
    pub async fn new(prefix: &str) -> Self {
        Self::on(cp().await, prefix).await
    }

    /// A world on a given control plane (a private one, for a test that
    /// stops its API server).
    pub async fn on(cp: &'static ControlPlane, prefix: &str) -> Self {
        init_tracing();
        let client = cp.client().await.unwrap();
        let namespace = cp.create_namespace(prefix).await.unwrap();
        let id = namespace.clone();
        for m in rbac_manifests(&format!("nodemedic-operator-{id}"), &namespace) {
            let text = serde_json::to_string(&m).unwrap();
            let out = cp
                .kubectl_with(
                    cp.admin_kubeconfig(),
                    &["apply", "-f", "-"],
                    Some(text.as_bytes()),
                )
                .await
                .unwrap();
            assert!(out.success, "apply RBAC: {out}");
        }
        let kubeconfig = cp
            .service_account_kubeconfig(&namespace, OPERATOR_SA)
            .await
            .unwrap();
        Self {
            cp,
            client,
            id,
            namespace,
            kubeconfig,
        }
    }

    /// The label selecting this test's policies (and nodes).
    pub fn selector(&self) -> String {
        format!("nodemedic.io/test={}", self.id)
    }

    pub async fn node(&self, prefix: &str) -> String {
        self.cp
            .create_node(prefix, &[("nodemedic.io/test", &self.id)])
            .await
            .unwrap()
    }

    /// Applies a policy (YAML spec as JSON), labelled for this test.
    pub async fn policy(&self, name: &str, spec: serde_json::Value) {
        let mut spec = spec;
        if spec.get("nodeSelector").is_none() {
            spec["nodeSelector"] = json!({"matchLabels": {"nodemedic.io/test": self.id}});
        }
        let body = json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthPolicy",
            "metadata": {"name": name, "labels": {"nodemedic.io/test": self.id}},
            "spec": spec,
        });
        let api: Api<NodeHealthPolicy> = Api::all(self.client.clone());
        api.patch(
            name,
            &PatchParams::apply("nodemedic-tests").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("apply policy {name}: {e}"));
    }

    pub async fn get_policy(&self, name: &str) -> NodeHealthPolicy {
        Api::<NodeHealthPolicy>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    pub async fn get_node(&self, name: &str) -> Node {
        Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    pub async fn get_report(&self, name: &str) -> NodeHealthReport {
        Api::<NodeHealthReport>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    /// The operator's ledger for the node (its NodeRemediation's spec;
    /// empty while there is none).
    pub async fn get_ledger(&self, name: &str) -> Remediation {
        Api::<NodeRemediation>::all(self.client.clone())
            .get_opt(name)
            .await
            .unwrap()
            .map(|l| l.spec)
            .unwrap_or_default()
    }

    /// The actions carried out on the node (not planned ones), oldest
    /// first, from the ledger's durable history.
    pub async fn carried_out(&self, node: &str) -> Vec<nodemedic_crds::policy::ActionKind> {
        self.get_ledger(node)
            .await
            .history
            .iter()
            .filter(|h| !h.planned)
            .map(|h| h.action)
            .collect()
    }

    /// Events about an object (by name), oldest first.
    pub async fn events_about(&self, kind: &str, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::all(self.client.clone());
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    /// Starts an operator managing this test's policies.
    pub fn operator(&self, identity: &str) -> OperatorBuilder<'_> {
        OperatorBuilder {
            world: self,
            identity: identity.to_owned(),
            lease_name: format!("nodemedic-{}", self.id),
            lease_duration: "4s".into(),
            extra: Vec::new(),
        }
    }

    /// A pod bound to `node`, Running and Ready (no kubelet: the test sets
    /// the status). Owned by a ReplicaSet (a controller) unless `meta` sets
    /// `ownerReferences` (`[]` for a bare pod); a `spec` key in `meta` is
    /// merged into the pod's spec.
    pub async fn pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        meta: serde_json::Value,
    ) -> Pod {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut body = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs"),
                "uid": "0b6f6a8e-0000-4000-8000-0000000000aa", "controller": true,
            }]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.invalid/pause"}]},
        });
        if let Some(obj) = meta.as_object() {
            for (k, v) in obj {
                if k == "spec" {
                    for (sk, sv) in v.as_object().into_iter().flatten() {
                        body["spec"][sk] = sv.clone();
                    }
                } else {
                    body["metadata"][k] = v.clone();
                }
            }
        }
        let pod: Pod = serde_json::from_value(body).unwrap();
        api.create(&PostParams::default(), &pod).await.unwrap();
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": Time(Timestamp::now())}],
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap()
    }

    /// Creates the namespace `name` if needed (e.g. kube-system exists).
    pub async fn namespace(&self, name: &str) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let _ = api.create(&PostParams::default(), &ns).await;
    }
}

pub struct OperatorBuilder<'w> {
    world: &'w World,
    identity: String,
    lease_name: String,
    lease_duration: String,
    extra: Vec<String>,
}

impl OperatorBuilder<'_> {
    pub fn lease_duration(mut self, d: &str) -> Self {
        self.lease_duration = d.into();
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }

    pub fn start(self) -> Operator {
        let w = self.world;
        let admin = free_port();
        let log = w.cp.dir().join(format!(
            "operator-{}-{}.log",
            self.identity,
            unique_name("log")
        ));
        let file = std::fs::File::create(&log).unwrap();
        let err = file.try_clone().unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodemedic-operator"));
        cmd.arg("run")
            .env_clear()
            .env("KUBECONFIG", &w.kubeconfig)
            .env("NODEMEDIC_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .env(
                "NODEMEDIC_LOG",
                "info,nodemedic_operator=trace,kube_lease_manager=info",
            )
            .env("NODEMEDIC_LEASE_NAME", &self.lease_name)
            .env("NODEMEDIC_LEASE_NAMESPACE", &w.namespace)
            .env("NODEMEDIC_IDENTITY", &self.identity)
            .env("NODEMEDIC_LEASE_DURATION", &self.lease_duration)
            .env("NODEMEDIC_POLICY_SELECTOR", w.selector())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        Operator {
            child,
            log,
            admin: format!("127.0.0.1:{admin}"),
            identity: self.identity,
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The operator binary running as a subprocess.
pub struct Operator {
    pub child: tokio::process::Child,
    pub log: PathBuf,
    pub admin: String,
    pub identity: String,
}

impl Operator {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, as a crash or a lost node would.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }

    /// SIGTERM (graceful) and wait.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        let _ = self.child.kill().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// GET on the admin endpoint: (status code, body).
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.admin).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default();
        Some((code, body))
    }

    pub async fn metrics(&self) -> String {
        self.http_get("/metrics")
            .await
            .map(|x| x.1)
            .unwrap_or_default()
    }

    /// The value of a metric line (exact name with labels).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    pub async fn is_leader(&self) -> bool {
        self.metric("nodemedic_operator_is_leader ").await == Some(1.0)
    }

    /// Waits until this operator leads (panics after `timeout`).
    pub async fn leads(&self, timeout: Duration) {
        self.leads_as(timeout, "operator leads").await;
    }

    /// [`Self::leads`], named `what` in the panic.
    pub async fn leads_as(&self, timeout: Duration, what: &str) {
        eventually(timeout, what, || async {
            self.is_leader().await.then_some(())
        })
        .await;
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`
/// and the context `ctx` gives (e.g. operator logs).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Asserts that `f` stays true for `period` (checked every 150 ms).
pub async fn stays<F, Fut>(period: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        assert!(f().await, "no longer true: {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// An agent, as far as the operator can tell: it creates its node's report
/// (owner reference to the Node) and writes status by server-side apply with
/// field manager `nodemedic-agent`.
pub struct Agent {
    pub client: Client,
    pub node: String,
    pub status: NodeHealthReportStatus,
}

pub fn zombie_parent(
    pid: i32,
    start_time: u64,
    comm: &str,
    pod: Option<(&str, &str, &str)>,
) -> ZombieFinding {
    ZombieFinding {
        parent: ProcessRef {
            host_pid: pid,
            ns_pid: Some(1),
            comm: comm.into(),
            start_time,
            workload: pod.map(|(ns, name, uid)| Workload {
                pod_uid: Some(uid.into()),
                pod_namespace: Some(ns.into()),
                pod_name: Some(name.into()),
                container: Some("c".into()),
                ..Default::default()
            }),
        },
        zombies: 120,
        zombies_past_min_age: 110,
        oldest_age_seconds: 600,
        exceeded: true,
        exceeded_under: vec![],
        exceeded_under_omitted: 0,
    }
}

impl Agent {
    /// Creates the report of `node` as the agent does.
    pub async fn start(client: &Client, node: &str) -> Self {
        create_report(client, node).await;
        let mut agent = Agent {
            client: client.clone(),
            node: node.to_owned(),
            status: NodeHealthReportStatus {
                heartbeat_interval: Some("1m".into()),
                scan_interval: Some("10s".into()),
                agent_version: Some("test".into()),
                healthy: true,
                ..Default::default()
            },
        };
        agent.write().await;
        agent
    }

    /// After `kubectl delete nhr`: creates the report again, with an empty
    /// spec, and writes the status the agent still holds (its conditions
    /// and action results live in its memory, not in the report).
    pub async fn recreate(&mut self) {
        create_report(&self.client, &self.node).await;
        self.write().await;
    }

    /// Writes the status now (a scan).
    pub async fn write(&mut self) {
        self.status.last_scan_time = Some(Time(Timestamp::now()));
        self.write_as_is().await;
    }

    /// Writes the status without touching lastScanTime.
    pub async fn write_as_is(&mut self) {
        self.try_write_as_is()
            .await
            .unwrap_or_else(|e| panic!("agent status of {}: {e}", self.node));
    }

    /// A scan's write that may fail (the API server is away), as the
    /// agent's own writes may.
    pub async fn try_write(&mut self) -> Result<(), kube::Error> {
        self.status.last_scan_time = Some(Time(Timestamp::now()));
        self.try_write_as_is().await
    }

    async fn try_write_as_is(&mut self) -> Result<(), kube::Error> {
        self.status.healthy = self
            .status
            .conditions
            .iter()
            .all(|c| c.status != ConditionStatus::True);
        let body = json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthReport",
            "metadata": {"name": self.node},
            "status": self.status,
        });
        let api: Api<NodeHealthReport> = Api::all(self.client.clone());
        api.patch_status(
            &self.node,
            &PatchParams::apply(field_manager::AGENT).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
    }

    /// Sets the condition of (policy, detector), keeping its transition time
    /// when the status does not change. Returns the transition time.
    pub fn set(&mut self, policy: &str, detector: Detector, firing: bool) -> Timestamp {
        let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
        let status = ConditionStatus::from_bool(firing);
        let existing = self
            .status
            .conditions
            .iter_mut()
            .find(|c| c.policy == policy && c.type_ == detector.condition_type());
        match existing {
            Some(c) if c.status == status => c.last_transition_time.0,
            Some(c) => {
                c.status = status;
                c.reason = ConditionReason::of(firing, firing);
                c.last_transition_time = Time(now);
                c.exceeded_since = firing.then_some(Time(now));
                now
            }
            None => {
                self.status.conditions.push(PolicyCondition {
                    policy: policy.into(),
                    type_: detector.condition_type(),
                    status,
                    reason: ConditionReason::of(firing, firing),
                    message: if firing {
                        "120 zombies under php-fpm (pid 4242)".into()
                    } else {
                        "below threshold".into()
                    },
                    last_transition_time: Time(now),
                    exceeded_since: firing.then_some(Time(now)),
                    scope: None,
                    culprit: None,
                });
                now
            }
        }
    }

    pub fn result(&mut self, id: &str, outcome: nodemedic_crds::report::ActionResultOutcome) {
        self.status.action_results.retain(|r| r.id != id);
        self.status.action_results.push(ActionResult {
            id: id.into(),
            outcome,
            reason: None,
            message: "delivered".into(),
            completed_at: Time(Timestamp::now()),
            follow_up: None,
        });
    }
}

/// Creates (or re-creates) the report of `node` as the agent does, with an
/// empty spec.
async fn create_report(client: &Client, node: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes.get(node).await.unwrap();
    let body = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthReport",
        "metadata": {
            "name": node,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": n.uid().unwrap()}],
        },
        "spec": {},
    });
    let api: Api<NodeHealthReport> = Api::all(client.clone());
    api.patch(
        node,
        &PatchParams::apply(field_manager::AGENT),
        &Patch::Apply(&body),
    )
    .await
    .unwrap();
}

/// The durable record of ladder step `index` (`action`) in the ledger's open
/// episode of (`policy`, `detector`), if the operator has written one.
pub fn step_record(
    r: &Remediation,
    policy: &str,
    detector: Detector,
    index: u32,
    action: nodemedic_crds::policy::ActionKind,
) -> Option<nodemedic_crds::remediation::StepRecord> {
    r.episode(policy, detector)?.step(index, action).cloned()
}

/// The nodemedic annotation saying who cordoned the node.
pub fn cordoned_by(n: &Node) -> Option<String> {
    n.metadata.annotations.as_ref().and_then(|a| {
        a.get(nodemedic_crds::remediation::CORDONED_BY_ANNOTATION)
            .cloned()
    })
}

pub fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

pub fn node_condition(n: &Node, type_: &str) -> Option<(String, String)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

pub fn condition(p: &NodeHealthPolicy, type_: &str) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
