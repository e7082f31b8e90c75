//! Operator benchmark against the harness's real API server:
//! 5,000 API-only Nodes, 5,000 reports, 3 policies (Enforce, ladder
//! `[Event]`), the release operator binary as a subprocess.
//!
//! Measures, in one run:
//! * latency from one report's condition flipping (an agent's status write)
//!   to the operator's resulting writes — the node's ledger (its
//!   NodeRemediation: the episode and its step record) and the policy
//!   status — p50/p99 over `NODEMEDIC_BENCH_FLIPS`
//!   flips (default 100, alternating True/False); baseline: the same flip
//!   seen by a plain watch in this process (what no controller can beat);
//! * API writes per change, from the API server's own request counters
//!   (every mutating request except the agent's status writes and Lease
//!   renewals), cross-checked with the operator's counter;
//! * operator RSS (VmRSS, VmHWM) in steady state;
//! * operator CPU per minute idle (no report changes), and per minute under
//!   the heartbeat load 5,000 agents produce at a 5m heartbeat (16.7 status
//!   writes/s);
//! * `kubectl nodemedic simulate` of an edited policy on every node, 6 h
//!   ahead: the command end to end and the projection alone, against one
//!   reconcile's mean (the planner figure above).
//!
//! `cargo bench -p nodemedic-operator --bench operator`
//! Environment: `NODEMEDIC_BENCH_NODES` (5000), `NODEMEDIC_BENCH_FLIPS` (100),
//! `NODEMEDIC_BENCH_IDLE_SECS` (60).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use nodemedic_testkit::bench::{env_usize, smoke_run};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, Detector, field_manager};
use nodemedic_crds::report::PolicyCondition;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeHealthReportStatus};
use nodemedic_tests::ControlPlane;
use serde_json::json;

const LABEL: &str = "nodemedic.io/bench";
const POLICIES: [(&str, Detector); 3] = [
    ("bench-zombies", Detector::Zombies),
    ("bench-hung", Detector::HungTasks),
    ("bench-fd", Detector::FdLeak),
];

fn status_for(firing: &BTreeMap<&str, (bool, Timestamp)>) -> NodeHealthReportStatus {
    NodeHealthReportStatus {
        last_scan_time: Some(Time(Timestamp::now())),
        heartbeat_interval: Some("1h".into()),
        scan_interval: Some("10s".into()),
        healthy: firing.values().all(|(f, _)| !f),
        conditions: POLICIES
            .iter()
            .map(|(p, d)| {
                let (f, since) = firing
                    .get(p)
                    .copied()
                    .unwrap_or((false, Timestamp::UNIX_EPOCH));
                PolicyCondition {
                    policy: (*p).into(),
                    type_: d.condition_type(),
                    status: ConditionStatus::from_bool(f),
                    reason: ConditionReason::of(f, f),
                    message: if f {
                        "bench: firing".into()
                    } else {
                        "bench: below threshold".into()
                    },
                    last_transition_time: Time(since),
                    exceeded_since: None,
                    scope: None,
                    culprit: None,
                }
            })
            .collect(),
        ..Default::default()
    }
}

async fn write_status(client: &Client, node: &str, status: &NodeHealthReportStatus) {
    let api: Api<NodeHealthReport> = Api::all(client.clone());
    let body = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthReport",
        "metadata": {"name": node},
        "status": status,
    });
    api.patch_status(
        node,
        &PatchParams::apply(field_manager::AGENT).force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap();
}

/// Mutating requests the API server counted, by (verb, group/resource/subresource).
async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let get = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let verb = get("verb");
        if !["POST", "PUT", "PATCH", "DELETE", "APPLY"].contains(&verb.as_str()) {
            continue;
        }
        let key = format!(
            "{verb} {}/{}/{}",
            get("group"),
            get("resource"),
            get("subresource")
        );
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Writes by the operator between two snapshots: everything but the agent's
/// status writes, Lease renewals and the bench's own setup.
fn operator_writes(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> (f64, BTreeMap<String, f64>) {
    let mut by = BTreeMap::new();
    let mut total = 0.0;
    for (k, v) in after {
        if k.contains("/nodehealthreports/status") || k.contains("/leases/") {
            continue;
        }
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            by.insert(k.clone(), d);
            total += d;
        }
    }
    (total, by)
}

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time of a process, seconds: the sum of its threads' run time from
/// `/proc/PID/task/*/schedstat` (nanoseconds), or utime + stime (10 ms
/// ticks, includes exited threads) when that is larger.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mut ns = 0.0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    (ns / 1e9).max(ticks / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(name: &str, mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99) = (percentile(&v, 50.0), percentile(&v, 99.0));
    println!(
        "{name:<44} n={:<4} p50={:>8.1} ms  p99={:>8.1} ms  max={:>8.1} ms",
        v.len(),
        p50 * 1e3,
        p99 * 1e3,
        v.last().copied().unwrap_or(f64::NAN) * 1e3
    );
    (p50, p99)
}

#[tokio::main]
async fn main() {
    let smoke = smoke_run();
    let nodes_n = if smoke {
        20
    } else {
        env_usize("NODEMEDIC_BENCH_NODES", 5000)
    };
    let flips = if smoke {
        3
    } else {
        env_usize("NODEMEDIC_BENCH_FLIPS", 100)
    };
    let idle_secs = if smoke {
        2
    } else {
        env_usize("NODEMEDIC_BENCH_IDLE_SECS", 60) as u64
    };
    let cp = ControlPlane::shared().await.expect("control plane");
    let client = cp.client().await.unwrap();
    println!("nodemedic operator bench: {nodes_n} nodes, 3 policies, {flips} flips");

    // --- setup ------------------------------------------------------------
    let t = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..nodes_n).map(|i| format!("bench-{i:05}")).collect();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = node_api.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {LABEL: "yes", "kubernetes.io/hostname": name}},
                }))
                .unwrap();
                api.create(&PostParams::default(), &node).await.map(|n| n.uid().unwrap())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let uids: BTreeMap<String, String> = node_api
        .list(&ListParams::default().labels(&format!("{LABEL}=yes")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| (n.name_any(), n.uid().unwrap()))
        .collect();
    let report_api: Api<NodeHealthReport> = Api::all(client.clone());
    let healthy = status_for(&BTreeMap::new());
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = report_api.clone();
            let client = client.clone();
            let uid = uids[&name].clone();
            let healthy = healthy.clone();
            async move {
                let body = json!({
                    "apiVersion": "nodemedic.io/v1alpha1",
                    "kind": "NodeHealthReport",
                    "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
                    "spec": {},
                });
                api.patch(&name, &PatchParams::apply(field_manager::AGENT), &Patch::Apply(&body))
                    .await
                    .unwrap();
                write_status(&client, &name, &healthy).await;
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let policy_api: Api<NodeHealthPolicy> = Api::all(client.clone());
    for (name, d) in POLICIES {
        let body = json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthPolicy",
            "metadata": {"name": name, "labels": {LABEL: "yes"}},
            "spec": {
                "mode": "Enforce",
                "nodeSelector": {"matchLabels": {LABEL: "yes"}},
                "detectors": {d.name(): {}},
                "actions": {d.name(): [{"action": "Event"}]},
                "safety": {"maxUnhealthy": "10%"},
            },
        });
        policy_api
            .patch(name, &PatchParams::apply("bench"), &Patch::Apply(&body))
            .await
            .unwrap();
    }
    println!(
        "setup: {} nodes and reports in {:.1}s",
        nodes_n,
        t.elapsed().as_secs_f64()
    );

    // --- operator -----------------------------------------------------------
    let ns = cp.create_namespace("bench").await.unwrap();
    let admin_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = cp.dir().join("operator-bench.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodemedic-operator"))
        .arg("run")
        .env_clear()
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("NODEMEDIC_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env(
            "NODEMEDIC_LOG",
            std::env::var("NODEMEDIC_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("NODEMEDIC_LEASE_NAMESPACE", &ns)
        .env("NODEMEDIC_IDENTITY", "bench")
        .env("NODEMEDIC_POLICY_SELECTOR", format!("{LABEL}=yes"))
        .stdout(std::process::Stdio::from(file.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let started = Instant::now();
    common::eventually(
        Duration::from_secs(120),
        "3 policies report 5,000 matched nodes",
        || async {
            let all = policy_api
                .list(&ListParams::default().labels(&format!("{LABEL}=yes")))
                .await
                .ok()?;
            all.items
                .iter()
                .all(|p| {
                    p.status
                        .as_ref()
                        .is_some_and(|s| s.matched_nodes as usize == nodes_n)
                })
                .then_some(())
        },
    )
    .await;
    println!(
        "operator: caches synced and 3 policies reconciled {:.2}s after start",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // --- idle ---------------------------------------------------------------
    let w0 = apiserver_writes(&client).await;
    let c0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_cpu = (cpu_seconds(pid) - c0) * 60.0 / idle_secs as f64;
    let (idle_writes, _) = operator_writes(&w0, &apiserver_writes(&client).await);
    let rss_idle = proc_status(pid, "VmRSS:").unwrap_or(0);

    // --- heartbeats: 5,000 agents at a 5m heartbeat = 16.7 writes/s ----------
    let rate = nodes_n as f64 / 300.0;
    let c0 = cpu_seconds(pid);
    let w0 = apiserver_writes(&client).await;
    let hb_start = Instant::now();
    let mut sent = 0usize;
    while hb_start.elapsed() < Duration::from_secs(idle_secs) {
        let due = (hb_start.elapsed().as_secs_f64() * rate) as usize;
        while sent < due {
            write_status(
                &client,
                &names[sent % nodes_n],
                &status_for(&BTreeMap::new()),
            )
            .await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hb_cpu = (cpu_seconds(pid) - c0) * 60.0 / hb_start.elapsed().as_secs_f64();
    let (hb_writes, _) = operator_writes(&w0, &apiserver_writes(&client).await);

    // --- flips ----------------------------------------------------------------
    let list = report_api
        .list(&ListParams::default().limit(1))
        .await
        .unwrap();
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut watch = report_api
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .unwrap()
        .boxed();
    let mut pwatch = {
        let l = policy_api
            .list(&ListParams::default().limit(1))
            .await
            .unwrap();
        policy_api
            .watch(
                &WatchParams::default().timeout(290),
                &l.metadata.resource_version.unwrap_or_default(),
            )
            .await
            .unwrap()
            .boxed()
    };
    let ledger_api: Api<nodemedic_crds::NodeRemediation> = Api::all(client.clone());
    let mut lwatch = {
        let l = ledger_api
            .list(&ListParams::default().limit(1))
            .await
            .unwrap();
        ledger_api
            .watch(
                &WatchParams::default().timeout(290),
                &l.metadata.resource_version.unwrap_or_default(),
            )
            .await
            .unwrap()
            .boxed()
    };
    let w0 = apiserver_writes(&client).await;
    let op_w0 = operator_counter(admin_port).await;
    let mut seen_by_watch = Vec::new();
    let mut to_spec = Vec::new();
    let mut to_status = Vec::new();
    for i in 0..flips {
        let node = &names[(i / 2 * 37) % nodes_n];
        let firing = i % 2 == 0;
        let since = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
        let mut m = BTreeMap::new();
        m.insert("bench-zombies", (firing, since));
        let t0 = Instant::now();
        write_status(&client, node, &status_for(&m)).await;
        let (mut watch_seen, mut spec_seen, mut status_seen) = (None, None, None);
        let deadline = t0 + Duration::from_secs(20);
        while (watch_seen.is_none() || spec_seen.is_none() || status_seen.is_none())
            && Instant::now() < deadline
        {
            tokio::select! {
                ev = watch.next() => {
                    if let Some(Ok(WatchEvent::Modified(r))) = ev
                        && r.name_any() == *node
                    {
                        let fired = r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.policy == "bench-zombies" && (c.status == ConditionStatus::True) == firing));
                        if fired && watch_seen.is_none() {
                            watch_seen = Some(t0.elapsed());
                        }
                    }
                }
                ev = lwatch.next() => {
                    if let Some(Ok(WatchEvent::Added(l) | WatchEvent::Modified(l))) = ev
                        && l.name_any() == *node
                        && l.spec.episodes.iter().any(|e| e.policy == "bench-zombies") == firing
                        && spec_seen.is_none()
                    {
                        spec_seen = Some(t0.elapsed());
                    }
                }
                ev = pwatch.next() => {
                    if let Some(Ok(WatchEvent::Modified(p))) = ev
                        && p.name_any() == "bench-zombies"
                        && p.status.as_ref().is_some_and(|s| s.unhealthy_nodes == u32::from(firing))
                        && status_seen.is_none()
                    {
                        status_seen = Some(t0.elapsed());
                    }
                }
                _ = tokio::time::sleep_until((t0 + Duration::from_secs(20)).into()) => {}
            }
        }
        let (Some(a), Some(b), Some(c)) = (watch_seen, spec_seen, status_seen) else {
            panic!(
                "flip {i} on {node}: watch {watch_seen:?} ledger {spec_seen:?} status {status_seen:?}; operator log {}",
                log.display()
            );
        };
        seen_by_watch.push(a.as_secs_f64());
        to_spec.push(b.as_secs_f64());
        to_status.push(c.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (flip_writes, by) = operator_writes(&w0, &apiserver_writes(&client).await);
    let op_writes = operator_counter(admin_port).await - op_w0;
    let rss = proc_status(pid, "VmRSS:").unwrap_or(0);
    let hwm = proc_status(pid, "VmHWM:").unwrap_or(0);

    println!();
    let (b50, b99) = summarize("baseline: flip seen by a plain watch", seen_by_watch);
    let (s50, s99) = summarize("flip → operator's ledger write", to_spec);
    let (p50, p99) = summarize("flip → operator's policy status write", to_status);
    println!(
        "ratios to the baseline: spec p50 {:.1}x p99 {:.1}x; status p50 {:.1}x p99 {:.1}x",
        s50 / b50,
        s99 / b99,
        p50 / b50,
        p99 / b99
    );
    println!(
        "API writes per change: {:.2} (API server count {flip_writes} / {flips} changes; operator's own count {op_writes})",
        flip_writes / flips as f64
    );
    for (k, v) in by {
        println!("    {k:<60} {v}");
    }
    println!(
        "operator RSS: {:.1} MiB idle, {:.1} MiB after the flips, peak {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "operator CPU idle: {idle_cpu:.3} CPU-seconds per minute ({:.2}% of a core); writes {idle_writes}",
        idle_cpu / 60.0 * 100.0
    );
    println!(
        "operator CPU under 5m heartbeats ({sent} status writes, {rate:.1}/s): {hb_cpu:.3} CPU-seconds per minute ({:.2}% of a core); operator writes {hb_writes}",
        hb_cpu / 60.0 * 100.0
    );
    let m = operator_metrics(admin_port).await;
    let value = |name: &str| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(f64::NAN)
    };
    let (sum, count) = (
        value("nodemedic_operator_reconcile_duration_seconds_sum "),
        value("nodemedic_operator_reconcile_duration_seconds_count "),
    );
    println!(
        "reconciles: {count} in all, mean {:.1} ms (plan + writes, one policy over {nodes_n} nodes)",
        sum / count * 1e3
    );

    // --- kubectl nodemedic simulate at this scale (same run) ---------------
    // An edit of bench-zombies with a longer ladder, projected 6 h ahead on
    // every node: the plugin binary end to end (listing policies, Nodes,
    // reports and ledgers through the API server, then the projection),
    // and the projection alone on the same objects.
    let plugin = nodemedic_tests::workspace_bin::workspace_binary(
        "kubectl-nodemedic",
        "kubectl-nodemedic",
        "kubectl-nodemedic",
    )
    .unwrap();
    let edited = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": "bench-zombies", "labels": {LABEL: "yes"}},
        "spec": {
            "mode": "Enforce",
            "nodeSelector": {"matchLabels": {LABEL: "yes"}},
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "Cordon", "after": "10m", "scope": "Any"},
                {"action": "Drain", "after": "30m", "scope": "Any"},
            ]},
            "safety": {"maxUnhealthy": "10%"},
        },
    });
    let file = cp.dir().join("bench-simulate.yaml");
    std::fs::write(&file, serde_json::to_string(&edited).unwrap()).unwrap();
    let mut walls = Vec::new();
    let mut lines = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = tokio::process::Command::new(&plugin)
            .args([
                "simulate",
                "-f",
                file.to_str().unwrap(),
                "-o",
                "json",
                "--horizon",
                "6h",
            ])
            .env("KUBECONFIG", cp.admin_kubeconfig())
            .output()
            .await
            .unwrap();
        walls.push(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "simulate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        lines = v["timeline"].as_array().map_or(0, Vec::len);
    }
    let world = nodemedic_operator::simulate::World {
        policies: policy_api.list(&ListParams::default()).await.unwrap().items,
        nodes: node_api.list(&ListParams::default()).await.unwrap().items,
        reports: report_api.list(&ListParams::default()).await.unwrap().items,
        ledgers: Api::<nodemedic_crds::NodeRemediation>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    };
    let candidate: NodeHealthPolicy = serde_json::from_value(edited).unwrap();
    let mut projections = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = nodemedic_operator::simulate::project(
            &candidate,
            &world,
            &nodemedic_operator::simulate::Options {
                now: Timestamp::now(),
                horizon: Duration::from_secs(6 * 3600),
                settings: Default::default(),
                answer_within: Duration::from_secs(30),
            },
        )
        .unwrap();
        projections.push(t.elapsed().as_secs_f64());
        assert_eq!(p.nodes.len(), nodes_n);
    }
    let (w50, _) = summarize(
        "kubectl nodemedic simulate, whole command (target < 2 s)",
        walls,
    );
    let (j50, _) = summarize(
        "  of which the projection (planner rounds over 6 h)",
        projections,
    );
    println!(
        "simulate on {nodes_n} nodes: {lines} timeline entries; command p50 {:.0} ms, projection p50 {:.0} ms = {:.1}x one reconcile's mean",
        w50 * 1e3,
        j50 * 1e3,
        j50 / (sum / count)
    );
    let _ = child.kill().await;
}

async fn operator_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf
}

async fn operator_counter(port: u16) -> f64 {
    operator_metrics(port)
        .await
        .lines()
        .filter(|l| l.starts_with("nodemedic_operator_api_writes_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|x| x.1.parse::<f64>().ok()))
        .sum()
}
