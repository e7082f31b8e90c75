//! `nodemedic-agent run` against the real control plane from `tests/`, on
//! this real host: the agent binary scans the host's /proc while the
//! project's workload generator makes real zombies in a pod-shaped cgroup,
//! and it runs with a pod-bound ServiceAccount token holding exactly the
//! RBAC (and admission policy) the Helm chart ships. Needs root (cgroups,
//! signalling); in CI a skip is a failure.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, ConditionType, field_manager};
use nodemedic_crds::report::{ActionRefusal, ActionResult, ActionResultOutcome, PolicyCondition};
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeHealthReportStatus};
use nodemedic_testkit::real_host::is_root;
use nodemedic_testkit::workload::Spawned;
use nodemedic_tests::chart::{InstalledRbac, agent_kubeconfig, install_chart_rbac};
use nodemedic_tests::{ControlPlane, ControlPlaneOptions, unique_name};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

const AGENT: &str = env!("CARGO_BIN_EXE_nodemedic-agent");

async fn cp() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

/// The chart's RBAC, installed once for this test binary's control plane.
async fn rbac() -> &'static InstalledRbac {
    static RBAC: OnceCell<InstalledRbac> = OnceCell::const_new();
    RBAC.get_or_init(|| async {
        install_chart_rbac(cp().await, "agent-rbac")
            .await
            .expect("install the chart's RBAC")
    })
    .await
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A host root for the agent that is this machine (`proc` and `sys` link to
/// the real ones) plus a kubelet log layout naming one pod, and a real
/// cgroup (v1 pids hierarchy) shaped like that pod's container.
struct PodHost {
    root: tempfile::TempDir,
    pod: String,
    container_id: String,
    /// Cgroup directories created, deepest first (removed on drop).
    cgroups: Vec<PathBuf>,
}

impl PodHost {
    fn new(namespace: &str, pod: &str, container: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/proc", root.path().join("proc")).expect("link proc");
        std::os::unix::fs::symlink("/sys", root.path().join("sys")).expect("link sys");
        let n = std::process::id();
        let uid = format!(
            "{:08x}-1c2b-4a3d-9e8f-{:012x}",
            n,
            rand_u64() & 0xffff_ffff_ffff
        );
        let container_id = format!("{:016x}", rand_u64()).repeat(4);
        let pods = root.path().join("var/log/pods");
        std::fs::create_dir_all(pods.join(format!("{namespace}_{pod}_{uid}/{container}")))
            .expect("pod log dir");
        let containers = root.path().join("var/log/containers");
        std::fs::create_dir_all(&containers).expect("containers dir");
        std::fs::write(
            containers.join(format!("{pod}_{namespace}_{container}-{container_id}.log")),
            "",
        )
        .expect("container log");
        let top = PathBuf::from(format!(
            "/sys/fs/cgroup/pids/nodemedic-test-{n}-{}",
            rand_u64() & 0xffff
        ));
        let leaf = top
            .join("kubepods/besteffort")
            .join(format!("pod{uid}"))
            .join(&container_id);
        std::fs::create_dir_all(&leaf).expect("pod-shaped cgroup");
        let mut cgroups = Vec::new();
        let mut d = leaf.clone();
        while d.starts_with(&top) {
            cgroups.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        Self {
            root,
            pod: pod.to_owned(),
            container_id,
            cgroups,
        }
    }

    fn container_cgroup(&self) -> &Path {
        &self.cgroups[0]
    }
}

impl Drop for PodHost {
    fn drop(&mut self) {
        for dir in &self.cgroups {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// `nodemedic-workload zombies`: an init-like reaper with one parent holding
/// `count` zombies, inside `cgroup`.
struct Zombies {
    proc: Spawned,
    parent: i32,
}

fn zombies(count: usize, cgroup: &Path) -> Zombies {
    let mut child = Command::new(nodemedic_testkit::workload_exe())
        .args([
            "zombies",
            "--count",
            &count.to_string(),
            "--duration",
            "10m",
        ])
        .arg("--join-cgroup")
        .arg(cgroup)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the zombie workload");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    let parent = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("zombie-parent="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no zombie parent in {line:?}"));
    Zombies {
        proc: Spawned::new(child),
        parent,
    }
}

fn start_time_of(pid: i32) -> u64 {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).expect("stat");
    nodemedic_agent::scan::parse::parse_stat(&stat)
        .expect("parse stat")
        .starttime
}

/// The agent binary, killed on drop.
struct Agent {
    child: Option<Child>,
    admin: SocketAddr,
    log: PathBuf,
}

struct AgentOptions<'a> {
    kubeconfig: &'a Path,
    node: &'a str,
    host_root: &'a Path,
    interval: &'a str,
    heartbeat: &'a str,
    action_ttl: &'a str,
    /// Run with exactly these capabilities (setpriv syntax, e.g.
    /// ",+kill,+sys_ptrace"); `None`: all of root's.
    caps: Option<&'a str>,
}

impl Agent {
    fn start(o: &AgentOptions<'_>) -> Self {
        Self::start_with(o, &[])
    }

    /// Starts the agent with `extra` environment variables (flags) too.
    fn start_with(o: &AgentOptions<'_>, extra: &[(&str, &str)]) -> Self {
        let admin = free_addr();
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("agent")));
        let file = std::fs::File::create(&log).expect("agent log");
        let mut cmd = match o.caps {
            Some(caps) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--bounding-set=-all{caps}"))
                    .arg("--inh-caps=-all")
                    .arg(AGENT);
                c
            }
            None => Command::new(AGENT),
        };
        let child = cmd
            .arg("run")
            .env("KUBECONFIG", o.kubeconfig)
            .env("NODE_NAME", o.node)
            .env("NODEMEDIC_HOST_ROOT", o.host_root)
            .env("NODEMEDIC_INTERVAL", o.interval)
            .env("NODEMEDIC_HEARTBEAT", o.heartbeat)
            .env("NODEMEDIC_ACTION_TTL", o.action_ttl)
            .env("NODEMEDIC_ADMIN_ADDR", admin.to_string())
            .env("NODEMEDIC_LOG", "info,kube=warn")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the agent");
        Self {
            child: Some(child),
            admin,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin endpoint: (status code, body).
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// Sum of a metric's samples whose line starts with `prefix`.
    async fn metric(&self, prefix: &str) -> f64 {
        let Some((_, body)) = self.get("/metrics").await else {
            return f64::NAN;
        };
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGKILL: no chance to release anything.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status (waits at most `limit`).
    fn terminate(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        while t.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.code(), t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        (None, t.elapsed())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A node labelled for one test, and a policy selecting only it.
async fn node_and_policy(prefix: &str, spec: serde_json::Value) -> (String, String) {
    let cp = cp().await;
    let label = unique_name(prefix);
    let node = cp
        .create_node(prefix, &[("nodemedic.io/test-node", label.as_str())])
        .await
        .expect("node");
    let policy = unique_name(prefix);
    apply_policy(&policy, &label, spec).await;
    (node, policy)
}

/// Creates (or replaces) policy `name` selecting the node labelled `label`.
async fn apply_policy(name: &str, label: &str, spec: serde_json::Value) {
    let mut spec = spec;
    spec["nodeSelector"] = serde_json::json!({"matchLabels": {"nodemedic.io/test-node": label}});
    let obj: NodeHealthPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("policy");
    Api::<NodeHealthPolicy>::all(cp().await.client().await.expect("client"))
        .patch(
            name,
            &PatchParams::apply("nodemedic-tests"),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply policy");
}

/// The test-node label value of a node made by `node_and_policy`.
async fn node_label(node: &str) -> String {
    let api: Api<k8s_openapi::api::core::v1::Node> =
        Api::all(cp().await.client().await.expect("client"));
    api.get(node)
        .await
        .expect("node")
        .metadata
        .labels
        .and_then(|l| l.get("nodemedic.io/test-node").cloned())
        .expect("test-node label")
}

async fn report_status(node: &str) -> Option<NodeHealthReportStatus> {
    Api::<NodeHealthReport>::all(cp().await.client().await.expect("client"))
        .get_opt(node)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.status)
}

/// Polls the report until `pred` holds; returns the status that satisfied it.
async fn wait_report(
    node: &str,
    limit: Duration,
    what: &str,
    agent: &Agent,
    pred: impl Fn(&NodeHealthReportStatus) -> bool,
) -> NodeHealthReportStatus {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = report_status(node).await {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: not within {limit:?}; last status: {}\nagent log:\n{}",
        serde_json::to_string_pretty(&last).unwrap_or_default(),
        agent.log()
    );
}

fn condition<'a>(
    s: &'a NodeHealthReportStatus,
    policy: &str,
    t: ConditionType,
) -> Option<&'a PolicyCondition> {
    s.conditions
        .iter()
        .find(|c| c.policy == policy && c.type_ == t)
}

fn zombie_spec(for_: &str) -> serde_json::Value {
    serde_json::json!({
        "mode": "DryRun",
        "detectors": {"zombies": {"threshold": 100000, "perParentThreshold": 5, "minAge": "0s", "for": for_}},
    })
}

/// An enforcing policy whose zombies ladder signals parents with `signals`
/// (perParentThreshold 5, minAge 0s): what the agent needs to see before it
/// carries out a SignalParent request naming it.
fn enforcing_zombie_spec(signals: &[&str]) -> serde_json::Value {
    let ladder: Vec<serde_json::Value> = signals
        .iter()
        .map(|s| serde_json::json!({"action": "SignalParent", "signal": s}))
        .collect();
    let mut spec = zombie_spec("0s");
    spec["mode"] = serde_json::json!("Enforce");
    spec["actions"] = serde_json::json!({"zombies": ladder});
    spec
}

/// Root check, the agent's identity and the pod-shaped host.
async fn setup(
    prefix: &str,
    spec: serde_json::Value,
) -> Option<(String, String, PathBuf, PodHost)> {
    if !is_root() {
        return None;
    }
    let cp = cp().await;
    let (node, policy) = node_and_policy(prefix, spec).await;
    let kubeconfig = agent_kubeconfig(cp, rbac().await, &node)
        .await
        .expect("agent kubeconfig");
    let host = PodHost::new("shop", &unique_name("php"), "php");
    Some((node, policy, kubeconfig, host))
}

#[tokio::test]
async fn zombies_in_a_pod_are_reported_and_hysteresis_holds_both_ways() {
    let Some((node, policy, kubeconfig, host)) = setup("zombies", zombie_spec("4s")).await else {
        return;
    };
    let mut z = zombies(8, host.container_cgroup());
    let started = Instant::now();
    let agent = Agent::start(&AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "1s",
        heartbeat: "1m",
        action_ttl: "10m",
        caps: None,
    });
    // Within two intervals of the agent's start (plus its start-up), the
    // finding is there, attributed to the pod by namespace and name.
    let parent = z.parent;
    let s = wait_report(
        &node,
        Duration::from_secs(10),
        "zombie finding with the pod",
        &agent,
        |s| {
            s.findings.zombies.iter().any(|f| {
                f.parent.host_pid == parent
                    && f.zombies == 8
                    && f.parent.workload.as_ref().is_some_and(|w| {
                        w.pod_namespace.as_deref() == Some("shop")
                            && w.pod_name.as_deref() == Some(host.pod.as_str())
                            && w.container.as_deref() == Some("php")
                            && w.container_id.as_deref() == Some(host.container_id.as_str())
                    })
            })
        },
    )
    .await;
    let first_seen = started.elapsed();
    assert!(first_seen < Duration::from_secs(8), "took {first_seen:?}");
    let pending = condition(&s, &policy, ConditionType::ZombiesDetected).expect("condition");
    // `for: 4s`: exceeded, not yet firing.
    if pending.status == ConditionStatus::False {
        assert_eq!(pending.reason, ConditionReason::Pending);
    }
    assert_eq!(s.heartbeat_interval.as_deref(), Some("1m"));
    let fired = wait_report(
        &node,
        Duration::from_secs(15),
        "condition True after `for`",
        &agent,
        |s| {
            condition(s, &policy, ConditionType::ZombiesDetected)
                .is_some_and(|c| c.status == ConditionStatus::True)
        },
    )
    .await;
    let fired_at = condition(&fired, &policy, ConditionType::ZombiesDetected)
        .expect("condition")
        .last_transition_time
        .clone();
    assert!(!fired.healthy);
    assert!(fired.problems.contains("zombies"), "{}", fired.problems);
    let exceeded_since = condition(&fired, &policy, ConditionType::ZombiesDetected)
        .and_then(|c| c.exceeded_since.clone())
        .expect("exceededSince");
    assert!(
        fired_at.0.duration_since(exceeded_since.0) >= SignedDuration::from_secs(4),
        "fired {fired_at:?} at least `for` after it was first exceeded ({exceeded_since:?})"
    );
    // The transition time stays while it keeps firing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = report_status(&node).await.expect("status");
    assert_eq!(
        condition(&later, &policy, ConditionType::ZombiesDetected)
            .map(|c| c.last_transition_time.clone()),
        Some(fired_at.clone())
    );

    // The workload stops: the detector clears, but stays True for `for`.
    z.proc.kill();
    let cleared_at = Instant::now();
    wait_report(
        &node,
        Duration::from_secs(10),
        "Clearing while below the threshold",
        &agent,
        |s| {
            condition(s, &policy, ConditionType::ZombiesDetected).is_some_and(|c| {
                c.status == ConditionStatus::True && c.reason == ConditionReason::Clearing
            })
        },
    )
    .await;
    let resolved = wait_report(
        &node,
        Duration::from_secs(15),
        "False after `for` below",
        &agent,
        |s| {
            condition(s, &policy, ConditionType::ZombiesDetected)
                .is_some_and(|c| c.status == ConditionStatus::False)
        },
    )
    .await;
    assert!(
        cleared_at.elapsed() >= Duration::from_secs(4),
        "resolved before `for` had passed"
    );
    assert!(resolved.healthy);
}

/// A client with the operator's ServiceAccount token: the only identity the
/// chart's admission policy lets write a report's spec. (A kube Client lives
/// in the runtime that made it, and every test has its own: the kubeconfig
/// is shared, the client is not.)
async fn operator_client() -> kube::Client {
    static KUBECONFIG: OnceCell<PathBuf> = OnceCell::const_new();
    let path = KUBECONFIG
        .get_or_init(|| async {
            let rbac = rbac().await;
            cp().await
                .service_account_kubeconfig(&rbac.namespace, &rbac.operator_service_account)
                .await
                .expect("operator kubeconfig")
        })
        .await;
    nodemedic_tests::control_plane::client_from_kubeconfig(path)
        .await
        .expect("operator client")
}

/// Writes action requests into the node's report spec with the operator's
/// token, as the operator does (or as whoever holds that token would).
async fn request_actions(node: &str, requests: serde_json::Value) {
    let api: Api<NodeHealthReport> = Api::all(operator_client().await);
    let body = serde_json::json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthReport",
        "metadata": {"name": node},
        "spec": {"actionRequests": requests},
    });
    api.patch(
        node,
        &PatchParams::apply(field_manager::OPERATOR).force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("write action requests as the operator does");
}

fn result<'a>(s: &'a NodeHealthReportStatus, id: &str) -> Option<&'a ActionResult> {
    s.action_results.iter().find(|r| r.id == id)
}

#[tokio::test]
async fn action_requests_are_executed_once_with_honest_outcomes() {
    let spec = enforcing_zombie_spec(&["SIGKILL"]);
    let Some((node, policy, kubeconfig, host)) = setup("actions", spec).await else {
        return;
    };
    // A second enforcing policy on the node protects the workload by name.
    let guarding = unique_name("guarding");
    let mut guard_spec = enforcing_zombie_spec(&["SIGTERM"]);
    guard_spec["safety"] = serde_json::json!({"protectedProcesses": ["nodemedic-work*"]});
    apply_policy(&guarding, &node_label(&node).await, guard_spec).await;
    let z = zombies(6, host.container_cgroup());
    let agent = Agent::start(&AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "1s",
        heartbeat: "1m",
        action_ttl: "10m",
        caps: None,
    });
    wait_report(
        &node,
        Duration::from_secs(15),
        "zombies reported",
        &agent,
        |s| {
            s.findings
                .zombies
                .iter()
                .any(|f| f.parent.host_pid == z.parent)
        },
    )
    .await;
    let parent_start = start_time_of(z.parent);
    let now = Timestamp::now();
    let target =
        |pid: i32, start: u64| serde_json::json!({"pid": pid, "startTime": start, "comm": "x"});
    request_actions(
        &node,
        serde_json::json!([
            {"id": "stale", "action": "SignalParent", "signal": "SIGKILL", "policy": policy,
             "target": target(z.parent, parent_start + 1), "requestedAt": now},
            {"id": "protected", "action": "SignalParent", "signal": "SIGTERM", "policy": guarding,
             "target": target(z.parent, parent_start), "requestedAt": now},
            // An operator clock 11 minutes behind (the TTL is 10m): the
            // agent measures the TTL from when it first saw the request, so
            // this is judged on its merits (protected), not expired.
            {"id": "skewed", "action": "SignalParent", "signal": "SIGTERM", "policy": guarding,
             "target": target(z.parent, parent_start), "requestedAt": now - SignedDuration::from_secs(11 * 60)},
        ]),
    )
    .await;
    let s = wait_report(
        &node,
        Duration::from_secs(10),
        "three results",
        &agent,
        |s| {
            ["stale", "protected", "skewed"]
                .iter()
                .all(|id| result(s, id).is_some_and(|r| r.outcome.is_final()))
        },
    )
    .await;
    let outcome = |id| {
        result(&s, id)
            .map(|r| (r.outcome, r.message.clone()))
            .expect("result")
    };
    assert_eq!(
        outcome("stale").0,
        ActionResultOutcome::TargetChanged,
        "{:?}",
        outcome("stale")
    );
    assert_eq!(
        outcome("protected").0,
        ActionResultOutcome::Refused,
        "{:?}",
        outcome("protected")
    );
    assert!(
        outcome("protected").1.contains("protected"),
        "{:?}",
        outcome("protected")
    );
    let reason = |id| result(&s, id).and_then(|r| r.reason);
    assert_eq!(reason("stale"), Some(ActionRefusal::TargetChanged));
    assert_eq!(reason("protected"), Some(ActionRefusal::ProtectedProcess));
    assert_eq!(reason("skewed"), Some(ActionRefusal::ProtectedProcess));
    // The TargetChanged message does not tell the caller the real start time.
    assert!(
        !outcome("stale").1.contains(&parent_start.to_string()),
        "{:?}",
        outcome("stale")
    );
    // Nothing was signalled.
    assert_eq!(
        start_time_of(z.parent),
        parent_start,
        "the zombie parent lives"
    );

    // The real request: SIGKILL the zombie parent; its zombies are reparented
    // to the workload's init, which reaps them, and the report says so.
    request_actions(
        &node,
        serde_json::json!([
            {"id": "kill-parent", "action": "SignalParent", "signal": "SIGKILL", "policy": policy,
             "target": target(z.parent, parent_start), "requestedAt": Timestamp::now(),
             "reason": "test: zombies under a parent that never reaps"},
        ]),
    )
    .await;
    let s = wait_report(
        &node,
        Duration::from_secs(15),
        "signalled and reaped",
        &agent,
        |s| {
            result(s, "kill-parent").is_some_and(|r| {
                r.outcome == ActionResultOutcome::Signalled
                    && r.follow_up
                        .as_ref()
                        .is_some_and(|f| f.reaped && f.parent_exited)
            })
        },
    )
    .await;
    let f = result(&s, "kill-parent")
        .and_then(|r| r.follow_up.clone())
        .expect("follow-up");
    assert_eq!(f.zombies_before, 6);
    assert_eq!(f.zombies_now, 0);
    assert!(
        std::fs::read(format!("/proc/{}/stat", z.parent)).is_err()
            || start_time_of(z.parent) != parent_start,
        "the parent is gone"
    );
    // Results of requests no longer in the spec are kept (bounded), and the
    // earlier ids are never executed again.
    assert_eq!(
        result(&s, "stale").map(|r| r.outcome),
        Some(ActionResultOutcome::TargetChanged)
    );
    assert_eq!(
        agent
            .metric("nodemedic_agent_actions_total{action=\"SignalParent\",outcome=\"Signalled\",reason=\"none\"}")
            .await,
        1.0
    );
    drop(z);
}

/// The `reason` of a result, read as JSON (the field's wire name is the
/// API; this helper also reads reports written by agents that predate it).
async fn result_reason(node: &str, id: &str) -> Option<String> {
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        cp().await.client().await.expect("client"),
        &kube::api::ApiResource::erase::<NodeHealthReport>(&()),
    );
    let report = api.get(node).await.ok()?;
    report.data["status"]["actionResults"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["reason"].as_str().map(str::to_owned))
}

fn alive(pid: i32, start: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| nodemedic_agent::scan::parse::parse_stat(&s).ok())
        .is_some_and(|s| s.starttime == start && s.state != b'Z')
}

/// Issue 13, "the report spec is a SIGKILL interface": SignalParent
/// requests written by hand into the report spec (with the operator's
/// token, the only identity the chart's admission lets write spec: what a
/// thief of that token could do), none of which an
/// enforcing policy of this node would have produced, are each refused by
/// the agent with their own reason, and their targets live. The same agent
/// still carries out a request its policy backs.
#[tokio::test]
async fn forged_signal_request_is_refused_by_the_agent() {
    let mut observe = enforcing_zombie_spec(&["SIGKILL"]);
    observe["mode"] = serde_json::json!("Observe");
    let Some((node, observing, kubeconfig, host)) = setup("forged", observe).await else {
        return;
    };
    let label = node_label(&node).await;
    let no_signal = unique_name("forged-cordon");
    let mut cordon = enforcing_zombie_spec(&[]);
    cordon["actions"] = serde_json::json!({"zombies": [{"action": "Cordon"}]});
    apply_policy(&no_signal, &label, cordon).await;
    let sigchld = unique_name("forged-sigchld");
    let mut chld = enforcing_zombie_spec(&[]);
    chld["actions"] = serde_json::json!({"zombies": [{"action": "SignalParent"}]});
    apply_policy(&sigchld, &label, chld).await;
    let sigkill = unique_name("forged-sigkill");
    apply_policy(&sigkill, &label, enforcing_zombie_spec(&["SIGKILL"])).await;

    // A `sleep` with no zombie children, and a parent with 2 zombies
    // (perParentThreshold is 5).
    let sleeper = nodemedic_testkit::workload::sleepers(1, Duration::from_secs(300))
        .expect("sleeper")
        .pop()
        .expect("one");
    let few = zombies(2, host.container_cgroup());
    let agent = Agent::start(&AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "1s",
        heartbeat: "1m",
        action_ttl: "10m",
        caps: None,
    });
    wait_report(
        &node,
        Duration::from_secs(15),
        "the parent of two zombies reported",
        &agent,
        |s| {
            s.findings
                .zombies
                .iter()
                .any(|f| f.parent.host_pid == few.parent && f.zombies == 2)
        },
    )
    .await;
    let sleep_start = start_time_of(sleeper.pid());
    let few_start = start_time_of(few.parent);
    let now = Timestamp::now();
    let kill = |id: &str, policy: &str, pid: i32, start: u64| {
        serde_json::json!({"id": id, "action": "SignalParent", "signal": "SIGKILL", "policy": policy,
            "target": {"pid": pid, "startTime": start, "comm": "sleep"}, "requestedAt": now})
    };
    let cases = [
        (
            "observe",
            observing.as_str(),
            sleeper.pid(),
            sleep_start,
            "PolicyNotEnforcing",
        ),
        (
            "no-signal-step",
            no_signal.as_str(),
            sleeper.pid(),
            sleep_start,
            "StepNotInLadder",
        ),
        (
            "sigchld-only",
            sigchld.as_str(),
            sleeper.pid(),
            sleep_start,
            "SignalNotInLadder",
        ),
        (
            "no-zombies",
            sigkill.as_str(),
            sleeper.pid(),
            sleep_start,
            "NotAZombieParent",
        ),
        (
            "below-threshold",
            sigkill.as_str(),
            few.parent,
            few_start,
            "BelowPerParentThreshold",
        ),
        (
            "no-such-policy",
            "no-such-policy",
            sleeper.pid(),
            sleep_start,
            "UnknownPolicy",
        ),
    ];
    request_actions(
        &node,
        serde_json::Value::Array(
            cases
                .iter()
                .map(|(id, policy, pid, start, _)| kill(id, policy, *pid, *start))
                .collect(),
        ),
    )
    .await;
    let s = wait_report(
        &node,
        Duration::from_secs(15),
        "every forged request answered",
        &agent,
        |s| {
            cases
                .iter()
                .all(|(id, ..)| result(s, id).is_some_and(|r| r.outcome.is_final()))
        },
    )
    .await;
    for (id, _, _, _, reason) in &cases {
        let r = result(&s, id).expect("result");
        assert_eq!(
            r.outcome,
            ActionResultOutcome::Refused,
            "{id}: {}",
            r.message
        );
        assert_eq!(
            result_reason(&node, id).await.as_deref(),
            Some(*reason),
            "{id}: {}",
            r.message
        );
    }
    assert!(alive(sleeper.pid(), sleep_start), "the sleep process lives");
    assert!(
        alive(few.parent, few_start),
        "the parent of two zombies lives"
    );
    assert_eq!(
        agent
            .metric("nodemedic_agent_actions_total{action=\"SignalParent\",outcome=\"Refused\",reason=\"NotAZombieParent\"}")
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric("nodemedic_agent_actions_total{action=\"SignalParent\",outcome=\"Signalled\"")
            .await,
        0.0
    );

    // What the enforcing SIGKILL policy does back: a parent above its
    // perParentThreshold. The same agent carries it out.
    let many = zombies(6, host.container_cgroup());
    wait_report(
        &node,
        Duration::from_secs(15),
        "the parent of six zombies reported",
        &agent,
        |s| {
            s.findings
                .zombies
                .iter()
                .any(|f| f.parent.host_pid == many.parent && f.zombies == 6)
        },
    )
    .await;
    let many_start = start_time_of(many.parent);
    let mut all: Vec<serde_json::Value> = cases
        .iter()
        .map(|(id, policy, pid, start, _)| kill(id, policy, *pid, *start))
        .collect();
    all.push(kill("backed", &sigkill, many.parent, many_start));
    request_actions(&node, serde_json::Value::Array(all)).await;
    let s = wait_report(
        &node,
        Duration::from_secs(15),
        "backed request",
        &agent,
        |s| result(s, "backed").is_some_and(|r| r.outcome.is_final()),
    )
    .await;
    let r = result(&s, "backed").expect("result");
    assert_eq!(r.outcome, ActionResultOutcome::Signalled, "{}", r.message);
    assert!(
        alive(sleeper.pid(), sleep_start),
        "the sleep process still lives"
    );
    drop(few);
    drop(many);
}

/// Issue 13, "65 policies on a node stop its reports": `exceededUnder` is
/// bounded at 64 by the schema; with 65 policies under which one zombie
/// parent exceeds, the agent names 64, counts the 65th, and its report is
/// still written.
#[tokio::test]
async fn sixty_five_policies_do_not_stop_the_report() {
    let spec = serde_json::json!({
        "mode": "Observe",
        "detectors": {"zombies": {"threshold": 100000, "perParentThreshold": 2, "minAge": "0s", "for": "0s"}},
    });
    let Some((node, first, kubeconfig, host)) = setup("sixty-five", spec.clone()).await else {
        return;
    };
    let label = node_label(&node).await;
    for i in 1..65 {
        apply_policy(&format!("{first}-{i:02}"), &label, spec.clone()).await;
    }
    let z = zombies(3, host.container_cgroup());
    let agent = Agent::start(&AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "1s",
        heartbeat: "1m",
        action_ttl: "10m",
        caps: None,
    });
    let s = wait_report(
        &node,
        Duration::from_secs(30),
        "the zombie parent reported as exceeded under 65 policies",
        &agent,
        |s| {
            s.findings
                .zombies
                .iter()
                .any(|f| f.parent.host_pid == z.parent && f.exceeded)
        },
    )
    .await;
    let f = s
        .findings
        .zombies
        .iter()
        .find(|f| f.parent.host_pid == z.parent)
        .expect("finding");
    assert_eq!(f.exceeded_under.len(), 64);
    assert_eq!(f.exceeded_under_omitted, 1);
    assert_eq!(s.conditions.len(), 64, "conditions keep their bound too");
    assert_eq!(
        agent
            .metric("nodemedic_agent_report_writes_total{result=\"invalid\"")
            .await,
        0.0,
        "no status write was refused"
    );
    drop(z);
}

#[tokio::test]
async fn a_restarted_agent_keeps_transition_times_and_exits_promptly_on_sigterm() {
    let Some((node, policy, kubeconfig, host)) = setup("restart", zombie_spec("2s")).await else {
        return;
    };
    let _z = zombies(6, host.container_cgroup());
    let opts = AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "1s",
        heartbeat: "1m",
        action_ttl: "10m",
        caps: None,
    };
    let mut first = Agent::start(&opts);
    let s = wait_report(&node, Duration::from_secs(20), "firing", &first, |s| {
        condition(s, &policy, ConditionType::ZombiesDetected)
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    let fired_at = condition(&s, &policy, ConditionType::ZombiesDetected)
        .expect("condition")
        .last_transition_time
        .clone();
    let (code, took) = first.terminate(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        first.log()
    );
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");

    let second = Agent::start(&opts);
    // The new agent writes its own status with the old time. Its own write
    // counter says when (report times have one-second resolution, and both
    // agents may write within the same second).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let written = second
            .metric("nodemedic_agent_report_writes_total{result=\"ok\"")
            .await;
        // NaN while its admin endpoint is not up yet.
        if written.is_finite() && written >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new agent wrote no report within 15s; log:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = report_status(&node).await.expect("the new agent's report");
    let c = condition(&s, &policy, ConditionType::ZombiesDetected).expect("condition");
    assert_eq!(c.status, ConditionStatus::True);
    assert_eq!(
        c.last_transition_time, fired_at,
        "lastTransitionTime survived the restart"
    );
}

#[tokio::test]
async fn with_nothing_changing_only_heartbeats_are_written() {
    // Thresholds nothing on this machine reaches.
    let spec = serde_json::json!({
        "mode": "Observe",
        "detectors": {"zombies": {"threshold": 100000, "perParentThreshold": 100000}},
    });
    let Some((node, _policy, kubeconfig, host)) = setup("quiet", spec).await else {
        return;
    };
    // A 1 s node Lease: were it renewed on a timer (every third of it),
    // the ~12 s below would take about 36 Lease writes.
    let agent = Agent::start_with(
        &AgentOptions {
            kubeconfig: &kubeconfig,
            node: &node,
            host_root: host.root.path(),
            interval: "500ms",
            heartbeat: "3s",
            action_ttl: "10m",
            caps: None,
        },
        &[("NODEMEDIC_LEASE_DURATION", "1s")],
    );
    wait_report(
        &node,
        Duration::from_secs(15),
        "first report",
        &agent,
        |_| true,
    )
    .await;
    let ready = agent.get("/readyz").await.map(|(c, _)| c);
    assert_eq!(ready, Some(200));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let scans = agent.metric("nodemedic_agent_scans_total").await;
    let changes = agent
        .metric("nodemedic_agent_report_writes_total{result=\"ok\",reason=\"change\"}")
        .await;
    let heartbeats = agent
        .metric("nodemedic_agent_report_writes_total{result=\"ok\",reason=\"heartbeat\"}")
        .await;
    assert!(scans >= 18.0, "{scans} scans in ~10 s at 500ms");
    assert_eq!(changes, 1.0, "only the first write is a change");
    assert!(
        (2.0..=5.0).contains(&heartbeats),
        "{heartbeats} heartbeats in ~11 s at 3 s"
    );
    // The holder renews its Lease only to act: at most once per report
    // write (the first creates it), never while idle between them.
    let lease_writes = agent
        .metric("nodemedic_agent_node_lease_writes_total")
        .await;
    let report_writes = changes + heartbeats;
    assert!(
        (1.0..=report_writes).contains(&lease_writes),
        "{lease_writes} Lease writes for {report_writes} report writes\n{}",
        agent.log()
    );
    assert_eq!(agent.metric("nodemedic_agent_node_lease_held ").await, 1.0);
    assert_eq!(agent.get("/livez").await.map(|(c, _)| c), Some(200));
}

#[tokio::test]
async fn rides_out_an_api_server_restart() {
    if !is_root() {
        return;
    }
    // A private control plane: stopping its API server must not disturb
    // the other tests.
    let cp = ControlPlane::start(ControlPlaneOptions::from_env().expect("options"))
        .await
        .expect("private control plane");
    let rbac = install_chart_rbac(&cp, "outage").await.expect("rbac");
    let node = cp.create_node("outage", &[]).await.expect("node");
    let policy: NodeHealthPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "nodemedic.io/v1alpha1", "kind": "NodeHealthPolicy",
        "metadata": {"name": "outage"},
        "spec": {"mode": "Observe", "detectors": {"zombies": {}}},
    }))
    .expect("policy");
    let client = cp.client().await.expect("client");
    Api::<NodeHealthPolicy>::all(client)
        .patch(
            "outage",
            &PatchParams::apply("nodemedic-tests"),
            &Patch::Apply(&policy),
        )
        .await
        .expect("policy");
    let kubeconfig = agent_kubeconfig(&cp, &rbac, &node)
        .await
        .expect("kubeconfig");
    let host = PodHost::new("shop", "outage", "php");
    let agent = Agent::start(&AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "500ms",
        heartbeat: "2s",
        action_ttl: "10m",
        caps: None,
    });
    let reports = || async {
        Api::<NodeHealthReport>::all(cp.client().await.expect("client"))
            .get_opt(&node)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.status)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reports().await.is_none() {
        assert!(
            Instant::now() < deadline,
            "no first report; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cp.stop_apiserver().await.expect("stop the API server");
    let scans_before = agent.metric("nodemedic_agent_scans_total").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let scans_during = agent.metric("nodemedic_agent_scans_total").await;
    let failed = agent
        .metric("nodemedic_agent_report_writes_total{result=\"unavailable\"")
        .await
        + agent
            .metric("nodemedic_agent_report_writes_total{result=\"timeout\"")
            .await;
    assert!(
        scans_during >= scans_before + 8.0,
        "scanning goes on: {scans_before} -> {scans_during}"
    );
    assert!(
        failed >= 1.0,
        "writes failed while the API server was down; log:\n{}",
        agent.log()
    );
    let restarted = Instant::now();
    cp.start_apiserver().await.expect("start the API server");
    let back = Timestamp::now();
    // Current within one backoff (30 s at most) of the restart.
    let deadline = Instant::now() + Duration::from_secs(35);
    loop {
        if let Some(s) = reports().await
            && s.last_scan_time.as_ref().is_some_and(|t| t.0 >= back)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "report not current after the restart; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "report current {:?} after the API server restart",
        restarted.elapsed()
    );
    assert!(
        agent.log().contains("report writes recovered"),
        "{}",
        agent.log()
    );
    drop(agent);
    cp.shutdown();
}

#[tokio::test]
async fn a_missing_node_is_a_clear_error() {
    let cp = cp().await;
    let out = Command::new(AGENT)
        .arg("run")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("NODE_NAME", "no-such-node-for-nodemedic")
        .env("NODEMEDIC_ADMIN_ADDR", free_addr().to_string())
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Node \"no-such-node-for-nodemedic\" does not exist"),
        "{stderr}"
    );
    let missing = Command::new(AGENT)
        .arg("run")
        .env_remove("NODE_NAME")
        .output()
        .expect("run agent");
    assert_eq!(missing.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--node-name"));
}

/// The chart adds CAP_KILL back to the agent because signalling another
/// user's process needs it: with exactly the chart's capabilities the agent
/// signals a zombie parent of user nobody; without KILL the same request
/// fails (EPERM) and says so.
#[tokio::test]
async fn signalling_another_users_process_needs_cap_kill() {
    let Some((node, policy, kubeconfig, host)) =
        setup("kill", enforcing_zombie_spec(&["SIGKILL"])).await
    else {
        return;
    };
    if Command::new("setpriv").arg("--version").output().is_err() {
        nodemedic_testkit::real_host::skip("setpriv (util-linux) is not installed");
        return;
    }
    // The workload runs as nobody, from a copy nobody may execute.
    let bin = tempfile::tempdir().expect("tempdir");
    let exe = bin.path().join("nodemedic-workload");
    std::fs::copy(nodemedic_testkit::workload_exe(), &exe).expect("copy workload");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut child = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&exe)
        .args(["zombies", "--count", "5", "--duration", "10m"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zombies as nobody");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let _workload = Spawned::new(child);
    let parent: i32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("zombie-parent="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no zombie parent in {line:?}"));
    let start = start_time_of(parent);
    let request = |id: &str| {
        serde_json::json!([{
            "id": id, "action": "SignalParent", "signal": "SIGKILL", "policy": policy,
            "target": {"pid": parent, "startTime": start, "comm": "nodemedic-workl"},
            "requestedAt": Timestamp::now(),
        }])
    };
    let opts = |caps| AgentOptions {
        kubeconfig: &kubeconfig,
        node: &node,
        host_root: host.root.path(),
        interval: "1s",
        heartbeat: "1m",
        action_ttl: "10m",
        caps: Some(caps),
    };

    let mut without = Agent::start(&opts(""));
    // A scan that saw all 5 zombies (the workload's ready line can come
    // before its last child has exited).
    wait_report(
        &node,
        Duration::from_secs(15),
        "a report with the 5 zombies",
        &without,
        |s| {
            s.findings
                .zombies
                .iter()
                .any(|f| f.parent.host_pid == parent && f.zombies >= 5)
        },
    )
    .await;
    request_actions(&node, request("without-kill")).await;
    let s = wait_report(&node, Duration::from_secs(10), "a result", &without, |s| {
        result(s, "without-kill").is_some_and(|r| r.outcome.is_final())
    })
    .await;
    let r = result(&s, "without-kill").expect("result");
    assert_eq!(r.outcome, ActionResultOutcome::Failed, "{}", r.message);
    assert!(r.message.contains("pidfd_send_signal"), "{}", r.message);
    assert_eq!(start_time_of(parent), start, "the parent was not hit");
    let (code, _) = without.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));

    let with = Agent::start(&opts(",+kill"));
    request_actions(&node, request("with-kill")).await;
    let s = wait_report(&node, Duration::from_secs(15), "signalled", &with, |s| {
        result(s, "with-kill").is_some_and(|r| r.outcome.is_final())
    })
    .await;
    let r = result(&s, "with-kill").expect("result");
    assert_eq!(r.outcome, ActionResultOutcome::Signalled, "{}", r.message);
}

/// Two agents on one node (say, of two Helm releases): only the holder of
/// the node Lease executes a request and writes the report; the other stays
/// ready but passive, and takes over (without repeating what the first did)
/// once the killed holder's Lease expires.
#[tokio::test]
async fn two_agents_on_one_node_act_once_and_the_survivor_takes_over() {
    // The agent hands off a reboot only while the step's detector fires
    // for the policy: 8 zombies in the pod, threshold 5. The problem is
    // pod-contained, so the step says scope Any.
    let mut spec = zombie_spec("0s");
    spec["mode"] = serde_json::json!("Enforce");
    spec["detectors"]["zombies"]["threshold"] = serde_json::json!(5);
    spec["actions"] = serde_json::json!({"zombies": [{"action": "RequestReboot", "scope": "Any"}]});
    let Some((node, policy, kubeconfig_a, host)) = setup("two-agents", spec).await else {
        return;
    };
    let _zombies = zombies(8, host.container_cgroup());
    let kubeconfig_b = agent_kubeconfig(cp().await, rbac().await, &node)
        .await
        .expect("second agent kubeconfig");
    for d in ["sentinel-a", "sentinel-b"] {
        std::fs::create_dir_all(host.root.path().join(d)).expect("sentinel dir");
    }
    let sentinel = |who: &str| {
        host.root
            .path()
            .join(format!("sentinel-{who}/reboot-required"))
    };
    let start = |who: &str, kubeconfig: &Path| {
        let path = format!("/sentinel-{who}/reboot-required");
        let pod = format!("agent-{who}");
        Agent::start_with(
            &AgentOptions {
                kubeconfig,
                node: &node,
                host_root: host.root.path(),
                interval: "1s",
                heartbeat: "1m",
                action_ttl: "10m",
                caps: None,
            },
            &[
                ("NODEMEDIC_REBOOT_SENTINEL", path.as_str()),
                ("NODEMEDIC_LEASE_DURATION", "3s"),
                ("POD_NAME", pod.as_str()),
                ("POD_UID", "uid"),
            ],
        )
    };
    // The second starts 2 s later (its own conditions would carry later
    // transition times than the report's). Who wins is not assumed.
    let first = start("a", &kubeconfig_a);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut agents = [("a", first), ("b", start("b", &kubeconfig_b))];
    let lease_held = "nodemedic_agent_node_lease_held ";
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        let a = agents[0].1.metric(lease_held).await;
        let b = agents[1].1.metric(lease_held).await;
        let a_passive = agents[0].1.log().contains("node lease held by agent-b_uid");
        let b_passive = agents[1].1.log().contains("node lease held by agent-a_uid");
        if a == 1.0 && b == 0.0 && b_passive {
            break 0;
        }
        if b == 1.0 && a == 0.0 && a_passive {
            break 1;
        }
        assert!(
            Instant::now() < deadline,
            "one holder and one passive agent: a={a} b={b}\n--- a ---\n{}\n--- b ---\n{}",
            agents[0].1.log(),
            agents[1].1.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let passive = 1 - holder;
    let (h, p) = (agents[holder].0, agents[passive].0);
    wait_report(
        &node,
        Duration::from_secs(15),
        "a first report with the zombies condition firing",
        &agents[holder].1,
        |s| {
            condition(s, &policy, ConditionType::ZombiesDetected)
                .is_some_and(|c| c.status == ConditionStatus::True)
        },
    )
    .await;
    // The passive agent is ready (a rollout must not wait for it) and scans.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agents[passive].1.get("/readyz").await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the passive agent is not ready:\n{}",
            agents[passive].1.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agents[passive]
            .1
            .metric("nodemedic_agent_scans_total")
            .await
            >= 1.0
    );

    let reboot = |id: &str| {
        serde_json::json!({"id": id, "action": "RequestReboot", "policy": policy,
                           "requestedAt": Timestamp::now(), "reason": "test: two agents"})
    };
    request_actions(&node, serde_json::json!([reboot("first")])).await;
    let s = wait_report(
        &node,
        Duration::from_secs(15),
        "first executed",
        &agents[holder].1,
        |s| result(s, "first").is_some_and(|r| r.outcome.is_final()),
    )
    .await;
    assert_eq!(
        result(&s, "first").map(|r| r.outcome),
        Some(ActionResultOutcome::Completed),
        "{:?}",
        result(&s, "first")
    );
    // Give a second executor every chance: several scans and lease periods.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(sentinel(h).exists(), "the holder requested the reboot");
    assert!(
        !sentinel(p).exists(),
        "the request was executed twice: by the passive agent too\n--- passive ---\n{}",
        agents[passive].1.log()
    );
    assert_eq!(
        agents[passive]
            .1
            .metric("nodemedic_agent_actions_total")
            .await,
        0.0
    );
    assert_eq!(
        agents[passive]
            .1
            .metric("nodemedic_agent_report_writes_total")
            .await,
        0.0
    );
    assert_eq!(
        agents[holder]
            .1
            .metric("nodemedic_agent_actions_total")
            .await,
        1.0
    );

    let transition = |s: &NodeHealthReportStatus| {
        condition(s, &policy, ConditionType::ZombiesDetected).map(|c| c.last_transition_time.0)
    };
    let before = transition(&s).expect("the holder's zombies condition");

    // SIGKILL the holder: no release; the other takes over when the Lease
    // (3s) expires, keeps the first result and the conditions' transition
    // times, and acts on a new request.
    agents[holder].1.kill();
    let killed = Instant::now();
    request_actions(
        &node,
        serde_json::json!([reboot("first"), reboot("second")]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while agents[passive].1.metric(lease_held).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "no takeover:\n{}",
            agents[passive].1.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "took over {took:?} after the kill: before the Lease expired"
    );
    let s = wait_report(
        &node,
        Duration::from_secs(15),
        "second executed",
        &agents[passive].1,
        |s| result(s, "second").is_some_and(|r| r.outcome.is_final()),
    )
    .await;
    assert_eq!(
        result(&s, "second").map(|r| r.outcome),
        Some(ActionResultOutcome::Completed)
    );
    assert_eq!(
        transition(&s),
        Some(before),
        "the survivor publishes the report's transition times, not its own"
    );
    assert!(sentinel(p).exists(), "the survivor requested the reboot");
    let first = result(&s, "first").expect("the first result is kept");
    assert_eq!(first.outcome, ActionResultOutcome::Completed);
    assert!(
        first.message.contains(&format!("sentinel-{h}")),
        "{}",
        first.message
    );
    assert_eq!(
        agents[passive]
            .1
            .metric("nodemedic_agent_actions_total")
            .await,
        1.0,
        "the survivor executed only the new request"
    );

    // SIGTERM releases the Lease at once.
    let (code, _) = agents[passive].1.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", agents[passive].1.log());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(
        cp().await.client().await.expect("client"),
        "kube-node-lease",
    );
    let lease = leases
        .get(&format!("nodemedic-agent-{node}"))
        .await
        .expect("the node lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "released on SIGTERM"
    );
}

/// The holder renews its Lease as it last wrote it, without reading it
/// first (a round trip saved every renewal), and only when it is about to
/// act; a write by anyone else in between must still end its acting at its
/// next renewal: the renewal's resourceVersion precondition fails, the
/// agent reads and decides, and the request that made it renew is not run.
#[tokio::test]
async fn a_holder_whose_lease_another_writer_took_stops_acting_at_its_next_renewal() {
    let Some((node, policy, kubeconfig, host)) = setup("lease-taken", zombie_spec("1h")).await
    else {
        return;
    };
    let agent = Agent::start_with(
        &AgentOptions {
            kubeconfig: &kubeconfig,
            node: &node,
            host_root: host.root.path(),
            interval: "1s",
            heartbeat: "1m",
            action_ttl: "10m",
            caps: None,
        },
        &[
            ("NODEMEDIC_LEASE_DURATION", "6s"),
            ("POD_NAME", "agent-a"),
            ("POD_UID", "uid"),
        ],
    );
    let held = "nodemedic_agent_node_lease_held ";
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric(held).await != 1.0 {
        assert!(Instant::now() < deadline, "never held:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.metric(held).await, 1.0, "{}", agent.log());

    // Another writer takes the Lease: a fresh renewal in its own name.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(
        cp().await.client().await.expect("client"),
        "kube-node-lease",
    );
    let name = format!("nodemedic-agent-{node}");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now());
    leases
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder_uid",
                "renewTime": now,
                "leaseDurationSeconds": 3600,
            }})),
        )
        .await
        .expect("take the Lease");
    // Past the holder's acting window (4.5 s of its 6 s Lease), a request:
    // to run it, the holder must renew, which finds the other write.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes_before = agent
        .metric("nodemedic_agent_report_writes_total{result=\"ok\",reason=\"change\"}")
        .await;
    request_actions(
        &node,
        serde_json::json!([{"id": "after-intruder", "action": "RequestReboot", "policy": policy,
                            "requestedAt": Timestamp::now(), "reason": "test: lease taken"}]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(6);
    while agent.metric(held).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "still acting after another writer took the Lease:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lease = leases.get(&name).await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("intruder_uid"),
        "the agent must not have written over the other holder"
    );
    assert!(
        agent.log().contains("node lease held by intruder_uid"),
        "{}",
        agent.log()
    );
    // Nothing accepted or written after the other writer took the Lease.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = report_status(&node).await.expect("report");
    assert!(
        result(&s, "after-intruder").is_none(),
        "the request was handled without the Lease: {:?}",
        result(&s, "after-intruder")
    );
    assert_eq!(
        agent
            .metric("nodemedic_agent_report_writes_total{result=\"ok\",reason=\"action\"}")
            .await,
        0.0,
        "{}",
        agent.log()
    );
    assert_eq!(
        agent
            .metric("nodemedic_agent_report_writes_total{result=\"ok\",reason=\"change\"}")
            .await,
        writes_before,
        "{}",
        agent.log()
    );
}
