//! Prometheus's `promtool` for the alert tests (`tests/tests/alerts.rs`),
//! provisioned by `tests/prometheus/provision.sh`, and the helpers those tests
//! share: the chart's rule groups as a Prometheus rule file, the metric names
//! a PromQL expression reads, and the metric names an exposition declares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

const PROVISION_SCRIPT: &str = include_str!("../prometheus/provision.sh");

/// The upstream Prometheus version `tests/prometheus/provision.sh` pins (its
/// `PROMETHEUS_VERSION=` line).
pub fn pinned_prometheus_version() -> &'static str {
    PROVISION_SCRIPT
        .lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_VERSION="))
        .map(str::trim)
        .unwrap_or("unknown")
}

/// `promtool` and `prometheus`.
#[derive(Debug, Clone)]
pub struct PrometheusBins {
    /// Folder holding them.
    pub dir: PathBuf,
    /// `promtool`.
    pub promtool: PathBuf,
    /// `prometheus`.
    pub prometheus: PathBuf,
}

impl PrometheusBins {
    /// `$NODEMEDIC_PROMETHEUS_BIN_DIR` when set, else
    /// `${NODEMEDIC_PROMETHEUS_CACHE:-$HOME/.cache/nodemedic/prometheus}/<pinned version>`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) =
            std::env::var_os("NODEMEDIC_PROMETHEUS_BIN_DIR").filter(|d| !d.is_empty())
        {
            return PathBuf::from(dir);
        }
        let root = std::env::var_os("NODEMEDIC_PROMETHEUS_CACHE")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."));
                home.join(".cache").join("nodemedic").join("prometheus")
            });
        root.join(pinned_prometheus_version())
    }

    /// The binaries in [`PrometheusBins::default_dir`].
    pub fn locate() -> Result<Self> {
        Self::in_dir(&Self::default_dir())
    }

    /// The binaries in `dir`; the error names every missing one.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let missing: Vec<&str> = ["promtool", "prometheus"]
            .into_iter()
            .filter(|name| !crate::assets::is_executable(&dir.join(name)))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingPrometheus {
                dir: dir.to_path_buf(),
                reason: format!("{} missing", missing.join(", ")),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            promtool: dir.join("promtool"),
            prometheus: dir.join("prometheus"),
        })
    }

    /// [`PrometheusBins::locate`], running `tests/prometheus/provision.sh`
    /// first when they are not there yet (idempotent; a few seconds cold).
    pub fn provision() -> Result<Self> {
        if let Ok(found) = Self::locate() {
            return Ok(found);
        }
        let script = crate::repo_root()
            .join("tests")
            .join("prometheus")
            .join("provision.sh");
        let out = std::process::Command::new(&script)
            .arg("--print-env")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("run {}", script.display()), e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("export NODEMEDIC_PROMETHEUS_BIN_DIR="))
            .next_back()
            .map(PathBuf::from);
        match dir {
            Some(dir) if out.status.success() => Self::in_dir(&dir),
            _ => Err(Error::MissingPrometheus {
                dir: Self::default_dir(),
                reason: format!(
                    "{} failed ({}):\n{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ),
            }),
        }
    }
}

/// The rule file Prometheus would load from a PrometheusRule object:
/// `{groups: <spec.groups>}` as YAML.
pub fn rule_file_of(prometheus_rule: &serde_json::Value) -> Result<String> {
    let groups = prometheus_rule["spec"]["groups"]
        .as_array()
        .ok_or_else(|| Error::Other("the PrometheusRule has no spec.groups list".into()))?;
    serde_yaml::to_string(&serde_json::json!({ "groups": groups })).map_err(|source| Error::Yaml {
        path: "<rule file>".into(),
        source,
    })
}

/// The names of the rules of a rule file's groups: `(alerts, recording rules)`.
pub fn rule_names(rule_file: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut alerts = BTreeSet::new();
    let mut records = BTreeSet::new();
    for group in rule_file["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            if let Some(a) = rule["alert"].as_str() {
                alerts.insert(a.to_owned());
            }
            if let Some(r) = rule["record"].as_str() {
                records.insert(r.to_owned());
            }
        }
    }
    (alerts, records)
}

/// Every metric name a PromQL expression selects (`foo{...}`,
/// `{__name__="foo"}`, `foo[5m]`), or the parser's error.
pub fn selected_metrics(expr: &str) -> Result<BTreeSet<String>> {
    let parsed = promql_parser::parser::parse(expr)
        .map_err(|e| Error::Other(format!("{expr:?} is not valid PromQL: {e}")))?;
    let mut out = BTreeSet::new();
    collect_metrics(&parsed, &mut out);
    Ok(out)
}

fn collect_metrics(e: &promql_parser::parser::Expr, out: &mut BTreeSet<String>) {
    use promql_parser::label::MatchOp;
    use promql_parser::parser::{Expr, VectorSelector};
    fn selector(vs: &VectorSelector, out: &mut BTreeSet<String>) {
        if let Some(name) = &vs.name {
            out.insert(name.clone());
        }
        for m in &vs.matchers.matchers {
            if m.name == "__name__" && matches!(m.op, MatchOp::Equal) {
                out.insert(m.value.clone());
            }
        }
    }
    match e {
        Expr::Aggregate(a) => {
            collect_metrics(&a.expr, out);
            if let Some(p) = &a.param {
                collect_metrics(p, out);
            }
        }
        Expr::Unary(u) => collect_metrics(&u.expr, out),
        Expr::Binary(b) => {
            collect_metrics(&b.lhs, out);
            collect_metrics(&b.rhs, out);
        }
        Expr::Paren(p) => collect_metrics(&p.expr, out),
        Expr::Subquery(s) => collect_metrics(&s.expr, out),
        Expr::VectorSelector(vs) => selector(vs, out),
        Expr::MatrixSelector(ms) => selector(&ms.vs, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect_metrics(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Every label name a PromQL expression relies on, with the metrics it
/// expects it on: the label names of selector matchers (on that metric), of
/// `by (...)` (on the metrics aggregated) and of `on (...)` (on the metrics
/// of both sides). Or the parser's error.
pub fn used_labels(expr: &str) -> Result<Vec<(String, BTreeSet<String>)>> {
    use promql_parser::parser::{Expr, LabelModifier, VectorSelector};
    fn selector(vs: &VectorSelector, out: &mut Vec<(String, BTreeSet<String>)>) {
        let Some(name) = &vs.name else { return };
        for m in &vs.matchers.matchers {
            if m.name != "__name__" {
                out.push((m.name.clone(), BTreeSet::from([name.clone()])));
            }
        }
    }
    fn metrics(e: &Expr) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        collect_metrics(e, &mut out);
        out
    }
    fn walk(e: &Expr, out: &mut Vec<(String, BTreeSet<String>)>) {
        match e {
            Expr::Aggregate(a) => {
                if let Some(LabelModifier::Include(by)) = &a.modifier {
                    let on = metrics(&a.expr);
                    out.extend(by.labels.iter().map(|l| (l.clone(), on.clone())));
                }
                walk(&a.expr, out);
                if let Some(p) = &a.param {
                    walk(p, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                if let Some(LabelModifier::Include(on)) =
                    b.modifier.as_ref().and_then(|m| m.matching.as_ref())
                {
                    let mut both = metrics(&b.lhs);
                    both.extend(metrics(&b.rhs));
                    out.extend(on.labels.iter().map(|l| (l.clone(), both.clone())));
                }
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::VectorSelector(vs) => selector(vs, out),
            Expr::MatrixSelector(ms) => selector(&ms.vs, out),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let parsed = promql_parser::parser::parse(expr)
        .map_err(|e| Error::Other(format!("{expr:?} is not valid PromQL: {e}")))?;
    let mut out = Vec::new();
    walk(&parsed, &mut out);
    Ok(out)
}

/// The label names of each sample name of an exposition.
pub fn exposed_labels(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once('{') else {
            let name = line.split_whitespace().next().unwrap_or_default();
            out.entry(name.to_owned()).or_default();
            continue;
        };
        let labels = out.entry(name.to_owned()).or_default();
        // name="value",other="v\"x" } 1
        let mut rest = rest;
        while let Some((label, after)) = rest.split_once("=\"") {
            labels.insert(label.trim_start_matches(',').trim().to_owned());
            // Skip the quoted value (escapes included).
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            rest = &after[end + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    out
}

/// The sample names an exposition (Prometheus text or OpenMetrics) declares:
/// every sample line's name, and for every `# TYPE` line the names its
/// samples have once there are any (a counter `foo` gives `foo_total`, a
/// histogram `_bucket`, `_sum`, `_count`), so that a family without samples
/// yet (no label set seen) still counts.
pub fn exposed_metrics(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                if kind == "counter" && name.ends_with("_total") && s.is_empty() {
                    continue;
                }
                out.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_owned());
        }
    }
    out
}

/// The sample names of the metric families a `prometheus-client` registry
/// in Rust `source` registers: every `register("<name>", "<help>", <expr>)`
/// call, prefixed with `prefix_` when `prefix` is given (a sub-registry),
/// with the suffixes its type gives its samples (the type of the struct field
/// `<expr>` names: `Counter` → `_total`, `Histogram` → `_bucket`, `_sum`,
/// `_count`, anything else as is).
///
/// A fallback for families a short run of the binaries leaves without
/// samples (`prometheus-client` writes nothing, not even `# TYPE`, for a
/// family without a label set yet): a scrape is the real evidence, this
/// reads the code that will produce it.
pub fn registered_metrics(source: &str, prefix: Option<&str>) -> BTreeSet<String> {
    fn literal(s: &str) -> Option<(String, &str)> {
        let s = s.trim_start().strip_prefix('"')?;
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => return Some((out, &s[i + 1..])),
                c => out.push(c),
            }
        }
        None
    }
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(pos) = rest.find(".register(") {
        rest = &rest[pos + ".register(".len()..];
        let Some((name, after)) = literal(rest) else {
            continue;
        };
        let Some((_help, after)) = after.trim_start().strip_prefix(',').and_then(literal) else {
            continue;
        };
        let expr = after
            .trim_start()
            .strip_prefix(',')
            .unwrap_or(after)
            .split(')')
            .next()
            .unwrap_or_default();
        // `m.scans.clone()` / `actions.clone()` → the field `scans` / `actions`.
        let field = expr
            .trim()
            .trim_end_matches(".clone(")
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .trim();
        let ty = source
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("pub {field}: ")))
            .unwrap_or_default();
        let full = match prefix {
            Some(p) => format!("{p}_{name}"),
            None => name,
        };
        let suffixes: &[&str] = if ty.contains("Counter") {
            &["_total"]
        } else if ty.contains("Histogram") {
            &["_bucket", "_sum", "_count"]
        } else {
            &[""]
        };
        for s in suffixes {
            out.insert(format!("{full}{s}"));
        }
    }
    out
}

/// The sample names a source file's `prometheus-client` registrations give,
/// with the sub-registry prefix the file uses, if any.
pub fn registered_in_source(source: &str) -> BTreeSet<String> {
    let prefix = source
        .split_once("sub_registry_with_prefix(\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(p, _)| p.to_owned());
    registered_metrics(source, prefix.as_deref())
}

/// Every PromQL query of the dashboard, by where it is: panel targets (rows
/// included) and the selectors of `label_values(...)` template variables,
/// with Grafana's time variables replaced by 5m and the dashboard's own
/// variables by `variable_value` (the namespace: its only variable).
pub fn dashboard_queries(dashboard: &Value, variable_value: &str) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let r = target["refId"].as_str().unwrap_or("?");
                    out.push((format!("panel {title:?} query {r}"), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_default();
        let name = var["name"].as_str().unwrap_or("?");
        // label_values(<series selector>, <label>)
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            && let Some((selector, _label)) = inner.rsplit_once(',')
        {
            out.push((format!("variable {name}"), selector.trim().to_owned()));
        } else {
            out.push((format!("variable {name}"), query.to_owned()));
        }
    }
    for (_, expr) in &mut out {
        for builtin in ["$__rate_interval", "$__interval", "$__range"] {
            *expr = expr.replace(builtin, "5m");
        }
        for v in &variables {
            *expr = expr
                .replace(&format!("${{{v}}}"), variable_value)
                .replace(&format!("${v}"), variable_value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_version_is_read_from_the_provisioning_script() {
        let v = pinned_prometheus_version();
        assert!(
            v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
            "unexpected pinned version {v:?}"
        );
    }

    #[test]
    fn missing_binaries_are_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = PrometheusBins::in_dir(dir.path())
            .expect_err("empty dir must fail")
            .to_string();
        assert!(msg.contains("promtool, prometheus missing"), "{msg}");
        assert!(msg.contains("tests/prometheus/provision.sh"), "{msg}");
    }

    #[test]
    fn selected_metrics_walks_the_whole_expression() {
        let got = selected_metrics(
            "histogram_quantile(0.9, sum by (le) (rate(a_bucket{x=\"1\"}[5m]))) \
             / on () group_left () max(b) or absent({__name__=\"c\", y=~\"z\"}) \
             and -d offset 5m > scalar(max_over_time(e[10m:1m] @ 100))",
        )
        .expect("valid");
        let want: BTreeSet<String> = ["a_bucket", "b", "c", "d", "e"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(got, want);
        assert!(selected_metrics("sum by (x (y)").is_err());
    }

    #[test]
    fn exposed_metrics_expand_families_without_samples() {
        let text = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                    # TYPE a_seconds histogram\n\
                    a_seconds_bucket{le=\"0.1\"} 1\n\
                    # TYPE a_up gauge\na_up 1\n# EOF\n";
        let got = exposed_metrics(text);
        for name in [
            "a_requests_total",
            "a_seconds_bucket",
            "a_seconds_sum",
            "a_seconds_count",
            "a_up",
        ] {
            assert!(got.contains(name), "{name} missing from {got:?}");
        }
        assert!(!got.contains("a_requests"), "{got:?}");
    }

    #[test]
    fn registered_metrics_read_names_and_types_from_the_source() {
        let source = r#"
            pub struct M {
                pub hits: Family<L, Counter>,
                pub lat: Histogram,
                pub up: Gauge<f64, AtomicU64>,
            }
            let r = registry.sub_registry_with_prefix("svc");
            r.register("hits", "Hits, by \"kind\", (any)", m.hits.clone());
            r.register(
                "latency_seconds",
                "Latency",
                m.lat.clone(),
            );
            r.register("up", "Up", up.clone());
        "#;
        let got = registered_metrics(source, Some("svc"));
        let want: BTreeSet<String> = [
            "svc_hits_total",
            "svc_latency_seconds_bucket",
            "svc_latency_seconds_sum",
            "svc_latency_seconds_count",
            "svc_up",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn used_labels_name_the_metrics_they_are_expected_on() {
        let got = used_labels(
            "max by (node, policy) (a{job=\"j\"} and on (instance) (b == 1)) \
             > sum by (le) (rate(c_bucket[5m]))",
        )
        .expect("valid");
        let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        for (label, on) in [
            ("node", set(&["a", "b"])),
            ("policy", set(&["a", "b"])),
            ("job", set(&["a"])),
            ("instance", set(&["a", "b"])),
            ("le", set(&["c_bucket"])),
        ] {
            assert!(
                got.contains(&(label.to_string(), on.clone())),
                "{label} on {on:?} missing from {got:?}"
            );
        }
        assert_eq!(got.len(), 5, "{got:?}");
    }

    #[test]
    fn exposed_labels_read_every_sample_line() {
        let got = exposed_labels(
            "# TYPE a gauge\na{policy=\"p,\\\"q\\\"=\",detector=\"zombies\"} 1\n\
             b 2\nc_bucket{le=\"+Inf\"} 3\n",
        );
        let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(got.get("a"), Some(&set(&["policy", "detector"])));
        assert_eq!(got.get("b"), Some(&set(&[])));
        assert_eq!(got.get("c_bucket"), Some(&set(&["le"])));
    }
}
