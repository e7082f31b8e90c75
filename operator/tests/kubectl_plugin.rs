//! `kubectl nodemedic` (the plugin binary) against a real API server, with
//! records the real operator wrote: `status` and `explain` on a node
//! mid-ladder and on nodes held by a storm (golden outputs under
//! `tests/golden/kubectl-nodemedic/`, times and ages normalised), `simulate`
//! of a policy compared with what the operator then really does, and the
//! errors a person acts on.
//!
//! One control plane for this file; each test has its own namespace, nodes
//! and policies, and the plugin's output is filtered to them where it lists
//! the fleet. `UPDATE_GOLDEN=1` rewrites the golden files.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::conditions::Detector;
use nodemedic_crds::policy::{ActionKind, ActionOutcome};
use nodemedic_crds::report::ActionResultOutcome;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn plugin() -> PathBuf {
    nodemedic_tests::workspace_bin::workspace_binary(
        "kubectl-nodemedic",
        "kubectl-nodemedic",
        "kubectl-nodemedic",
    )
    .unwrap()
}

/// Runs the plugin as the admin; (exit code, stdout, stderr).
async fn run(w: &World, args: &[&str]) -> (i32, String, String) {
    run_as(w, w.cp.admin_kubeconfig(), args).await
}

async fn run_as(w: &World, kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(plugin())
        .args(args)
        .args(["--lease-name", &format!("nodemedic-{}", w.id)])
        .args(["--operator-namespace", &w.namespace])
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces what changes between runs: the test's id, RFC 3339 times,
/// durations and ages, and runs of spaces (alignment follows their width).
fn normalise(text: &str, id: &str, nodes: &[&str]) -> String {
    let mut text = text.replace(id, "<id>");
    for (i, n) in nodes.iter().enumerate() {
        text = text.replace(n, &format!("<node{i}>"));
    }
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| {
                let core = w.trim_matches(|c: char| ",;:()[]".contains(c));
                if core.is_empty() {
                    return w.to_owned();
                }
                let is_time = core.len() >= 20
                    && core.as_bytes()[4] == b'-'
                    && core.contains('T')
                    && core.ends_with('Z');
                let is_dur = core
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-')
                    && core
                        .trim_start_matches(['+', '-'])
                        .chars()
                        .all(|c| c.is_ascii_digit() || "smhd".contains(c))
                    && core.chars().any(|c| "smhd".contains(c));
                if is_time {
                    w.replace(core, "<time>")
                } else if is_dur {
                    w.replace(core, "<dur>")
                } else {
                    w.to_owned()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// With `NODEMEDIC_DOC_OUTPUT=DIR`, keeps the plugin's raw output for the
/// examples in docs/kubectl-plugin.md.
fn doc_copy(name: &str, raw: &str) {
    if let Some(dir) = std::env::var_os("NODEMEDIC_DOC_OUTPUT") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), raw).unwrap();
    }
}

fn golden(name: &str, actual: &str) {
    let path = nodemedic_tests::repo_root()
        .join("tests/golden/kubectl-nodemedic")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        expected,
        actual,
        "{} differs from the plugin's output (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// Lines of a status table about this test's objects only (the control
/// plane is shared with the other tests of this file).
fn own_lines(text: &str, id: &str) -> String {
    text.lines()
        .filter(|l| {
            l.contains(id)
                || l.starts_with("POLICY")
                || l.starts_with("NODE")
                || l.starts_with("WARNING")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test]
async fn status_and_explain_tell_a_ladder_midway() {
    let w = World::new("kp-mid").await;
    let node = w.node("mid").await;
    let policy = format!("{}-reap", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "SignalParent", "signal": "SIGTERM"},
                {"action": "Cordon", "after": "1h", "scope": "Any"},
            ]},
            "safety": {"cooldown": "10m", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let ns = w.namespace.clone();
    let pod = w.pod(&ns, "php-0", &node, json!({})).await;
    let uid = pod.metadata.uid.clone().unwrap();
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(
        4242,
        987_654,
        "php-fpm",
        Some((&ns, "php-0", &uid)),
    )];
    agent.set(&policy, Detector::Zombies, true);
    for c in agent.status.conditions.iter_mut() {
        c.scope = Some(nodemedic_crds::report::ProblemScope::Pod);
        c.culprit = Some(nodemedic_crds::report::CulpritPod {
            uid: uid.clone(),
            namespace: Some(ns.clone()),
            name: Some("php-0".into()),
        });
    }
    agent.write().await;
    let mut op = w.operator("kp-mid").start();

    // The operator asks the agent to signal; the agent answers.
    let id = eventually(T, "a SignalParent request", || async {
        let r = w.get_report(&node).await;
        r.spec.action_requests.first().map(|r| r.id.clone())
    })
    .await;
    agent.result(&id, ActionResultOutcome::Signalled);
    agent.write().await;
    eventually(T, "SignalParent Executed in the policy status", || async {
        let s = w.get_policy(&policy).await.status?;
        s.recent_actions
            .iter()
            .any(|a| a.action == ActionKind::SignalParent && a.outcome == ActionOutcome::Executed)
            .then_some(())
    })
    .await;

    let (code, out, err) = run(&w, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    // The next step is the Cordon, an hour after the episode began.
    assert!(out.contains("Cordon"), "{out}");
    doc_copy("status-midway.txt", &out);
    golden(
        "status-midway.txt",
        &normalise(&own_lines(&out, &w.id), &w.id, &[&node]),
    );

    let (code, out, err) = run(&w, &["explain", &node]).await;
    assert_eq!(code, 0, "{err}");
    for needle in [
        "pid 4242 (php-fpm)",
        &format!("pod {ns}/php-0"),
        "#2 SignalParent: Done",
        "Cordon: Executed",
        "cooldown",
        "schedulable",
    ] {
        assert!(out.contains(needle), "explain lacks {needle:?}:\n{out}");
    }
    doc_copy("explain-midway.txt", &out);
    golden("explain-midway.txt", &normalise(&out, &w.id, &[&node]));

    let (code, out, _) = run(&w, &["explain", &node, "-o", "json"]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["node"], json!(node));
    assert_eq!(v["policies"][0]["policy"], json!(policy));
    op.terminate().await;
}

#[tokio::test]
async fn explain_names_the_storm_that_holds_a_node() {
    let w = World::new("kp-storm").await;
    let policy = format!("{}-fence", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [{"action": "Cordon", "scope": "Any"}]},
            "safety": {"maxUnhealthy": 1, "cooldown": "0s"},
        }),
    )
    .await;
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for i in 0..3 {
        let node = w.node(&format!("storm{i}")).await;
        let mut agent = Agent::start(&w.client, &node).await;
        // These agents write once: a long heartbeat keeps their reports
        // fresh for the whole test, so the storm is "3 firing" however slow
        // the machine (the golden once read "3 with stale reports").
        agent.status.heartbeat_interval = Some("15m".into());
        agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
        agent.set(&policy, Detector::Zombies, true);
        agent.write().await;
        nodes.push(node);
        agents.push(agent);
    }
    let mut op = w.operator("kp-storm").start();
    eventually(T, "StormActive=True", || async {
        let p = w.get_policy(&policy).await;
        (condition(&p, "StormActive").map(|c| c.0).as_deref() == Some("True")).then_some(())
    })
    .await;
    let (code, out, err) = run(&w, &["explain", &nodes[0]]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("storm         HOLDS"), "{out}");
    assert!(
        out.contains("Cordon held (StormActive): stays so until the hold lifts"),
        "{out}"
    );
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    doc_copy("explain-storm.txt", &out);
    golden("explain-storm.txt", &normalise(&out, &w.id, &names));
    let (_, out, _) = run(&w, &["status"]).await;
    doc_copy("status-storm.txt", &out);
    golden(
        "status-storm.txt",
        &normalise(&own_lines(&out, &w.id), &w.id, &names),
    );
    for n in &nodes {
        assert!(
            !unschedulable(&w.get_node(n).await),
            "{n} cordoned during a storm"
        );
    }
    op.terminate().await;
}

#[tokio::test]
async fn simulate_projects_what_the_operator_then_does() {
    let w = World::new("kp-sim").await;
    let node = w.node("sim").await;
    let policy = format!("{}-reap", w.id);
    // A policy of another name reports the zombies (the agent lists them
    // for it); the simulated policy is new.
    let observer = format!("{}-watch", w.id);
    w.policy(
        &observer,
        json!({"mode": "Observe", "detectors": {"zombies": {}}}),
    )
    .await;
    let ns = w.namespace.clone();
    let pod = w.pod(&ns, "php-0", &node, json!({})).await;
    let uid = pod.metadata.uid.clone().unwrap();
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(
        4242,
        987_654,
        "php-fpm",
        Some((&ns, "php-0", &uid)),
    )];
    agent.set(&observer, Detector::Zombies, true);
    agent.write().await;
    let mut op = w.operator("kp-sim").start();

    let spec = json!({
        "mode": "DryRun",
        "nodeSelector": {"matchLabels": {"nodemedic.io/test": w.id}},
        "detectors": {"zombies": {"for": "4s"}},
        "actions": {"zombies": [
            {"action": "Event"},
            {"action": "SignalParent", "after": "4s"},
            {"action": "EvictPod", "after": "8s"},
        ]},
        "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
    });
    let doc = json!({
        "apiVersion": "nodemedic.io/v1alpha1", "kind": "NodeHealthPolicy",
        "metadata": {"name": policy, "labels": {"nodemedic.io/test": w.id}},
        "spec": spec,
    });
    let file = w.cp.dir().join(format!("{policy}.yaml"));
    std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let (_, table, _) = run(
        &w,
        &["simulate", "-f", file.to_str().unwrap(), "--horizon", "1m"],
    )
    .await;
    doc_copy("simulate.txt", &table);
    let started = Timestamp::now();
    let (code, out, err) = run(
        &w,
        &[
            "simulate",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
            "--horizon",
            "1m",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let projected: Value = serde_json::from_str(&out).unwrap();
    assert!(
        projected["writes"]
            .as_str()
            .unwrap()
            .starts_with("nothing was written")
    );
    let steps: Vec<(String, i64)> = projected["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["verdict"] == "Planned")
        .map(|e| {
            let at: Timestamp = e["at"].as_str().unwrap().parse().unwrap();
            (
                e["action"].as_str().unwrap().to_owned(),
                at.as_second() - started.as_second(),
            )
        })
        .collect();
    let actions: Vec<&str> = steps.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["Event", "SignalParent", "EvictPod"], "{out}");
    // Nothing was written: no policy of that name, no ledger entry for it.
    let api: kube::Api<nodemedic_crds::NodeHealthPolicy> = kube::Api::all(w.client.clone());
    assert!(api.get_opt(&policy).await.unwrap().is_none());

    // Apply it; the agent reports the condition `for` after it sees it.
    let applied = Timestamp::now();
    w.policy(&policy, spec).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    agent.set(&policy, Detector::Zombies, true);
    for c in agent.status.conditions.iter_mut() {
        c.scope = Some(nodemedic_crds::report::ProblemScope::Pod);
        c.culprit = Some(nodemedic_crds::report::CulpritPod {
            uid: uid.clone(),
            namespace: Some(ns.clone()),
            name: Some("php-0".into()),
        });
    }
    agent.status.findings.zombies[0].exceeded_under = vec![observer.clone(), policy.clone()];
    agent.write().await;
    let real = eventually(
        T,
        "three Planned steps recorded by the operator",
        || async {
            let s = w.get_policy(&policy).await.status?;
            let mut planned: Vec<(String, i64)> = s
                .recent_actions
                .iter()
                .filter(|a| a.outcome == ActionOutcome::Planned)
                .map(|a| {
                    (
                        format!("{:?}", a.action),
                        a.time.0.as_second() - applied.as_second(),
                    )
                })
                .collect();
            planned.sort_by_key(|(_, t)| *t);
            (planned.len() == 3).then_some(planned)
        },
    )
    .await;
    eprintln!("projected {steps:?}\nreal      {real:?}");
    for ((pa, pt), (ra, rt)) in steps.iter().zip(&real) {
        assert_eq!(pa, ra, "projected {steps:?}, real {real:?}");
        // The same times, within the few seconds it takes to apply, report
        // and reconcile.
        assert!((pt - rt).abs() <= 3, "{pa}: projected +{pt}s, real +{rt}s");
    }
    op.terminate().await;
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let w = World::new("kp-err").await;
    // No operator running under this Lease name.
    let (code, out, _) = run(&w, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("WARNING: no operator is running: no Lease"),
        "{out}"
    );
    // A node without a report.
    let node = w.node("noreport").await;
    let (code, out, _) = run(&w, &["explain", &node]).await;
    assert_eq!(code, 0);
    assert!(out.contains("no NodeHealthReport"), "{out}");
    // A node that does not exist.
    let (code, _, err) = run(&w, &["explain", "no-such-node"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Node \"no-such-node\" not found"), "{err}");
    // RBAC: a ServiceAccount that may read nothing of nodemedic's.
    let kc =
        w.cp.service_account_kubeconfig(&w.namespace, "nobody")
            .await
            .unwrap();
    let (code, _, err) = run_as(&w, &kc, &["status"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("forbidden: you cannot list nodehealthpolicies")
            && err.contains("verb \"list\""),
        "{err}"
    );
    // A file that is not a policy.
    let file = w.cp.dir().join(format!("{}-notapolicy.yaml", w.id));
    std::fs::write(&file, "kind: ConfigMap\n").unwrap();
    let (code, _, err) = run(&w, &["simulate", "-f", file.to_str().unwrap()]).await;
    assert_eq!(code, 2);
    assert!(err.contains("not a NodeHealthPolicy"), "{err}");
}

/// Renders the chart and applies only its roles for people and the
/// admission policy that ties a pause to its requester (the chart's other
/// admission policies would bind report and ledger writes to the chart's
/// operator account, not this file's). Returns the release's full name.
async fn install_people_roles(w: &World) -> String {
    let release = nodemedic_tests::unique_name("people");
    let chart = nodemedic_tests::chart::chart_dir();
    let out = nodemedic_tests::chart::helm_offline(&[
        "template",
        &release,
        &chart.to_string_lossy(),
        "--namespace",
        &w.namespace,
        &format!(
            "--kube-version={}",
            nodemedic_tests::assets::pinned_kubernetes_version()
        ),
    ])
    .await
    .unwrap();
    assert!(out.success, "{out}");
    let objs = nodemedic_tests::chart::manifests(&out.stdout).unwrap();
    let wanted: Vec<Value> = objs
        .into_iter()
        .filter(|o| {
            let kind = o["kind"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            (kind == "ClusterRole" && name.contains("-kubectl-"))
                || (kind.starts_with("ValidatingAdmissionPolicy")
                    && name.ends_with("-pause-attribution"))
        })
        .collect();
    assert_eq!(
        wanted.len(),
        4,
        "two roles, the pause policy and its binding"
    );
    let stream = nodemedic_tests::chart::to_yaml_stream(&wanted).unwrap();
    let out =
        w.cp.kubectl_with(
            w.cp.admin_kubeconfig(),
            &["apply", "--server-side", "--field-manager=helm", "-f", "-"],
            Some(stream.as_bytes()),
        )
        .await
        .unwrap();
    assert!(out.success, "{out}");
    wanted
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .find_map(|n| n.strip_suffix("-kubectl-pauser"))
        .unwrap()
        .to_owned()
}

/// `pause` and `resume` through the plugin, run as a ServiceAccount bound to
/// the chart's `kubectl-pauser` ClusterRole (with the chart's admission
/// policies installed): the pause is recorded in that account's name, the
/// ladder stops at it, `status` shows it, and after `resume` the next step
/// runs once.
#[tokio::test]
async fn pause_and_resume_stop_and_continue_a_ladder() {
    let w = World::new("kp-pause").await;
    let release = install_people_roles(&w).await;
    let pauser = format!("{release}-kubectl-pauser");
    let sre = "sre-on-call";
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-sre", w.id)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": pauser},
        "subjects": [{"kind": "ServiceAccount", "name": sre, "namespace": w.namespace}],
    });
    let out =
        w.cp.kubectl_with(
            w.cp.admin_kubeconfig(),
            &["apply", "-f", "-"],
            Some(binding.to_string().as_bytes()),
        )
        .await
        .unwrap();
    assert!(out.success, "{out}");
    let sre_kc =
        w.cp.service_account_kubeconfig(&w.namespace, sre)
            .await
            .unwrap();
    let username = format!("system:serviceaccount:{}:{sre}", w.namespace);

    let node = w.node("pause").await;
    let policy = format!("{}-p", w.id);
    w.policy(
        &policy,
        json!({
            "mode": "Enforce",
            "detectors": {"zombies": {}},
            "actions": {"zombies": [
                {"action": "Event"},
                {"action": "Cordon", "after": "8s", "scope": "Any"},
            ]},
            "safety": {"cooldown": "0s", "maxUnhealthy": "100%"},
        }),
    )
    .await;
    let mut agent = Agent::start(&w.client, &node).await;
    agent.status.findings.zombies = vec![zombie_parent(4242, 987_654, "php-fpm", None)];
    agent.set(&policy, Detector::Zombies, true);
    agent.write().await;
    let mut op = w.operator("kp-pause").start();
    eventually(T, "the Event step executed", || async {
        let s = w.get_policy(&policy).await.status?;
        s.recent_actions
            .iter()
            .any(|a| a.action == ActionKind::Event && a.outcome == ActionOutcome::Executed)
            .then_some(())
    })
    .await;

    // RBAC is enough for the person's commands, and the pause is theirs.
    let (code, out, err) = run_as(
        &w,
        &sre_kc,
        &["pause", &policy, "--reason", "INC-4711 NFS maintenance"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("nodehealthpolicy/{policy} paused by {username}")
    );
    let p = w.get_policy(&policy).await;
    let ann = p.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get("nodemedic.io/paused-by"), Some(&username));
    assert_eq!(
        ann.get("nodemedic.io/paused").map(String::as_str),
        Some("INC-4711 NFS maintenance")
    );

    // The Cordon falls due 8 s after the episode began; paused, it waits.
    stays(
        Duration::from_secs(10),
        "no cordon while paused",
        || async { !unschedulable(&w.get_node(&node).await) },
    )
    .await;
    let (code, out, err) = run_as(&w, &sre_kc, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&policy))
        .unwrap_or_default();
    assert!(
        row.contains(&format!("by {username} (INC-4711 NFS maintenance)")),
        "{out}"
    );
    let (_, out, _) = run_as(&w, &sre_kc, &["explain", &node]).await;
    assert!(out.contains("pause         HOLDS  policy"), "{out}");
    assert!(out.contains("Cordon held (Paused)"), "{out}");
    doc_copy("explain-paused.txt", &out);

    let (code, out, err) = run_as(&w, &sre_kc, &["resume", &policy]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("nodehealthpolicy/{policy} resumed"));
    eventually(T, "the cordon after the resume", || async {
        unschedulable(&w.get_node(&node).await).then_some(())
    })
    .await;
    // The node is cordoned before the status that records it is written:
    // wait for the record, then hold the ledger to one Cordon for a while.
    let executed_cordons = || async {
        w.get_policy(&policy)
            .await
            .status
            .map(|s| {
                s.recent_actions
                    .iter()
                    .filter(|a| {
                        a.action == ActionKind::Cordon && a.outcome == ActionOutcome::Executed
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    eventually(T, "the Cordon in the policy's status", || async {
        (executed_cordons().await > 0).then_some(())
    })
    .await;
    stays(Duration::from_secs(3), "the Cordon ran once", || async {
        executed_cordons().await == 1
            && w.carried_out(&node).await == [ActionKind::Event, ActionKind::Cordon]
    })
    .await;

    // The viewer role cannot pause: the error says which verb is missing.
    let viewer = format!("{release}-kubectl-viewer");
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-viewer", w.id)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": viewer},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": w.namespace}],
    });
    let out =
        w.cp.kubectl_with(
            w.cp.admin_kubeconfig(),
            &["apply", "-f", "-"],
            Some(binding.to_string().as_bytes()),
        )
        .await
        .unwrap();
    assert!(out.success, "{out}");
    let viewer_kc =
        w.cp.service_account_kubeconfig(&w.namespace, "viewer")
            .await
            .unwrap();
    let (code, _, err) = eventually(T, "the viewer's status works", || async {
        let r = run_as(&w, &viewer_kc, &["status"]).await;
        (r.0 == 0).then_some(r)
    })
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_as(&w, &viewer_kc, &["pause", &policy, "--reason", "x"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("forbidden: you cannot patch nodehealthpolicies"),
        "{err}"
    );
    op.terminate().await;
}
