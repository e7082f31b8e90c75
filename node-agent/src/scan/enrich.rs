//! The enrichment stage: after detection, read who the offenders are (NSpid,
//! pod, container) — only for the processes and cgroups that made it into
//! findings, never for the whole process table.

use super::reader::ScanCounters;
use super::{Observation, ProcessDetails, Scanner};
use crate::detect::PolicyAssessment;
use crate::detect::finding::Offenders;
use std::collections::HashMap;

/// Details of every process and cgroup some policy's findings name.
#[derive(Debug, Default, Clone)]
pub struct Enrichment {
    processes: HashMap<(i32, u64), ProcessDetails>,
    cgroups: HashMap<String, ProcessDetails>,
    /// Pod names by UID, for the pods in the pids assessment.
    pods: HashMap<String, ProcessDetails>,
    /// Zombies whose parent runs in each pod, by pod UID (see
    /// [`count_zombies_by_pod`]).
    pub zombies_by_pod: HashMap<String, u64>,
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

    /// Details (namespace and name) of a pod by UID.
    pub fn pod(&self, uid: &str) -> Option<&ProcessDetails> {
        self.pods.get(uid)
    }
}

/// Zombie parents whose pod is looked up, most zombies first: bounds the
/// reads when thousands of parents each hold a zombie or two.
const MAX_ZOMBIE_PARENTS: usize = 1024;

/// Counts the zombies of each pod by their parent's pod (a zombie stays in
/// the cgroup of the process that made it, and its parent runs in the same
/// pod unless the zombie is a container's init, whose parent is the
/// runtime's shim on the host). Also names every pod with a pids cgroup.
pub fn enrich_pids(scanner: &mut Scanner, obs: &Observation, out: &mut Enrichment) {
    out.zombies_by_pod = count_zombies_by_pod(obs, |pid, start| {
        scanner
            .details(pid, start, &mut out.counters)
            .attribution
            .pod_uid
    });
    for p in &obs.pids.pods {
        if !out.pods.contains_key(&p.pod_uid) {
            let d = scanner.name_attribution(
                None,
                super::attribution::Attribution {
                    pod_uid: Some(p.pod_uid.clone()),
                    ..Default::default()
                },
            );
            out.pods.insert(p.pod_uid.clone(), d);
        }
    }
}

/// Zombies per pod UID, from each parent's pod (`pod_of(pid, start time)`).
pub fn count_zombies_by_pod(
    obs: &Observation,
    mut pod_of: impl FnMut(i32, u64) -> Option<String>,
) -> HashMap<String, u64> {
    let mut per_parent: HashMap<i32, u64> = HashMap::new();
    for z in &obs.procs.zombies {
        *per_parent.entry(z.ppid).or_default() += 1;
    }
    let mut parents: Vec<(i32, u64)> = per_parent.into_iter().collect();
    parents.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    parents.truncate(MAX_ZOMBIE_PARENTS);
    let start_of: HashMap<i32, u64> = obs
        .procs
        .processes
        .iter()
        .map(|p| (p.pid, p.starttime))
        .collect();
    let mut out = HashMap::new();
    for (ppid, n) in parents {
        // A parent that was not seen (it exited mid-scan) cannot be placed.
        let Some(&start) = start_of.get(&ppid) else {
            continue;
        };
        if let Some(uid) = pod_of(ppid, start) {
            *out.entry(uid).or_default() += n;
        }
    }
    out
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
