//! Soak benchmark: false positives measured, not guessed (`make soak`,
//! docs/benchmarks.md "Soak: false positives on a busy node").
//!
//! Runs a realistic busy node on this machine for `--minutes` (default 30)
//! and watches nodemedic look at it:
//!
//! - the real control plane (etcd + kube-apiserver of the test harness), an
//!   API-only Node for this host with the labels `examples/production.yaml`
//!   selects, that policy applied in **DryRun** (planned actions are recorded
//!   in the ledger and as Events exactly as in Enforce; nothing is executed),
//!   and Pod objects bound to the Node for the workloads below;
//! - the release `nodemedic-agent run` (the chart's default 10 s interval,
//!   5 m heartbeat) scanning this host's real `/proc` and cgroupfs (its host
//!   root links `proc` and `sys` to the real ones and adds the kubelet's
//!   `/var/log/pods` layout naming the pods), and the release
//!   `nodemedic-operator run`, both with admin credentials;
//! - in the same run, the bare scan: `nodemedic-agent scan --watch 10s` with
//!   the same policy and host root (the same scanner and detectors, no
//!   reporting), whose CPU per scan is the baseline of the agent's;
//! - the workloads, each in a pod-shaped cgroup (v1 `cpu`, `cpuacct`,
//!   `pids`: `<top>/kubepods/<qos>/pod<uid>/<container id>`): a parallel C
//!   build (`make -j3` plus its tests through `xargs -P 4`), a
//!   `posix_spawn`-heavy service (4 threads), a process churning thousands
//!   of fds a second around a wandering level, one holding 10,000 fds
//!   steadily, three services bursting against their CPU quota, and a
//!   parent whose children are zombies for two seconds before it reaps them.
//!
//! It counts findings per detector (from every report the agent wrote, and
//! from every scan of the bare scan), conditions that left
//! `BelowThreshold`, planned actions per kind (ledger history, step records,
//! Events), and disruptive ones; measures the agent's CPU per interval
//! against the bare scan's, the workloads' rates and the throttled ratio of
//! the bursting containers, and the machine's load. Prints a table, writes
//! `summary.json` (and the logs) to the output directory, and exits 1 if
//! any disruptive action was planned (2 if the run itself failed).
//!
//! Needs root (cgroups) and the control-plane binaries
//! (`tests/envtest/provision.sh`). Ctrl-C or SIGTERM stops it early: the
//! summary covers the time run, and every process and cgroup it created is
//! removed. Not part of `cargo test`: it is a binary, run by `make soak`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use nodemedic_crds::policy::{ActionKind, ParentSignal};
use nodemedic_crds::report::Workload;
use nodemedic_crds::{
    Detector, NodeHealthPolicy, NodeHealthReport, NodeHealthReportStatus, NodeRemediation,
};
use nodemedic_tests::workspace_bin::workspace_binary;
use nodemedic_tests::{ControlPlane, ControlPlaneOptions};
use serde_json::{Value, json};

/// Prefix of the top cgroup directory of a run (one per hierarchy).
const CGROUP_TOP: &str = "nodemedic-soak-";
const HIERARCHIES: [&str; 3] = ["cpu", "cpuacct", "pids"];
const POLL: Duration = Duration::from_secs(5);

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

// ------------------------------------------------------------- options --

struct Options {
    duration: Duration,
    out: PathBuf,
    interval: String,
}

fn options() -> Res<Options> {
    let mut minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let mut out = std::env::var_os("SOAK_OUT").map(PathBuf::from);
    let mut interval = "10s".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--minutes takes a number")?;
            }
            "--out" => out = Some(args.next().ok_or("--out takes a directory")?.into()),
            "--interval" => interval = args.next().ok_or("--interval takes a duration")?,
            "-h" | "--help" => {
                println!(
                    "nodemedic-soak [--minutes N (default 30, or SOAK_MINUTES)] [--out DIR (or SOAK_OUT)] [--interval 10s]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if minutes.is_nan() || minutes <= 0.0 {
        return Err("--minutes must be positive".into());
    }
    let out = match out {
        Some(o) => o,
        None => nodemedic_tests::workspace_bin::profile_dir()
            .map_err(|e| e.to_string())?
            .join("soak")
            .join(
                k8s_openapi::jiff::Timestamp::now()
                    .strftime("%Y%m%dT%H%M%SZ")
                    .to_string(),
            ),
    };
    Ok(Options {
        duration: Duration::from_secs_f64(minutes * 60.0),
        out,
        interval,
    })
}

// ------------------------------------------------------------- helpers --

fn ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// CPU time of a cpuacct group and everything below it, seconds.
fn cpuacct_seconds(group: &Path) -> Option<f64> {
    let ns = std::fs::read_to_string(group.join("cpuacct.usage")).ok()?;
    Some(ns.trim().parse::<f64>().ok()? / 1e9)
}

/// CPU time of the threads of `pid` named `comm`, seconds (schedstat, ns).
fn thread_cpu_seconds(pid: u32, comm: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Where the soak reads the CPU counters it compares: the agent and the bare
/// scan each in a cpuacct group of its own (ns, exited threads included).
struct CpuProbe {
    agent_pid: u32,
    agent_group: PathBuf,
    agent_admin: SocketAddr,
    bare_group: PathBuf,
    bare_output: PathBuf,
    operator_pid: u32,
}

/// The counters at one moment.
#[derive(Clone, Copy)]
struct CpuCounters {
    at: Instant,
    agent: f64,
    agent_scan_thread: f64,
    agent_scans: f64,
    bare: f64,
    bare_scans: f64,
    operator: f64,
}

impl CpuProbe {
    /// Reads every counter; one that cannot be read keeps its `earlier`
    /// value (0 for the first reading), so it adds nothing to the window.
    fn read(&self, earlier: Option<&CpuCounters>) -> CpuCounters {
        let keep = |v: Option<f64>, f: fn(&CpuCounters) -> f64| {
            v.unwrap_or_else(|| earlier.map_or(0.0, f))
        };
        CpuCounters {
            at: Instant::now(),
            agent: keep(cpuacct_seconds(&self.agent_group), |c| c.agent),
            agent_scan_thread: thread_cpu_seconds(self.agent_pid, "scan"),
            agent_scans: keep(
                metric(self.agent_admin, "nodemedic_agent_scans_total"),
                |c| c.agent_scans,
            ),
            bare: keep(cpuacct_seconds(&self.bare_group), |c| c.bare),
            // Each bare scan writes one JSON line.
            bare_scans: std::fs::read(&self.bare_output)
                .map(|b| b.iter().filter(|&&c| c == b'\n').count() as f64)
                .unwrap_or(0.0),
            operator: keep(cpu_of(self.operator_pid), |c| c.operator),
        }
    }
}

impl CpuCounters {
    /// The window from `self` to `end`, per interval and against the bare scan.
    fn window_to(&self, end: &CpuCounters) -> Value {
        let scans = end.agent_scans - self.agent_scans;
        let bare_scans = end.bare_scans - self.bare_scans;
        let agent_cpu = end.agent - self.agent;
        let scan_thread_cpu = end.agent_scan_thread - self.agent_scan_thread;
        let per_interval = |cpu: f64| cpu / scans.max(1.0);
        let agent = per_interval(agent_cpu);
        let bare = (end.bare - self.bare) / bare_scans.max(1.0);
        json!({
            "windowSeconds": end.at.duration_since(self.at).as_secs_f64(),
            "agentScans": scans,
            "agentCpuSeconds": agent_cpu,
            "agentCpuPerIntervalMs": agent * 1e3,
            "agentScanThreadCpuPerIntervalMs": per_interval(scan_thread_cpu) * 1e3,
            "agentOtherThreadsCpuPerIntervalMs": per_interval(agent_cpu - scan_thread_cpu) * 1e3,
            "bareScans": bare_scans,
            "bareCpuSeconds": end.bare - self.bare,
            "bareCpuPerScanMs": bare * 1e3,
            "ratio": if bare > 0.0 { agent / bare } else { f64::NAN },
            "operatorCpuSeconds": end.operator - self.operator,
            "measuredWith": "cpuacct.usage (ns), one group each for the agent and the bare scan",
        })
    }
}

/// utime + stime of a process (all its threads), seconds; None when gone.
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    Some((t(14)? + t(15)?) / ticks())
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn metric(addr: SocketAddr, prefix: &str) -> Option<f64> {
    let body = http_get(addr, "/metrics")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn hex64() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut s = String::new();
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(Instant::now().elapsed().as_nanos());
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s
}

fn kill(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

// ------------------------------------------------------------- cgroups --

/// The run's cgroup trees (`/sys/fs/cgroup/<h>/nodemedic-soak-<pid>` for
/// each hierarchy): every workload process lives below them, so that
/// killing whatever they hold and removing them leaves nothing behind.
#[derive(Default)]
struct Cgroups {
    tops: Vec<PathBuf>,
}

fn dirs_deepest_first(top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// SIGKILLs every process in the tree until none is left (at most 10 s),
/// then removes the directories deepest first. Returns what was left.
fn remove_tree(top: &Path) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut any = false;
        for d in dirs_deepest_first(top) {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                kill(pid, rustix::process::Signal::KILL);
            }
        }
        if !any || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut left = 0;
    for d in dirs_deepest_first(top) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&d).is_err() && d.exists() {
            if Instant::now() > deadline {
                left += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    left
}

impl Cgroups {
    fn new() -> Self {
        let me = std::process::id();
        Self {
            tops: HIERARCHIES
                .iter()
                .map(|h| PathBuf::from(format!("/sys/fs/cgroup/{h}/{CGROUP_TOP}{me}")))
                .collect(),
        }
    }

    /// Removes trees of earlier runs whose soak process is gone (one killed
    /// with SIGKILL could not clean up). Returns how many.
    fn remove_stale() -> usize {
        let mut n = 0;
        for h in HIERARCHIES {
            let Ok(entries) = std::fs::read_dir(format!("/sys/fs/cgroup/{h}")) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix(CGROUP_TOP) else {
                    continue;
                };
                let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim().starts_with("nodemedic-soak"));
                if !alive {
                    remove_tree(&e.path());
                    n += 1;
                }
            }
        }
        n
    }

    /// Creates `<top>/<rel>` in every hierarchy; returns the directories.
    fn create(&self, rel: &str) -> Res<Vec<PathBuf>> {
        self.tops
            .iter()
            .map(|t| {
                let d = t.join(rel);
                std::fs::create_dir_all(&d)
                    .map_err(err(&format!("create cgroup {}", d.display())))?;
                Ok(d)
            })
            .collect()
    }

    fn cpu(&self, rel: &str) -> PathBuf {
        self.tops[0].join(rel)
    }

    /// CPU time of the pods' processes (cpuacct below `kubepods`), seconds.
    fn cpu_seconds(&self) -> f64 {
        cpuacct_seconds(&self.tops[1].join("kubepods")).unwrap_or(0.0)
    }

    /// Moves process `pid` (all its threads) into a cpuacct group of its own,
    /// `<top>/measure/<name>`, so its CPU time is counted to the nanosecond
    /// and includes threads that have exited. Returns the group.
    fn measure(&self, name: &str, pid: u32) -> Res<PathBuf> {
        let d = self.tops[1].join("measure").join(name);
        std::fs::create_dir_all(&d).map_err(err(&format!("create cgroup {}", d.display())))?;
        std::fs::write(d.join("cgroup.procs"), pid.to_string())
            .map_err(err(&format!("move {name} into {}", d.display())))?;
        Ok(d)
    }

    fn cleanup(&mut self) -> usize {
        let left = self.tops.iter().map(|t| remove_tree(t)).sum();
        self.tops.clear();
        left
    }
}

// ----------------------------------------------------------- workloads --

/// One container of one pod and the workload it runs.
struct ContainerDef {
    name: &'static str,
    /// CPU limit in cores (cfs quota at a 100 ms period), if any.
    cpu_limit: Option<f64>,
    args: Vec<String>,
}

struct PodDef {
    namespace: &'static str,
    name: &'static str,
    qos: &'static str,
    containers: Vec<ContainerDef>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn pods(work: &Path) -> Vec<PodDef> {
    let build_dir = work.join("build").display().to_string();
    vec![
        PodDef {
            namespace: "ci",
            name: "build-runner-7xk2p",
            qos: "besteffort",
            containers: vec![ContainerDef {
                name: "build",
                cpu_limit: None,
                args: s(&["build-loop", &build_dir, "--jobs", "3", "--duty", "0.5"]),
            }],
        },
        PodDef {
            namespace: "shop",
            name: "checkout-6d8f9c7b5-q2w4e",
            qos: "burstable",
            containers: vec![
                ContainerDef {
                    name: "app",
                    cpu_limit: None,
                    args: s(&["spawn-churn", "--threads", "4", "--rate", "200"]),
                },
                ContainerDef {
                    name: "jobs",
                    cpu_limit: None,
                    args: s(&["reaping-parent", "--per-second", "10", "--reap-after", "2s"]),
                },
            ],
        },
        PodDef {
            namespace: "shop",
            name: "gateway-5c9d7f6b8-x7r2m",
            qos: "burstable",
            containers: vec![ContainerDef {
                name: "proxy",
                cpu_limit: None,
                args: s(&[
                    "fd-churn",
                    "--base",
                    "2048",
                    "--swing",
                    "1024",
                    "--rate",
                    "5000",
                    "--soft-limit",
                    "4096",
                ]),
            }],
        },
        PodDef {
            namespace: "data",
            name: "cache-0",
            qos: "burstable",
            containers: vec![ContainerDef {
                name: "cache",
                cpu_limit: None,
                args: s(&["hold-steady", "10000", "--soft-limit", "16384"]),
            }],
        },
        PodDef {
            namespace: "shop",
            name: "api-a-74b9c6d5f-h8j3k",
            qos: "burstable",
            containers: vec![ContainerDef {
                name: "api",
                cpu_limit: Some(0.5),
                args: s(&["burst", "--workers", "2", "--rps", "10", "--mean-ms", "8"]),
            }],
        },
        PodDef {
            namespace: "shop",
            name: "api-b-74b9c6d5f-p5n6m",
            qos: "burstable",
            containers: vec![ContainerDef {
                name: "api",
                cpu_limit: Some(0.3),
                args: s(&["burst", "--workers", "2", "--rps", "12", "--mean-ms", "8"]),
            }],
        },
        PodDef {
            namespace: "shop",
            name: "search-8c4d5e6f7-t9v1b",
            qos: "guaranteed",
            containers: vec![ContainerDef {
                name: "search",
                cpu_limit: Some(0.2),
                args: s(&[
                    "burst",
                    "--workers",
                    "2",
                    "--rps",
                    "10",
                    "--mean-ms",
                    "8",
                    "--spike-every",
                    "90s",
                    "--spike-for",
                    "3s",
                    "--startup",
                    "10s",
                ]),
            }],
        },
    ]
}

/// A started container: where it runs, what it runs, its stats file.
struct Running {
    label: String,
    kind: String,
    cpu_cgroup: PathBuf,
    quota: bool,
    stats: PathBuf,
    pid: i32,
}

// ----------------------------------------------------------- aggregate --

fn who(w: Option<&Workload>) -> String {
    match w {
        Some(w) => match (&w.pod_namespace, &w.pod_name, &w.pod_uid) {
            (Some(ns), Some(n), _) => format!(
                "{ns}/{n}{}",
                w.container
                    .as_deref()
                    .map(|c| format!("/{c}"))
                    .unwrap_or_default()
            ),
            (_, _, Some(uid)) => format!("pod uid {uid} (not a pod of this run)"),
            _ => "host".into(),
        },
        None => "host".into(),
    }
}

#[derive(Default)]
struct Offender {
    what: String,
    workload: String,
    max: f64,
    max2: f64,
    exceeded: bool,
    seen: u64,
    note: BTreeSet<String>,
    growth_max: Option<f64>,
    eta_min: Option<u64>,
}

impl Offender {
    fn json(&self, max_name: &str, max2_name: &str) -> Value {
        json!({
            "what": self.what,
            "workload": self.workload,
            max_name: self.max,
            max2_name: self.max2,
            "exceeded": self.exceeded,
            "seenInSnapshots": self.seen,
            "notes": self.note,
            "maxGrowthPerMinute": self.growth_max,
            "minExhaustionEtaSeconds": self.eta_min,
        })
    }
}

/// Findings accumulated over snapshots (reports or scans).
#[derive(Default)]
struct Agg {
    snapshots: u64,
    zombies: BTreeMap<String, Offender>,
    hung: BTreeMap<String, Offender>,
    waits: BTreeMap<String, Offender>,
    fds: BTreeMap<String, Offender>,
    throttled: BTreeMap<String, Offender>,
    node_files_max_ratio: f64,
    node_files_exceeded: bool,
    max_summary_hung: u32,
    max_summary_waiting: u32,
    max_uninterruptible: u32,
    max_zombie_tasks: u32,
    max_tasks: u32,
    /// (policy/type) -> (reason -> snapshots), and the True episodes.
    conditions: BTreeMap<String, BTreeMap<String, u64>>,
    true_since: BTreeMap<String, BTreeSet<String>>,
}

fn bump(
    map: &mut BTreeMap<String, Offender>,
    key: String,
    what: String,
    workload: String,
    v: f64,
    v2: f64,
    exceeded: bool,
) -> &mut Offender {
    let o = map.entry(key).or_default();
    o.what = what;
    o.workload = workload;
    o.max = o.max.max(v);
    o.max2 = o.max2.max(v2);
    o.exceeded |= exceeded;
    o.seen += 1;
    o
}

impl Agg {
    fn add(&mut self, st: &NodeHealthReportStatus) {
        self.snapshots += 1;
        let f = &st.findings;
        for z in &f.zombies {
            bump(
                &mut self.zombies,
                format!("{}/{}", z.parent.host_pid, z.parent.start_time),
                format!("parent {} ({})", z.parent.host_pid, z.parent.comm),
                who(z.parent.workload.as_ref()),
                f64::from(z.zombies),
                f64::from(z.zombies_past_min_age),
                z.exceeded,
            );
        }
        for h in &f.hung_tasks {
            let o = bump(
                &mut self.hung,
                format!("{}/{}/{}", h.process.host_pid, h.process.start_time, h.tid),
                format!(
                    "{} ({}) thread {} ({})",
                    h.process.host_pid, h.process.comm, h.tid, h.thread_comm
                ),
                who(h.process.workload.as_ref()),
                h.blocked_seconds as f64,
                0.0,
                h.exceeded,
            );
            if let Some(w) = &h.wchan {
                o.note.insert(format!("wchan {w}"));
            }
        }
        for w in &st.waiting_tasks {
            let o = bump(
                &mut self.waits,
                format!("{}/{}/{}", w.process.host_pid, w.process.start_time, w.tid),
                format!(
                    "{} ({}) thread {} waits on {} ({})",
                    w.process.host_pid, w.process.comm, w.tid, w.waits_on.host_pid, w.waits_on.comm
                ),
                who(w.process.workload.as_ref()),
                w.blocked_seconds as f64,
                0.0,
                false,
            );
            o.note.insert(format!("{:?}", w.reason));
            if w.waits_on_hung {
                o.note.insert("waitsOnHung".into());
            }
        }
        for p in &f.fd_leak {
            let o = bump(
                &mut self.fds,
                format!("{}/{}", p.process.host_pid, p.process.start_time),
                format!("{} ({})", p.process.host_pid, p.process.comm),
                who(p.process.workload.as_ref()),
                p.open_fds as f64,
                p.usage_ratio.unwrap_or(0.0),
                p.exceeded,
            );
            if let Some(g) = p.growth_per_minute {
                o.growth_max = Some(o.growth_max.map_or(g, |m| m.max(g)));
            }
            if let Some(eta) = p.exhaustion_eta_seconds {
                o.eta_min = Some(o.eta_min.map_or(eta, |m| m.min(eta)));
            }
        }
        if let Some(n) = &f.node_file_handles {
            self.node_files_max_ratio = self.node_files_max_ratio.max(n.ratio);
            self.node_files_exceeded |= n.exceeded;
        }
        for c in &f.cpu_throttling {
            bump(
                &mut self.throttled,
                c.cgroup.clone(),
                format!("{} (quota {:?} cores)", c.cgroup, c.quota_cores),
                who(c.workload.as_ref()),
                c.throttled_ratio,
                c.periods as f64,
                c.exceeded,
            );
        }
        let s = &st.summary;
        self.max_summary_hung = self.max_summary_hung.max(s.hung_tasks.unwrap_or(0));
        self.max_summary_waiting = self.max_summary_waiting.max(s.waiting_tasks.unwrap_or(0));
        self.max_uninterruptible = self.max_uninterruptible.max(s.tasks.uninterruptible);
        self.max_zombie_tasks = self.max_zombie_tasks.max(s.tasks.zombie);
        self.max_tasks = self.max_tasks.max(s.tasks.threads);
        for c in &st.conditions {
            let key = format!("{}/{}", c.policy, json!(c.type_).as_str().unwrap_or("?"));
            *self
                .conditions
                .entry(key.clone())
                .or_default()
                .entry(format!("{:?}/{:?}", c.status, c.reason))
                .or_default() += 1;
            if json!(c.status) == json!("True") {
                self.true_since
                    .entry(key)
                    .or_default()
                    .insert(c.last_transition_time.0.to_string());
            }
        }
    }

    fn json(&self) -> Value {
        let top = |m: &BTreeMap<String, Offender>, a: &str, b: &str| -> Value {
            let mut v: Vec<&Offender> = m.values().collect();
            v.sort_by(|x, y| y.exceeded.cmp(&x.exceeded).then(y.max.total_cmp(&x.max)));
            Value::Array(v.iter().take(15).map(|o| o.json(a, b)).collect())
        };
        let count = |m: &BTreeMap<String, Offender>| json!({"listed": m.len(), "exceeded": m.values().filter(|o| o.exceeded).count()});
        json!({
            "snapshots": self.snapshots,
            "zombies": {"offenders": count(&self.zombies), "top": top(&self.zombies, "maxZombies", "maxPastMinAge")},
            "hungTasks": {"offenders": count(&self.hung), "top": top(&self.hung, "maxBlockedSeconds", "-")},
            "waitingTasks": {"distinct": self.waits.len(), "top": top(&self.waits, "maxBlockedSeconds", "-")},
            "fdLeak": {"offenders": count(&self.fds), "top": top(&self.fds, "maxOpenFds", "maxUsageRatio"),
                       "nodeFileHandles": {"maxRatio": self.node_files_max_ratio, "exceeded": self.node_files_exceeded}},
            "cpuThrottling": {"offenders": count(&self.throttled), "top": top(&self.throttled, "maxThrottledRatio", "maxPeriods")},
            "summaryMax": {"hungTasks": self.max_summary_hung, "waitingTasks": self.max_summary_waiting,
                           "uninterruptible": self.max_uninterruptible, "zombies": self.max_zombie_tasks, "threads": self.max_tasks},
            "conditions": self.conditions,
            "conditionTrueEpisodes": self.true_since,
        })
    }

    fn line(&self, d: Detector) -> String {
        let (m, extra) = match d {
            Detector::Zombies => (&self.zombies, String::new()),
            Detector::HungTasks => (
                &self.hung,
                format!("; vfork waits listed apart: {}", self.waits.len()),
            ),
            Detector::FdLeak => (
                &self.fds,
                format!("; node file table max {:.4}", self.node_files_max_ratio),
            ),
            Detector::CpuThrottling => (&self.throttled, String::new()),
        };
        format!(
            "{} listed, {} exceeded{extra}",
            m.len(),
            m.values().filter(|o| o.exceeded).count()
        )
    }
}

// -------------------------------------------------------------- actions --

#[derive(Default)]
struct Actions {
    history: BTreeSet<(String, String, String, String, u32, bool)>,
    steps: BTreeMap<String, (String, String, String, String)>,
    events: BTreeMap<String, (String, String, String)>,
}

fn signal_of_step(policy: &NodeHealthPolicy, detector: &str, index: u32) -> Option<ParentSignal> {
    if detector != "zombies" {
        return None;
    }
    policy
        .spec
        .actions
        .zombies
        .get(index as usize)
        .map(|s| s.signal.unwrap_or(ParentSignal::SIGCHLD))
}

/// The brief's list: EvictPod, Taint, Cordon, Drain, RequestReboot, and
/// SignalParent with SIGTERM or SIGKILL (a SIGCHLD nudge harms nothing).
fn disruptive(action: ActionKind, signal: Option<ParentSignal>) -> bool {
    match action {
        ActionKind::Event | ActionKind::NodeCondition => false,
        ActionKind::SignalParent => !matches!(signal, None | Some(ParentSignal::SIGCHLD)),
        _ => true,
    }
}

fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

impl Actions {
    fn add_ledger(&mut self, l: &NodeRemediation) {
        for h in &l.spec.history {
            self.history.insert((
                h.at.0.to_string(),
                h.policy.clone(),
                name(&h.detector),
                name(&h.action),
                h.step,
                h.planned,
            ));
        }
        for e in &l.spec.episodes {
            for st in &e.steps {
                let key = format!(
                    "{}/{}/{}/{}/{}/{}",
                    e.policy,
                    name(&e.detector),
                    e.since.0,
                    st.index,
                    name(&st.action),
                    name(&st.phase)
                );
                self.steps.insert(
                    key,
                    (
                        name(&st.action),
                        name(&st.phase),
                        st.signal.map(|s| name(&s)).unwrap_or_default(),
                        format!(
                            "{} {}",
                            st.target.clone().unwrap_or_default(),
                            st.message.clone().unwrap_or_default()
                        ),
                    ),
                );
            }
        }
    }

    fn add_events(&mut self, events: &[Event]) {
        for e in events {
            let controller = e.reporting_controller.clone().unwrap_or_default();
            if !controller.contains("nodemedic") {
                continue;
            }
            self.events.insert(
                e.metadata.uid.clone().unwrap_or_default(),
                (
                    e.reason.clone().unwrap_or_default(),
                    e.type_.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                ),
            );
        }
    }

    /// (planned per action, disruptive list)
    fn tally(&self, policy: &NodeHealthPolicy) -> (BTreeMap<String, u64>, Vec<String>) {
        let mut per: BTreeMap<String, u64> = BTreeMap::new();
        let mut bad = Vec::new();
        for (at, pol, det, action, step, planned) in &self.history {
            let kind: ActionKind =
                serde_json::from_value(json!(action)).unwrap_or(ActionKind::Event);
            let sig = signal_of_step(policy, det, *step);
            let label = match sig {
                Some(s) if kind == ActionKind::SignalParent => format!("{action}({})", name(&s)),
                _ => action.clone(),
            };
            *per.entry(format!(
                "{label}{}",
                if *planned {
                    ""
                } else {
                    " (not planned: taken!)"
                }
            ))
            .or_default() += 1;
            if disruptive(kind, sig) {
                bad.push(format!("history: {at} {pol} {det} step {step} {label}"));
            }
        }
        for (key, (action, phase, signal, msg)) in &self.steps {
            let kind: ActionKind =
                serde_json::from_value(json!(action)).unwrap_or(ActionKind::Event);
            let sig: Option<ParentSignal> = serde_json::from_value(json!(signal)).ok();
            if disruptive(kind, sig) {
                bad.push(format!("step {key}: {action} {phase} {signal} {msg}"));
            }
        }
        (per, bad)
    }
}

// ----------------------------------------------------------------- run --

/// Everything the run started; [`Soak::cleanup`] (also on drop) stops it.
struct Soak {
    children: Vec<(String, Child)>,
    cgroups: Cgroups,
    cp: Option<ControlPlane>,
    host_root: Option<tempfile::TempDir>,
}

impl Soak {
    fn cleanup(&mut self) {
        // The agent and the operator first, gracefully (the agent releases
        // its node Lease), then the rest.
        for (name, c) in &mut self.children {
            if name == "agent" || name == "operator" {
                kill(c.id() as i32, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let left = self.cgroups.cleanup();
        if left > 0 {
            eprintln!("soak: {left} cgroup directories could not be removed");
        }
        if let Some(cp) = self.cp.take() {
            cp.shutdown();
        }
        self.host_root.take();
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn spawn_logged(soak: &mut Soak, name: &str, mut cmd: Command, log: &Path) -> Res<u32> {
    let file = std::fs::File::create(log).map_err(err("create a log file"))?;
    let errf = file.try_clone().map_err(err("log file"))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(errf)
        .spawn()
        .map_err(err(&format!("start {name}")))?;
    let pid = child.id();
    soak.children.push((name.to_owned(), child));
    Ok(pid)
}

fn alive(soak: &mut Soak, name: &str) -> bool {
    soak.children
        .iter_mut()
        .find(|(n, _)| n == name)
        .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
}

async fn apply_yaml(cp: &ControlPlane, v: &Value) -> Res<()> {
    let text = serde_json::to_string(v).map_err(err("serialize"))?;
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "-f", "-"],
            Some(text.as_bytes()),
        )
        .await
        .map_err(err("kubectl apply"))?;
    if out.success {
        Ok(())
    } else {
        Err(format!("kubectl apply: {out}"))
    }
}

struct Throttle {
    label: String,
    samples: Vec<(Instant, u64, u64)>,
}

fn cpu_stat(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
    };
    Some((get("nr_periods ")?, get("nr_throttled ")?))
}

impl Throttle {
    /// (ratio over the run, highest ratio over any 10-minute window, periods)
    fn ratios(&self) -> (f64, f64, u64) {
        let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) else {
            return (0.0, 0.0, 0);
        };
        let ratio = |a: &(Instant, u64, u64), b: &(Instant, u64, u64)| {
            let p = b.1.saturating_sub(a.1);
            if p == 0 {
                0.0
            } else {
                b.2.saturating_sub(a.2) as f64 / p as f64
            }
        };
        let mut max10 = 0.0f64;
        let window = Duration::from_secs(600);
        let mut j = 0;
        for i in 0..self.samples.len() {
            while j < self.samples.len()
                && self.samples[j].0.duration_since(self.samples[i].0) < window
            {
                j += 1;
            }
            if j < self.samples.len() {
                max10 = max10.max(ratio(&self.samples[i], &self.samples[j]));
            }
        }
        if last.0.duration_since(first.0) < window {
            max10 = ratio(first, last);
        }
        (ratio(first, last), max10, last.1 - first.1)
    }
}

async fn run(
    soak: &mut Soak,
    o: &Options,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Res<Value> {
    let started_wall = k8s_openapi::jiff::Timestamp::now();
    std::fs::create_dir_all(&o.out).map_err(err("create the output directory"))?;
    let work = o.out.join("work");
    std::fs::create_dir_all(&work).map_err(err("create the work directory"))?;
    let stale = Cgroups::remove_stale();
    if stale > 0 {
        println!("removed {stale} stale cgroup tree(s) of an earlier run");
    }

    println!("locating/building release binaries ...");
    let agent_bin = workspace_binary("node-agent", "nodemedic-agent", "nodemedic-agent")
        .map_err(|e| e.to_string())?;
    let operator_bin = workspace_binary("operator", "nodemedic-operator", "nodemedic-operator")
        .map_err(|e| e.to_string())?;
    let workload_bin = workspace_binary("testkit", "nodemedic-testkit", "nodemedic-workload")
        .map_err(|e| e.to_string())?;

    println!("starting the control plane ...");
    let cp = ControlPlane::start(ControlPlaneOptions::from_env().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let client = cp.client().await.map_err(|e| e.to_string())?;
    soak.cp = Some(cp);
    let cp = soak.cp.as_ref().ok_or("no control plane")?;

    // The Node and the policy.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_else(|_| "host".into())
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
    let node = cp
        .create_node(
            &format!("soak-{}", host.trim_matches('-')),
            &[
                ("kubernetes.io/os", "linux"),
                ("node.kubernetes.io/pool", "general"),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    let repo = nodemedic_tests::repo_root();
    let mut policy_doc: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo.join("examples/production.yaml"))
            .map_err(err("read examples/production.yaml"))?,
    )
    .map_err(err("parse examples/production.yaml"))?;
    policy_doc["spec"]["mode"] = json!("DryRun");
    apply_yaml(cp, &policy_doc).await?;
    let policy_file = o.out.join("production-dryrun.yaml");
    std::fs::write(
        &policy_file,
        serde_yaml::to_string(&policy_doc).map_err(err("yaml"))?,
    )
    .map_err(err("write the policy"))?;
    let policy: NodeHealthPolicy =
        serde_json::from_value(policy_doc.clone()).map_err(err("policy"))?;

    // Pods bound to the node, their cgroups and the kubelet log layout.
    let host_root = tempfile::Builder::new()
        .prefix("nodemedic-soak-root-")
        .tempdir()
        .map_err(err("host root"))?;
    std::os::unix::fs::symlink("/proc", host_root.path().join("proc")).map_err(err("link proc"))?;
    std::os::unix::fs::symlink("/sys", host_root.path().join("sys")).map_err(err("link sys"))?;
    let root_path = host_root.path().to_path_buf();
    soak.host_root = Some(host_root);
    soak.cgroups = Cgroups::new();
    let mut running: Vec<Running> = Vec::new();
    for ns in ["ci", "shop", "data"] {
        let api: Api<Namespace> = Api::all(client.clone());
        let n: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).map_err(err("ns"))?;
        api.create(&PostParams::default(), &n)
            .await
            .map_err(err("create namespace"))?;
    }
    for p in pods(&work) {
        let api: Api<Pod> = Api::namespaced(client.clone(), p.namespace);
        let containers: Vec<Value> = p
            .containers
            .iter()
            .map(|c| {
                let mut v =
                    json!({"name": c.name, "image": format!("registry.example/{}:1", c.name)});
                if let Some(l) = c.cpu_limit {
                    v["resources"] =
                        json!({"limits": {"cpu": format!("{}m", (l * 1000.0) as u64)}});
                }
                v
            })
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": p.name, "namespace": p.namespace,
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": p.name, "uid": "00000000-0000-4000-8000-000000000001", "controller": true}]},
            "spec": {"nodeName": node, "containers": containers},
        }))
        .map_err(err("pod"))?;
        let created = api
            .create(&PostParams::default(), &pod)
            .await
            .map_err(err("create pod"))?;
        let uid = created.uid().ok_or("pod without uid")?;
        let pod_rel = if p.qos == "guaranteed" {
            format!("kubepods/pod{uid}")
        } else {
            format!("kubepods/{}/pod{uid}", p.qos)
        };
        let pod_limit: f64 = p.containers.iter().filter_map(|c| c.cpu_limit).sum();
        let pod_dirs = soak.cgroups.create(&pod_rel)?;
        if pod_limit > 0.0 {
            let cpu = &pod_dirs[0];
            std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").map_err(err("period"))?;
            std::fs::write(
                cpu.join("cpu.cfs_quota_us"),
                ((pod_limit * 100_000.0) as u64).to_string(),
            )
            .map_err(err("quota"))?;
        }
        for c in &p.containers {
            let cid = hex64();
            let rel = format!("{pod_rel}/{cid}");
            let dirs = soak.cgroups.create(&rel)?;
            if let Some(l) = c.cpu_limit {
                std::fs::write(dirs[0].join("cpu.cfs_period_us"), "100000")
                    .map_err(err("period"))?;
                std::fs::write(
                    dirs[0].join("cpu.cfs_quota_us"),
                    ((l * 100_000.0) as u64).to_string(),
                )
                .map_err(err("quota"))?;
            }
            let logs = root_path.join(format!(
                "var/log/pods/{}_{}_{uid}/{}",
                p.namespace, p.name, c.name
            ));
            std::fs::create_dir_all(&logs).map_err(err("pod log dir"))?;
            let containers_dir = root_path.join("var/log/containers");
            std::fs::create_dir_all(&containers_dir).map_err(err("containers dir"))?;
            std::fs::write(
                containers_dir.join(format!("{}_{}_{}-{cid}.log", p.name, p.namespace, c.name)),
                "",
            )
            .map_err(err("container log"))?;
            let label = format!("{}/{}/{}", p.namespace, p.name, c.name);
            let stats = work.join(format!("{}-{}.stats", p.name, c.name));
            let mut cmd = Command::new(&workload_bin);
            cmd.args(&c.args).arg("--stats").arg(&stats);
            for d in &dirs {
                cmd.arg("--join-cgroup").arg(d);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd.spawn().map_err(err(&format!("start {label}")))?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            if !line.starts_with("ready") {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{label} did not start: {line:?}"));
            }
            running.push(Running {
                label: label.clone(),
                kind: c.args[0].clone(),
                cpu_cgroup: soak.cgroups.cpu(&rel),
                quota: c.cpu_limit.is_some(),
                stats,
                pid: child.id() as i32,
            });
            soak.children.push((label, child));
        }
    }
    println!(
        "workloads: {} containers in {} pods",
        running.len(),
        pods(&work).len()
    );

    // The operator, the agent and the bare scan.
    let kubeconfig = cp.admin_kubeconfig().to_path_buf();
    let (etcd_pid, api_pid) = cp.pids();
    let op_admin = free_addr();
    let mut cmd = Command::new(&operator_bin);
    cmd.arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("NODEMEDIC_ADMIN_ADDR", op_admin.to_string())
        .env("NODEMEDIC_LOG", "info")
        .env("NODEMEDIC_LEASE_NAMESPACE", "kube-system")
        .env("NODEMEDIC_IDENTITY", "soak");
    let operator_pid = spawn_logged(soak, "operator", cmd, &o.out.join("operator.log"))?;
    let agent_admin = free_addr();
    let mut cmd = Command::new(&agent_bin);
    cmd.arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("NODE_NAME", &node)
        .env("NODEMEDIC_HOST_ROOT", &root_path)
        .env("NODEMEDIC_INTERVAL", &o.interval)
        .env("NODEMEDIC_HEARTBEAT", "5m")
        .env("NODEMEDIC_ADMIN_ADDR", agent_admin.to_string())
        .env("NODEMEDIC_LOG", "info,kube=warn");
    let agent_pid = spawn_logged(soak, "agent", cmd, &o.out.join("agent.log"))?;
    let scan_out = o.out.join("bare-scan.jsonl");
    let mut cmd = Command::new(&agent_bin);
    cmd.args([
        "scan",
        "--output",
        "json",
        "--log",
        "warn",
        "--watch",
        &o.interval,
    ])
    .arg("--policy")
    .arg(&policy_file)
    .arg("--host-root")
    .arg(&root_path);
    let file = std::fs::File::create(&scan_out).map_err(err("scan output"))?;
    let scan_child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(std::fs::File::create(o.out.join("bare-scan.log")).map_err(err("scan log"))?)
        .spawn()
        .map_err(err("start the bare scan"))?;
    let scan_pid = scan_child.id();
    soak.children.push(("bare-scan".into(), scan_child));
    // Both measured the same way, to the nanosecond: /proc/PID/stat's
    // 10 ms ticks left the ratio ±3% uncertain over a 30-minute run.
    let cpu_probe = CpuProbe {
        agent_pid,
        agent_group: soak.cgroups.measure("agent", agent_pid)?,
        agent_admin,
        bare_group: soak.cgroups.measure("bare-scan", scan_pid)?,
        bare_output: scan_out.clone(),
        operator_pid,
    };

    let ready_deadline = Instant::now() + Duration::from_secs(120);
    while http_get(agent_admin, "/readyz").is_none() {
        if Instant::now() > ready_deadline || !alive(soak, "agent") {
            return Err(format!(
                "the agent did not become ready; see {}",
                o.out.join("agent.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "agent ready on node {node}; running for {:.1} min (output in {})",
        o.duration.as_secs_f64() / 60.0,
        o.out.display()
    );

    // Measurement.
    let reports: Api<NodeHealthReport> = Api::all(client.clone());
    let ledgers: Api<NodeRemediation> = Api::all(client.clone());
    let events: Api<Event> = Api::all(client.clone());
    let t0 = Instant::now();
    let warmup = (o.duration / 5).min(Duration::from_secs(120));
    let mut cpu_window: Option<CpuCounters> = None;
    let mut agg_reports = Agg::default();
    let mut report_versions = BTreeSet::new();
    let mut actions = Actions::default();
    let mut throttles: Vec<Throttle> = running
        .iter()
        .filter(|r| r.quota)
        .map(|r| Throttle {
            label: r.label.clone(),
            samples: Vec::new(),
        })
        .collect();
    let (m_busy0, m_total0) = machine_cpu();
    let forks0 = nodemedic_testkit::soak::forks_since_boot();
    let ours0 = soak.cgroups.cpu_seconds();
    let cp_cpu0 = cpu_of(etcd_pid).unwrap_or(0.0) + cpu_of(api_pid).unwrap_or(0.0);
    let mut loads: Vec<f64> = Vec::new();
    let mut last_events = Instant::now() - Duration::from_secs(60);
    let mut last_progress = Instant::now();
    let mut interrupted = false;
    let mut failure: Option<String> = None;
    loop {
        let elapsed = t0.elapsed();
        if elapsed >= o.duration {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => { interrupted = true; println!("stopping early (signal)"); break; }
        }
        for name in ["agent", "operator", "bare-scan"] {
            if !alive(soak, name) {
                failure = Some(format!(
                    "{name} exited during the run; see its log in {}",
                    o.out.display()
                ));
            }
        }
        if failure.is_some() {
            break;
        }
        if cpu_window.is_none() && t0.elapsed() >= warmup {
            cpu_window = Some(cpu_probe.read(None));
        }
        match reports.get_opt(&node).await {
            Ok(Some(r)) => {
                let rv = r.resource_version().unwrap_or_default();
                if report_versions.insert(rv)
                    && let Some(st) = &r.status
                {
                    agg_reports.add(st);
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("soak: reading the report: {e}"),
        }
        match ledgers.get_opt(&node).await {
            Ok(Some(l)) => actions.add_ledger(&l),
            Ok(None) => {}
            Err(e) => eprintln!("soak: reading the ledger: {e}"),
        }
        if last_events.elapsed() >= Duration::from_secs(30) {
            last_events = Instant::now();
            match events.list(&ListParams::default()).await {
                Ok(list) => actions.add_events(&list.items),
                Err(e) => eprintln!("soak: listing events: {e}"),
            }
        }
        let now = Instant::now();
        for (t, r) in throttles.iter_mut().zip(running.iter().filter(|r| r.quota)) {
            if let Some((p, th)) = cpu_stat(&r.cpu_cgroup) {
                t.samples.push((now, p, th));
            }
        }
        loads.push(loadavg1());
        if last_progress.elapsed() >= Duration::from_secs(60) {
            last_progress = Instant::now();
            let (per, bad) = actions.tally(&policy);
            println!(
                "[{:>5.1} min] reports {}, zombies: {} | hungTasks: {} | fdLeak: {} | cpuThrottling: {} | planned {:?}, disruptive {} | load {:.2}",
                t0.elapsed().as_secs_f64() / 60.0,
                agg_reports.snapshots,
                agg_reports.line(Detector::Zombies),
                agg_reports.line(Detector::HungTasks),
                agg_reports.line(Detector::FdLeak),
                agg_reports.line(Detector::CpuThrottling),
                per,
                bad.len(),
                loadavg1(),
            );
        }
    }
    let run_time = t0.elapsed();

    // Final reads.
    if let Ok(Some(r)) = reports.get_opt(&node).await
        && report_versions.insert(r.resource_version().unwrap_or_default())
        && let Some(st) = &r.status
    {
        agg_reports.add(st);
    }
    if let Ok(Some(l)) = ledgers.get_opt(&node).await {
        actions.add_ledger(&l);
    }
    if let Ok(list) = events.list(&ListParams::default()).await {
        actions.add_events(&list.items);
    }
    let report_writes: BTreeMap<String, f64> = ["change", "heartbeat"]
        .iter()
        .map(|r| {
            (
                (*r).to_owned(),
                metric(
                    agent_admin,
                    &format!("nodemedic_agent_report_writes_total{{result=\"ok\",reason=\"{r}\"}}"),
                )
                .unwrap_or(f64::NAN),
            )
        })
        .collect();
    let cpu = cpu_window.map(|start| start.window_to(&cpu_probe.read(Some(&start))));
    let (m_busy1, m_total1) = machine_cpu();
    let machine_busy = (m_busy1 - m_busy0) as f64 / (m_total1 - m_total0).max(1) as f64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ours = soak.cgroups.cpu_seconds() - ours0;
    let cp_cpu = cpu_of(etcd_pid).unwrap_or(0.0) + cpu_of(api_pid).unwrap_or(0.0) - cp_cpu0;
    let forks = nodemedic_testkit::soak::forks_since_boot() - forks0;
    let secs = run_time.as_secs_f64();

    // The bare scan's every scan.
    let mut agg_scans = Agg::default();
    if let Ok(f) = std::fs::File::open(&scan_out) {
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(r) = serde_json::from_str::<NodeHealthReport>(&line)
                && let Some(st) = &r.status
            {
                agg_scans.add(st);
            }
        }
    }

    // Workload rates.
    let mut workloads = Vec::new();
    for r in &running {
        let st: BTreeMap<String, u64> = nodemedic_testkit::soak::read_stats(&r.stats)
            .into_iter()
            .collect();
        let el = st.get("elapsed_ms").copied().unwrap_or(1).max(1) as f64 / 1000.0;
        let rate = |k: &str| st.get(k).copied().unwrap_or(0) as f64 / el;
        let mut v = json!({"container": r.label, "workload": r.kind, "pid": r.pid, "counters": st, "seconds": el});
        match r.kind.as_str() {
            "build-loop" => {
                let per = st.get("procs_per_round").copied().unwrap_or(0) as f64;
                v["roundsPerMinute"] = json!(rate("rounds") * 60.0);
                v["processesPerSecond"] = json!(rate("rounds") * per);
                v["meanRoundSeconds"] = json!(
                    st.get("round_ms_total").copied().unwrap_or(0) as f64
                        / 1000.0
                        / st.get("rounds").copied().unwrap_or(1).max(1) as f64
                );
            }
            "spawn-churn" => v["spawnsPerSecond"] = json!(rate("spawned")),
            "reaping-parent" => v["spawnsPerSecond"] = json!(rate("spawned")),
            "fd-churn" => {
                v["fdsOpenedPerSecond"] = json!(rate("opened"));
                v["fdsClosedPerSecond"] = json!(rate("closed"));
            }
            "burst" => {
                v["requestsPerSecond"] = json!(rate("requests"));
                v["cpuAskedCores"] =
                    json!(st.get("busy_ms").copied().unwrap_or(0) as f64 / 1000.0 / el);
            }
            _ => {}
        }
        if let Some(t) = throttles.iter().find(|t| t.label == r.label) {
            let (whole, max10, periods) = t.ratios();
            v["throttledRatio"] = json!(whole);
            v["throttledRatioMax10m"] = json!(max10);
            v["periods"] = json!(periods);
        }
        workloads.push(v);
    }

    let (per_action, disruptive_list) = actions.tally(&policy);
    let mut event_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (reason, type_, _) in actions.events.values() {
        *event_reasons
            .entry(format!("{reason} ({type_})"))
            .or_default() += 1;
    }
    let mut step_phases: BTreeMap<String, u64> = BTreeMap::new();
    for (action, phase, signal, _) in actions.steps.values() {
        *step_phases
            .entry(format!(
                "{action}{} {phase}",
                if signal.is_empty() {
                    String::new()
                } else {
                    format!("({signal})")
                }
            ))
            .or_default() += 1;
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Ok(json!({
        "started": started_wall.to_string(),
        "requestedMinutes": o.duration.as_secs_f64() / 60.0,
        "ranMinutes": secs / 60.0,
        "interrupted": interrupted,
        "failure": failure,
        "node": node,
        "kernel": kernel.trim(),
        "cpus": cpus,
        "interval": o.interval,
        "policy": "examples/production.yaml with mode DryRun",
        "workloads": workloads,
        "machine": {
            "busyShare": machine_busy,
            "busyCores": machine_busy * cpus,
            "soakWorkloadCores": ours / secs,
            "controlPlaneCores": cp_cpu / secs,
            "otherCores": (machine_busy * cpus - ours / secs - cp_cpu / secs).max(0.0),
            "forksPerSecond": forks as f64 / secs,
            "load1": {
                "min": loads.iter().copied().fold(f64::INFINITY, f64::min),
                "mean": loads.iter().sum::<f64>() / loads.len().max(1) as f64,
                "max": loads.iter().copied().fold(0.0, f64::max),
            },
        },
        "findingsFromReports": agg_reports.json(),
        "reportVersionsSeen": report_versions.len(),
        "reportWrites": report_writes,
        "findingsFromBareScans": agg_scans.json(),
        "plannedActions": per_action,
        "stepRecords": step_phases,
        "events": event_reasons,
        "eventNotes": actions.events.values().map(|(r, t, n)| format!("{r} ({t}): {n}")).collect::<BTreeSet<_>>(),
        "disruptive": disruptive_list,
        "cpu": cpu,
    }))
}

fn print_summary(v: &Value, path: &Path) {
    let f = |p: &str| v.pointer(p).cloned().unwrap_or(Value::Null);
    let num = |p: &str| f(p).as_f64().unwrap_or(f64::NAN);
    println!();
    println!("## soak summary");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| duration | {:.1} min (requested {:.1}){} |",
        num("/ranMinutes"),
        num("/requestedMinutes"),
        if f("/interrupted").as_bool() == Some(true) {
            ", interrupted"
        } else {
            ""
        }
    );
    if let Some(Value::Array(ws)) = v.get("workloads") {
        for w in ws {
            let c = w["container"].as_str().unwrap_or("?");
            let line = match w["workload"].as_str().unwrap_or("") {
                "build-loop" => format!(
                    "{:.1} rounds/min, ~{:.0} processes/s ({} per round), {:.1} s per round",
                    w["roundsPerMinute"].as_f64().unwrap_or(0.0),
                    w["processesPerSecond"].as_f64().unwrap_or(0.0),
                    w["counters"]["procs_per_round"],
                    w["meanRoundSeconds"].as_f64().unwrap_or(0.0)
                ),
                "spawn-churn" | "reaping-parent" => format!(
                    "{:.0} posix_spawn/s{}",
                    w["spawnsPerSecond"].as_f64().unwrap_or(0.0),
                    if w["workload"] == "reaping-parent" {
                        format!(", zombies at once max {}", w["counters"]["zombies_max"])
                    } else {
                        String::new()
                    }
                ),
                "fd-churn" => format!(
                    "{:.0} fds opened/s, {:.0} closed/s, open between {} and {}",
                    w["fdsOpenedPerSecond"].as_f64().unwrap_or(0.0),
                    w["fdsClosedPerSecond"].as_f64().unwrap_or(0.0),
                    w["counters"]["open_min"],
                    w["counters"]["open_max"]
                ),
                "hold-steady" => format!("{} fds held", w["counters"]["held"]),
                "burst" => format!(
                    "{:.1} req/s, {:.2} cores asked; throttled ratio {:.3} over the run, max {:.3} over 10 min ({} periods)",
                    w["requestsPerSecond"].as_f64().unwrap_or(0.0),
                    w["cpuAskedCores"].as_f64().unwrap_or(0.0),
                    w["throttledRatio"].as_f64().unwrap_or(0.0),
                    w["throttledRatioMax10m"].as_f64().unwrap_or(0.0),
                    w["periods"]
                ),
                other => other.to_owned(),
            };
            println!("| {c} | {line} |");
        }
    }
    println!(
        "| node forks/s (all processes) | {:.0} |",
        num("/machine/forksPerSecond")
    );
    for (label, base) in [
        ("reports", "/findingsFromReports"),
        ("bare scans", "/findingsFromBareScans"),
    ] {
        for d in ["zombies", "hungTasks", "fdLeak", "cpuThrottling"] {
            println!(
                "| findings {d} ({label}: {}) | listed {}, exceeded {} |",
                f(&format!("{base}/snapshots")),
                f(&format!("{base}/{d}/offenders/listed")),
                f(&format!("{base}/{d}/offenders/exceeded"))
            );
        }
        println!(
            "| vfork waits listed ({label}) | {} distinct, at most {} at once |",
            f(&format!("{base}/waitingTasks/distinct")),
            f(&format!("{base}/summaryMax/waitingTasks"))
        );
    }
    println!(
        "| conditions True (reports) | {} |",
        f("/findingsFromReports/conditionTrueEpisodes")
    );
    println!(
        "| planned actions (ledger history) | {} |",
        f("/plannedActions")
    );
    println!("| step records | {} |", f("/stepRecords"));
    println!("| Events by nodemedic | {} |", f("/events"));
    println!(
        "| disruptive planned | {} |",
        f("/disruptive").as_array().map_or(0, |a| a.len())
    );
    println!(
        "| agent CPU per interval / bare scan | {:.3}x ({:.2} ms / {:.2} ms, {} / {} scans; agent's scan thread {:.2} ms, its other threads {:.2} ms) |",
        num("/cpu/ratio"),
        num("/cpu/agentCpuPerIntervalMs"),
        num("/cpu/bareCpuPerScanMs"),
        f("/cpu/agentScans"),
        f("/cpu/bareScans"),
        num("/cpu/agentScanThreadCpuPerIntervalMs"),
        num("/cpu/agentOtherThreadsCpuPerIntervalMs")
    );
    println!(
        "| machine | {:.2} of {} cores busy: soak workloads {:.2}, control plane {:.2}, everything else {:.2}; load1 mean {:.2} (max {:.2}) |",
        num("/machine/busyCores"),
        f("/cpus"),
        num("/machine/soakWorkloadCores"),
        num("/machine/controlPlaneCores"),
        num("/machine/otherCores"),
        num("/machine/load1/mean"),
        num("/machine/load1/max")
    );
    println!();
    if let Some(Value::Array(d)) = v.get("disruptive") {
        for x in d {
            println!("DISRUPTIVE: {}", x.as_str().unwrap_or("?"));
        }
    }
    println!("summary: {}", path.display());
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nodemedic-soak: {e}");
            std::process::exit(2);
        }
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("nodemedic-soak: needs root (pod-shaped cgroups, other users' /proc)");
        std::process::exit(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodemedic-soak: tokio: {e}");
            std::process::exit(2);
        }
    };
    let mut soak = Soak {
        children: Vec::new(),
        cgroups: Cgroups::default(),
        cp: None,
        host_root: None,
    };
    let result = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut sigs = Vec::new();
        for k in [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ] {
            sigs.push(signal(k).map_err(err("signal handler"))?);
        }
        tokio::spawn(async move {
            let waits = sigs.iter_mut().map(|s| Box::pin(s.recv()));
            futures::future::select_all(waits).await;
            let _ = tx.send(true);
        });
        let started = run(&mut soak, &o, &mut rx);
        tokio::pin!(started);
        started.await
    });
    println!("cleaning up ...");
    soak.cleanup();
    drop(rt);
    match result {
        Ok(v) => {
            let path = o.out.join("summary.json");
            let _ = std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default());
            print_summary(&v, &path);
            if let Some(f) = v.get("failure").and_then(Value::as_str) {
                eprintln!("nodemedic-soak: the run failed: {f}");
                std::process::exit(2);
            }
            if v["disruptive"].as_array().is_some_and(|d| !d.is_empty()) {
                eprintln!("nodemedic-soak: disruptive actions were planned");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("nodemedic-soak: {e}");
            std::process::exit(2);
        }
    }
}
