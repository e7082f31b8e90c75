//! The per-process and per-thread walk of `/proc`.

use super::parse::{self, Limit};
use super::reader::{ReadFailure, ScanCounters, for_each_entry, is_procfs, read_at, size_at};
use rustix::fd::AsFd;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// One process, as cheaply as it can be observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessObs {
    pub pid: i32,
    pub ppid: i32,
    pub state: u8,
    pub comm: String,
    /// Clock ticks since boot; with `pid` it identifies the process.
    pub starttime: u64,
    pub num_threads: u32,
    pub kernel_thread: bool,
    /// Open fds; `None` when unreadable (permissions, vanished, kernel thread).
    pub fd_count: Option<u32>,
    /// Soft RLIMIT_NOFILE, read only for the processes the scan plan names
    /// (the biggest fd users); `None` otherwise or when unreadable.
    pub fd_soft_limit: Option<Limit>,
}

/// A thread in uninterruptible sleep (state `D`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedThread {
    pub tgid: i32,
    pub tid: i32,
    pub comm: String,
    pub starttime: u64,
    /// `se.exec_start` (ns, scheduler clock): when it last ran.
    pub exec_start_ns: Option<u64>,
    /// A counter that moves whenever the thread is switched in.
    pub switches: Option<u64>,
    /// The kernel function it sleeps in (`/proc/.../wchan`), when readable.
    pub wchan: Option<String>,
    /// The CPU whose scheduler clock `exec_start_ns` is in.
    pub cpu: Option<u32>,
    /// The newest children this thread created that have not exec'd since
    /// (`PF_FORKNOEXEC`), at most [`MAX_CHILD_CANDIDATES`]: the evidence
    /// for a vfork wait (see `detect::waits`).
    pub children: Vec<ChildObs>,
}

/// How many of a blocked thread's newest children are looked at. A thread
/// in a vfork wait created its vfork child last (it can create none while
/// it waits), so the child is the newest entry of its `children` list
/// unless orphans were reparented to it (a subreaper) since.
pub const MAX_CHILD_CANDIDATES: usize = 4;

/// A child of a blocked thread that has not exec'd since it was forked,
/// and the address-space figures of both, read back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildObs {
    pub pid: i32,
    pub comm: String,
    pub starttime: u64,
    pub state: u8,
    /// `PF_FORKNOEXEC` is set in its stat flags.
    pub fork_no_exec: bool,
    /// (vsize, rss) of the child.
    pub mm: Option<(u64, u64)>,
    /// (vsize, rss) of the blocked thread, read right after the child's.
    pub parent_mm: Option<(u64, u64)>,
}

/// A zombie and when it last ran (≈ when it exited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZombieObs {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub starttime: u64,
    pub exec_start_ns: Option<u64>,
    pub cpu: Option<u32>,
}

/// Tasks (threads) by state letter, as `ps -eL` would count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStates {
    pub running: u64,
    pub sleeping: u64,
    pub disk_sleep: u64,
    pub stopped: u64,
    pub zombie: u64,
    pub idle: u64,
    pub other: u64,
}

impl TaskStates {
    pub fn add(&mut self, state: u8) {
        match state {
            b'R' => self.running += 1,
            b'S' => self.sleeping += 1,
            b'D' => self.disk_sleep += 1,
            b'T' | b't' => self.stopped += 1,
            b'Z' => self.zombie += 1,
            b'I' => self.idle += 1,
            _ => self.other += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.running
            + self.sleeping
            + self.disk_sleep
            + self.stopped
            + self.zombie
            + self.idle
            + self.other
    }
}

/// Everything one walk of `/proc` produced.
#[derive(Debug, Clone, Default)]
pub struct ProcSnapshot {
    pub processes: Vec<ProcessObs>,
    pub blocked: Vec<BlockedThread>,
    pub zombies: Vec<ZombieObs>,
    pub tasks: TaskStates,
    /// The scheduler clock "now" (ns), from the scanning thread's own
    /// `se.exec_start`; compares with the `exec_start_ns` values above.
    pub sched_now_ns: Option<u64>,
    /// The same, per CPU, for the CPUs blocked threads and zombies last ran
    /// on: each CPU's clock excludes its own IRQ and steal time, so clocks
    /// of different CPUs drift apart and only same-CPU values compare.
    pub sched_now_by_cpu: Vec<(u32, u64)>,
}

impl ProcSnapshot {
    /// "Now" in the scheduler clock of `cpu` (or of the scanning CPU).
    pub fn sched_now_for(&self, cpu: Option<u32>) -> Option<u64> {
        cpu.and_then(|c| {
            self.sched_now_by_cpu
                .iter()
                .find(|(k, _)| *k == c)
                .map(|&(_, v)| v)
        })
        .or(self.sched_now_ns)
    }
}

/// How to count open fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdCounting {
    /// `st_size` of `/proc/PID/fd` is the count, 0 included (Linux ≥ 6.2):
    /// one `stat()`, which needs no privilege over the process.
    Stat,
    /// `st_size` when it is not 0, else a listing of `/proc/PID/fd`: for a
    /// kernel that reports 0 for every process (before 6.2), where listing
    /// another user's fd directory (mode 0500) needs `CAP_DAC_READ_SEARCH`.
    StatThenReaddir,
    /// Always readdir (fixture trees are not procfs).
    Readdir,
}

impl FdCounting {
    /// How fds can be counted under `proc_dir`. This process always holds
    /// open fds (`proc_dir` itself), so a kernel that counts them in
    /// `st_size` reports a non-zero size for its own fd directory; then a
    /// size of 0 for another process means it has no open fds and the
    /// directory never needs listing.
    pub fn probe(proc_dir: impl AsFd + Copy) -> Self {
        if !is_procfs(proc_dir) {
            return FdCounting::Readdir;
        }
        match size_at(proc_dir, "self/fd") {
            Ok(n) if n > 0 => FdCounting::Stat,
            _ => FdCounting::StatThenReaddir,
        }
    }
}

/// Reusable state of the walk: scratch buffers only, no per-scan allocation
/// beyond the results.
#[derive(Debug, Default)]
pub struct ProcWalker {
    buf: Vec<u8>,
    path: String,
    pids: Vec<i32>,
    tids: Vec<i32>,
    fd_policy: FdRecount,
    /// (pid, starttime) → (fd count, scan number it was counted in, last seen).
    fd_cache: HashMap<(i32, u64), (u32, u64, u64)>,
    scan_seq: u64,
}

/// How often fds are recounted in repeated scans. Counting is one `stat()`
/// per process; in a watch loop most processes hold a handful of fds, so
/// they are recounted every `every` scans (staggered by pid) while any
/// process at or above `always_at` fds is recounted on every scan. A one-shot
/// scan counts everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdRecount {
    pub every: u32,
    pub always_at: u32,
}

impl Default for FdRecount {
    fn default() -> Self {
        Self {
            every: 1,
            always_at: 64,
        }
    }
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

fn note<T>(counters: &mut ScanCounters, r: Result<T, ReadFailure>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            counters.record(e);
            None
        }
    }
}

impl ProcWalker {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            ..Self::default()
        }
    }

    pub fn set_fd_recount(&mut self, policy: FdRecount) {
        self.fd_policy = FdRecount {
            every: policy.every.max(1),
            ..policy
        };
    }

    /// The fd count of one process, from the cache when it is recent enough.
    fn fd_count_amortized(
        &mut self,
        proc_dir: impl AsFd + Copy,
        pid: i32,
        starttime: u64,
        fd_counting: FdCounting,
        counters: &mut ScanCounters,
    ) -> Option<u32> {
        let seq = self.scan_seq;
        let every = u64::from(self.fd_policy.every);
        if every > 1
            && let Some(entry) = self.fd_cache.get_mut(&(pid, starttime))
        {
            entry.2 = seq;
            let (count, counted_at, _) = *entry;
            let due = (seq + u64::from(pid.unsigned_abs())).is_multiple_of(every);
            if count < self.fd_policy.always_at && !due && seq - counted_at < every {
                return Some(count);
            }
        }
        let n = self.count_fds(proc_dir, pid, fd_counting, counters)?;
        if every > 1 {
            self.fd_cache.insert((pid, starttime), (n, seq, seq));
        }
        Some(n)
    }

    fn list_pids(&mut self, proc_dir: impl AsFd, counters: &mut ScanCounters) {
        self.pids.clear();
        let pids = &mut self.pids;
        let listed = for_each_entry(proc_dir, "", |name, _| {
            if let Some(pid) = parse_pid(name) {
                pids.push(pid);
            }
        });
        note(counters, listed);
    }

    /// The floor the benchmark compares against: read `/proc/PID/stat` for
    /// every pid and nothing else. Returns the bytes read.
    pub fn floor(&mut self, proc_dir: impl AsFd + Copy) -> usize {
        let mut scratch = ScanCounters::default();
        self.list_pids(proc_dir, &mut scratch);
        let mut total = 0;
        for i in 0..self.pids.len() {
            self.path.clear();
            let _ = write!(self.path, "{}/stat", self.pids[i]);
            if read_at(proc_dir, &self.path, &mut self.buf).is_ok() {
                total += self.buf.len();
            }
        }
        total
    }

    /// Reads the stat file at `self.path` into a `ProcStat`, counting failures.
    fn read_stat(
        &mut self,
        proc_dir: impl AsFd,
        counters: &mut ScanCounters,
    ) -> Option<parse::ProcStat> {
        note(counters, read_at(proc_dir, &self.path, &mut self.buf))?;
        if self.buf.is_empty() {
            counters.vanished += 1;
            return None;
        }
        match parse::parse_stat(&self.buf) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(path = %self.path, error = %e, "unparsable stat");
                counters.unparsable += 1;
                None
            }
        }
    }

    /// Walks every process (and the threads of multi-threaded ones).
    pub fn walk(
        &mut self,
        proc_dir: impl AsFd + Copy,
        fd_counting: FdCounting,
        counters: &mut ScanCounters,
    ) -> ProcSnapshot {
        // The kernel prints a running task's exec_start as of its last
        // accounting update, which can trail by a tick; yielding makes the
        // scheduler account this thread now.
        std::thread::yield_now();
        let mut snap = ProcSnapshot {
            sched_now_ns: self.sched_exec_start(proc_dir, "thread-self/sched", counters),
            ..ProcSnapshot::default()
        };
        self.scan_seq += 1;
        self.list_pids(proc_dir, counters);
        snap.processes.reserve(self.pids.len());
        for i in 0..self.pids.len() {
            let pid = self.pids[i];
            self.path.clear();
            let _ = write!(self.path, "{pid}/stat");
            let Some(stat) = self.read_stat(proc_dir, counters) else {
                continue;
            };
            counters.processes += 1;
            let kernel_thread = stat.is_kernel_thread();
            let fd_count = if kernel_thread || stat.state == b'Z' {
                None
            } else {
                self.fd_count_amortized(proc_dir, pid, stat.starttime, fd_counting, counters)
            };
            // A zombie leader whose other threads still run ("Zl" in ps) is
            // not a zombie yet: its threads are walked and it is not counted.
            let zombie = stat.state == b'Z' && stat.num_threads <= 1;
            if stat.num_threads > 1 {
                self.walk_threads(proc_dir, &stat, &mut snap, counters);
            } else {
                counters.threads += 1;
                snap.tasks.add(stat.state);
                if stat.state == b'D' {
                    let blocked = self.blocked_thread(proc_dir, pid, pid, &stat, "", counters);
                    snap.blocked.push(blocked);
                }
            }
            if zombie {
                self.path.clear();
                let _ = write!(self.path, "{pid}/sched");
                let exec_start_ns = self.sched_exec_start_at_path(proc_dir, counters);
                snap.zombies.push(ZombieObs {
                    pid,
                    ppid: stat.ppid,
                    comm: stat.comm.clone(),
                    starttime: stat.starttime,
                    exec_start_ns,
                    cpu: stat.processor,
                });
            }
            snap.processes.push(ProcessObs {
                pid,
                ppid: stat.ppid,
                state: stat.state,
                comm: stat.comm,
                starttime: stat.starttime,
                num_threads: stat.num_threads,
                kernel_thread,
                fd_count,
                fd_soft_limit: None,
            });
        }
        self.read_children(proc_dir, &mut snap, counters);
        if !self.fd_cache.is_empty() {
            let seq = self.scan_seq;
            self.fd_cache.retain(|_, e| e.2 == seq);
        }
        if snap.sched_now_ns.is_some() && fd_counting != FdCounting::Readdir {
            self.sched_now_per_cpu(proc_dir, &mut snap, counters);
        }
        snap
    }

    /// Reads the scheduler clock of each CPU that a blocked thread or zombie
    /// last ran on, by briefly moving the scanning thread there. Only done
    /// on a live host (fixture trees have no CPUs to visit).
    fn sched_now_per_cpu(
        &mut self,
        proc_dir: impl AsFd + Copy,
        snap: &mut ProcSnapshot,
        counters: &mut ScanCounters,
    ) {
        let mut cpus: Vec<u32> = snap
            .blocked
            .iter()
            .filter(|b| b.exec_start_ns.is_some())
            .filter_map(|b| b.cpu)
            .chain(
                snap.zombies
                    .iter()
                    .filter(|z| z.exec_start_ns.is_some())
                    .filter_map(|z| z.cpu),
            )
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.is_empty() {
            return;
        }
        let Ok(original) = rustix::thread::sched_getaffinity(None) else {
            return;
        };
        for cpu in cpus {
            let idx = cpu as usize;
            if idx >= rustix::thread::CpuSet::MAX_CPU || !original.is_set(idx) {
                continue;
            }
            let mut only = rustix::thread::CpuSet::new();
            only.set(idx);
            if rustix::thread::sched_setaffinity(None, &only).is_err() {
                continue;
            }
            std::thread::yield_now();
            if let Some(now) = self.sched_exec_start(proc_dir, "thread-self/sched", counters) {
                snap.sched_now_by_cpu.push((cpu, now));
            }
        }
        if let Err(e) = rustix::thread::sched_setaffinity(None, &original) {
            tracing::warn!(error = %e, "could not restore the scanner's CPU affinity");
        }
    }

    fn walk_threads(
        &mut self,
        proc_dir: impl AsFd + Copy,
        leader: &parse::ProcStat,
        snap: &mut ProcSnapshot,
        counters: &mut ScanCounters,
    ) {
        let pid = leader.pid;
        self.tids.clear();
        self.path.clear();
        let _ = write!(self.path, "{pid}/task");
        let tids = &mut self.tids;
        let listed = for_each_entry(proc_dir, &self.path, |name, _| {
            if let Some(tid) = parse_pid(name) {
                tids.push(tid);
            }
        });
        if note(counters, listed).is_none() {
            return;
        }
        for j in 0..self.tids.len() {
            let tid = self.tids[j];
            // /proc/PID/stat already is the leader's own state.
            let stat = if tid == pid {
                leader.clone()
            } else {
                self.path.clear();
                let _ = write!(self.path, "{pid}/task/{tid}/stat");
                let Some(stat) = self.read_stat(proc_dir, counters) else {
                    continue;
                };
                stat
            };
            counters.threads += 1;
            snap.tasks.add(stat.state);
            if stat.state == b'D' {
                let prefix = format!("{pid}/task/{tid}/");
                let blocked = self.blocked_thread(proc_dir, pid, tid, &stat, &prefix, counters);
                snap.blocked.push(blocked);
            }
        }
    }

    /// Collects what the hung-task detector needs about a `D` thread.
    /// `prefix` is the thread's directory relative to /proc, or empty for a
    /// single-threaded process (then `pid/` is used).
    fn blocked_thread(
        &mut self,
        proc_dir: impl AsFd + Copy,
        tgid: i32,
        tid: i32,
        stat: &parse::ProcStat,
        prefix: &str,
        counters: &mut ScanCounters,
    ) -> BlockedThread {
        let dir = if prefix.is_empty() {
            format!("{tid}/")
        } else {
            prefix.to_owned()
        };
        self.path.clear();
        let _ = write!(self.path, "{dir}sched");
        let exec_start_ns = self.sched_exec_start_at_path(proc_dir, counters);
        self.path.clear();
        let _ = write!(self.path, "{dir}schedstat");
        let switches = match read_at(proc_dir, &self.path, &mut self.buf) {
            Ok(()) => parse::parse_schedstat_timeslices(&String::from_utf8_lossy(&self.buf)).ok(),
            Err(_) => None,
        }
        .or_else(|| {
            // Without CONFIG_SCHED_INFO, fall back to the status counters.
            self.path.clear();
            let _ = write!(self.path, "{dir}status");
            read_at(proc_dir, &self.path, &mut self.buf).ok()?;
            parse::parse_status(&String::from_utf8_lossy(&self.buf))
                .ok()?
                .switches()
        });
        self.path.clear();
        let _ = write!(self.path, "{dir}wchan");
        let wchan = read_at(proc_dir, &self.path, &mut self.buf)
            .ok()
            .map(|()| String::from_utf8_lossy(&self.buf).trim().to_owned())
            .filter(|w| !w.is_empty() && w != "0");
        BlockedThread {
            tgid,
            tid,
            comm: stat.comm.clone(),
            starttime: stat.starttime,
            exec_start_ns,
            switches,
            wchan,
            cpu: stat.processor,
            children: Vec::new(),
        }
    }

    /// For every blocked thread, reads its newest children that have not
    /// exec'd (from `/proc/PID/task/TID/children`; without that file —
    /// kernels built without CONFIG_PROC_CHILDREN — from the ppid of the
    /// other processes, for single-threaded processes only, since ppid
    /// names the process, not the thread).
    fn read_children(
        &mut self,
        proc_dir: impl AsFd + Copy,
        snap: &mut ProcSnapshot,
        counters: &mut ScanCounters,
    ) {
        let single: std::collections::HashSet<i32> = snap
            .processes
            .iter()
            .filter(|p| p.num_threads <= 1)
            .map(|p| p.pid)
            .collect();
        for i in 0..snap.blocked.len() {
            let (tgid, tid) = (snap.blocked[i].tgid, snap.blocked[i].tid);
            self.path.clear();
            let _ = write!(self.path, "{tgid}/task/{tid}/children");
            let mut pids: Vec<i32> = match read_at(proc_dir, &self.path, &mut self.buf) {
                Ok(()) => self
                    .buf
                    .split(u8::is_ascii_whitespace)
                    .filter_map(parse_pid)
                    .collect(),
                Err(_) if single.contains(&tgid) => {
                    let mut kids: Vec<&ProcessObs> =
                        snap.processes.iter().filter(|p| p.ppid == tgid).collect();
                    kids.sort_by_key(|p| p.starttime);
                    kids.iter().map(|p| p.pid).collect()
                }
                Err(_) => Vec::new(),
            };
            let keep = pids.len().saturating_sub(MAX_CHILD_CANDIDATES);
            pids.drain(..keep);
            let parent_stat = if tid == tgid {
                format!("{tgid}/stat")
            } else {
                format!("{tgid}/task/{tid}/stat")
            };
            let mut children = Vec::new();
            for pid in pids.into_iter().rev() {
                if let Some(c) = self.child_obs(proc_dir, pid, &parent_stat, counters) {
                    children.push(c);
                }
            }
            snap.blocked[i].children = children;
        }
    }

    /// One child of a blocked thread, if it has not exec'd. The two stat
    /// lines are read back to back, up to three times until their
    /// address-space figures agree: a child that faults a page in between
    /// the two reads would otherwise look like a different address space.
    fn child_obs(
        &mut self,
        proc_dir: impl AsFd + Copy,
        pid: i32,
        parent_stat: &str,
        counters: &mut ScanCounters,
    ) -> Option<ChildObs> {
        let mut out: Option<ChildObs> = None;
        for _ in 0..3 {
            self.path.clear();
            let _ = write!(self.path, "{pid}/stat");
            let child = self.read_stat(proc_dir, counters)?;
            if !child.fork_no_exec() || child.is_kernel_thread() {
                return None;
            }
            self.path.clear();
            self.path.push_str(parent_stat);
            let parent = self.read_stat(proc_dir, counters)?;
            let mm = |s: &parse::ProcStat| Some((s.vsize?, s.rss?));
            let obs = ChildObs {
                pid,
                comm: child.comm.clone(),
                starttime: child.starttime,
                state: child.state,
                fork_no_exec: true,
                mm: mm(&child),
                parent_mm: mm(&parent),
            };
            let agree = obs.mm.is_some() && obs.mm == obs.parent_mm;
            out = Some(obs);
            if agree {
                break;
            }
        }
        out
    }

    fn sched_exec_start(
        &mut self,
        proc_dir: impl AsFd,
        rel: &str,
        counters: &mut ScanCounters,
    ) -> Option<u64> {
        self.path.clear();
        self.path.push_str(rel);
        self.sched_exec_start_at_path(proc_dir, counters)
    }

    /// `/proc/.../sched` exists only with CONFIG_SCHED_DEBUG; its absence is
    /// normal and not counted.
    fn sched_exec_start_at_path(
        &mut self,
        proc_dir: impl AsFd,
        counters: &mut ScanCounters,
    ) -> Option<u64> {
        match read_at(proc_dir, &self.path, &mut self.buf) {
            Ok(()) => match parse::parse_sched_exec_start(&String::from_utf8_lossy(&self.buf)) {
                Ok(v) => Some(v),
                Err(_) => {
                    if !self.buf.is_empty() {
                        counters.unparsable += 1;
                    }
                    None
                }
            },
            Err(ReadFailure::Vanished) => None,
            Err(e) => {
                counters.record(e);
                None
            }
        }
    }

    fn count_fds(
        &mut self,
        proc_dir: impl AsFd + Copy,
        pid: i32,
        how: FdCounting,
        counters: &mut ScanCounters,
    ) -> Option<u32> {
        self.path.clear();
        let _ = write!(self.path, "{pid}/fd");
        if how != FdCounting::Readdir {
            match size_at(proc_dir, &self.path) {
                Ok(n) if n > 0 || how == FdCounting::Stat => return u32::try_from(n).ok(),
                Ok(_) => {}
                Err(e) => {
                    counters.record(e);
                    return None;
                }
            }
        }
        let mut n = 0u32;
        let counted = for_each_entry(proc_dir, &self.path, |_, _| n += 1);
        note(counters, counted).map(|()| n)
    }

    /// Soft `RLIMIT_NOFILE` of one process.
    pub fn nofile_soft_limit(
        &mut self,
        proc_dir: impl AsFd,
        pid: i32,
        counters: &mut ScanCounters,
    ) -> Option<Limit> {
        self.path.clear();
        let _ = write!(self.path, "{pid}/limits");
        note(counters, read_at(proc_dir, &self.path, &mut self.buf))?;
        match parse::parse_nofile_soft_limit(&String::from_utf8_lossy(&self.buf)) {
            Ok(l) => Some(l),
            Err(_) => {
                counters.unparsable += 1;
                None
            }
        }
    }

    /// NSpid of one process (the PID inside its innermost namespace).
    pub fn status(
        &mut self,
        proc_dir: impl AsFd,
        pid: i32,
        counters: &mut ScanCounters,
    ) -> Option<parse::ProcStatus> {
        self.path.clear();
        let _ = write!(self.path, "{pid}/status");
        note(counters, read_at(proc_dir, &self.path, &mut self.buf))?;
        match parse::parse_status(&String::from_utf8_lossy(&self.buf)) {
            Ok(s) => Some(s),
            Err(_) => {
                counters.unparsable += 1;
                None
            }
        }
    }

    /// The raw `/proc/PID/cgroup` text of one process.
    pub fn cgroup_text(
        &mut self,
        proc_dir: impl AsFd,
        pid: i32,
        counters: &mut ScanCounters,
    ) -> Option<String> {
        self.path.clear();
        let _ = write!(self.path, "{pid}/cgroup");
        note(counters, read_at(proc_dir, &self.path, &mut self.buf))?;
        Some(String::from_utf8_lossy(&self.buf).into_owned())
    }
}
