//! The Helm chart (`charts/nodemedic`) against helm and the real API server:
//!
//! * `helm lint --strict` with the default and the all-features values;
//! * `values.schema.json` rejects bad values with helm's clear message;
//! * the pod templates carry the contract's security settings; alert and
//!   dashboard queries are valid PromQL over the contract's metric names;
//! * every rendered object passes a server-side dry run (strict field
//!   validation), with minimal ServiceMonitor/PrometheusRule CRDs installed from
//!   `tests/fixtures/`; the operator's pod passes Pod Security "restricted";
//! * the rendered RBAC is exactly the contract, and — installed for real — the
//!   agent's pod-bound token can write only its own node's report (the
//!   ValidatingAdmissionPolicy), while the operator's token can do every
//!   remediation it needs;
//! * CRD upgrades: `helm upgrade` leaves CRDs alone, the documented
//!   `kubectl apply --server-side --force-conflicts -f charts/nodemedic/crds/`
//!   brings them up to date (on a private control plane).
//!
//! All tests of this binary share one control plane (see `ControlPlane::shared`),
//! except the CRD upgrade test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams,
    Patch, PatchParams, PostParams,
};
use kube::{Client, Error as KubeError};
use nodemedic_tests::assets::pinned_kubernetes_version;
use nodemedic_tests::chart::{
    chart_dir, helm_offline, install_chart_rbac, manifests, pod_bound_token, to_yaml_stream,
    token_client,
};
use nodemedic_tests::{CmdOutput, ControlPlane, ControlPlaneOptions, repo_root, unique_name};
use serde_json::{Value, json};

const ALL_FEATURES: &str = "ci/all-features-values.yaml";
const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";

async fn cp() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

/// helm is part of the provisioned binaries; only a user's own `KUBEBUILDER_ASSETS`
/// may lack it, and then the chart tests skip loudly (as `control_plane.rs` does).
fn skip_without_helm() -> bool {
    let assets = match nodemedic_tests::Assets::locate() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    if assets.helm.is_none() && std::env::var_os("KUBEBUILDER_ASSETS").is_some() {
        eprintln!("SKIP: no helm in KUBEBUILDER_ASSETS={:?}", assets.dir);
        return true;
    }
    false
}

fn chart() -> String {
    chart_dir().display().to_string()
}

fn all_features_values() -> String {
    chart_dir().join(ALL_FEATURES).display().to_string()
}

async fn helm_ok(args: &[&str]) -> CmdOutput {
    let out = helm_offline(args).await.expect("run helm");
    assert!(out.success, "helm {args:?} failed:\n{out}");
    out
}

/// `helm template` renders for Kubernetes 1.20 unless told otherwise, and the chart
/// requires 1.33 (Chart.yaml `kubeVersion`): render for the version under test.
fn kube_version() -> String {
    format!("--kube-version={}", pinned_kubernetes_version())
}

/// `helm template <release> <chart> -n <namespace> <extra...>`, parsed.
async fn render(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let kv = kube_version();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
        kv.as_str(),
    ];
    args.extend_from_slice(extra);
    let out = helm_ok(&args).await;
    manifests(&out.stdout).expect("rendered chart parses as YAML")
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or("")
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn component(obj: &Value) -> &str {
    obj["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or("")
}

fn find<'a>(objs: &'a [Value], k: &str, comp: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind(o) == k && component(o) == comp)
        .unwrap_or_else(|| panic!("no {k} of component {comp:?} in the rendered chart"))
}

/// Retry `f` until it succeeds (RBAC and admission policies reach the API server's
/// authorizer and admission plugin through informers: allow them to propagate).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what}: still failing after 30s: {e}"),
        }
    }
}

/// Assert that `res` is an API error with `code` whose message contains every one of `needles`.
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(res: Result<T, KubeError>, code: u16, needles: &[&str]) {
    match res {
        Err(KubeError::Api(s)) => {
            assert_eq!(s.code, code, "expected {code}, got {s:?}");
            for n in needles {
                assert!(
                    s.message.contains(n),
                    "message does not contain {n:?}: {}",
                    s.message
                );
            }
        }
        other => panic!("expected a {code} denial containing {needles:?}, got {other:?}"),
    }
}

fn report_api(client: Client) -> (Api<DynamicObject>, ApiResource) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nodemedic.io", "v1alpha1", "NodeHealthReport"),
        "nodehealthreports",
    );
    (Api::all_with(client, &ar), ar)
}

fn policy_api(client: Client) -> (Api<DynamicObject>, ApiResource) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nodemedic.io", "v1alpha1", "NodeHealthPolicy"),
        "nodehealthpolicies",
    );
    (Api::all_with(client, &ar), ar)
}

fn report(ar: &ApiResource, name: &str, spec: Value) -> DynamicObject {
    DynamicObject::new(name, ar).data(json!({ "spec": spec }))
}

fn action_request(id: &str) -> Value {
    json!({
        "id": id,
        "action": "SignalParent",
        "target": {"pid": 4242, "startTime": 123456, "comm": "php-fpm"},
        "signal": "SIGCHLD",
        "policy": "zombie-reaper",
        "requestedAt": "2026-01-01T00:00:00Z",
    })
}

/// The current time as the API server's `Time` (RFC 3339, seconds).
fn now() -> Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).expect("time")
}

/// The current time as the API server's `MicroTime` (RFC 3339, microseconds).
fn now_micro() -> Value {
    serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).expect("micro time")
}

// ---------------------------------------------------------------------------
// helm alone
// ---------------------------------------------------------------------------

#[tokio::test]
async fn chart_lints_strictly_with_default_and_all_features_values() {
    if skip_without_helm() {
        return;
    }
    let chart = chart();
    let values = all_features_values();
    for extra in [vec![], vec!["--values", values.as_str()]] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(extra.iter().copied());
        let out = helm_ok(&args).await;
        assert!(
            out.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

/// Bad values fail `helm template` (and so `helm install`/`upgrade`) with a message
/// that names the key and the rule.
#[tokio::test]
async fn values_schema_rejects_bad_values_with_clear_messages() {
    if skip_without_helm() {
        return;
    }
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "operator.replicas=-1"],
            &["/operator/replicas", "minimum: got -1, want 0"],
        ),
        (
            &["--set", "agent.logFormat=json"],
            &["/agent", "additional properties 'logFormat' not allowed"],
        ),
        // No way to hand the agent SYS_PTRACE through values.
        (
            &["--set", "agent.capabilities.sysPtrace=true"],
            &[
                "/agent/capabilities",
                "additional properties 'sysPtrace' not allowed",
            ],
        ),
        (
            &["--set", "agent.log.format=xml"],
            &["/agent/log/format", "value must be one of 'json', 'text'"],
        ),
        (
            &["--set", "operator.log.format=JSON"],
            &[
                "/operator/log/format",
                "value must be one of 'json', 'text'",
            ],
        ),
        (
            &["--set", "agent.interval=10 seconds"],
            &["/agent/interval", "does not match pattern"],
        ),
        (
            &["--set", "image.digest=sha256:1234"],
            &["/image/digest", "does not match pattern"],
        ),
        (
            &[
                "--set",
                "image.repository=ghcr.io/nodemedic/nodemedic:0.1.0",
            ],
            &["/image/repository", "does not match pattern"],
        ),
        (
            &["--set", "defaultPolicy.mode=Yolo"],
            &[
                "/defaultPolicy/mode",
                "value must be one of 'Observe', 'DryRun', 'Enforce'",
            ],
        ),
        (
            &["--set", "agent.rebootSentinel.path=/reboot-required"],
            &["/agent/rebootSentinel/path", "does not match pattern"],
        ),
        // Kured's default would mount the host's /var/run (containerd.sock
        // in it) read-write into a uid-0 pod; shared directories are refused.
        (
            &[
                "--set",
                "agent.rebootSentinel.path=/var/run/reboot-required",
            ],
            &["/agent/rebootSentinel/path"],
        ),
        (
            &[
                "--set",
                "agent.rebootSentinel.path=/etc/kubernetes/reboot-required",
            ],
            &["/agent/rebootSentinel/path"],
        ),
        (
            &[
                "--set",
                "agent.rebootSentinel.path=/var/lib/reboot-required",
            ],
            &["/agent/rebootSentinel/path"],
        ),
        (
            &[
                "--set",
                "agent.rebootSentinel.path=/var/lib/nodemedic/../../run/reboot-required",
            ],
            &["/agent/rebootSentinel/path"],
        ),
        // Two agents on one node during a surge rollout would each execute
        // the same action requests.
        (
            &["--set", "agent.updateStrategy.rollingUpdate.maxSurge=1"],
            &[
                "/agent/updateStrategy/rollingUpdate/maxSurge",
                "value must be one of",
            ],
        ),
        (
            &["--set-string", "operator.replicas=2"],
            &["/operator/replicas", "got string, want integer"],
        ),
        // Rules the schema cannot express fail from the templates, just as clearly.
        (
            &["--set", "operator.leaderElection.enabled=false"],
            &["operator.replicas > 1 needs operator.leaderElection.enabled=true"],
        ),
        (
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "agent.service.enabled=false",
                "--set",
                "operator.service.enabled=false",
            ],
            &["metrics.serviceMonitor.enabled needs agent.service.enabled"],
        ),
    ];
    let chart = chart();
    let kv = kube_version();
    for (set, needles) in cases {
        let mut args = vec!["template", "nodemedic", chart.as_str(), kv.as_str()];
        args.extend_from_slice(set);
        let out = helm_offline(&args).await.expect("run helm");
        assert!(!out.success, "helm template {set:?} must fail:\n{out}");
        for n in *needles {
            assert!(
                out.stderr.contains(n),
                "helm template {set:?}: stderr lacks {n:?}:\n{}",
                out.stderr
            );
        }
        if !needles[0].contains("needs") {
            assert!(
                out.stderr.contains(
                    "values don't meet the specifications of the schema(s) in the following chart(s)"
                ),
                "{}",
                out.stderr
            );
        }
    }
    // Valid corner cases pass.
    for set in [
        vec!["--set", "operator.replicas=0"],
        vec![
            "--set",
            "operator.replicas=1",
            "--set",
            "operator.leaderElection.enabled=false",
        ],
        // (`\,` escapes the comma of a tracing filter for --set)
        vec!["--set", r"agent.log.level=nodemedic_agent=debug\,kube=warn"],
        vec!["--set", "image.tag=v0.1.0-rc.1"],
        vec!["--set", "agent.updateStrategy.rollingUpdate.maxSurge=0"],
        vec![
            "--set",
            "agent.rebootSentinel.enabled=true",
            "--set",
            "agent.rebootSentinel.path=/run/nodemedic/reboot-required",
        ],
    ] {
        let mut args = vec!["template", "nodemedic", chart.as_str(), kv.as_str()];
        args.extend(set.iter().copied());
        helm_ok(&args).await;
    }
}

/// The agent's and the operator's RBAC rules are exactly the contract of the
/// brief and DESIGN.md (every permission here is tested for real below).
#[tokio::test]
async fn rendered_rbac_is_exactly_the_contract() {
    if skip_without_helm() {
        return;
    }
    fn rules(obj: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for r in obj["rules"].as_array().expect("rules") {
            for g in r["apiGroups"].as_array().expect("apiGroups") {
                for res in r["resources"].as_array().expect("resources") {
                    for v in r["verbs"].as_array().expect("verbs") {
                        out.insert(format!(
                            "{}/{} {}",
                            g.as_str().expect("group"),
                            res.as_str().expect("resource"),
                            v.as_str().expect("verb")
                        ));
                    }
                }
            }
        }
        out
    }
    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }
    let objs = render("nodemedic", "nodemedic", &[]).await;

    let agent = find(&objs, "ClusterRole", "agent");
    assert_eq!(
        rules(agent),
        set(&[
            "nodemedic.io/nodehealthpolicies get",
            "nodemedic.io/nodehealthpolicies list",
            "nodemedic.io/nodehealthpolicies watch",
            "nodemedic.io/nodehealthreports get",
            "nodemedic.io/nodehealthreports list",
            "nodemedic.io/nodehealthreports watch",
            "nodemedic.io/nodehealthreports create",
            "nodemedic.io/nodehealthreports/status get",
            "nodemedic.io/nodehealthreports/status patch",
            "nodemedic.io/nodehealthreports/status update",
            "/nodes get",
            "/nodes list",
            "/nodes watch",
        ])
    );
    let operator = find(&objs, "ClusterRole", "operator");
    assert_eq!(
        rules(operator),
        set(&[
            "nodemedic.io/nodehealthpolicies get",
            "nodemedic.io/nodehealthpolicies list",
            "nodemedic.io/nodehealthpolicies watch",
            "nodemedic.io/nodehealthpolicies patch",
            "nodemedic.io/nodehealthpolicies/status get",
            "nodemedic.io/nodehealthpolicies/status patch",
            "nodemedic.io/nodehealthpolicies/status update",
            "nodemedic.io/nodehealthreports get",
            "nodemedic.io/nodehealthreports list",
            "nodemedic.io/nodehealthreports watch",
            "nodemedic.io/nodehealthreports patch",
            "nodemedic.io/nodehealthreports update",
            "nodemedic.io/nodehealthreports/status get",
            "nodemedic.io/noderemediations get",
            "nodemedic.io/noderemediations list",
            "nodemedic.io/noderemediations watch",
            "nodemedic.io/noderemediations create",
            "nodemedic.io/noderemediations patch",
            "nodemedic.io/noderemediations update",
            "/nodes get",
            "/nodes list",
            "/nodes watch",
            "/nodes patch",
            "/nodes/status patch",
            "/pods get",
            "/pods list",
            "/pods/eviction create",
            "events.k8s.io/events create",
            "events.k8s.io/events patch",
        ])
    );
    // The agent's node Lease, in the fixed namespace every release's agents
    // share; no list, watch, patch or delete.
    let agent_role = find(&objs, "Role", "agent");
    assert_eq!(agent_role["metadata"]["namespace"], "kube-node-lease");
    assert_eq!(
        rules(agent_role),
        set(&[
            "coordination.k8s.io/leases get",
            "coordination.k8s.io/leases create",
            "coordination.k8s.io/leases update",
        ])
    );
    let agent_binding = find(&objs, "RoleBinding", "agent");
    assert_eq!(agent_binding["metadata"]["namespace"], "kube-node-lease");
    let role = find(&objs, "Role", "operator");
    assert_eq!(role["metadata"]["namespace"], "nodemedic");
    assert_eq!(
        rules(role),
        set(&[
            "coordination.k8s.io/leases get",
            "coordination.k8s.io/leases list",
            "coordination.k8s.io/leases watch",
            "coordination.k8s.io/leases create",
            "coordination.k8s.io/leases update",
            "coordination.k8s.io/leases patch",
        ])
    );
    // The roles for people (kubectl nodemedic): read-only, and read plus the
    // patches a pause needs; bound to nobody.
    let by_name = |n: &str| {
        objs.iter()
            .find(|o| kind(o) == "ClusterRole" && name(o) == n)
            .unwrap_or_else(|| panic!("no ClusterRole {n}"))
    };
    let viewer = [
        "nodemedic.io/nodehealthpolicies get",
        "nodemedic.io/nodehealthpolicies list",
        "nodemedic.io/nodehealthpolicies watch",
        "nodemedic.io/nodehealthreports get",
        "nodemedic.io/nodehealthreports list",
        "nodemedic.io/nodehealthreports watch",
        "nodemedic.io/noderemediations get",
        "nodemedic.io/noderemediations list",
        "nodemedic.io/noderemediations watch",
        "/nodes get",
        "/nodes list",
        "/nodes watch",
        "events.k8s.io/events get",
        "events.k8s.io/events list",
        "coordination.k8s.io/leases get",
        "coordination.k8s.io/leases list",
    ];
    assert_eq!(rules(by_name("nodemedic-kubectl-viewer")), set(&viewer));
    let mut pauser = viewer.to_vec();
    pauser.extend(["nodemedic.io/nodehealthpolicies patch", "/nodes patch"]);
    assert_eq!(rules(by_name("nodemedic-kubectl-pauser")), set(&pauser));
    // No other RBAC objects, and each binding names its component's ServiceAccount.
    let rbac_kinds = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let count = objs
        .iter()
        .filter(|o| rbac_kinds.contains(&kind(o)))
        .count();
    assert_eq!(
        count, 10,
        "4 ClusterRoles (2 for people, unbound), 2 ClusterRoleBindings, 2 Roles, 2 RoleBindings"
    );
    for b in objs
        .iter()
        .filter(|o| kind(o) == "ClusterRoleBinding" || kind(o) == "RoleBinding")
    {
        let sa = find(&objs, "ServiceAccount", component(b));
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": name(sa), "namespace": "nodemedic"}]),
            "{}",
            name(b)
        );
    }
}

/// The pod templates carry the security settings of the contract.
#[tokio::test]
async fn pod_templates_have_the_documented_security_settings() {
    if skip_without_helm() {
        return;
    }
    let objs = render("nodemedic", "nodemedic", &[]).await;
    let ds = find(&objs, "DaemonSet", "agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    let c = &pod["containers"][0];
    assert_eq!(
        c["command"],
        json!(["/usr/local/bin/nodemedic-agent", "run"])
    );
    assert_eq!(
        c["securityContext"],
        json!({
            "privileged": false,
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            // Only KILL: no SYS_PTRACE (it opens other pods' files through
            // /proc/PID/root) and no DAC_READ_SEARCH (the fd count is stat()'s
            // st_size since Linux 6.2); node-agent/tests/capabilities.rs
            // proves the agent's scan needs nothing more.
            "capabilities": {"drop": ["ALL"], "add": ["KILL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        assert_eq!(m["readOnly"], true, "{m}");
    }
    let host_paths: Vec<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["hostPath"]["path"].as_str().expect("hostPath"))
        .collect();
    assert_eq!(
        host_paths,
        [
            "/proc",
            "/sys/fs/cgroup",
            "/var/log/pods",
            "/var/log/containers"
        ]
    );
    let env: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("env name"))
        .collect();
    assert!(!env.contains(&"NODEMEDIC_REBOOT_SENTINEL"), "{env:?}");

    // DAC_READ_SEARCH only on request (kernels before 6.2).
    let objs = render(
        "nodemedic",
        "nodemedic",
        &["--set", "agent.capabilities.dacReadSearch=true"],
    )
    .await;
    let c = &find(&objs, "DaemonSet", "agent")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["securityContext"]["capabilities"],
        json!({"drop": ["ALL"], "add": ["KILL", "DAC_READ_SEARCH"]})
    );

    // With the reboot hand-off, exactly the sentinel's directory becomes writable.
    let objs = render(
        "nodemedic",
        "nodemedic",
        &["--set", "agent.rebootSentinel.enabled=true"],
    )
    .await;
    let pod = &find(&objs, "DaemonSet", "agent")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let writable: Vec<&Value> = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .filter(|m| m["readOnly"] != true)
        .collect();
    assert_eq!(
        writable,
        [&json!({"name": "reboot-sentinel", "mountPath": "/host/var/lib/nodemedic/reboot"})]
    );
    let vol = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "reboot-sentinel")
        .expect("reboot-sentinel volume");
    assert_eq!(
        vol["hostPath"],
        json!({"path": "/var/lib/nodemedic/reboot", "type": "DirectoryOrCreate"})
    );
    let sentinel = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NODEMEDIC_REBOOT_SENTINEL")
        .expect("NODEMEDIC_REBOOT_SENTINEL");
    assert_eq!(
        sentinel["value"],
        "/var/lib/nodemedic/reboot/reboot-required"
    );

    let deploy = find(&objs, "Deployment", "operator");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["command"],
        json!(["/usr/local/bin/nodemedic-operator", "run"])
    );
    assert_eq!(c["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        c["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );

    // Image: tag defaults to appVersion; a digest wins over the tag.
    assert_eq!(c["image"], "ghcr.io/nodemedic/nodemedic:0.1.0");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let objs = render(
        "nodemedic",
        "nodemedic",
        &[
            "--set",
            "image.tag=ignored",
            "--set",
            &format!("image.digest={digest}"),
        ],
    )
    .await;
    for (k, comp) in [("Deployment", "operator"), ("DaemonSet", "agent")] {
        assert_eq!(
            find(&objs, k, comp)["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("ghcr.io/nodemedic/nodemedic@{digest}")
        );
    }
}

/// The metric names of the agent's and the operator's contract (histograms by their
/// `_bucket` series).
const METRICS: &[&str] = &[
    "nodemedic_agent_scan_duration_seconds_bucket",
    "nodemedic_agent_tasks",
    "nodemedic_agent_findings",
    "nodemedic_agent_detector_firing",
    "nodemedic_agent_scan_errors_total",
    "nodemedic_agent_report_writes_total",
    "nodemedic_agent_actions_total",
    "nodemedic_agent_last_report_timestamp_seconds",
    "nodemedic_agent_fd_exhaustion_eta_seconds",
    "nodemedic_agent_node_pids_limit",
    "nodemedic_agent_node_pids_headroom",
    "nodemedic_agent_node_pids_exhaustion_eta_seconds",
    "nodemedic_agent_pod_pids_exhaustion_eta_seconds",
    "nodemedic_agent_pod_pids_zombie_ratio",
    "nodemedic_operator_actions_total",
    "nodemedic_operator_unhealthy_nodes",
    "nodemedic_operator_stale_reports",
    "nodemedic_operator_storm_active",
    "nodemedic_operator_reconcile_duration_seconds_bucket",
    "nodemedic_operator_reconcile_errors_total",
    "nodemedic_operator_is_leader",
    "nodemedic_operator_pauses",
    "nodemedic_operator_pause_start_timestamp_seconds",
];

/// Every alert expression and every dashboard query is valid PromQL and uses only
/// metric names of the contract.
#[tokio::test]
async fn alerts_and_dashboard_queries_are_valid_promql() {
    if skip_without_helm() {
        return;
    }
    fn check(what: &str, expr: &str, used: &mut BTreeSet<String>) {
        // Grafana's interval variable is not PromQL; any range stands in for it.
        let promql = expr.replace("$__rate_interval", "5m");
        if let Err(e) = promql_parser::parser::parse(&promql) {
            panic!("{what}: {expr:?} is not valid PromQL: {e}");
        }
        let bytes = promql.as_bytes();
        let mut i = 0;
        while let Some(pos) = promql[i..].find("nodemedic_") {
            let start = i + pos;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            let name = &promql[start..end];
            assert!(
                METRICS.contains(&name),
                "{what}: {name} is not a metric of the agent or the operator"
            );
            used.insert(name.to_string());
            i = end;
        }
    }
    let values = all_features_values();
    let objs = render("nodemedic", "nodemedic", &["--values", values.as_str()]).await;
    let mut used = BTreeSet::new();

    let rule = objs
        .iter()
        .find(|o| kind(o) == "PrometheusRule")
        .expect("PrometheusRule rendered");
    let mut alerts = Vec::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let alert = r["alert"].as_str().expect("alert name");
            check(alert, r["expr"].as_str().expect("expr"), &mut used);
            for key in ["summary", "description"] {
                assert!(
                    r["annotations"][key].is_string(),
                    "{alert} lacks annotation {key}"
                );
            }
            assert_eq!(r["labels"]["severity"], "warning", "{alert}");
            alerts.push(alert.to_string());
        }
    }
    assert_eq!(
        alerts,
        [
            "NodemedicReportsStale",
            "NodemedicAgentMetricsAbsent",
            "NodemedicStormActive",
            "NodemedicDetectorFiring",
            "NodemedicFdExhaustionSoon",
            "NodemedicPidsExhaustionSoon",
            "NodemedicNodePidsExhaustionSoon",
            "NodemedicRemediationPausedTooLong",
            "NodemedicOperatorNoLeader",
        ]
    );

    let cm = objs
        .iter()
        .find(|o| kind(o) == "ConfigMap")
        .expect("dashboard ConfigMap rendered");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(
        cm["data"]["nodemedic.json"]
            .as_str()
            .expect("nodemedic.json in the ConfigMap"),
    )
    .expect("the dashboard is JSON");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            check(title, target["expr"].as_str().expect("expr"), &mut used);
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} dashboard queries");
    let unused: Vec<&&str> = METRICS.iter().filter(|m| !used.contains(**m)).collect();
    assert!(
        unused.is_empty(),
        "metrics neither alerted on nor shown: {unused:?}"
    );
}

// ---------------------------------------------------------------------------
// the real API server
// ---------------------------------------------------------------------------

/// `kubectl apply --server-side --dry-run=server --validate=strict` of the whole
/// stream; every object must be accepted without a warning.
async fn dry_run_apply(cp: &ControlPlane, objs: &[Value]) {
    let stream = to_yaml_stream(objs).expect("serialise manifests");
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--validate=strict",
                "--field-manager=helm",
                "-f",
                "-",
            ],
            Some(stream.as_bytes()),
        )
        .await
        .expect("kubectl apply");
    assert!(
        out.success,
        "server-side dry run rejected the chart:\n{out}"
    );
    assert!(
        !out.stderr.contains("Warning"),
        "the API server warned:\n{}",
        out.stderr
    );
    let accepted = out
        .stdout
        .lines()
        .filter(|l| l.ends_with("serverside-applied (server dry run)"))
        .count();
    assert_eq!(accepted, objs.len(), "{out}");
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_api_server() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    cp.install_crds(&[repo_root().join("tests/fixtures/monitoring.coreos.com-crds.yaml")])
        .await
        .expect("install the ServiceMonitor/PrometheusRule test CRDs");
    let values = all_features_values();
    let variants: [(&str, Vec<&str>, &[&str]); 2] = [
        (
            "default values",
            vec![],
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "Service",
                "DaemonSet",
                "Deployment",
                "PodDisruptionBudget",
            ],
        ),
        (
            "all-features values",
            vec!["--values", values.as_str()],
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "Service",
                "DaemonSet",
                "Deployment",
                "PodDisruptionBudget",
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "NodeHealthPolicy",
            ],
        ),
    ];
    for (label, extra, kinds) in variants {
        let ns = cp.create_namespace("chart-dry").await.expect("namespace");
        let objs = render("nodemedic", &ns, &extra).await;
        let rendered: BTreeSet<&str> = objs.iter().map(kind).collect();
        let expected: BTreeSet<&str> = kinds.iter().copied().collect();
        assert_eq!(rendered, expected, "{label}: kinds rendered");
        for o in &objs {
            let labels = &o["metadata"]["labels"];
            for key in [
                "helm.sh/chart",
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{label}: {} {} lacks label {key}",
                    kind(o),
                    name(o)
                );
            }
            let cluster_scoped = matches!(
                kind(o),
                "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
                    | "NodeHealthPolicy"
            );
            // The agent's node-Lease Role and binding live in the namespace
            // shared by every release (kube-node-lease).
            let node_lease = matches!(kind(o), "Role" | "RoleBinding") && component(o) == "agent";
            if node_lease {
                assert_eq!(o["metadata"]["namespace"].as_str(), Some("kube-node-lease"));
            } else if !cluster_scoped {
                assert_eq!(
                    o["metadata"]["namespace"].as_str(),
                    Some(ns.as_str()),
                    "{label}: {} {} must name the release namespace",
                    kind(o),
                    name(o)
                );
            }
        }
        dry_run_apply(cp, &objs).await;
    }
}

/// The operator's pod passes Pod Security "restricted". The agent's pod is
/// rejected by "baseline" (hostPID, hostPath — which is why the release namespace
/// must be privileged, as NOTES.txt and docs/install.md say) and accepted by
/// "privileged". Checked with real Pods (dry run) made from the pod templates.
#[tokio::test]
async fn operator_pod_is_restricted_and_agent_pod_needs_privileged() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let admin = cp.client().await.expect("admin client");
    let objs = render("nodemedic", "nodemedic", &[]).await;
    let pod_from = |k: &str, comp: &str| -> Pod {
        let tpl = &find(&objs, k, comp)["spec"]["template"];
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("{comp}-pss"), "labels": tpl["metadata"]["labels"]},
            "spec": tpl["spec"],
        }))
        .expect("pod from template")
    };
    async fn ns_with_level(cp: &ControlPlane, level: &str) -> String {
        let ns = cp.create_namespace("chart-pss").await.expect("namespace");
        let api: Api<Namespace> = Api::all(cp.client().await.expect("admin client"));
        let patch = json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": level,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }}});
        api.patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label namespace");
        ns
    }
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    let restricted = ns_with_level(cp, "restricted").await;
    Api::<Pod>::namespaced(admin.clone(), &restricted)
        .create(&dry, &pod_from("Deployment", "operator"))
        .await
        .expect("the operator's pod must pass Pod Security restricted");

    let baseline = ns_with_level(cp, "baseline").await;
    assert_denied(
        Api::<Pod>::namespaced(admin.clone(), &baseline)
            .create(&dry, &pod_from("DaemonSet", "agent"))
            .await,
        403,
        &[
            "violates PodSecurity \"baseline:latest\"",
            "hostPID=true",
            "hostPath volumes",
        ],
    );
    let privileged = ns_with_level(cp, "privileged").await;
    Api::<Pod>::namespaced(admin, &privileged)
        .create(&dry, &pod_from("DaemonSet", "agent"))
        .await
        .expect("the agent's pod must be accepted in a privileged namespace");
}

/// A release's RBAC and admission objects, installed for real.
#[derive(Clone)]
struct Installed {
    namespace: String,
    agent_sa: String,
    operator_sa: String,
    policy: String,
}

/// The chart's RBAC and admission objects, installed once for the shared
/// control plane: two releases in one cluster would each let only their own
/// operator write report spec, denying the other's.
async fn install_rbac_and_admission(cp: &ControlPlane, prefix: &str) -> Installed {
    static INSTALLED: tokio::sync::OnceCell<Installed> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let r = install_chart_rbac(cp, prefix)
                .await
                .expect("install the chart's RBAC and admission objects");
            Installed {
                namespace: r.namespace,
                agent_sa: r.agent_service_account,
                operator_sa: r.operator_service_account,
                policy: r.admission_policy,
            }
        })
        .await
        .clone()
}

/// The node Lease that makes one agent per node act: an agent may create and
/// update only `kube-node-lease/nodemedic-agent-<its node>`; another node's
/// Lease is denied by the admission policy (so an agent cannot hold another
/// node's agents off), any other namespace and delete by RBAC.
#[tokio::test]
async fn agent_token_is_pinned_to_its_own_node_lease() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let inst = install_rbac_and_admission(cp, "chart-agent").await;
    let ns = inst.namespace.as_str();
    let node_a = cp.create_node("lease-a", &[]).await.expect("node a");
    let node_b = cp.create_node("lease-b", &[]).await.expect("node b");
    let pod = create_pod(
        cp,
        ns,
        &unique_name("nodemedic-agent"),
        &node_a,
        &inst.agent_sa,
    )
    .await;
    let token = pod_bound_token(cp, ns, &inst.agent_sa, &pod)
        .await
        .expect("pod-bound token");
    let (agent, _) = token_client(cp, &token).await.expect("agent client");
    let leases: Api<Lease> = Api::namespaced(agent.clone(), "kube-node-lease");
    let lease = |name: &str, holder: &str| -> Lease {
        serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
        }))
        .expect("lease")
    };
    let own = format!("nodemedic-agent-{node_a}");
    let other = format!("nodemedic-agent-{node_b}");
    let wrong_lease = format!(
        "the nodemedic agent on node {node_a} may write only the node Lease {own}, not {other}"
    );
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the admission policy denies another node's Lease", || {
        let leases = leases.clone();
        let obj = lease(&other, "intruder");
        let wrong_lease = wrong_lease.clone();
        let dry = dry.clone();
        async move {
            match leases.create(&dry, &obj).await {
                Err(KubeError::Api(s)) if s.code == 403 && s.message.contains(&wrong_lease) => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    // Its own node's Lease: create, read, update.
    let mut mine = leases
        .create(&PostParams::default(), &lease(&own, "agent-a"))
        .await
        .expect("the agent creates its node's Lease");
    if let Some(spec) = mine.spec.as_mut() {
        spec.holder_identity = None;
    }
    leases
        .replace(&own, &PostParams::default(), &mine)
        .await
        .expect("the agent updates (releases) its node's Lease");
    leases
        .get(&own)
        .await
        .expect("the agent reads its node's Lease");

    // Another node's Lease: neither create nor update (it exists: made by
    // the admin, as that node's agent would).
    assert_denied(
        leases
            .create(&PostParams::default(), &lease(&other, "intruder"))
            .await,
        403,
        &[&wrong_lease],
    );
    let admin_leases: Api<Lease> =
        Api::namespaced(cp.client().await.expect("admin client"), "kube-node-lease");
    let mut theirs = admin_leases
        .create(&PostParams::default(), &lease(&other, "agent-b"))
        .await
        .expect("admin creates node B's Lease");
    if let Some(spec) = theirs.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
    }
    assert_denied(
        leases
            .replace(&other, &PostParams::default(), &theirs)
            .await,
        403,
        &[&wrong_lease],
    );
    // The kubelet's own Lease of node A (named like the node) is not the agent's.
    assert_denied(
        leases
            .create(&PostParams::default(), &lease(&node_a, "intruder"))
            .await,
        403,
        &["may write only the node Lease"],
    );
    // RBAC: no delete, no list, and no Leases elsewhere (e.g. the operator's).
    assert_denied(
        leases.delete(&own, &DeleteParams::default()).await,
        403,
        &["cannot delete resource \"leases\""],
    );
    assert_denied(
        leases.list(&Default::default()).await,
        403,
        &["cannot list resource \"leases\""],
    );
    let elsewhere: Api<Lease> = Api::namespaced(agent.clone(), ns);
    assert_denied(
        elsewhere
            .create(&PostParams::default(), &lease(&own, "agent-a"))
            .await,
        403,
        &["cannot create resource \"leases\""],
    );
}

/// A Pod object bound to `node` (no kubelet runs: it is only an API object).
async fn create_pod(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    node: &str,
    service_account: &str,
) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "ghcr.io/nodemedic/nodemedic:0.1.0"}],
        },
    }))
    .expect("pod");
    Api::<Pod>::namespaced(cp.client().await.expect("admin client"), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
}

async fn node_uid(cp: &ControlPlane, node: &str) -> String {
    Api::<Node>::all(cp.client().await.expect("admin client"))
        .get(node)
        .await
        .expect("get node")
        .metadata
        .uid
        .expect("node uid")
}

/// The agent's pod-bound token carries its node in the user info; with it the agent
/// writes its own node's report and nothing else, and has none of the operator's rights.
#[tokio::test]
async fn agent_token_is_pinned_to_its_own_node_report() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let inst = install_rbac_and_admission(cp, "chart-agent").await;
    let ns = inst.namespace.as_str();
    let node_a = cp.create_node("agent-a", &[]).await.expect("node a");
    let node_b = cp.create_node("agent-b", &[]).await.expect("node b");
    let pod = create_pod(cp, ns, "nodemedic-agent-a", &node_a, &inst.agent_sa).await;
    let token = pod_bound_token(cp, ns, &inst.agent_sa, &pod)
        .await
        .expect("pod-bound token");
    let (agent, agent_kubeconfig) = token_client(cp, &token).await.expect("agent client");

    // 1. What the API server puts into the user info of a pod-bound token.
    let review = eventually("SelfSubjectReview with the pod-bound token", || {
        let agent = agent.clone();
        async move {
            Api::<SelfSubjectReview>::all(agent)
                .create(&PostParams::default(), &SelfSubjectReview::default())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .expect("SelfSubjectReview status.userInfo");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:{}", inst.agent_sa).as_str())
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get(NODE_NAME_KEY),
        Some(&vec![node_a.clone()]),
        "{extra:?}"
    );
    assert_eq!(
        extra.get(NODE_UID_KEY),
        Some(&vec![node_uid(cp, &node_a).await]),
        "{extra:?}"
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["nodemedic-agent-a".to_string()]),
        "{extra:?}"
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-uid"),
        Some(&vec![pod.metadata.uid.clone().expect("pod uid")]),
        "{extra:?}"
    );

    let (reports, ar) = report_api(agent.clone());
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let wrong_node = format!(
        "the nodemedic agent on node {node_a} may write only NodeHealthReport {node_a}, not {node_b}"
    );
    // Wait until RBAC and the admission policy are live: a dry-run create of node B's
    // report is denied by the policy.
    eventually("the admission policy denies another node's report", || {
        let reports = reports.clone();
        let obj = report(&ar, &node_b, json!({}));
        let wrong_node = wrong_node.clone();
        let dry = dry.clone();
        async move {
            match reports.create(&dry, &obj).await {
                Err(KubeError::Api(s)) if s.code == 403 && s.message.contains(&wrong_node) => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    // 2. Its own report: create (empty spec only) and write status.
    // Two policies deny this (the agent's own-report policy and the
    // operator-only spec policy); the API server names whichever it
    // evaluated first.
    match reports
        .create(
            &PostParams::default(),
            &report(
                &ar,
                &node_a,
                json!({"actionRequests": [action_request("x")]}),
            ),
        )
        .await
    {
        Err(KubeError::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            let own_report = s
                .message
                .contains(&format!("ValidatingAdmissionPolicy '{}'", inst.policy))
                && s.message
                    .contains("must create its NodeHealthReport with an empty spec");
            let operator_only = s
                .message
                .contains("may create the report only with an empty spec");
            assert!(own_report || operator_only, "{}", s.message);
        }
        other => panic!("a report with requests in spec was not denied: {other:?}"),
    }
    reports
        .create(&PostParams::default(), &report(&ar, &node_a, json!({})))
        .await
        .expect("the agent creates its own node's report");
    let status = json!({"status": {"healthy": false, "problems": "zombies(212 under php-fpm)"}});
    let written = reports
        .patch_status(&node_a, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the agent writes its own report's status");
    assert_eq!(
        written.data["status"]["problems"],
        "zombies(212 under php-fpm)"
    );
    let mut current = reports.get(&node_a).await.expect("get own report");
    current.data["status"]["healthy"] = json!(true);
    reports
        .replace_status(&node_a, &PostParams::default(), &current)
        .await
        .expect("the agent replaces (PUT) its own report's status");

    // 3. Another node's report: neither create nor status writes.
    assert_denied(
        reports
            .create(&PostParams::default(), &report(&ar, &node_b, json!({})))
            .await,
        403,
        &[&wrong_node],
    );
    let (admin_reports, _) = report_api(cp.client().await.expect("admin client"));
    admin_reports
        .create(&PostParams::default(), &report(&ar, &node_b, json!({})))
        .await
        .expect("admin creates node B's report");
    assert_denied(
        reports
            .patch_status(&node_b, &PatchParams::default(), &Patch::Merge(&status))
            .await,
        403,
        &[&wrong_node],
    );
    let mut other = admin_reports.get(&node_b).await.expect("get report b");
    other.data["status"] = json!({"healthy": false});
    assert_denied(
        reports
            .replace_status(&node_b, &PostParams::default(), &other)
            .await,
        403,
        &[&wrong_node],
    );

    // 4. Spec is the operator's: RBAC denies patch/update of the main resource.
    let spec_patch = json!({"spec": {"actionRequests": [action_request("y")]}});
    assert_denied(
        reports
            .patch(&node_a, &PatchParams::default(), &Patch::Merge(&spec_patch))
            .await,
        403,
        &["cannot patch resource \"nodehealthreports\""],
    );
    let mut mine = reports.get(&node_a).await.expect("get own report");
    mine.data["spec"] = json!({"actionRequests": [action_request("z")]});
    assert_denied(
        reports
            .replace(&node_a, &PostParams::default(), &mine)
            .await,
        403,
        &["cannot update resource \"nodehealthreports\""],
    );
    assert_denied(
        reports.delete(&node_a, &DeleteParams::default()).await,
        403,
        &["cannot delete resource \"nodehealthreports\""],
    );

    // 5. A token of the same ServiceAccount that is not bound to a pod has no node
    //    name: denied for every report, including node A's.
    let unbound = cp
        .service_account_client(ns, &inst.agent_sa)
        .await
        .expect("unbound token client");
    let unbound_review = Api::<SelfSubjectReview>::all(unbound.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview with an unbound token");
    let unbound_extra = unbound_review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.extra)
        .unwrap_or_default();
    assert!(
        !unbound_extra.contains_key(NODE_NAME_KEY),
        "an unbound token names no node: {unbound_extra:?}"
    );
    let (unbound_reports, _) = report_api(unbound);
    for res in [
        unbound_reports
            .patch_status(&node_a, &PatchParams::default(), &Patch::Merge(&status))
            .await,
        unbound_reports
            .create(&dry, &report(&ar, "some-node", json!({})))
            .await,
    ] {
        assert_denied(
            res,
            403,
            &["this token carries no node name", NODE_NAME_KEY],
        );
    }

    // 6. Nothing of the operator's: no Node writes (not even its own node), no pods,
    //    no evictions, no Events, no Secrets, no policy writes.
    let nodes: Api<Node> = Api::all(agent.clone());
    nodes.get(&node_a).await.expect("the agent reads its Node");
    nodes
        .list(&ListParams::default().fields(&format!("metadata.name={node_a}")))
        .await
        .expect("the agent lists its Node by field selector");
    let cordon = json!({"spec": {"unschedulable": true}});
    assert_denied(
        nodes
            .patch(&node_a, &PatchParams::default(), &Patch::Merge(&cordon))
            .await,
        403,
        &["cannot patch resource \"nodes\""],
    );
    assert_denied(
        nodes
            .patch_status(
                &node_a,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {}})),
            )
            .await,
        403,
        &["cannot patch resource \"nodes/status\""],
    );
    let pods: Api<Pod> = Api::namespaced(agent.clone(), ns);
    assert_denied(
        pods.evict(
            &pod.metadata.name.clone().expect("pod name"),
            &EvictParams::default(),
        )
        .await,
        403,
        &["cannot create resource \"pods/eviction\""],
    );
    assert_denied(
        pods.list(&ListParams::default()).await,
        403,
        &["cannot list resource \"pods\""],
    );
    assert_denied(
        Api::<Secret>::namespaced(agent.clone(), ns)
            .get("anything")
            .await,
        403,
        &["cannot get resource \"secrets\""],
    );
    let (policies, pr) = policy_api(agent.clone());
    policies
        .list(&ListParams::default())
        .await
        .expect("the agent lists policies");
    assert_denied(
        policies
            .create(
                &PostParams::default(),
                &DynamicObject::new("agent-made", &pr)
                    .data(json!({"spec": {"detectors": {"zombies": {}}}})),
            )
            .await,
        403,
        &["cannot create resource \"nodehealthpolicies\""],
    );
    for (verb, resource) in [
        ("watch", "nodehealthpolicies.nodemedic.io"),
        ("watch", "nodehealthreports.nodemedic.io"),
        ("watch", "nodes"),
    ] {
        let out = cp
            .kubectl_with(&agent_kubeconfig, &["auth", "can-i", verb, resource], None)
            .await
            .expect("kubectl auth can-i");
        assert_eq!(
            out.stdout.trim(),
            "yes",
            "agent can-i {verb} {resource}: {out}"
        );
    }
    for (verb, resource) in [
        ("create", "events.events.k8s.io"),
        ("create", "events"),
        ("update", "nodehealthpolicies.nodemedic.io/status"),
        ("create", "leases.coordination.k8s.io"),
        ("create", "serviceaccounts/token"),
    ] {
        let out = cp
            .kubectl_with(
                &agent_kubeconfig,
                &["auth", "can-i", verb, resource, "--all-namespaces"],
                None,
            )
            .await
            .expect("kubectl auth can-i");
        assert_eq!(
            out.stdout.trim(),
            "no",
            "agent can-i {verb} {resource}: {out}"
        );
    }

    // 7. Defence in depth: even if someone grants the agent `patch` on reports, the
    //    admission policy keeps spec the operator's.
    let grant = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": format!("{}-extra", inst.policy)},
        "rules": [{"apiGroups": ["nodemedic.io"], "resources": ["nodehealthreports"], "verbs": ["patch"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-extra", inst.policy)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{}-extra", inst.policy)},
        "subjects": [{"kind": "ServiceAccount", "name": inst.agent_sa, "namespace": ns}],
    });
    let stream = to_yaml_stream(&[grant, binding]).expect("serialise");
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "-f", "-"],
            Some(stream.as_bytes()),
        )
        .await
        .expect("kubectl apply");
    assert!(out.success, "{out}");
    let spec_change = "the nodemedic agent may not change a NodeHealthReport's spec";
    eventually("the extra grant to reach the policy's spec rule", || {
        let reports = reports.clone();
        let spec_patch = spec_patch.clone();
        let node_a = node_a.clone();
        async move {
            match reports
                .patch(&node_a, &PatchParams::default(), &Patch::Merge(&spec_patch))
                .await
            {
                // Either policy may be the one the API server names.
                Err(KubeError::Api(s))
                    if s.code == 403
                        && (s.message.contains(spec_change)
                            || s.message.contains("may not change it")) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let unchanged = reports.get(&node_a).await.expect("get own report");
    assert_eq!(unchanged.data["spec"], json!({}), "spec untouched");
}

fn ledger_api(client: Client) -> (Api<DynamicObject>, ApiResource) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nodemedic.io", "v1alpha1", "NodeRemediation"),
        "noderemediations",
    );
    (Api::all_with(client, &ar), ar)
}

/// Issue 13: the remediation ledger lives in an object only the operator
/// writes. Cluster-admin can neither create nor change a NodeRemediation
/// (a forged ledger could restart a ladder or erase a cooldown), the agent
/// cannot even read one, the operator writes it, and deleting it (the
/// documented reset) stays possible.
#[tokio::test]
async fn only_the_operator_writes_the_ledger() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let inst = install_rbac_and_admission(cp, "chart-ledger").await;
    let ns = inst.namespace.as_str();
    let ledger_policy = format!(
        "{}-operator-ledger",
        inst.policy.trim_end_matches("-agent-own-report")
    );
    let only_operator = format!(
        "NodeRemediation (the remediation ledger) is written only by the nodemedic operator (system:serviceaccount:{ns}:{})",
        inst.operator_sa
    );
    let node = cp.create_node("ledger", &[]).await.expect("node");
    let (admin, ar) = ledger_api(cp.client().await.expect("admin client"));
    let ledger = DynamicObject::new(&node, &ar).data(json!({"spec": {"history": [{
        "at": "2026-01-01T00:00:00Z", "policy": "zombie-reaper", "detector": "zombies",
        "action": "Cordon", "step": 0,
    }]}}));
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the ledger policy denies cluster-admin", || {
        let admin = admin.clone();
        let obj = ledger.clone();
        let dry = dry.clone();
        let only_operator = only_operator.clone();
        async move {
            match admin.create(&dry, &obj).await {
                Err(KubeError::Api(s)) if s.code == 403 && s.message.contains(&only_operator) => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_denied(
        admin.create(&PostParams::default(), &ledger).await,
        403,
        &[
            &format!("ValidatingAdmissionPolicy '{ledger_policy}'"),
            &only_operator,
            "may not create it",
        ],
    );

    // The agent's token (pod-bound, on the node) cannot read it.
    let pod = create_pod(cp, ns, &unique_name("ledger-agent"), &node, &inst.agent_sa).await;
    let token = pod_bound_token(cp, ns, &inst.agent_sa, &pod)
        .await
        .expect("pod-bound token");
    let (agent, _) = token_client(cp, &token).await.expect("agent client");
    let (agent_ledgers, _) = ledger_api(agent);
    assert_denied(agent_ledgers.get(&node).await, 403, &["noderemediations"]);

    // The operator creates it.
    let op = cp
        .service_account_client(ns, &inst.operator_sa)
        .await
        .expect("operator client");
    let (op_ledgers, _) = ledger_api(op);
    let created = eventually("the operator's RBAC to propagate", || {
        let op_ledgers = op_ledgers.clone();
        let obj = ledger.clone();
        async move {
            op_ledgers
                .create(&PostParams::default(), &obj)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(created.data["spec"]["history"][0]["action"], "Cordon");

    // Nobody else changes it, not even to empty it.
    assert_denied(
        admin
            .patch(
                &node,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"history": null}})),
            )
            .await,
        403,
        &[&only_operator, "may not change it"],
    );
    // Deleting it is the documented reset.
    admin
        .delete(&node, &Default::default())
        .await
        .expect("cluster-admin deletes a ledger (reset)");
}

/// Issue 13: "requests are also limited by a ValidatingAdmissionPolicy in
/// the chart: spec of a NodeHealthReport may be written only by the
/// operator's ServiceAccount". Real tokens against the real API server: the
/// agent's pod-bound token, a ServiceAccount granted full rights on reports
/// by RBAC, and cluster-admin can neither create a report with a spec nor
/// change one; the agent still writes its status, metadata-only updates
/// pass, and the operator's token writes spec.
#[tokio::test]
async fn only_the_operator_writes_report_spec() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let inst = install_rbac_and_admission(cp, "chart-spec").await;
    let ns = inst.namespace.as_str();
    let spec_policy = format!(
        "{}-operator-report-spec",
        inst.policy.trim_end_matches("-agent-own-report")
    );
    let only_operator = format!(
        "NodeHealthReport spec (actionRequests) is written only by the nodemedic operator (system:serviceaccount:{ns}:{})",
        inst.operator_sa
    );
    let node = cp.create_node("spec", &[]).await.expect("node");
    let (admin, ar) = report_api(cp.client().await.expect("admin client"));
    let with_spec = report(
        &ar,
        &node,
        json!({"actionRequests": [action_request("forged")]}),
    );

    // Cluster-admin: RBAC allows everything, the policy does not.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the report-spec policy denies cluster-admin", || {
        let admin = admin.clone();
        let obj = with_spec.clone();
        let dry = dry.clone();
        let only_operator = only_operator.clone();
        async move {
            match admin.create(&dry, &obj).await {
                Err(KubeError::Api(s)) if s.code == 403 && s.message.contains(&only_operator) => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_denied(
        admin.create(&PostParams::default(), &with_spec).await,
        403,
        &[
            &format!("ValidatingAdmissionPolicy '{spec_policy}'"),
            &only_operator,
            "may create the report only with an empty spec",
        ],
    );

    // The agent (pod-bound token on the node) creates its report with an
    // empty spec and writes status; it cannot put requests in spec.
    let pod = create_pod(cp, ns, &unique_name("spec-agent"), &node, &inst.agent_sa).await;
    let token = pod_bound_token(cp, ns, &inst.agent_sa, &pod)
        .await
        .expect("pod-bound token");
    let (agent, _) = token_client(cp, &token).await.expect("agent client");
    let (agent_reports, _) = report_api(agent);
    assert_denied(
        agent_reports
            .create(&PostParams::default(), &with_spec)
            .await,
        403,
        &["spec"],
    );
    agent_reports
        .create(&PostParams::default(), &report(&ar, &node, json!({})))
        .await
        .expect("the agent creates its report with an empty spec");
    let spec_patch = json!({"spec": {"actionRequests": [action_request("forged")]}});
    assert_denied(
        agent_reports
            .patch(&node, &PatchParams::default(), &Patch::Merge(&spec_patch))
            .await,
        403,
        &[],
    );

    // An identity RBAC lets edit reports (a controller or user granted
    // `patch`): denied by the policy, but metadata-only updates pass.
    let editor = unique_name("report-editor");
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": editor, "namespace": ns}}))
            .expect("service account");
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        cp.client().await.expect("admin client"),
        ns,
    )
    .create(&PostParams::default(), &sa)
    .await
    .expect("editor service account");
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": editor},
        "rules": [{"apiGroups": ["nodemedic.io"], "resources": ["nodehealthreports"],
                   "verbs": ["get", "list", "create", "update", "patch"]}],
    }))
    .expect("role");
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": editor},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": editor},
        "subjects": [{"kind": "ServiceAccount", "name": editor, "namespace": ns}],
    }))
    .expect("binding");
    let admin_client = cp.client().await.expect("admin client");
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin_client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("editor role");
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin_client)
        .create(&PostParams::default(), &binding)
        .await
        .expect("editor binding");
    let (editor_reports, _) = report_api(
        cp.service_account_client(ns, &editor)
            .await
            .expect("editor client"),
    );
    let denied_change = eventually("the editor's RBAC to propagate", || {
        let editor_reports = editor_reports.clone();
        let node = node.clone();
        let spec_patch = spec_patch.clone();
        async move {
            match editor_reports
                .patch(&node, &PatchParams::default(), &Patch::Merge(&spec_patch))
                .await
            {
                Err(KubeError::Api(s)) if s.message.contains("cannot patch") => Err(s.message),
                other => Ok(other),
            }
        }
    })
    .await;
    assert_denied(
        denied_change,
        403,
        &[
            &format!("ValidatingAdmissionPolicy '{spec_policy}'"),
            &only_operator,
            "may not change it",
        ],
    );
    editor_reports
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "sre"}}})),
        )
        .await
        .expect("a metadata-only update passes");

    // The operator writes spec; afterwards the agent still writes status and
    // nobody else changes the (now non-empty) spec.
    let op = cp
        .service_account_client(ns, &inst.operator_sa)
        .await
        .expect("operator client");
    let (op_reports, _) = report_api(op);
    let requested = eventually("the operator's RBAC to propagate", || {
        let op_reports = op_reports.clone();
        let node = node.clone();
        let spec_patch = spec_patch.clone();
        async move {
            op_reports
                .patch(&node, &PatchParams::default(), &Patch::Merge(&spec_patch))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(requested.data["spec"]["actionRequests"][0]["id"], "forged");
    agent_reports
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"healthy": false}})),
        )
        .await
        .expect("the agent writes its status under a non-empty spec");
    let emptied = json!({"spec": {"actionRequests": null}});
    assert_denied(
        admin
            .patch(&node, &PatchParams::default(), &Patch::Merge(&emptied))
            .await,
        403,
        &[&only_operator, "may not change it"],
    );
    editor_reports
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "platform"}}})),
        )
        .await
        .expect("a metadata-only update passes under a non-empty spec");
}

/// The operator's ServiceAccount can do every remediation step (cordon, taint,
/// Node condition, eviction, Events, policy status, report spec, its Lease, the ledgers,
/// its policy finalizer), and nothing broader.
#[tokio::test]
async fn operator_token_can_remediate() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let inst = install_rbac_and_admission(cp, "chart-operator").await;
    let ns = inst.namespace.as_str();
    let workload_ns = cp
        .create_namespace("chart-workload")
        .await
        .expect("namespace");
    let node = cp.create_node("operator-c", &[]).await.expect("node");
    let victim = create_pod(cp, &workload_ns, "victim", &node, "default").await;
    let victim_name = victim.metadata.name.clone().expect("pod name");
    let op = cp
        .service_account_client(ns, &inst.operator_sa)
        .await
        .expect("operator client");
    let nodes: Api<Node> = Api::all(op.clone());
    eventually("the operator's RBAC to propagate", || {
        let nodes = nodes.clone();
        async move {
            nodes
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;

    // Cordon, taint and annotate (a patch of the Node).
    let cordon = json!({
        "metadata": {"annotations": {"nodemedic.io/cordoned-by": "hung-tasks"}},
        "spec": {
            "unschedulable": true,
            "taints": [{"key": "nodemedic.io/hung-tasks", "value": "true", "effect": "NoSchedule"}],
        },
    });
    let patched = nodes
        .patch(&node, &PatchParams::default(), &Patch::Merge(&cordon))
        .await
        .expect("the operator cordons and taints");
    let spec = patched.spec.expect("node spec");
    assert_eq!(spec.unschedulable, Some(true));
    assert_eq!(
        spec.taints.expect("taints")[0].key,
        "nodemedic.io/hung-tasks"
    );

    // A Node condition, server-side applied with the operator's own field manager.
    let condition = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node},
        "status": {"conditions": [{
            "type": "nodemedic.io/HungTasks",
            "status": "True",
            "reason": "HungTasksDetected",
            "message": "3 threads in D state for more than 120s",
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }]},
    });
    let applied = nodes
        .patch_status(
            &node,
            &PatchParams::apply("nodemedic-operator"),
            &Patch::Apply(&condition),
        )
        .await
        .expect("the operator applies its Node condition");
    let types: Vec<String> = applied
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert!(
        types.contains(&"nodemedic.io/HungTasks".to_string()) && types.contains(&"Ready".into()),
        "the operator's condition joins the kubelet's: {types:?}"
    );

    // Pods of the node, across namespaces, and their eviction.
    let all_pods: Api<Pod> = Api::all(op.clone());
    let on_node = all_pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .expect("the operator lists the pods of a node");
    assert_eq!(on_node.items.len(), 1);
    let pods: Api<Pod> = Api::namespaced(op.clone(), &workload_ns);
    pods.get(&victim_name)
        .await
        .expect("the operator gets a pod");
    pods.evict(&victim_name, &EvictParams::default())
        .await
        .expect("the operator evicts a pod");
    let evicted = Api::<Pod>::namespaced(cp.client().await.expect("admin"), &workload_ns)
        .get(&victim_name)
        .await
        .expect("evicted pod (no kubelet: it stays, terminating)");
    assert!(
        evicted.metadata.deletion_timestamp.is_some(),
        "eviction marks the pod for deletion"
    );
    assert_denied(
        pods.delete(&victim_name, &DeleteParams::default()).await,
        403,
        &["cannot delete resource \"pods\""],
    );

    // Policy status (not spec).
    let (admin_policies, pr) = policy_api(cp.client().await.expect("admin"));
    let policy_name = unique_name("op-policy");
    admin_policies
        .create(
            &PostParams::default(),
            &DynamicObject::new(&policy_name, &pr).data(json!({
                "spec": {"mode": "Observe", "detectors": {"zombies": {}}},
            })),
        )
        .await
        .expect("admin creates a policy");
    let (policies, _) = policy_api(op.clone());
    let written = policies
        .patch_status(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"matchedNodes": 1, "unhealthyNodes": 1}})),
        )
        .await
        .expect("the operator writes policy status");
    assert_eq!(written.data["status"]["unhealthyNodes"], 1);
    // Its finalizer, and nothing else of a policy: RBAC allows `patch`, the
    // operator's policy-finalizer admission policy narrows it.
    let finalized = eventually("the operator adds its finalizer", || {
        let policies = policies.clone();
        let policy_name = policy_name.clone();
        async move {
            policies
                .patch(
                    &policy_name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"finalizers": ["nodemedic.io/release"]}})),
                )
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(
        finalized.metadata.finalizers,
        Some(vec!["nodemedic.io/release".to_owned()])
    );
    let only_finalizer = "the nodemedic operator may change only its own finalizer";
    for (what, patch) in [
        ("spec", json!({"spec": {"mode": "Enforce"}})),
        (
            "labels",
            json!({"metadata": {"labels": {"nodemedic.io/test": "widened"}}}),
        ),
        (
            "annotations",
            json!({"metadata": {"annotations": {"a": "b"}}}),
        ),
        (
            "other finalizers",
            json!({"metadata": {"finalizers": ["nodemedic.io/release", "example.com/hold"]}}),
        ),
    ] {
        match policies
            .patch(&policy_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(KubeError::Api(s)) if s.code == 403 && s.message.contains(only_finalizer) => {}
            other => panic!("the operator's token changed a policy's {what}: {other:?}"),
        }
    }
    policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("the operator removes its finalizer");

    // Report spec: node-local action requests (the agent's admission policy does not
    // apply to the operator).
    let (admin_reports, ar) = report_api(cp.client().await.expect("admin"));
    admin_reports
        .create(&PostParams::default(), &report(&ar, &node, json!({})))
        .await
        .expect("admin creates the node's report");
    let (reports, _) = report_api(op.clone());
    let requested = reports
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"actionRequests": [action_request("req-1")]}})),
        )
        .await
        .expect("the operator writes an action request into the report's spec");
    assert_eq!(requested.data["spec"]["actionRequests"][0]["id"], "req-1");
    assert_denied(
        reports
            .patch_status(
                &node,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"healthy": false}})),
            )
            .await,
        403,
        &["cannot patch resource \"nodehealthreports/status\""],
    );

    // Events (events.k8s.io/v1) on the Node (namespace default) and on the Pod.
    use k8s_openapi::api::events::v1::Event;
    let event = |ns: &str, name: &str, regarding: Value| -> Event {
        serde_json::from_value(json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "eventTime": now_micro(),
            "reportingController": "nodemedic.io/operator",
            "reportingInstance": "nodemedic-operator-0",
            "action": "Cordon",
            "reason": "HungTasks",
            "note": "cordoned: 3 threads in D state",
            "type": "Warning",
            "regarding": regarding,
        }))
        .expect("event")
    };
    let node_event = unique_name("node-event");
    let events_default: Api<Event> = Api::namespaced(op.clone(), "default");
    events_default
        .create(
            &PostParams::default(),
            &event(
                "default",
                &node_event,
                json!({"kind": "Node", "apiVersion": "v1", "name": node}),
            ),
        )
        .await
        .expect("the operator records an Event on a Node");
    events_default
        .patch(
            &node_event,
            &PatchParams::default(),
            &Patch::Merge(&json!({"series": {"count": 2, "lastObservedTime": now_micro()}})),
        )
        .await
        .expect("the operator patches its Event (series)");
    Api::<Event>::namespaced(op.clone(), &workload_ns)
        .create(
            &PostParams::default(),
            &event(
                &workload_ns,
                "pod-event",
                json!({"kind": "Pod", "apiVersion": "v1", "name": victim_name, "namespace": workload_ns}),
            ),
        )
        .await
        .expect("the operator records an Event on a Pod");
    assert_denied(
        Api::<CoreEvent>::namespaced(op.clone(), "default")
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": unique_name("core")},
                    "involvedObject": {"kind": "Node", "name": node},
                    "reason": "X",
                }))
                .expect("core event"),
            )
            .await,
        403,
        &["cannot create resource \"events\" in API group \"\""],
    );

    // Its Lease in the release namespace, and only there.
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "nodemedic-operator"},
        "spec": {"holderIdentity": "nodemedic-operator-0", "leaseDurationSeconds": 15},
    }))
    .expect("lease");
    let leases: Api<Lease> = Api::namespaced(op.clone(), ns);
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("the operator creates its Lease");
    leases
        .get("nodemedic-operator")
        .await
        .expect("the operator reads its Lease");
    leases
        .patch(
            "nodemedic-operator",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"holderIdentity": "nodemedic-operator-1"}})),
        )
        .await
        .expect("the operator takes over its Lease");
    let mut current = leases.get("nodemedic-operator").await.expect("lease");
    current.spec.get_or_insert_default().lease_transitions = Some(1);
    leases
        .replace("nodemedic-operator", &PostParams::default(), &current)
        .await
        .expect("the operator updates its Lease");
    assert_denied(
        Api::<Lease>::namespaced(op.clone(), &workload_ns)
            .create(&PostParams::default(), &lease)
            .await,
        403,
        &["cannot create resource \"leases\""],
    );

    // Nothing broader.
    assert_denied(
        Api::<Secret>::namespaced(op.clone(), ns)
            .get("anything")
            .await,
        403,
        &["cannot get resource \"secrets\""],
    );
    assert_denied(
        nodes.delete(&node, &DeleteParams::default()).await,
        403,
        &["cannot delete resource \"nodes\""],
    );
}

// ---------------------------------------------------------------------------
// CRD upgrades (private control plane: Helm itself installs the CRDs here)
// ---------------------------------------------------------------------------

/// Helm installs `crds/` on `helm install` and never touches CRDs again: after a
/// `helm upgrade` an old CRD stays old. The documented step
/// `kubectl apply --server-side --force-conflicts -f charts/nodemedic/crds/`
/// updates them; `helm uninstall` leaves them (and so every policy and report).
#[tokio::test]
async fn crds_are_kept_current_by_the_documented_upgrade_step() {
    if skip_without_helm() {
        return;
    }
    let opts = ControlPlaneOptions {
        crd_files: Vec::new(),
        ..ControlPlaneOptions::from_env().expect("options")
    };
    let cp = ControlPlane::start(opts)
        .await
        .expect("start a private control plane without CRDs");

    // An "old" release of the chart: the same chart whose policy CRD lacks a printer column.
    let old = tempfile::tempdir().expect("tempdir");
    let old_chart = old.path().join("nodemedic");
    copy_dir(&chart_dir(), &old_chart);
    let crd_file = "crds/nodehealthpolicies.nodemedic.io.yaml";
    let current: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join(crd_file)).expect("read CRD"),
    )
    .expect("parse CRD");
    let columns = |crd: &CustomResourceDefinition| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .map(|c| c.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    };
    let new_columns = columns(&current);
    let mut older = current.clone();
    older.spec.versions[0]
        .additional_printer_columns
        .as_mut()
        .expect("printer columns")
        .retain(|c| c.name != "Unhealthy");
    std::fs::write(
        old_chart.join(crd_file),
        serde_yaml::to_string(&older).expect("serialise old CRD"),
    )
    .expect("write old CRD");

    let helm = |args: Vec<String>| {
        let cp = &cp;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = cp.helm(&args).await.expect("run helm");
            assert!(out.success, "helm {args:?}:\n{out}");
            out
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let old_chart_arg = old_chart.display().to_string();
    let chart = chart();
    let installed = helm(s(&[
        "install",
        "nodemedic",
        &old_chart_arg,
        "--namespace",
        "nodemedic",
        "--create-namespace",
    ]))
    .await;
    // NOTES.txt tells the user what to run next.
    for next in [
        "kubectl -n nodemedic get pods -l app.kubernetes.io/instance=nodemedic -o wide",
        "kubectl label namespace nodemedic pod-security.kubernetes.io/enforce=privileged",
        "kubectl get nhr",
        "kubectl apply -f examples/observe-only.yaml",
        "kubectl apply --server-side --force-conflicts -f charts/nodemedic/crds/",
        "docs/install.md",
    ] {
        assert!(
            installed.stdout.contains(next),
            "NOTES lack {next:?}:\n{installed}"
        );
    }
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await.expect("admin"));
    let served = crds
        .get("nodehealthpolicies.nodemedic.io")
        .await
        .expect("CRD installed by helm install");
    assert!(!columns(&served).contains(&"Unhealthy".to_string()));

    // The upgrade command of docs/install.md.
    helm(s(&[
        "upgrade",
        "nodemedic",
        &chart,
        "--namespace",
        "nodemedic",
        "--reset-then-reuse-values",
    ]))
    .await;
    let served = crds
        .get("nodehealthpolicies.nodemedic.io")
        .await
        .expect("CRD");
    assert!(
        !columns(&served).contains(&"Unhealthy".to_string()),
        "helm upgrade is expected to leave CRDs alone"
    );

    // Helm created the CRDs with a plain create (field manager "helm"), so a
    // server-side apply that changes them conflicts unless it forces.
    let crd_dir = chart_dir().join("crds").display().to_string();
    let unforced = cp
        .kubectl(&["apply", "--server-side", "-f", &crd_dir])
        .await
        .expect("kubectl apply");
    assert!(
        !unforced.success
            && unforced.stderr.contains("conflict")
            && unforced.stderr.contains("\"helm\""),
        "expected a field-manager conflict with helm:\n{unforced}"
    );

    // The documented step (docs/install.md, NOTES.txt).
    let out = cp
        .kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crd_dir,
        ])
        .await
        .expect("kubectl apply");
    assert!(out.success, "{out}");
    let served = crds
        .get("nodehealthpolicies.nodemedic.io")
        .await
        .expect("CRD");
    assert_eq!(columns(&served), new_columns);
    let again = cp
        .kubectl(&["apply", "--server-side", "-f", &crd_dir])
        .await
        .expect("kubectl apply");
    assert!(
        again.success,
        "re-running the step needs no force:\n{again}"
    );

    // The release is really installed and upgraded.
    let history = helm(s(&[
        "history",
        "nodemedic",
        "--namespace",
        "nodemedic",
        "-o",
        "json",
    ]))
    .await;
    let history: Value = serde_json::from_str(&history.stdout).expect("helm history json");
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");

    // Uninstall removes the release's objects and keeps the CRDs.
    helm(s(&["uninstall", "nodemedic", "--namespace", "nodemedic"])).await;
    crds.get("nodehealthpolicies.nodemedic.io")
        .await
        .expect("helm uninstall keeps the CRDs");
    let deployments = cp
        .kubectl(&[
            "get",
            "deployments,daemonsets",
            "-n",
            "nodemedic",
            "-o",
            "name",
        ])
        .await
        .expect("kubectl get");
    assert!(
        deployments.success && deployments.stdout.trim().is_empty(),
        "{deployments}"
    );
    cp.shutdown();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Issue 16: a pause is "recorded in the API with who paused". The chart's
/// pause-attribution admission policy lets a request set or change
/// `nodemedic.io/paused-by` only to its own username: two real identities
/// (ServiceAccount tokens, both allowed by RBAC to patch policies and
/// Nodes) against the real API server. A forged `paused-by` is refused with
/// a clear message, a truthful one passes, an update that leaves it as it
/// was passes whoever sends it, and anyone with update rights resumes.
#[tokio::test]
async fn a_pause_is_recorded_only_in_the_requesters_name() {
    if skip_without_helm() {
        return;
    }
    let cp = cp().await;
    let inst = install_rbac_and_admission(cp, "chart-pause").await;
    let ns = inst.namespace.as_str();
    let pause_policy = format!(
        "{}-operator-pause-attribution",
        inst.policy.trim_end_matches("-agent-own-report")
    );
    let admin = cp.client().await.expect("admin client");

    // Two SREs RBAC allows to pause policies and nodes.
    let sre_role = unique_name("pause-sre");
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": sre_role},
        "rules": [
            {"apiGroups": ["nodemedic.io"], "resources": ["nodehealthpolicies"],
             "verbs": ["get", "list", "create", "update", "patch"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "update", "patch"]},
        ],
    }))
    .expect("role");
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("SRE ClusterRole");
    let (alice_sa, bob_sa) = (unique_name("alice"), unique_name("bob"));
    let alice_user = format!("system:serviceaccount:{ns}:{alice_sa}");
    let bob_user = format!("system:serviceaccount:{ns}:{bob_sa}");
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": sre_role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sre_role},
        "subjects": [
            {"kind": "ServiceAccount", "name": alice_sa, "namespace": ns},
            {"kind": "ServiceAccount", "name": bob_sa, "namespace": ns},
        ],
    }))
    .expect("binding");
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("SRE binding");
    let alice = cp
        .service_account_client(ns, &alice_sa)
        .await
        .expect("alice client");
    let bob = cp
        .service_account_client(ns, &bob_sa)
        .await
        .expect("bob client");

    let node = cp.create_node("paused", &[]).await.expect("node");
    let (admin_policies, pr) = policy_api(admin.clone());
    let policy_name = unique_name("paused-policy");
    admin_policies
        .create(
            &PostParams::default(),
            &DynamicObject::new(&policy_name, &pr).data(json!({
                "spec": {"mode": "Observe", "detectors": {"zombies": {}}},
            })),
        )
        .await
        .expect("admin creates a policy");
    let (alice_policies, _) = policy_api(alice.clone());
    let (bob_policies, _) = policy_api(bob.clone());
    let alice_nodes: Api<Node> = Api::all(alice.clone());
    let bob_nodes: Api<Node> = Api::all(bob.clone());
    let pause = |by: &str| {
        json!({"metadata": {"annotations": {
            "nodemedic.io/paused": "kernel rollout",
            "nodemedic.io/paused-by": by,
            "nodemedic.io/paused-at": "2026-01-01T00:00:00Z",
        }}})
    };
    let forged =
        |who: &str, victim: &str| format!("{who} may not record a pause in the name of {victim}");

    // Alice records a pause in Bob's name: refused (once the policy and
    // RBAC have propagated). A dry run while waiting: a forged pause let
    // through before the policy is active would be stored, and a retry
    // that changes nothing is (rightly) not matched.
    eventually("the pause policy refuses a forged paused-by", || {
        let api = alice_policies.clone();
        let name = policy_name.clone();
        let body = pause(&bob_user);
        let needle = forged(&alice_user, &bob_user);
        async move {
            match api
                .patch(
                    &name,
                    &PatchParams::default().dry_run(),
                    &Patch::Merge(&body),
                )
                .await
            {
                Err(KubeError::Api(s)) if s.code == 403 && s.message.contains(&needle) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_denied(
        alice_policies
            .patch(
                &policy_name,
                &PatchParams::default(),
                &Patch::Merge(&pause(&bob_user)),
            )
            .await,
        403,
        &[
            &format!("ValidatingAdmissionPolicy '{pause_policy}'"),
            "nodemedic.io/paused-by records who paused remediation and must be the requester's own username",
            &forged(&alice_user, &bob_user),
        ],
    );
    assert_denied(
        alice_nodes
            .patch(
                &node,
                &PatchParams::default(),
                &Patch::Merge(&pause(&bob_user)),
            )
            .await,
        403,
        &[&forged(&alice_user, &bob_user)],
    );
    // Nothing was recorded.
    let stored = admin_policies.get(&policy_name).await.expect("policy");
    assert!(
        stored
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("nodemedic.io/paused")),
        "{:?}",
        stored.metadata.annotations
    );

    // In her own name: recorded, on the policy and on the Node.
    let paused = alice_policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(&pause(&alice_user)),
        )
        .await
        .expect("alice pauses the policy in her own name");
    assert_eq!(
        paused.metadata.annotations.as_ref().expect("annotations")["nodemedic.io/paused-by"],
        alice_user
    );
    alice_nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&pause(&alice_user)),
        )
        .await
        .expect("alice pauses the node in her own name");

    // Bob (or the kubelet, an agent, the operator) updates something else:
    // paused-by stays Alice's, nothing is matched.
    bob_nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"rack": "r7"}}})),
        )
        .await
        .expect("an update that leaves paused-by as it was passes");
    bob_policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"nodemedic.io/paused": "kernel rollout, wave 2"}}})),
        )
        .await
        .expect("changing the reason alone passes");
    // Bob takes the pause over in Alice's name: refused; in his own: passes.
    assert_denied(
        bob_policies
            .patch(
                &policy_name,
                &PatchParams::default(),
                &Patch::Merge(&pause(&format!("{alice_user}-x"))),
            )
            .await,
        403,
        &[&forged(&bob_user, &format!("{alice_user}-x"))],
    );
    bob_policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(&pause(&bob_user)),
        )
        .await
        .expect("bob re-records the pause in his own name");

    // Resume: anyone with update rights removes all three.
    let resume = json!({"metadata": {"annotations": {
        "nodemedic.io/paused": null, "nodemedic.io/paused-by": null, "nodemedic.io/paused-at": null,
    }}});
    let resumed = alice_policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(&resume),
        )
        .await
        .expect("alice resumes bob's pause");
    assert!(
        resumed
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("nodemedic.io/paused-by"))
    );
    bob_nodes
        .patch(&node, &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("bob resumes alice's node pause");

    // Creating an object already paused in someone else's name: refused,
    // whoever asks (cluster-admin included).
    let mut created = DynamicObject::new(&unique_name("born-paused"), &pr).data(json!({
        "spec": {"mode": "Observe", "detectors": {"zombies": {}}},
    }));
    created.metadata.annotations = Some(
        [
            ("nodemedic.io/paused".to_owned(), String::new()),
            ("nodemedic.io/paused-by".to_owned(), alice_user.clone()),
        ]
        .into(),
    );
    assert_denied(
        admin_policies
            .create(&PostParams::default(), &created)
            .await,
        403,
        &["may not record a pause in the name of", &alice_user],
    );
    alice_policies
        .create(&PostParams::default(), &created)
        .await
        .expect("alice creates a policy paused in her own name");
}
