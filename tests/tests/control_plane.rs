//! Tests of the harness itself against the real kube-apiserver: the shared control
//! plane, admin and ServiceAccount clients, RBAC, kubectl, and clean teardown.
//!
//! All tests of this binary share one control plane (see `ControlPlane::shared`).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use nodemedic_tests::assets::{Assets, pinned_kubernetes_version};
use nodemedic_tests::control_plane::process_running;
use nodemedic_tests::{ControlPlane, ControlPlaneOptions};

async fn cp() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn admin_client_reaches_the_pinned_apiserver() {
    let cp = cp().await;
    let client = cp.client().await.expect("admin client");
    let version = client.apiserver_version().await.expect("GET /version");
    // With KUBEBUILDER_ASSETS the user may bring another version; only check the pin
    // when the harness provisioned the binaries itself.
    if std::env::var_os("KUBEBUILDER_ASSETS").is_none() {
        assert_eq!(
            version.git_version,
            format!("v{}", pinned_kubernetes_version())
        );
    }
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing in {names:?}"
        );
    }
}

#[tokio::test]
async fn namespaces_are_unique_and_labelled() {
    let cp = cp().await;
    let a = cp.create_namespace("iso").await.expect("namespace a");
    let b = cp.create_namespace("iso").await.expect("namespace b");
    assert_ne!(a, b);
    let client = cp.client().await.expect("admin client");
    let api: Api<Namespace> = Api::all(client);
    let labelled = api
        .list(&ListParams::default().labels(&format!("nodemedic.io/test={a}")))
        .await
        .expect("list by label");
    assert_eq!(labelled.items.len(), 1);
}

/// A ServiceAccount client (TokenRequest) authenticates, and RBAC authorizes it
/// for exactly what it is granted.
#[tokio::test]
async fn service_account_clients_are_subject_to_rbac() {
    let cp = cp().await;
    let ns = cp.create_namespace("rbac").await.expect("namespace");
    let admin = cp.client().await.expect("admin client");
    let sa_client = cp
        .service_account_client(&ns, "reader")
        .await
        .expect("service account client");

    let cms: Api<ConfigMap> = Api::namespaced(sa_client.clone(), &ns);
    let denied = cms
        .list(&ListParams::default())
        .await
        .expect_err("a fresh ServiceAccount must not list configmaps");
    match &denied {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message
                    .contains(&format!("system:serviceaccount:{ns}:reader")),
                "403 should name the ServiceAccount user: {}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "cm-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create rolebinding");

    // The RBAC authorizer works from an informer cache: allow a short propagation.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cms.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("granted list still fails: {e}"),
        }
    }
    // Writing and cluster-scoped reads stay forbidden.
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("x".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let err = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("create must be forbidden");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    let err = Api::<Node>::all(sa_client)
        .list(&ListParams::default())
        .await
        .expect_err("listing nodes must be forbidden");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );

    // kubectl with the ServiceAccount kubeconfig sees the same answers.
    let kubeconfig = cp
        .service_account_kubeconfig(&ns, "reader")
        .await
        .expect("sa kubeconfig");
    let yes = cp
        .kubectl_with(
            &kubeconfig,
            &["auth", "can-i", "list", "configmaps", "-n", &ns],
            None,
        )
        .await
        .expect("kubectl auth can-i");
    assert!(yes.success && yes.stdout.trim() == "yes", "{yes}");
    let no = cp
        .kubectl_with(&kubeconfig, &["auth", "can-i", "delete", "nodes"], None)
        .await
        .expect("kubectl auth can-i");
    assert!(!no.success && no.stdout.trim() == "no", "{no}");
}

#[tokio::test]
async fn anonymous_requests_are_not_authorized_beyond_public_info() {
    let cp = cp().await;
    let anon = cp.anonymous_client().expect("anonymous client");
    let version = anon
        .apiserver_version()
        .await
        .expect("/version is public info");
    assert!(version.git_version.starts_with("v1."));
    let err = Api::<Namespace>::all(anon)
        .list(&ListParams::default())
        .await
        .expect_err("anonymous list must be forbidden");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("system:anonymous"), "{}", s.message);
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_uses_the_test_control_plane() {
    let cp = cp().await;
    let out = cp
        .kubectl(&["version", "-o", "json"])
        .await
        .expect("kubectl version");
    assert!(out.success, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("kubectl version json");
    let server = v["serverVersion"]["gitVersion"]
        .as_str()
        .expect("serverVersion.gitVersion");
    assert!(server.starts_with("v1."), "{server}");

    let ns = cp.create_namespace("kubectl").await.expect("namespace");
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &["apply", "-n", &ns, "-f", "-"],
            Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  k: v\n"),
        )
        .await
        .expect("kubectl apply");
    assert!(out.success, "{out}");
    let client = cp.client().await.expect("admin client");
    let cm = Api::<ConfigMap>::namespaced(client, &ns)
        .get("hello")
        .await
        .expect("configmap applied by kubectl");
    assert_eq!(
        cm.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("v")
    );
}

/// A second, private control plane: shutting it down stops both processes by pid and
/// removes its temp dir.
#[tokio::test]
async fn shutdown_stops_processes_and_removes_the_temp_dir() {
    let opts = ControlPlaneOptions {
        crd_files: Vec::new(),
        keep_dir: false,
        ..ControlPlaneOptions::from_env().expect("options")
    };
    let cp = ControlPlane::start(opts)
        .await
        .expect("start private control plane");
    let (etcd, api) = cp.pids();
    let dir = cp.dir().to_path_buf();
    assert!(process_running(etcd) && process_running(api));
    assert!(dir.join("kube-apiserver.log").exists());
    cp.shutdown();
    assert!(!process_running(etcd), "etcd {etcd} still running");
    assert!(!process_running(api), "kube-apiserver {api} still running");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

/// A `nodemedic-control-plane` process in its own process group, and what
/// it printed once ready: its temp dir and the etcd/kube-apiserver pids.
async fn start_owner() -> (tokio::process::Child, std::path::PathBuf, Vec<u32>) {
    use tokio::io::AsyncBufReadExt as _;
    let bin = env!("CARGO_BIN_EXE_nodemedic-control-plane");
    let mut child = tokio::process::Command::new(bin)
        .arg("--no-crds")
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nodemedic-control-plane");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut dir = None;
    let mut pids = None;
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(d) = line.strip_prefix("NODEMEDIC_CONTROL_PLANE_DIR=") {
                dir = Some(std::path::PathBuf::from(d));
            }
            if let Some(p) = line.strip_prefix("NODEMEDIC_CONTROL_PLANE_PIDS=") {
                let v: Vec<u32> = p.split(',').map(|x| x.parse().expect("pid")).collect();
                pids = Some(v);
            }
            if dir.is_some() && pids.is_some() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(150), read)
        .await
        .expect("nodemedic-control-plane did not report readiness in time");
    let dir = dir.expect("dir line");
    let pids = pids.expect("pids line");
    assert!(pids.iter().all(|p| process_running(*p)));
    (child, dir, pids)
}

async fn assert_cleaned_up(dir: &std::path::Path, pids: &[u32], how: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (pids.iter().any(|p| process_running(*p)) || dir.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in pids {
        assert!(!process_running(*p), "pid {p} outlived its owner ({how})");
    }
    assert!(
        !dir.exists(),
        "{} outlived its owner ({how})",
        dir.display()
    );
}

/// The supervisor cleans up even when the process that started the control plane is
/// killed with SIGKILL (no destructor runs).
#[tokio::test]
async fn killed_owner_leaves_no_processes_or_temp_dir() {
    let (mut child, dir, pids) = start_owner().await;
    child.start_kill().expect("SIGKILL the owner");
    child.wait().await.expect("reap owner");
    assert_cleaned_up(&dir, &pids, "SIGKILL").await;
}

/// What `timeout` does to a hung test run: SIGTERM to the whole process
/// group. Neither etcd nor kube-apiserver may be left behind.
#[tokio::test]
async fn sigterm_to_the_whole_process_group_leaves_nothing_behind() {
    let (mut child, dir, pids) = start_owner().await;
    let pgid = child.id().expect("owner pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM -{pgid}");
    child.wait().await.expect("reap owner");
    assert_cleaned_up(&dir, &pids, "SIGTERM to the process group").await;
}

/// kube-apiserver can be stopped and started again over the same etcd (for
/// tests of clients that must ride out an API server outage).
#[tokio::test]
async fn apiserver_restarts_over_the_same_etcd() {
    let opts = ControlPlaneOptions {
        crd_files: Vec::new(),
        ..ControlPlaneOptions::from_env().expect("options")
    };
    let cp = ControlPlane::start(opts)
        .await
        .expect("start private control plane");
    let client = cp.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("survives-restart".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let (etcd, before) = cp.pids();
    cp.stop_apiserver().await.expect("stop");
    assert!(!process_running(before));
    assert!(process_running(etcd), "etcd keeps running");
    assert!(
        cms.get("survives-restart").await.is_err(),
        "API server down"
    );
    cp.start_apiserver().await.expect("start again");
    let (_, after) = cp.pids();
    assert_ne!(before, after);
    let client = cp.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.get("survives-restart")
        .await
        .expect("data kept in etcd");
    cp.shutdown();
    assert!(!process_running(after) && !process_running(etcd));
}

/// An API server that cannot start yields an error carrying the tail of its log.
#[tokio::test]
async fn apiserver_start_failure_shows_its_log() {
    let opts = ControlPlaneOptions {
        crd_files: Vec::new(),
        extra_apiserver_args: vec!["--no-such-flag-for-nodemedic=1".into()],
        ..ControlPlaneOptions::from_env().expect("options")
    };
    let err = ControlPlane::start(opts)
        .await
        .expect_err("kube-apiserver with an unknown flag must not come up");
    let msg = err.to_string();
    assert!(
        msg.contains("kube-apiserver exited while starting"),
        "{msg}"
    );
    assert!(msg.contains("no-such-flag-for-nodemedic"), "{msg}");
}

#[test]
fn missing_binaries_error_is_actionable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Assets::in_dir(dir.path()).expect_err("must fail");
    assert!(err.to_string().contains("KUBEBUILDER_ASSETS"), "{err}");
}

/// Nodes can be created as plain API objects (no kubelet) for operator tests.
#[tokio::test]
async fn nodes_can_be_created_with_labels_and_ready_condition() {
    let cp = cp().await;
    let name = cp
        .create_node("worker", &[("pool", "batch")])
        .await
        .expect("create node");
    let client = cp.client().await.expect("admin client");
    let nodes: Api<Node> = Api::all(client);
    let selected = nodes
        .list(&ListParams::default().labels("pool=batch"))
        .await
        .expect("list nodes by label");
    let node = selected
        .items
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
        .expect("created node selected by its label");
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
}

/// helm (provisioned next to kubectl) talks to the test control plane.
#[tokio::test]
async fn helm_talks_to_the_control_plane() {
    let cp = cp().await;
    if cp.assets().helm.is_none() && std::env::var_os("KUBEBUILDER_ASSETS").is_some() {
        eprintln!("SKIP: no helm in KUBEBUILDER_ASSETS={:?}", cp.assets().dir);
        return;
    }
    let version = cp
        .helm(&["version", "--short"])
        .await
        .expect("helm version");
    assert!(
        version.success && version.stdout.starts_with("v3."),
        "{version}"
    );
    let ns = cp.create_namespace("helm").await.expect("namespace");
    let list = cp
        .helm(&["list", "-n", &ns, "-o", "json"])
        .await
        .expect("helm list");
    assert!(list.success, "{list}");
    assert_eq!(list.stdout.trim(), "[]", "{list}");
}

fn provision_script() -> std::path::PathBuf {
    nodemedic_tests::repo_root()
        .join("tests")
        .join("envtest")
        .join("provision.sh")
}

/// `provision.sh` honours KUBEBUILDER_ASSETS: builds nothing and prints the export line.
#[test]
fn provision_script_uses_kubebuilder_assets() {
    let assets = Assets::locate().expect("provisioned assets");
    let out = std::process::Command::new("bash")
        .arg(provision_script())
        .arg("--print-env")
        .env("KUBEBUILDER_ASSETS", &assets.dir)
        .output()
        .expect("run provision.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some(format!("export KUBEBUILDER_ASSETS={}", assets.dir.display()).as_str()),
        "{stdout}"
    );
}

/// `provision.sh` refuses a KUBEBUILDER_ASSETS folder without the binaries.
#[test]
fn provision_script_rejects_incomplete_kubebuilder_assets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("bash")
        .arg(provision_script())
        .env("KUBEBUILDER_ASSETS", dir.path())
        .output()
        .expect("run provision.sh");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lacks kube-apiserver, etcd or kubectl"),
        "{stderr}"
    );
}
