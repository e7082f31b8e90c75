//! Reading the machine: `/proc`, cgroupfs and the kubelet's log layout, all
//! under a configurable host root (`/` on a node, a fixture tree in tests).

pub mod attribution;
pub mod cgroup;
pub mod enrich;
pub mod node;
pub mod parse;
pub mod pids;
pub mod pods;
pub mod procfs;
pub mod reader;

use attribution::{Attribution, attribute_cgroup_lines};
use cgroup::{CgroupCpuObs, CpuHierarchy};
use node::NodeObs;
use parse::Limit;
use pids::{PidsHierarchy, PidsObs};
use pods::PodDirectory;
use procfs::{FdCounting, ProcSnapshot, ProcWalker};
use reader::ScanCounters;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScanError {
    #[error("cannot open {path} (is --host-root right, and is procfs mounted there?)")]
    OpenProc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything known about one process beyond its stat line; read only for
/// processes that end up in a report, and cached by (pid, start time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDetails {
    pub nspid: Option<i32>,
    pub attribution: Attribution,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_name: Option<String>,
}

/// One full observation of the host: plain data, everything detection needs.
#[derive(Debug, Clone)]
pub struct Observation {
    pub taken_at: Instant,
    /// The host's name (`/proc/sys/kernel/hostname`), when readable.
    pub hostname: Option<String>,
    /// Clock ticks per second, the unit of stat's `starttime`.
    pub clock_ticks: u64,
    pub procs: ProcSnapshot,
    pub node: NodeObs,
    pub cgroups: Vec<CgroupCpuObs>,
    /// Node pid limits and task count, pod cgroups' pids.
    pub pids: PidsObs,
    pub counters: ScanCounters,
    pub duration: std::time::Duration,
}

/// What a scan reads beyond the always-read files, derived from the
/// policies being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPlan {
    /// Read the soft RLIMIT_NOFILE of the `fd_limit_top` biggest fd users
    /// and of every process holding at least `fd_limit_min_fds` fds.
    /// `None`: no policy looks at fd usage.
    pub fd_limit_min_fds: Option<u64>,
    pub fd_limit_top: usize,
}

impl ScanPlan {
    /// The plan that serves every given policy.
    pub fn for_policies(policies: &[nodemedic_crds::SelectedPolicy]) -> Self {
        Self {
            fd_limit_min_fds: policies
                .iter()
                .filter_map(|p| p.thresholds.fd_leak.as_ref())
                .map(|f| f.min_open_fds)
                .min(),
            fd_limit_top: crate::detect::fds::TOP_USERS,
        }
    }
}

/// The scanner holds open handles and scratch buffers across scans so that a
/// watch loop allocates little.
#[derive(Debug)]
pub struct Scanner {
    host_root: PathBuf,
    proc_dir: OwnedFd,
    fd_counting: FdCounting,
    walker: ProcWalker,
    hierarchies: Vec<CpuHierarchy>,
    pids_hierarchies: Vec<PidsHierarchy>,
    pods: PodDirectory,
    details: HashMap<(i32, u64), ProcessDetails>,
    limits: HashMap<(i32, u64), Option<Limit>>,
    clock_ticks: u64,
}

impl Scanner {
    pub fn new(host_root: &Path) -> Result<Self, ScanError> {
        let proc_path = host_root.join("proc");
        let proc_dir = rustix::fs::open(
            &proc_path,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| ScanError::OpenProc {
            source: std::io::Error::from_raw_os_error(e.raw_os_error()),
            path: proc_path.clone(),
        })?;
        let fd_counting = FdCounting::probe(&proc_dir);
        Ok(Self {
            host_root: host_root.to_owned(),
            proc_dir,
            fd_counting,
            walker: ProcWalker::new(),
            hierarchies: cgroup::discover(host_root),
            pids_hierarchies: pids::discover(host_root),
            pods: PodDirectory::load(host_root),
            details: HashMap::new(),
            limits: HashMap::new(),
            clock_ticks: rustix::param::clock_ticks_per_second(),
        })
    }

    pub fn host_root(&self) -> &Path {
        &self.host_root
    }

    /// Clock ticks per second, the unit of stat's `starttime`.
    pub fn clock_ticks(&self) -> u64 {
        self.clock_ticks.max(1)
    }

    /// Sets how often fds are recounted across repeated scans.
    pub fn set_fd_recount(&mut self, policy: procfs::FdRecount) {
        self.walker.set_fd_recount(policy);
    }

    /// The benchmark floor: read every `/proc/PID/stat` and nothing else.
    pub fn floor(&mut self) -> usize {
        self.walker.floor(self.proc_dir.as_fd())
    }

    /// Walks `/proc` only.
    pub fn scan_processes(&mut self, counters: &mut ScanCounters) -> ProcSnapshot {
        self.walker
            .walk(self.proc_dir.as_fd(), self.fd_counting, counters)
    }

    /// Samples the CPU counters of every interesting cgroup.
    pub fn scan_cgroups(&mut self, counters: &mut ScanCounters) -> Vec<CgroupCpuObs> {
        self.hierarchies
            .iter()
            .flat_map(|h| cgroup::sample(h, counters))
            .collect()
    }

    /// One full observation: processes (with the fd limits the plan asks
    /// for), node, cgroups.
    pub fn observe(&mut self, plan: &ScanPlan) -> Observation {
        let start = Instant::now();
        let mut counters = ScanCounters::default();
        let mut procs = self.scan_processes(&mut counters);
        self.read_fd_limits(&mut procs, plan, &mut counters);
        let node = node::read_node(self.proc_dir.as_fd(), &mut counters);
        let cgroups = self.scan_cgroups(&mut counters);
        let pids = self.scan_pids(&node, &mut counters);
        self.pods = PodDirectory::load(&self.host_root);
        self.prune_caches(&procs);
        Observation {
            taken_at: start,
            hostname: self.hostname(),
            clock_ticks: self.clock_ticks(),
            procs,
            node,
            cgroups,
            pids,
            counters,
            duration: start.elapsed(),
        }
    }

    /// Only the cgroup counters (the first sample of a one-shot scan).
    pub fn observe_cgroups_only(&mut self) -> Observation {
        let start = Instant::now();
        let mut counters = ScanCounters::default();
        let cgroups = self.scan_cgroups(&mut counters);
        Observation {
            taken_at: start,
            hostname: None,
            clock_ticks: self.clock_ticks(),
            procs: ProcSnapshot::default(),
            node: NodeObs::default(),
            cgroups,
            pids: PidsObs::default(),
            counters,
            duration: start.elapsed(),
        }
    }

    /// The node's pid limits and task count, and every pod cgroup's pids.
    pub fn scan_pids(&mut self, node: &NodeObs, counters: &mut ScanCounters) -> PidsObs {
        let (pid_max, threads_max) = pids::read_node_limits(self.proc_dir.as_fd(), counters);
        PidsObs {
            node: pids::NodePidsObs {
                pid_max,
                threads_max,
                tasks: node.load.map(|l| l.total_tasks),
            },
            pods: self
                .pids_hierarchies
                .iter()
                .flat_map(|h| pids::sample(h, counters))
                .collect(),
        }
    }

    fn hostname(&self) -> Option<String> {
        let mut buf = Vec::with_capacity(256);
        reader::read_at(self.proc_dir.as_fd(), "sys/kernel/hostname", &mut buf).ok()?;
        let name = String::from_utf8_lossy(&buf).trim().to_owned();
        (!name.is_empty()).then_some(name)
    }

    /// Soft RLIMIT_NOFILE for the processes the plan names (cached by
    /// identity: a process's limit rarely changes after it starts).
    fn read_fd_limits(
        &mut self,
        procs: &mut ProcSnapshot,
        plan: &ScanPlan,
        counters: &mut ScanCounters,
    ) {
        let Some(min_fds) = plan.fd_limit_min_fds else {
            return;
        };
        let mut by_fds: Vec<(u32, usize)> = procs
            .processes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.fd_count.map(|n| (n, i)))
            .collect();
        by_fds.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (rank, (fds, i)) in by_fds.into_iter().enumerate() {
            if rank >= plan.fd_limit_top && u64::from(fds) < min_fds {
                break;
            }
            let p = &mut procs.processes[i];
            let key = (p.pid, p.starttime);
            let limit = match self.limits.get(&key) {
                Some(l) => *l,
                None => {
                    let l = self
                        .walker
                        .nofile_soft_limit(self.proc_dir.as_fd(), p.pid, counters);
                    self.limits.insert(key, l);
                    l
                }
            };
            p.fd_soft_limit = limit;
        }
    }

    fn prune_caches(&mut self, procs: &ProcSnapshot) {
        if self.details.is_empty() && self.limits.is_empty() {
            return;
        }
        let alive: std::collections::HashSet<(i32, u64)> = procs
            .processes
            .iter()
            .map(|p| (p.pid, p.starttime))
            .collect();
        self.details.retain(|k, _| alive.contains(k));
        self.limits.retain(|k, _| alive.contains(k));
    }

    /// NSpid, cgroup attribution and pod names of one process (cached by
    /// identity); read failures are counted in `counters`.
    pub fn details(
        &mut self,
        pid: i32,
        starttime: u64,
        counters: &mut ScanCounters,
    ) -> ProcessDetails {
        if let Some(d) = self.details.get(&(pid, starttime)) {
            return d.clone();
        }
        let nspid = self
            .walker
            .status(self.proc_dir.as_fd(), pid, counters)
            .and_then(|s| s.innermost_pid());
        let attribution = self
            .walker
            .cgroup_text(self.proc_dir.as_fd(), pid, counters)
            .and_then(|t| match parse::parse_cgroup_lines(&t) {
                Ok(lines) => Some(attribute_cgroup_lines(&lines)),
                Err(_) => {
                    counters.unparsable += 1;
                    None
                }
            })
            .unwrap_or_default();
        let d = self.name_attribution(nspid, attribution);
        self.details.insert((pid, starttime), d.clone());
        d
    }

    /// Adds pod and container names to an attribution.
    pub fn name_attribution(&self, nspid: Option<i32>, attribution: Attribution) -> ProcessDetails {
        let pod = attribution
            .pod_uid
            .as_deref()
            .and_then(|u| self.pods.pod(u));
        let container_name = attribution
            .container_id
            .as_deref()
            .and_then(|c| self.pods.container_name(c))
            .map(str::to_owned);
        ProcessDetails {
            nspid,
            pod_namespace: pod.map(|p| p.namespace.clone()),
            pod_name: pod.map(|p| p.name.clone()),
            container_name,
            attribution,
        }
    }
}
