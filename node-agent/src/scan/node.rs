//! Node-wide readings: load, runnable/blocked counts, PSI, file handles.

use super::parse::{self, LoadAvg, Pressure};
use super::reader::{ReadFailure, ScanCounters, read_at};
use rustix::fd::AsFd;
use serde::Serialize;

/// Node-wide observations; each is `None` when its file is missing or bad.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeObs {
    pub kernel: Option<String>,
    pub load: Option<LoadAvg>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
    /// Online CPUs (the `cpuN` lines of /proc/stat).
    pub cpus: Option<u32>,
    pub psi_cpu: Option<Pressure>,
    pub psi_memory: Option<Pressure>,
    pub psi_io: Option<Pressure>,
    pub file_handles_allocated: Option<u64>,
    pub file_handles_max: Option<u64>,
    pub hung_task_timeout_secs: Option<u64>,
    /// `kernel.hung_task_detect_count`: hung tasks the kernel's khungtaskd
    /// has reported since boot (Linux 6.11 and later).
    pub hung_task_detect_count: Option<u64>,
    pub uptime_secs: Option<f64>,
}

impl NodeObs {
    pub fn file_ratio(&self) -> Option<f64> {
        let max = self.file_handles_max.filter(|&m| m > 0)?;
        Some(self.file_handles_allocated? as f64 / max as f64)
    }
}

/// Reads one node file, counting failures. Files that a kernel may simply
/// not have (PSI disabled, no khungtaskd) are not counted as errors.
fn read_text(
    proc_dir: impl AsFd,
    rel: &str,
    optional: bool,
    buf: &mut Vec<u8>,
    counters: &mut ScanCounters,
) -> Option<String> {
    match read_at(proc_dir, rel, buf) {
        Ok(()) => Some(String::from_utf8_lossy(buf).into_owned()),
        Err(ReadFailure::Vanished) if optional => None,
        Err(e) => {
            // PSI files return EOPNOTSUPP when booted with psi=0.
            if !optional {
                counters.record(e);
            }
            None
        }
    }
}

fn parsed<T, E>(r: Result<T, E>, counters: &mut ScanCounters) -> Option<T> {
    r.map_err(|_| counters.unparsable += 1).ok()
}

pub fn read_node(proc_dir: impl AsFd + Copy, counters: &mut ScanCounters) -> NodeObs {
    let mut buf = Vec::with_capacity(4096);
    let mut node = NodeObs::default();
    let mut text = |rel: &str, optional: bool, counters: &mut ScanCounters| {
        read_text(proc_dir, rel, optional, &mut buf, counters)
    };
    node.kernel = text("sys/kernel/osrelease", true, counters).map(|s| s.trim().to_owned());
    if let Some(t) = text("loadavg", false, counters) {
        node.load = parsed(parse::parse_loadavg(&t), counters);
    }
    if let Some(t) = text("stat", false, counters)
        && let Some((r, b)) = parsed(parse::parse_proc_stat_procs(&t), counters)
    {
        node.procs_running = Some(r);
        node.procs_blocked = Some(b);
        node.cpus = Some(parse::count_cpus(&t));
    }
    for (rel, slot) in [
        ("pressure/cpu", &mut node.psi_cpu),
        ("pressure/memory", &mut node.psi_memory),
        ("pressure/io", &mut node.psi_io),
    ] {
        if let Some(t) = text(rel, true, counters) {
            *slot = parsed(parse::parse_pressure(&t), counters);
        }
    }
    if let Some(t) = text("sys/fs/file-nr", false, counters)
        && let Some((a, m)) = parsed(parse::parse_file_nr(&t), counters)
    {
        node.file_handles_allocated = Some(a);
        node.file_handles_max = Some(m);
    }
    if let Some(t) = text("sys/kernel/hung_task_timeout_secs", true, counters) {
        node.hung_task_timeout_secs = parsed(t.trim().parse(), counters);
    }
    if let Some(t) = text("sys/kernel/hung_task_detect_count", true, counters) {
        node.hung_task_detect_count = parsed(t.trim().parse(), counters);
    }
    if let Some(t) = text("uptime", false, counters) {
        node.uptime_secs = parsed(
            t.split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .parse::<f64>()
                .map_err(|_| ())
                .and_then(|v| if v.is_finite() { Ok(v) } else { Err(()) }),
            counters,
        );
    }
    node
}
