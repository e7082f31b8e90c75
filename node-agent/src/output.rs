//! Renders an assessment as an aligned table for people, or JSON/YAML for
//! scripts.

use crate::detect::Assessment;
use crate::detect::finding::{DetectorReport, Severity};
use std::fmt::Write as _;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn severity_label(s: Option<Severity>) -> &'static str {
    match s {
        Some(Severity::Exceeded) => "EXCEEDED",
        Some(Severity::Warning) => "warning",
        Some(Severity::Info) | None => "info",
    }
}

fn detector_status(r: &DetectorReport) -> &'static str {
    if !r.enabled {
        "disabled"
    } else if r.firing {
        "FIRING"
    } else if r.exceeded {
        "EXCEEDED"
    } else {
        "ok"
    }
}

/// Aligns rows of cells into columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Makes a comm safe to print on one terminal line.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub fn table(a: &Assessment) -> String {
    let s = &a.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  kernel {}  scan {:.1} ms  processes {}  threads {}",
        opt(a.node.as_deref()),
        opt(a.kernel.as_deref()),
        a.scan_duration_seconds * 1000.0,
        s.processes,
        s.threads
    );
    let t = &s.tasks;
    let _ = writeln!(
        out,
        "tasks   R {}  S {}  D {}  Z {}  T {}  I {}  other {}",
        t.running, t.sleeping, t.disk_sleep, t.zombie, t.stopped, t.idle, t.other
    );
    let _ = writeln!(
        out,
        "load    {} {} {}  (runnable {}, blocked {})",
        f2(s.load1),
        f2(s.load5),
        f2(s.load15),
        opt(s.runnable),
        opt(s.blocked)
    );
    let _ = writeln!(
        out,
        "psi     cpu some {}  memory some {} full {}  io some {} full {}",
        f2(s.psi_cpu_some_avg10),
        f2(s.psi_memory_some_avg10),
        f2(s.psi_memory_full_avg10),
        f2(s.psi_io_some_avg10),
        f2(s.psi_io_full_avg10)
    );
    let _ = writeln!(
        out,
        "files   {} of {} handles  hung_task_timeout_secs {}",
        opt(s.file_handles_allocated),
        opt(s.file_handles_max),
        opt(s.hung_task_timeout_secs)
    );
    let k = &a.skipped;
    let _ = writeln!(
        out,
        "skipped vanished {}  permission-denied {}  unparsable {}  io-errors {}  cgroups-truncated {}",
        k.vanished, k.permission_denied, k.unparsable, k.io_errors, k.cgroups_truncated
    );
    out.push('\n');

    let mut rows = vec![vec![
        "DETECTOR".to_owned(),
        "STATUS".to_owned(),
        "VALUE".to_owned(),
        "THRESHOLD".to_owned(),
        "HELD".to_owned(),
        "OFFENDERS".to_owned(),
    ]];
    for r in &a.detectors {
        rows.push(vec![
            r.detector.name().to_owned(),
            detector_status(r).to_owned(),
            if r.enabled {
                format!("{} {}", trim_num(r.value), r.unit)
            } else {
                "-".to_owned()
            },
            if r.enabled {
                r.threshold_text.clone()
            } else {
                "-".to_owned()
            },
            if r.exceeded {
                format!("{:.0}s", r.exceeded_for_seconds)
            } else {
                "-".to_owned()
            },
            r.candidates.to_string(),
        ]);
    }
    out.push_str(&columns(&rows));
    out.push('\n');

    let mut findings: Vec<(&DetectorReport, &crate::detect::finding::Finding)> = a
        .detectors
        .iter()
        .flat_map(|r| r.findings.iter().map(move |f| (r, f)))
        .collect();
    findings.sort_by(|x, y| {
        y.1.severity
            .cmp(&x.1.severity)
            .then(x.0.detector.cmp(&y.0.detector))
    });
    if findings.is_empty() {
        out.push_str("no offenders\n");
        return out;
    }
    let mut rows = vec![
        [
            "SEVERITY",
            "DETECTOR",
            "PID",
            "TID",
            "NSPID",
            "COMM",
            "POD",
            "CONTAINER",
            "DETAIL",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    for (r, f) in findings {
        let pod = match (&f.pod_namespace, &f.pod_name, &f.pod_uid) {
            (Some(ns), Some(name), _) => format!("{ns}/{name}"),
            (_, _, Some(uid)) => format!("uid:{uid}"),
            _ => "-".to_owned(),
        };
        let container = f
            .container
            .clone()
            .or_else(|| {
                f.container_id
                    .as_ref()
                    .map(|c| c.chars().take(13).collect())
            })
            .or_else(|| f.cgroup.clone())
            .unwrap_or_else(|| "-".to_owned());
        rows.push(vec![
            severity_label(f.severity).to_owned(),
            r.detector.name().to_owned(),
            opt(f.host_pid),
            opt(f.tid),
            opt(f.ns_pid),
            printable(f.comm.as_deref().unwrap_or("-")),
            pod,
            container,
            f.summary.clone(),
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

fn trim_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
