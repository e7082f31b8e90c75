//! What the kind tier asks of a real Prometheus (docs/kind.md, "Prometheus"):
//!
//! * `rule-file` — the rule file Prometheus loads, from the chart's rendered
//!   PrometheusRule (stdin, YAML) to stdout;
//! * `wait-alert` — until an alert is firing (optionally with given labels),
//!   or fail after a timeout naming what was firing instead;
//! * `dashboard` — every query of the chart's Grafana dashboard (the
//!   rendered ConfigMap, or the JSON) evaluated over a time range: each must
//!   answer without error, and with at least one series unless every metric
//!   it reads is exported by the binaries (their /metrics, given) and simply
//!   had no samples in the run (a panel of events the run did not make).
//!
//! Plain HTTP to Prometheus on this machine (no client library needed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use nodemedic_tests::prometheus::{
    dashboard_queries, exposed_metrics, registered_in_source, rule_file_of, selected_metrics,
};
use serde_json::Value;

#[derive(Parser)]
#[command(about = "Checks of the chart's alerts and dashboard against a running Prometheus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The rule file of a rendered PrometheusRule (YAML on stdin).
    RuleFile,
    /// Waits until an alert fires.
    WaitAlert {
        /// Prometheus, as host:port.
        #[arg(long, env = "NODEMEDIC_PROMETHEUS")]
        prometheus: String,
        #[arg(long)]
        alert: String,
        /// Labels the alert must carry, as name=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
    /// Evaluates every dashboard query over [start, now].
    Dashboard {
        #[arg(long, env = "NODEMEDIC_PROMETHEUS")]
        prometheus: String,
        /// The rendered dashboard ConfigMap (YAML) or the dashboard JSON.
        #[arg(long)]
        dashboard: std::path::PathBuf,
        /// The value of the dashboard's namespace variable.
        #[arg(long)]
        namespace: String,
        /// Start of the range, Unix seconds.
        #[arg(long)]
        start: i64,
        /// A /metrics text of one of the binaries (repeatable): what they
        /// export, to tell a panel of events the run did not make from a
        /// panel reading a metric that no longer exists.
        #[arg(long = "exposition")]
        expositions: Vec<std::path::PathBuf>,
        /// A source file registering the binaries' metrics (repeatable):
        /// families that have no sample yet are not in an exposition.
        #[arg(long = "registered-in")]
        sources: Vec<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodemedic-promcheck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::RuleFile => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let rule: Value = serde_yaml::from_str(&text).context("the PrometheusRule YAML")?;
            print!("{}", rule_file_of(&rule)?);
            Ok(())
        }
        Command::WaitAlert {
            prometheus,
            alert,
            labels,
            timeout_seconds,
        } => wait_alert(&prometheus, &alert, &labels, timeout_seconds),
        Command::Dashboard {
            prometheus,
            dashboard,
            namespace,
            start,
            expositions,
            sources,
        } => check_dashboard(
            &prometheus,
            &dashboard,
            &namespace,
            start,
            &expositions,
            &sources,
        ),
    }
}

fn wait_alert(prometheus: &str, alert: &str, labels: &[String], timeout: u64) -> Result<()> {
    let want: Vec<(&str, &str)> = labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .ok_or_else(|| anyhow!("--label {l:?}: want name=value"))
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    loop {
        let answer = api(prometheus, "/api/v1/alerts")?;
        let alerts = answer["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let firing = alerts.iter().find(|a| {
            a["state"] == "firing"
                && a["labels"]["alertname"] == alert
                && want.iter().all(|(k, v)| a["labels"][*k] == *v)
        });
        if let Some(a) = firing {
            println!(
                "{alert} firing after {} s: {}",
                started.elapsed().as_secs(),
                a["labels"]
            );
            return Ok(());
        }
        let seen = alerts
            .iter()
            .map(|a| {
                format!(
                    "{} ({}) {}",
                    a["labels"]["alertname"], a["state"], a["labels"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n  ");
        if started.elapsed() > Duration::from_secs(timeout) {
            bail!(
                "want alert {alert} firing{} within {timeout} s; alerts now:\n  {}",
                if want.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", labels.join(", "))
                },
                if seen.is_empty() { "(none)" } else { &seen }
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn check_dashboard(
    prometheus: &str,
    path: &std::path::Path,
    namespace: &str,
    start: i64,
    expositions: &[std::path::PathBuf],
    sources: &[std::path::PathBuf],
) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let dashboard = dashboard_json(&text)?;
    let queries = dashboard_queries(&dashboard, namespace);
    if queries.is_empty() {
        bail!("{}: no queries in the dashboard", path.display());
    }
    let end = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // The scrape interval (5 s), so that a series that lived for a few
    // scrapes (a short pause) is not stepped over; fewer than Prometheus's
    // 11,000 points.
    let step = ((end as i64 - start) / 10_000).max(5);
    // What the binaries export (declared families included, with or
    // without samples), from their /metrics as the caller fetched them.
    let mut exposed: BTreeSet<String> = BTreeSet::new();
    for file in expositions {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read the exposition {}", file.display()))?;
        exposed.extend(exposed_metrics(&text));
    }
    for file in sources {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read the source {}", file.display()))?;
        exposed.extend(registered_in_source(&text));
    }
    if exposed.is_empty() {
        bail!(
            "no metric in the expositions given (--exposition): cannot tell an idle panel from a broken one"
        );
    }
    let mut idle = Vec::new();
    let mut failures = Vec::new();
    for (what, expr) in &queries {
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
            encode(expr)
        );
        match api(prometheus, &path) {
            Ok(answer) if answer["status"] == "success" => {
                let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
                let labels: BTreeMap<String, usize> = answer["data"]["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r["metric"].as_object().into_iter().flatten())
                    .map(|(k, _)| (k.clone(), 1))
                    .collect();
                if series == 0 {
                    // No samples in this run: acceptable only when every
                    // metric it reads is exported (the event it shows did
                    // not happen); a metric no target exports is a panel
                    // that can never show anything.
                    let missing: Vec<String> = selected_metrics(expr)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|m| !exposed.contains(m))
                        .collect();
                    if missing.is_empty() {
                        println!(
                            "IDLE  {what}: no samples in this run; its metrics are exported: {expr}"
                        );
                        idle.push(what.clone());
                    } else {
                        println!("EMPTY {what}: no target exports {missing:?}: {expr}");
                        failures.push(format!("{what}: no target exports {missing:?} ({expr})"));
                    }
                } else {
                    println!(
                        "ok    {what}: {series} series (labels {:?})",
                        labels.keys().collect::<Vec<_>>()
                    );
                }
            }
            Ok(answer) => {
                println!("ERROR {what}: {answer}");
                failures.push(format!("{what}: {}", answer["error"]));
            }
            Err(e) => {
                println!("ERROR {what}: {e:#}");
                failures.push(format!("{what}: {e:#}"));
            }
        }
    }
    if failures.is_empty() {
        println!(
            "{} of {} dashboard queries returned series; {} had no samples in this run, their metrics exported ({})",
            queries.len() - idle.len(),
            queries.len(),
            idle.len(),
            idle.join("; ")
        );
        Ok(())
    } else {
        bail!(
            "{} of {} dashboard queries failed (an error, or no series from a metric no target exports):\n  {}",
            failures.len(),
            queries.len(),
            failures.join("\n  ")
        )
    }
}

/// The dashboard JSON: the file itself, or the one JSON value in the data
/// of a rendered ConfigMap.
fn dashboard_json(text: &str) -> Result<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize_yaml(doc)?;
        if let Some(data) = v["data"].as_object()
            && let Some(json) = data.values().find_map(Value::as_str)
        {
            return serde_json::from_str(json).context("the ConfigMap's dashboard JSON");
        }
    }
    bail!("neither dashboard JSON nor a ConfigMap holding it")
}

trait DeserializeYaml: Sized {
    fn deserialize_yaml(doc: serde_yaml::Deserializer<'_>) -> Result<Self>;
}

impl DeserializeYaml for Value {
    fn deserialize_yaml(doc: serde_yaml::Deserializer<'_>) -> Result<Self> {
        use serde::Deserialize;
        Ok(Value::deserialize(doc)?)
    }
}

/// GET a Prometheus API path; the JSON answer (also for 4xx, which carry
/// the error).
fn api(prometheus: &str, path: &str) -> Result<Value> {
    let mut stream =
        TcpStream::connect(prometheus).with_context(|| format!("connect to {prometheus}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {prometheus}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("a malformed answer from {prometheus}{path}"))?;
    serde_json::from_str(body).with_context(|| format!("the answer to {path}: {body}"))
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_query_for_a_url() {
        assert_eq!(
            encode(r#"max by (pod) (x{namespace=~"a"})"#),
            "max%20by%20%28pod%29%20%28x%7Bnamespace%3D~%22a%22%7D%29"
        );
    }

    #[test]
    fn finds_the_dashboard_in_a_configmap() {
        let cm =
            "---\napiVersion: v1\nkind: ConfigMap\ndata:\n  nodemedic.json: '{\"panels\": []}'\n";
        assert_eq!(
            dashboard_json(cm).expect("dashboard"),
            serde_json::json!({"panels": []})
        );
    }
}
