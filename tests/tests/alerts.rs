//! The chart's alerts and dashboard against real Prometheus tooling
//! (`promtool` 2.42, provisioned by `tests/prometheus/provision.sh`) and the
//! real binaries:
//!
//! * the PrometheusRule's groups, rendered by the real `helm template`, pass
//!   `promtool check rules`, and every rule unit test in
//!   `tests/prometheus/rules/*.test.yaml` passes `promtool test rules`
//!   against them (synthetic series that must fire an alert, with its exact
//!   labels and annotations, and series that must leave it silent);
//! * coverage guard: every alert of the rendered chart has at least one case
//!   that fires it and one that keeps it silent, every recording rule has an
//!   expression test, and no test names a rule the chart does not ship;
//! * every Grafana dashboard query (panels and template variables), with
//!   Grafana's variables substituted, passes `promtool check rules` as a
//!   recording rule;
//! * every metric an alert or a panel reads is exported by the real
//!   `nodemedic-agent` and `nodemedic-operator` binaries, scraped from their
//!   `/metrics` while they run against a real API server with the chart's
//!   RBAC (counters without a sample in that short run: from their
//!   registration in the code), and every label they group, join or match on
//!   is a ServiceMonitor target label or on the scraped samples.
//!
//! Without promtool (and no way to provision it) the promtool tests skip
//! loudly, except in CI (`CI=true` or `NODEMEDIC_REQUIRE_REAL_HOST=1`, which
//! `.ci/run` sets), where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nodemedic_tests::assets::pinned_kubernetes_version;
use nodemedic_tests::chart::{
    agent_kubeconfig, chart_dir, helm_offline, install_chart_rbac, manifests,
};
use nodemedic_tests::prometheus::{
    PrometheusBins, dashboard_queries, exposed_labels, exposed_metrics, registered_in_source,
    rule_file_of, rule_names, selected_metrics, used_labels,
};
use nodemedic_tests::workspace_bin::workspace_binary;
use nodemedic_tests::{CmdOutput, ControlPlane, repo_root, unique_name};
use serde_json::{Value, json};

/// The rule file name every rule test loads (`rule_files`).
const RULE_FILE: &str = "nodemedic.rules.yaml";
/// Release and namespace the rules are rendered for: the rule tests' series
/// carry the `job` and `namespace` labels this release's alerts select.
const RELEASE: &str = "nodemedic";
const NAMESPACE: &str = "nodemedic";

fn rule_tests_dir() -> PathBuf {
    repo_root().join("tests").join("prometheus").join("rules")
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("NODEMEDIC_REQUIRE_REAL_HOST").is_ok_and(|v| v == "1")
}

/// promtool, provisioned on first use. `None` (skip) only outside CI.
fn promtool() -> Option<PathBuf> {
    match PrometheusBins::provision() {
        Ok(bins) => Some(bins.promtool),
        Err(e) if required() => panic!("{e}"),
        Err(e) => {
            eprintln!("SKIP: {e}");
            None
        }
    }
}

/// helm is part of the provisioned envtest binaries; only a user's own
/// `KUBEBUILDER_ASSETS` may lack it, and then these tests skip loudly (as the
/// chart tests do).
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

/// `helm template` of the chart for [`RELEASE`] in [`NAMESPACE`], only `template`.
async fn render_one(template: &str, extra: &[&str]) -> Value {
    let chart = chart_dir().display().to_string();
    let kube_version = format!("--kube-version={}", pinned_kubernetes_version());
    let show = format!("templates/monitoring/{template}");
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "--namespace",
        NAMESPACE,
        kube_version.as_str(),
        "--show-only",
        show.as_str(),
    ];
    args.extend_from_slice(extra);
    let out = helm_offline(&args).await.expect("run helm");
    assert!(out.success, "helm {args:?} failed:\n{out}");
    let mut objs = manifests(&out.stdout).expect("rendered chart parses as YAML");
    assert_eq!(objs.len(), 1, "{template} renders one object");
    objs.remove(0)
}

/// The PrometheusRule with default values (alerts enabled), as a rule file.
async fn rendered_rule_file(extra: &[&str]) -> (String, Value) {
    let mut args = vec!["--set", "metrics.prometheusRule.enabled=true"];
    args.extend_from_slice(extra);
    let rule = render_one("prometheusrule.yaml", &args).await;
    assert_eq!(rule["kind"], "PrometheusRule");
    let text = rule_file_of(&rule).expect("rule file");
    let value: Value = serde_yaml::from_str(&text).expect("rule file parses");
    (text, value)
}

/// The dashboard JSON of the rendered ConfigMap.
async fn rendered_dashboard() -> Value {
    let cm = render_one(
        "dashboard.yaml",
        &["--set", "metrics.dashboard.enabled=true"],
    )
    .await;
    let text = cm["data"]["nodemedic.json"]
        .as_str()
        .expect("nodemedic.json in the dashboard ConfigMap");
    serde_json::from_str(text).expect("the dashboard is JSON")
}

/// The rule unit tests: file name and parsed content.
fn rule_tests() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(rule_tests_dir()).expect("list tests/prometheus/rules") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_owned();
        if !name.ends_with(".test.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read rule test");
        let value: Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        !out.is_empty(),
        "no *.test.yaml in {}",
        rule_tests_dir().display()
    );
    out
}

fn run(program: &Path, args: &[&str], dir: &Path) -> CmdOutput {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    CmdOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `promtool check rules <file>` in `dir`: must succeed and find `rules` rules.
fn check_rules(promtool: &Path, dir: &Path, file: &str, rules: usize) -> CmdOutput {
    let out = run(promtool, &["check", "rules", file], dir);
    assert!(out.success, "promtool check rules {file}:\n{out}");
    let want = format!("SUCCESS: {rules} rules found");
    assert!(out.stdout.contains(&want), "expected {want:?}:\n{out}");
    out
}

// ---------------------------------------------------------------------------
// the rules: promtool check rules, promtool test rules, coverage
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rendered_rules_pass_promtool_check_and_every_rule_test() {
    if skip_without_helm() {
        return;
    }
    let Some(promtool) = promtool() else { return };
    let (text, rules) = rendered_rule_file(&[]).await;
    let (alerts, records) = rule_names(&rules);
    assert!(!alerts.is_empty(), "the chart renders no alert");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(RULE_FILE), &text).expect("write rule file");
    check_rules(
        &promtool,
        dir.path(),
        RULE_FILE,
        alerts.len() + records.len(),
    );

    let tests = rule_tests();
    let mut args = vec!["test", "rules"];
    for (name, _) in &tests {
        std::fs::copy(rule_tests_dir().join(name), dir.path().join(name)).expect("copy rule test");
        args.push(name);
    }
    let out = run(&promtool, &args, dir.path());
    assert!(out.success, "promtool test rules:\n{out}");
    let passed = out.stdout.matches("  SUCCESS").count();
    assert_eq!(passed, tests.len(), "one SUCCESS per test file:\n{out}");
    eprintln!(
        "promtool test rules: {} files, {} alerts, {} recording rules",
        tests.len(),
        alerts.len(),
        records.len()
    );

    // Every optional label and duration set (the all-features values): still
    // rules Prometheus loads.
    let values = chart_dir().join("ci/all-features-values.yaml");
    let values = values.display().to_string();
    let (text, rules) = rendered_rule_file(&["--values", values.as_str()]).await;
    let (all_alerts, all_records) = rule_names(&rules);
    assert_eq!((&all_alerts, &all_records), (&alerts, &records));
    std::fs::write(dir.path().join("all-features.rules.yaml"), &text).expect("write");
    check_rules(
        &promtool,
        dir.path(),
        "all-features.rules.yaml",
        alerts.len() + records.len(),
    );
}

/// What the rule tests cover, and what they do not.
fn coverage_gaps(rules: &Value, tests: &[(String, Value)]) -> Vec<String> {
    let (alerts, records) = rule_names(rules);
    let mut annotations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            if let Some(a) = rule["alert"].as_str() {
                let keys = rule["annotations"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                annotations.insert(a.to_owned(), keys);
            }
        }
    }
    let mut gaps = Vec::new();
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut evaluated = BTreeSet::new();
    for (file, test) in tests {
        if test["rule_files"] != json!([RULE_FILE]) {
            gaps.push(format!(
                "{file}: rule_files must be [{RULE_FILE}] (the chart's rules)"
            ));
        }
        let cases = test["tests"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if cases.is_empty() {
            gaps.push(format!("{file}: no tests"));
        }
        for case in cases {
            for t in case["alert_rule_test"].as_array().into_iter().flatten() {
                let Some(name) = t["alertname"].as_str() else {
                    gaps.push(format!("{file}: an alert_rule_test without alertname"));
                    continue;
                };
                if !alerts.contains(name) {
                    gaps.push(format!(
                        "{file}: tests {name}, which the chart does not ship"
                    ));
                    continue;
                }
                let exp = t["exp_alerts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                if exp.is_empty() {
                    silent.insert(name.to_owned());
                    continue;
                }
                // A firing case names the annotations it expects: every one
                // the rule defines.
                let want = annotations.get(name).cloned().unwrap_or_default();
                let all_checked = exp.iter().all(|a| {
                    let got: BTreeSet<String> = a["exp_annotations"]
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    got == want
                });
                if all_checked {
                    fires.insert(name.to_owned());
                } else {
                    gaps.push(format!(
                        "{file}: a firing case of {name} does not check its annotations {want:?}"
                    ));
                }
            }
            for t in case["promql_expr_test"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                let has_samples = t["exp_samples"].as_array().is_some_and(|s| !s.is_empty());
                match selected_metrics(expr) {
                    Ok(names) if has_samples => {
                        evaluated.extend(names.into_iter().filter(|n| records.contains(n)));
                    }
                    Ok(_) => {}
                    Err(e) => gaps.push(format!("{file}: {e}")),
                }
            }
        }
    }
    for a in &alerts {
        if !fires.contains(a) {
            gaps.push(format!(
                "{a}: no case that fires it (with its labels and annotations)"
            ));
        }
        if !silent.contains(a) {
            gaps.push(format!("{a}: no case that keeps it silent"));
        }
    }
    for r in records.difference(&evaluated) {
        gaps.push(format!(
            "recording rule {r}: no promql_expr_test with samples"
        ));
    }
    gaps
}

#[tokio::test]
async fn every_alert_and_recording_rule_has_rule_tests() {
    if skip_without_helm() {
        return;
    }
    let (_, rules) = rendered_rule_file(&[]).await;
    let gaps = coverage_gaps(&rules, &rule_tests());
    assert!(
        gaps.is_empty(),
        "rule tests in tests/prometheus/rules/ miss:\n  {}",
        gaps.join("\n  ")
    );
}

/// The guard itself: a new alert, a missing silent case, a test of a rule
/// that is gone, a recording rule without an expression test are all gaps.
#[test]
fn coverage_guard_reports_every_kind_of_gap() {
    let rules = json!({"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "up == 0", "annotations": {"summary": "s"}},
        {"alert": "B", "expr": "up == 0", "annotations": {"summary": "s"}},
        {"record": "job:up:sum", "expr": "sum by (job) (up)"},
        {"record": "job:down:sum", "expr": "sum by (job) (1 - up)"},
    ]}]});
    let fire = |name: &str, annotations: Value| {
        json!({"alertname": name, "eval_time": "1m",
               "exp_alerts": [{"exp_labels": {}, "exp_annotations": annotations}]})
    };
    let tests = vec![(
        "t.test.yaml".to_owned(),
        json!({"rule_files": [RULE_FILE], "tests": [{
            "alert_rule_test": [
                fire("A", json!({"summary": "s"})),
                {"alertname": "A", "eval_time": "1m", "exp_alerts": []},
                fire("B", json!({})),
                {"alertname": "Gone", "eval_time": "1m"},
            ],
            "promql_expr_test": [
                {"expr": "job:up:sum", "eval_time": "1m", "exp_samples": [{"labels": "job:up:sum", "value": 1}]},
                {"expr": "job:down:sum", "eval_time": "1m", "exp_samples": []},
            ],
        }]}),
    )];
    let gaps = coverage_gaps(&rules, &tests);
    let expected = [
        "t.test.yaml: a firing case of B does not check its annotations",
        "t.test.yaml: tests Gone, which the chart does not ship",
        "B: no case that fires it",
        "B: no case that keeps it silent",
        "recording rule job:down:sum: no promql_expr_test with samples",
    ];
    for e in expected {
        assert!(
            gaps.iter().any(|g| g.starts_with(e)),
            "{e:?} not in {gaps:#?}"
        );
    }
    assert_eq!(gaps.len(), expected.len(), "{gaps:#?}");
    assert!(coverage_gaps(&rules, &[]).len() >= 6);
}

// ---------------------------------------------------------------------------
// the dashboard
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_dashboard_query_passes_promtool_check_rules() {
    if skip_without_helm() {
        return;
    }
    let Some(promtool) = promtool() else { return };
    let queries = dashboard_queries(&rendered_dashboard().await, NAMESPACE);
    assert!(
        queries.len() >= 10,
        "only {} dashboard queries",
        queries.len()
    );
    let mut rules = Vec::new();
    for (i, (what, expr)) in queries.iter().enumerate() {
        assert!(
            !expr.contains('$'),
            "{what}: a Grafana variable is left in {expr:?}"
        );
        rules.push(json!({"record": format!("nodemedic_dashboard:query_{i}"), "expr": expr}));
    }
    let file = json!({"groups": [{"name": "nodemedic-dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    let text = serde_yaml::to_string(&file).expect("YAML");
    std::fs::write(dir.path().join("dashboard.rules.yaml"), text).expect("write");
    let out = run(
        &promtool,
        &["check", "rules", "dashboard.rules.yaml"],
        dir.path(),
    );
    let listing: Vec<String> = queries.iter().map(|(w, e)| format!("{w}: {e}")).collect();
    assert!(
        out.success,
        "promtool check rules on the dashboard's queries:\n{out}\nqueries:\n{}",
        listing.join("\n")
    );
    let want = format!("SUCCESS: {} rules found", queries.len());
    assert!(out.stdout.contains(&want), "expected {want:?}:\n{out}");
}

/// promtool must be able to fail this way: a broken query in the same
/// wrapping is rejected.
#[test]
fn promtool_check_rules_rejects_a_broken_query() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = json!({"groups": [{"name": "g", "rules": [
        {"record": "nodemedic_dashboard:query_0", "expr": "sum by (node (nodemedic_agent_tasks)"},
    ]}]});
    std::fs::write(
        dir.path().join("bad.rules.yaml"),
        serde_yaml::to_string(&file).expect("YAML"),
    )
    .expect("write");
    let out = run(&promtool, &["check", "rules", "bad.rules.yaml"], dir.path());
    assert!(!out.success, "promtool accepted a broken query:\n{out}");
}

// ---------------------------------------------------------------------------
// metric names against the real binaries
// ---------------------------------------------------------------------------

/// A product binary running as a subprocess, with its admin endpoint.
struct Running {
    child: tokio::process::Child,
    admin: String,
    log: PathBuf,
}

impl Running {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.admin).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some((code, body))
    }

    /// `/metrics` once it answers 200 and, for each of `needles`, has a line
    /// holding all of its strings.
    async fn scrape_when(&mut self, needles: &[&[&str]]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, body)) = self.get("/metrics").await
                && needles
                    .iter()
                    .all(|n| body.lines().any(|l| n.iter().all(|part| l.contains(part))))
            {
                return body;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited ({status}) before /metrics showed {needles:?}:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/metrics on {} did not show {needles:?} within 60s:\n{}",
                self.admin,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn start(binary: &Path, env: &[(&str, String)], log: PathBuf) -> Running {
    let admin = free_addr();
    let file = std::fs::File::create(&log).expect("log file");
    let err = file.try_clone().expect("log file");
    let child = tokio::process::Command::new(binary)
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NODEMEDIC_ADMIN_ADDR", &admin)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    Running { child, admin, log }
}

/// Labels Prometheus puts on every series it scrapes through the chart's
/// ServiceMonitors: the Prometheus Operator's target labels and the `node`
/// the ServiceMonitors' relabeling adds.
const TARGET_LABELS: &[&str] = &[
    "job",
    "namespace",
    "pod",
    "instance",
    "service",
    "endpoint",
    "container",
    "node",
];

/// `prometheus-client` registrations in a source file of the workspace, with
/// the sub-registry prefix the file uses, if any.
fn registered_in(path: &str) -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    registered_in_source(&source)
}

#[tokio::test]
async fn every_metric_of_the_alerts_and_the_dashboard_is_exported_by_the_binaries() {
    if skip_without_helm() {
        return;
    }
    let agent_bin = workspace_binary("node-agent", "nodemedic-agent", "nodemedic-agent")
        .unwrap_or_else(|e| panic!("{e}"));
    let operator_bin = workspace_binary("operator", "nodemedic-operator", "nodemedic-operator")
        .unwrap_or_else(|e| panic!("{e}"));
    let workload_bin = workspace_binary("testkit", "nodemedic-testkit", "nodemedic-workload")
        .unwrap_or_else(|e| panic!("{e}"));

    // What the alerts and the dashboard read.
    let mut queries: Vec<(String, String)> = Vec::new();
    let (_, rules) = rendered_rule_file(&[]).await;
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let what = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            let expr = rule["expr"].as_str().expect("expr");
            queries.push((format!("alert {what}"), expr.to_owned()));
        }
    }
    for (what, expr) in dashboard_queries(&rendered_dashboard().await, NAMESPACE) {
        queries.push((format!("dashboard {what}"), expr));
    }
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for (what, expr) in &queries {
        for m in selected_metrics(expr).unwrap_or_else(|e| panic!("{what}: {e}")) {
            used.entry(m).or_insert_with(|| what.clone());
        }
    }
    assert!(
        used.len() >= 10,
        "only {} metric names used: {used:?}",
        used.len()
    );

    // The real binaries, with the chart's RBAC, against a real API server,
    // and a DryRun policy selecting the agent's node (so that the per-policy
    // and per-detector families get samples).
    let cp = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rbac = install_chart_rbac(cp, "alerts").await.expect("chart RBAC");
    let scope = unique_name("alerts");
    let node = cp
        .create_node("alerts", &[("nodemedic.io/test", scope.as_str())])
        .await
        .expect("node");
    // A paused Node that no policy selects, so that the pause families get
    // samples (a reason alone is a pause; no paused-by, which the chart's
    // admission policy would tie to the requester).
    let paused_node = cp
        .create_node("alerts-paused", &[("nodemedic.io/test", "alerts-paused")])
        .await
        .expect("node");
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &[
                "annotate",
                "node",
                &paused_node,
                "nodemedic.io/paused=alerts test",
            ],
            None,
        )
        .await
        .expect("kubectl");
    assert!(out.success, "pause the node:\n{out}");
    let policy = unique_name("alerts-policy");
    let policy_yaml = serde_yaml::to_string(&json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": policy, "labels": {"nodemedic.io/test": scope}},
        "spec": {
            "mode": "DryRun",
            "nodeSelector": {"matchLabels": {"nodemedic.io/test": scope}},
            // fdLeak with the shortest fit window the API allows, so that
            // the leaker below gets an fd ETA (and its series) within the
            // scrape's wait; its ETA is far below 168h, so it is listed.
            "detectors": {
                "zombies": {"threshold": 200, "for": "5m"},
                "fdLeak": {
                    "minOpenFds": 10,
                    "growth": {"minFdsPerMinute": 1000000, "window": "1m"},
                    "exhaustionWithin": "168h",
                    "for": "5m",
                },
            },
        },
    }))
    .expect("policy YAML");
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "-f", "-"],
            Some(policy_yaml.as_bytes()),
        )
        .await
        .expect("kubectl");
    assert!(out.success, "create the policy:\n{out}");
    let agent_kc = agent_kubeconfig(cp, &rbac, &node)
        .await
        .expect("agent kubeconfig");
    let operator_kc = cp
        .service_account_kubeconfig(&rbac.namespace, &rbac.operator_service_account)
        .await
        .expect("operator kubeconfig");
    let logs = tempfile::tempdir().expect("tempdir");
    // A real fd leak (5 fds/s) on this host, killed with the test.
    let _leaker = tokio::process::Command::new(&workload_bin)
        .args(["hold-fds", "100", "--leak-per-second", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the fd leaker");
    let mut agent = start(
        &agent_bin,
        &[
            ("KUBECONFIG", agent_kc.display().to_string()),
            ("NODE_NAME", node.clone()),
            ("NODEMEDIC_HOST_ROOT", "/".into()),
            ("NODEMEDIC_INTERVAL", "1s".into()),
            ("NODEMEDIC_HEARTBEAT", "1m".into()),
            ("NODEMEDIC_LOG", "info,kube=warn".into()),
        ],
        logs.path().join("agent.log"),
    );
    let mut operator = start(
        &operator_bin,
        &[
            ("KUBECONFIG", operator_kc.display().to_string()),
            ("NODEMEDIC_LEASE_NAME", "nodemedic-operator".into()),
            ("NODEMEDIC_LEASE_NAMESPACE", rbac.namespace.clone()),
            ("NODEMEDIC_IDENTITY", "alerts-operator-0".into()),
            // Only this test's policy.
            (
                "NODEMEDIC_POLICY_SELECTOR",
                format!("nodemedic.io/test={scope}"),
            ),
            ("NODEMEDIC_LOG", "info".into()),
        ],
        logs.path().join("operator.log"),
    );
    let per_policy = format!("policy=\"{policy}\"");
    let agent_text = agent
        .scrape_when(&[
            &["nodemedic_agent_report_writes_total{"],
            &["nodemedic_agent_detector_firing{", &per_policy],
            &["nodemedic_agent_fd_exhaustion_eta_seconds{"],
            &["nodemedic_agent_node_pids_headroom "],
        ])
        .await;
    let operator_text = operator
        .scrape_when(&[&["nodemedic_operator_storm_active{", &per_policy]])
        .await;
    let _ = agent.child.kill().await;
    let _ = operator.child.kill().await;

    let mut scraped = exposed_metrics(&agent_text);
    scraped.extend(exposed_metrics(&operator_text));
    scraped.retain(|m| m.starts_with("nodemedic_"));
    // Families without samples in this short DryRun run (counters of
    // actions and errors) are read from their registration in the code; the
    // scrape keeps that reading honest: it must predict every scraped name.
    let mut registered = registered_in("node-agent/src/admin.rs");
    registered.extend(registered_in("operator/src/metrics.rs"));
    let unpredicted: Vec<&String> = scraped
        .iter()
        .filter(|m| !m.ends_with("_created") && !registered.contains(*m))
        .collect();
    assert!(
        unpredicted.is_empty(),
        "the registrations read from the source miss scraped metrics {unpredicted:?}: \
         fix registered_metrics or the file list"
    );
    let missing: Vec<String> = used
        .iter()
        .filter(|(m, _)| !scraped.contains(*m) && !registered.contains(*m))
        .map(|(m, what)| format!("{m} (read by {what})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the agent and the operator do not export:\n  {}\nscraped: {scraped:?}\n\
         registered: {registered:?}",
        missing.join("\n  ")
    );

    // Every label a query relies on is one the scrape adds (the
    // ServiceMonitor's target labels and its `node` relabeling) or one the
    // binaries put on a metric it reads. Checked where the scrape has samples
    // of at least one of those metrics.
    let mut labels = exposed_labels(&agent_text);
    labels.extend(exposed_labels(&operator_text));
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (what, expr) in &queries {
        for (label, on) in used_labels(expr).unwrap_or_else(|e| panic!("{what}: {e}")) {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let seen: Vec<&BTreeSet<String>> = on.iter().filter_map(|m| labels.get(m)).collect();
            if seen.is_empty() {
                continue;
            }
            checked += 1;
            if !seen.iter().any(|l| l.contains(&label)) {
                wrong.push(format!("{what}: label {label} is on none of {on:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "labels the binaries do not export:\n  {}\nscraped labels: {labels:?}",
        wrong.join("\n  ")
    );
    assert!(checked >= 5, "only {checked} label uses checked");

    let from_source: Vec<&String> = used.keys().filter(|m| !scraped.contains(*m)).collect();
    let unused: Vec<&String> = registered
        .iter()
        .filter(|m| !used.contains_key(*m))
        .collect();
    eprintln!(
        "{checked} label uses checked; {} metric names read by alerts and dashboard: \
         {} scraped from the binaries, \
         {from_source:?} only registered (no sample in this run); exported but not read: {unused:?}",
        used.len(),
        used.len() - from_source.len(),
    );
    // Most of them come from the scrape, not the source.
    assert!(
        from_source.len() * 3 <= used.len(),
        "too few metrics seen in the scrape: only registered {from_source:?}"
    );
}
