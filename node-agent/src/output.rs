//! Renders one scan as an aligned table for people (`scan -o table`);
//! JSON and YAML print the `NodeHealthReport` itself.

use crate::detect::PolicyAssessment;
use crate::detect::finding::{Offenders, ProcessId, Severity, Verdict, WaitingThread};
use crate::detect::pids::{PidsAssessment, eta_words};
use crate::detect::waits::WaitReason;
use crate::report::build::{node_summary, pid_exhaustion_words, trim_num};
use crate::scan::Observation;
use crate::scan::enrich::Enrichment;
use nodemedic_crds::report::PidsLimitSource;
use std::fmt::Write as _;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Exceeded => "EXCEEDED",
        Severity::Warning => "warning",
        Severity::Info => "info",
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

/// What a waiting thread waits on, for people.
fn wait_text(w: &WaitingThread) -> String {
    match w.reason {
        WaitReason::VforkChild => format!(
            "in vfork() for child {} ({}) to exec or exit",
            w.waits_on.pid,
            printable(&w.waits_on.comm)
        ),
    }
}

/// One row of the offender table.
struct Row {
    severity: Severity,
    detector: &'static str,
    pid: Option<i32>,
    tid: Option<i32>,
    process: Option<(i32, u64)>,
    comm: String,
    cgroup: Option<String>,
    detail: String,
}

fn process_row(
    severity: Severity,
    detector: &'static str,
    p: &ProcessId,
    tid: Option<i32>,
    detail: String,
) -> Row {
    Row {
        severity,
        detector,
        pid: Some(p.pid),
        tid,
        process: Some(p.key()),
        comm: p.comm.clone(),
        cgroup: None,
        detail,
    }
}

fn rows_of(v: &Verdict) -> Vec<Row> {
    let name = v.detector.name();
    match &v.offenders {
        Offenders::Zombies(z) => z
            .iter()
            .map(|z| {
                process_row(
                    z.severity,
                    name,
                    &z.parent,
                    None,
                    format!(
                        "{} zombie children ({} past minAge), oldest {:.0}s",
                        z.zombies, z.past_min_age, z.oldest_age_seconds
                    ),
                )
            })
            .collect(),
        Offenders::HungTasks {
            threads,
            waits,
            waits_omitted,
        } => {
            let mut rows: Vec<Row> = threads
                .iter()
                .map(|h| {
                    process_row(
                        h.severity,
                        name,
                        &h.process,
                        Some(h.tid),
                        format!(
                            "thread {} in D state for {:.1}s{}",
                            printable(&h.thread_comm),
                            h.blocked_seconds,
                            h.wchan
                                .as_ref()
                                .map(|w| format!(" in {w}"))
                                .unwrap_or_default()
                        ),
                    )
                })
                .collect();
            rows.extend(waits.iter().map(|w| {
                process_row(
                    Severity::Info,
                    name,
                    &w.process,
                    Some(w.tid),
                    format!(
                        "waiting, not hung: thread {} in D state for {:.1}s {}{}",
                        printable(&w.thread_comm),
                        w.blocked_seconds,
                        wait_text(w),
                        if w.waits_on_hung {
                            " (the child is hung)"
                        } else {
                            ""
                        }
                    ),
                )
            }));
            if *waits_omitted > 0 {
                rows.push(Row {
                    severity: Severity::Info,
                    detector: name,
                    pid: None,
                    tid: None,
                    process: None,
                    comm: "-".to_owned(),
                    cgroup: None,
                    detail: format!("{waits_omitted} more waiting threads not listed"),
                });
            }
            rows
        }
        Offenders::FdLeak { processes, node } => {
            let mut rows: Vec<Row> = processes
                .iter()
                .map(|f| {
                    let limit = f
                        .soft_limit
                        .map_or("unlimited".to_owned(), |l| l.to_string());
                    let growth = f
                        .growth_per_minute
                        .map(|g| format!(", {g:+.1}/min"))
                        .unwrap_or_default();
                    let eta = f
                        .exhaustion_eta_seconds
                        .map(|s| format!(", hits its limit {}", eta_words(s)))
                        .unwrap_or_default();
                    process_row(
                        f.severity,
                        name,
                        &f.process,
                        None,
                        format!("{} fds of {limit} soft limit{growth}{eta}", f.open_fds),
                    )
                })
                .collect();
            if let Some(n) = node {
                rows.push(Row {
                    severity: n.severity,
                    detector: name,
                    pid: None,
                    tid: None,
                    process: None,
                    comm: "-".to_owned(),
                    cgroup: None,
                    detail: format!("node file handles {} of {} (file-nr)", n.allocated, n.max),
                });
            }
            rows
        }
        Offenders::CpuThrottling(c) => c
            .iter()
            .map(|c| Row {
                severity: c.severity,
                detector: name,
                pid: None,
                tid: None,
                process: None,
                comm: "-".to_owned(),
                cgroup: Some(c.cgroup.clone()),
                detail: format!(
                    "{}/{} periods throttled ({:.0}%), {:.2}s lost",
                    c.throttled_periods,
                    c.periods,
                    c.throttled_ratio * 100.0,
                    c.throttled_seconds
                ),
            })
            .collect(),
    }
}

fn detector_status(firing: bool, exceeded: bool) -> &'static str {
    if firing {
        "FIRING"
    } else if exceeded {
        "EXCEEDED"
    } else {
        "ok"
    }
}

/// "pids    1234 tasks of 32768 (pid_max 32768, threads-max 63000), ..."
/// and one line per pod that has an ETA, uses half its limit or holds
/// zombies.
fn pids_lines(out: &mut String, pids: &PidsAssessment, e: &Enrichment) {
    if let Some(n) = &pids.node {
        let _ = writeln!(
            out,
            "pids    {} tasks of {} (pid_max {}, threads-max {}), headroom {}{}{}",
            n.tasks,
            n.limit,
            opt(n.pid_max),
            opt(n.threads_max),
            n.headroom,
            n.growth_per_minute
                .map(|g| format!(", {g:+.1}/min"))
                .unwrap_or_default(),
            n.eta_seconds
                .map(|s| format!(", the node exhausts its pids {}", eta_words(s)))
                .unwrap_or_default()
        );
    }
    for p in pids
        .pods
        .iter()
        .filter(|p| p.eta_seconds.is_some() || p.usage() >= 0.5 || p.zombies > 0)
    {
        let pod = e
            .pod(&p.pod_uid)
            .and_then(|d| {
                Some(format!(
                    "{}/{}",
                    d.pod_namespace.as_ref()?,
                    d.pod_name.as_ref()?
                ))
            })
            .unwrap_or_else(|| format!("uid:{}", p.pod_uid));
        let limit = match p.limit_source {
            PidsLimitSource::PodCgroup => "pids.max",
            PidsLimitSource::Node => "the node's limit",
        };
        let zombies = p
            .zombie_share()
            .filter(|&s| s > 0.0)
            .map(|s| format!(", {} zombies ({:.0}%)", p.zombies, s * 100.0))
            .unwrap_or_default();
        let eta = p
            .eta_seconds
            .map(|s| format!(": pod {pod} exhausts its pids {}", eta_words(s)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "pod     {pod}  {} of {} pids ({limit}){zombies}{}{eta}",
            p.current,
            p.limit,
            p.growth_per_minute
                .map(|g| format!(", {g:+.1}/min"))
                .unwrap_or_default(),
        );
    }
    if pids.pods_omitted > 0 {
        let _ = writeln!(out, "pod     {} more pods not listed", pids.pods_omitted);
    }
}

/// The table `scan` prints for one policy's assessment of one observation.
pub fn table(
    obs: &Observation,
    a: &PolicyAssessment,
    e: &Enrichment,
    pids: &PidsAssessment,
) -> String {
    let s = node_summary(obs);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  kernel {}  policy {}  scan {:.1} ms  processes {}  threads {}",
        opt(obs.hostname.as_deref()),
        opt(obs.node.kernel.as_deref()),
        a.policy,
        obs.duration.as_secs_f64() * 1000.0,
        s.tasks.processes,
        s.tasks.threads
    );
    let t = &obs.procs.tasks;
    let _ = writeln!(
        out,
        "tasks   R {}  S {}  D {}  Z {}  T {}  I {}  other {}",
        t.running, t.sleeping, t.disk_sleep, t.zombie, t.stopped, t.idle, t.other
    );
    let _ = writeln!(
        out,
        "load    {:.2} {:.2} {:.2}  (runnable {}, blocked {})",
        s.load.one, s.load.five, s.load.fifteen, s.load.runnable, s.load.blocked
    );
    let psi = s.psi.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "psi     cpu some {}  memory some {} full {}  io some {} full {}",
        f2(psi.cpu.as_ref().map(|p| p.some_avg10)),
        f2(psi.memory.as_ref().map(|p| p.some_avg10)),
        f2(psi.memory.as_ref().and_then(|p| p.full_avg10)),
        f2(psi.io.as_ref().map(|p| p.some_avg10)),
        f2(psi.io.as_ref().and_then(|p| p.full_avg10))
    );
    let _ = writeln!(
        out,
        "files   {} of {} handles  hung_task_timeout_secs {}  hung_task_detect_count {}",
        s.file_handles_allocated,
        s.file_handles_max,
        opt(s.hung_task_timeout_secs),
        opt(s.hung_task_detect_count)
    );
    pids_lines(&mut out, pids, e);
    let k = &obs.counters;
    let x = &e.counters;
    let _ = writeln!(
        out,
        "skipped vanished {}  permission-denied {}  unparsable {}  io-errors {}  cgroups-truncated {}",
        k.vanished + x.vanished,
        k.permission_denied + x.permission_denied,
        k.unparsable + x.unparsable,
        k.io_errors + x.io_errors,
        k.cgroups_truncated
    );
    out.push('\n');

    let mut rows = vec![
        [
            "DETECTOR",
            "STATUS",
            "VALUE",
            "THRESHOLD",
            "HELD",
            "OFFENDERS",
            "SCOPE",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    for d in &a.detectors {
        let v = &d.verdict;
        rows.push(vec![
            v.detector.name().to_owned(),
            detector_status(d.hold.firing, v.exceeded).to_owned(),
            format!("{} {}", trim_num(v.value), v.unit),
            v.threshold_text.clone(),
            if v.exceeded {
                format!("{:.0}s", d.hold.exceeded_for.as_secs_f64())
            } else {
                "-".to_owned()
            },
            if v.omitted > 0 {
                format!("{} ({} not listed)", v.candidates, v.omitted)
            } else {
                v.candidates.to_string()
            },
            // Where the problem lives decides which ladder steps apply.
            match crate::report::scope::scope_of(v, e) {
                Some((scope, Some(pod))) => format!("{} {pod}", scope.as_str()),
                Some((scope, None)) => scope.as_str().to_owned(),
                None => "-".to_owned(),
            },
        ]);
    }
    out.push_str(&columns(&rows));
    out.push('\n');

    let mut findings: Vec<Row> = a
        .detectors
        .iter()
        .flat_map(|d| {
            let mut rows = rows_of(&d.verdict);
            // What the zombies cost: the pids they hold running out.
            if let Some(words) = pid_exhaustion_words(&d.verdict, e, pids) {
                rows.push(Row {
                    severity: rows.first().map_or(Severity::Info, |r| r.severity),
                    detector: d.verdict.detector.name(),
                    pid: None,
                    tid: None,
                    process: None,
                    comm: "-".to_owned(),
                    cgroup: None,
                    detail: words,
                });
            }
            rows
        })
        .collect();
    // Stable: within a severity, detectors keep their order.
    findings.sort_by_key(|r| std::cmp::Reverse(r.severity));
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
    for r in findings {
        let details = match (&r.process, &r.cgroup) {
            (Some(key), _) => e.process(*key),
            (None, Some(cg)) => e.cgroup(cg),
            _ => None,
        };
        let pod = details.map_or_else(
            || "-".to_owned(),
            |d| match (&d.pod_namespace, &d.pod_name, &d.attribution.pod_uid) {
                (Some(ns), Some(name), _) => format!("{ns}/{name}"),
                (_, _, Some(uid)) => format!("uid:{uid}"),
                _ => "-".to_owned(),
            },
        );
        let container = details
            .and_then(|d| {
                d.container_name.clone().or_else(|| {
                    d.attribution
                        .container_id
                        .as_ref()
                        .map(|c| c.chars().take(13).collect())
                })
            })
            .or_else(|| r.cgroup.clone())
            .unwrap_or_else(|| "-".to_owned());
        rows.push(vec![
            severity_label(r.severity).to_owned(),
            r.detector.to_owned(),
            opt(r.pid),
            opt(r.tid),
            opt(details.and_then(|d| d.nspid)),
            printable(&r.comm),
            pod,
            container,
            r.detail,
        ]);
    }
    out.push_str(&columns(&rows));
    out
}
