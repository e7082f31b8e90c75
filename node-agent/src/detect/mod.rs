//! The four detectors, their memory across scans, and the assessment that
//! the `scan` command prints and the agent reports.

pub mod fds;
pub mod finding;
pub mod history;
pub mod hung;
pub mod thresholds;
pub mod throttling;
pub mod zombies;

use crate::scan::procfs::TaskStates;
use crate::scan::reader::ScanCounters;
use crate::scan::{Observation, Scanner};
use finding::{DetectorKind, DetectorReport, Finding};
use history::{History, Retention};
use serde::Serialize;
use std::time::Duration;
use thresholds::EffectiveThresholds;

/// Node-wide numbers that are reported whether or not anything is wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub processes: u64,
    pub threads: u64,
    /// Threads by state letter.
    pub tasks: TaskStates,
    /// Processes by state letter (of the process's main thread).
    pub process_states: TaskStates,
    pub cpus: Option<u32>,
    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    /// procs_running from /proc/stat: the runnable share of the load.
    pub runnable: Option<u64>,
    /// procs_blocked from /proc/stat: the D-state share of the load.
    pub blocked: Option<u64>,
    pub psi_cpu_some_avg10: Option<f64>,
    pub psi_memory_some_avg10: Option<f64>,
    pub psi_memory_full_avg10: Option<f64>,
    pub psi_io_some_avg10: Option<f64>,
    pub psi_io_full_avg10: Option<f64>,
    pub file_handles_allocated: Option<u64>,
    pub file_handles_max: Option<u64>,
    pub hung_task_timeout_secs: Option<u64>,
}

/// The result of one scan: what `scan` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    pub node: Option<String>,
    pub kernel: Option<String>,
    pub scan_duration_seconds: f64,
    pub summary: NodeSummary,
    /// A threshold is exceeded in this scan.
    pub exceeded: bool,
    /// A threshold has been exceeded for its policy's `for` duration.
    pub firing: bool,
    pub detectors: Vec<DetectorReport>,
    /// Things skipped during the scan (vanished processes, EACCES, bad files).
    pub skipped: ScanCounters,
}

/// Thresholds plus history: feed it observations, get assessments.
#[derive(Debug)]
pub struct Engine {
    pub thresholds: EffectiveThresholds,
    history: History,
}

impl Engine {
    pub fn new(thresholds: EffectiveThresholds) -> Self {
        Self {
            thresholds,
            history: History::default(),
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            fd_window: self
                .thresholds
                .fd_leak
                .as_ref()
                .and_then(|f| f.growth.as_ref())
                .map(|g| g.window),
            cpu_window: self
                .thresholds
                .cpu_throttling
                .as_ref()
                .map_or(Duration::from_secs(300), |c| c.window),
        }
    }

    /// Folds an observation into the history without assessing it (the
    /// first sample of a one-shot scan).
    pub fn prime(&mut self, obs: &Observation) {
        let keep = self.retention();
        self.history.record(obs, keep);
    }

    /// Assesses one observation; `scanner` supplies per-process details
    /// (NSpid, cgroup, limits) for the processes that make it into findings.
    pub fn assess(&mut self, scanner: &mut Scanner, obs: &Observation) -> Assessment {
        let keep = self.retention();
        self.history.record(obs, keep);
        let t = self.thresholds.clone();
        let ticks = scanner.clock_ticks();
        let mut reports = Vec::with_capacity(4);

        let mut run = |kind: DetectorKind,
                       for_duration: Option<Duration>,
                       history: &mut History,
                       report: Option<DetectorReport>| {
            let mut r = report.unwrap_or_else(|| DetectorReport::disabled(kind));
            if let Some(for_duration) = for_duration {
                let (firing, held) = history.hold(kind, r.exceeded, for_duration, obs.taken_at);
                r.firing = firing;
                r.exceeded_for_seconds = held;
            }
            reports.push(r);
        };
        let z = t
            .zombies
            .as_ref()
            .map(|z| zombies::detect(obs, z, &self.history, ticks));
        run(
            DetectorKind::Zombies,
            t.zombies.as_ref().map(|z| z.for_duration),
            &mut self.history,
            z,
        );
        let h = t
            .hung_tasks
            .as_ref()
            .map(|h| hung::detect(obs, h, &self.history));
        run(
            DetectorKind::HungTasks,
            t.hung_tasks.as_ref().map(|h| h.for_duration),
            &mut self.history,
            h,
        );
        let f = t.fd_leak.as_ref().map(|f| {
            fds::detect(obs, f, &self.history, |pid, st| {
                scanner.nofile_soft_limit(pid, st)
            })
        });
        run(
            DetectorKind::FdLeak,
            t.fd_leak.as_ref().map(|f| f.for_duration),
            &mut self.history,
            f,
        );
        let c = t
            .cpu_throttling
            .as_ref()
            .map(|c| throttling::detect(obs, c, &self.history));
        run(
            DetectorKind::CpuThrottling,
            t.cpu_throttling.as_ref().map(|c| c.for_duration),
            &mut self.history,
            c,
        );

        for r in &mut reports {
            for f in &mut r.findings {
                enrich(scanner, f);
            }
        }
        let mut skipped = obs.counters;
        let e = std::mem::take(&mut scanner.enrich_counters);
        skipped.vanished += e.vanished;
        skipped.permission_denied += e.permission_denied;
        skipped.unparsable += e.unparsable;
        skipped.io_errors += e.io_errors;

        Assessment {
            node: read_hostname(scanner),
            kernel: obs.node.kernel.clone(),
            scan_duration_seconds: obs.duration.as_secs_f64(),
            summary: summarize(obs),
            exceeded: reports.iter().any(|r| r.exceeded),
            firing: reports.iter().any(|r| r.firing),
            detectors: reports,
            skipped,
        }
    }
}

fn read_hostname(scanner: &Scanner) -> Option<String> {
    std::fs::read_to_string(scanner.host_root().join("proc/sys/kernel/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Fills NSpid, pod and container of a finding from its process (or, for
/// cgroup findings, from its cgroup path).
fn enrich(scanner: &mut Scanner, f: &mut Finding) {
    let details = match (f.host_pid, f.start_time) {
        (Some(pid), Some(st)) => scanner.details(pid, st),
        _ if f.pod_uid.is_some() || f.container_id.is_some() => {
            let attribution = crate::scan::attribution::Attribution {
                pod_uid: f.pod_uid.clone(),
                container_id: f.container_id.clone(),
                ..Default::default()
            };
            scanner.name_attribution(None, attribution)
        }
        _ => return,
    };
    f.ns_pid = details.nspid;
    f.pod_uid = details.attribution.pod_uid.clone();
    f.container_id = details.attribution.container_id.clone();
    f.pod_namespace = details.pod_namespace;
    f.pod_name = details.pod_name;
    f.container = details.container_name;
    f.runtime = details.attribution.runtime.map(|r| r.name().to_owned());
}

fn summarize(obs: &Observation) -> NodeSummary {
    let n = &obs.node;
    NodeSummary {
        processes: obs.counters.processes,
        threads: obs.counters.threads,
        tasks: obs.procs.tasks,
        process_states: {
            let mut states = TaskStates::default();
            for p in &obs.procs.processes {
                states.add(p.state);
            }
            states
        },
        cpus: n.cpus,
        load1: n.load.map(|l| l.one),
        load5: n.load.map(|l| l.five),
        load15: n.load.map(|l| l.fifteen),
        runnable: n.procs_running,
        blocked: n.procs_blocked,
        psi_cpu_some_avg10: n.psi_cpu.map(|p| p.some_avg10),
        psi_memory_some_avg10: n.psi_memory.map(|p| p.some_avg10),
        psi_memory_full_avg10: n.psi_memory.and_then(|p| p.full_avg10),
        psi_io_some_avg10: n.psi_io.map(|p| p.some_avg10),
        psi_io_full_avg10: n.psi_io.and_then(|p| p.full_avg10),
        file_handles_allocated: n.file_handles_allocated,
        file_handles_max: n.file_handles_max,
        hung_task_timeout_secs: n.hung_task_timeout_secs,
    }
}
