//! The enrichment stage: after detection, read who the offenders are (NSpid,
//! pod, container) — only for the processes and cgroups that made it into
//! findings, never for the whole process table.

use super::reader::ScanCounters;
use super::{ProcessDetails, Scanner};
use crate::detect::PolicyAssessment;
use crate::detect::finding::Offenders;
use std::collections::HashMap;

/// Details of every process and cgroup some policy's findings name.
#[derive(Debug, Default, Clone)]
pub struct Enrichment {
    processes: HashMap<(i32, u64), ProcessDetails>,
    cgroups: HashMap<String, ProcessDetails>,
    /// Read failures while enriching (vanished processes and the like).
    pub counters: ScanCounters,
}

impl Enrichment {
    /// Details of a process by (pid, start time).
    pub fn process(&self, key: (i32, u64)) -> Option<&ProcessDetails> {
        self.processes.get(&key)
    }

    /// Details (pod and container names) of a cgroup path.
    pub fn cgroup(&self, path: &str) -> Option<&ProcessDetails> {
        self.cgroups.get(path)
    }
}

/// Reads the details of everything the assessments' offenders name.
pub fn enrich(scanner: &mut Scanner, assessments: &[PolicyAssessment]) -> Enrichment {
    let mut out = Enrichment::default();
    let process = |scanner: &mut Scanner, out: &mut Enrichment, key: (i32, u64)| {
        // Start time 0: the process was not seen, nothing to read.
        if key.1 == 0 || out.processes.contains_key(&key) {
            return;
        }
        let d = scanner.details(key.0, key.1, &mut out.counters);
        out.processes.insert(key, d);
    };
    for verdict in assessments
        .iter()
        .flat_map(|a| a.detectors.iter().map(|d| &d.verdict))
    {
        match &verdict.offenders {
            Offenders::Zombies(v) => v
                .iter()
                .for_each(|z| process(scanner, &mut out, z.parent.key())),
            Offenders::HungTasks { threads, waits, .. } => {
                threads
                    .iter()
                    .for_each(|h| process(scanner, &mut out, h.process.key()));
                for w in waits {
                    process(scanner, &mut out, w.process.key());
                    process(scanner, &mut out, w.waits_on.key());
                }
            }
            Offenders::FdLeak { processes, .. } => processes
                .iter()
                .for_each(|f| process(scanner, &mut out, f.process.key())),
            Offenders::CpuThrottling(v) => {
                for c in v {
                    if !out.cgroups.contains_key(&c.cgroup) {
                        let d = scanner.name_attribution(None, c.attribution.clone());
                        out.cgroups.insert(c.cgroup.clone(), d);
                    }
                }
            }
        }
    }
    out
}
