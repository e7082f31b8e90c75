//! Real-host tests of what counts as hung (`detect::waits`): vfork parents
//! in `D` are waits on their children, threads stuck on a FUSE filesystem
//! whose daemon stopped answering are hung, and a vfork child stuck on it
//! is the hung task while its parent waits on it. They need root (`mount`,
//! `/dev/fuse`) and python3 (vfork through ctypes; the workspace forbids
//! `unsafe`), skip loudly without them and fail instead under
//! `NODEMEDIC_REQUIRE_REAL_HOST=1`. Everything is undone by Drop guards:
//! the FUSE connection is aborted and the mount detached even when an
//! assertion fails. Tests of this binary run in parallel with each other
//! and with anything else on the host, so they assert on their own pids.

mod common;

use common::{hung, policy, verdict, waits};
use nodemedic_agent::detect::Engine;
use nodemedic_agent::report::build::{AgentMeta, status};
use nodemedic_agent::scan::Scanner;
use nodemedic_agent::scan::parse::{ProcStat, parse_stat};
use nodemedic_agent::scan_command::{Scan, scan_once};
use nodemedic_crds::Detector;
use nodemedic_crds::thresholds::{EffectiveThresholds, HungTaskThresholds, SelectedPolicy};
use nodemedic_testkit::fuse::StuckFuse;
use nodemedic_testkit::real_host::{is_root, skip};
use nodemedic_testkit::workload::DStateTask;
use nodemedic_testkit::workload_exe;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

const MIN_DURATION: Duration = Duration::from_secs(1);

fn stat_of(path: &str) -> Option<ProcStat> {
    parse_stat(&std::fs::read(path).ok()?).ok()
}

fn state_of(pid: i32) -> Option<u8> {
    stat_of(&format!("/proc/{pid}/stat")).map(|s| s.state)
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn hung_policy(threshold: u32) -> SelectedPolicy {
    policy(EffectiveThresholds {
        hung_tasks: Some(HungTaskThresholds {
            min_duration: MIN_DURATION,
            threshold,
            for_duration: Duration::ZERO,
        }),
        ..EffectiveThresholds::default()
    })
}

/// Two scans `MIN_DURATION` + 300 ms apart (so that a tracked duration,
/// without CONFIG_SCHED_DEBUG, also passes minDuration); both returned.
fn scan_twice(p: &SelectedPolicy) -> (Scan, Scan) {
    let mut scanner = Scanner::new(Path::new("/")).expect("scanner");
    let mut engine = Engine::new();
    let first = scan_once(&mut scanner, &mut engine, p);
    std::thread::sleep(MIN_DURATION + Duration::from_millis(300));
    let second = scan_once(&mut scanner, &mut engine, p);
    (first, second)
}

/// A python3 vfork parent in D whose vfork child runs; `None` (after a
/// loud skip) without python3.
fn vfork_parent(task: std::io::Result<DStateTask>) -> Option<(DStateTask, i32)> {
    let Ok(task) = task else {
        skip("python3 is needed to call vfork() (the workspace forbids unsafe)");
        return None;
    };
    let mut child = 0;
    let vforked = wait_until(Duration::from_secs(30), || {
        // A pyenv shim or python's start-up may fork helpers first: the
        // vfork is in place once the parent is in D with a child that has
        // the parent's name.
        let (Some(b'D'), Some(&c)) = (state_of(task.pid), task.children().last()) else {
            return false;
        };
        child = c;
        stat_of(&format!("/proc/{c}/stat")).is_some_and(|s| s.comm == "python3")
    });
    assert!(
        vforked,
        "python3 {} never blocked in vfork() (state {:?}, children {:?})",
        task.pid,
        state_of(task.pid).map(char::from),
        task.children()
    );
    Some((task, child))
}

fn can_mount_fuse() -> bool {
    if !is_root() {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skip("/dev/fuse does not exist (modprobe fuse)");
        return false;
    }
    true
}

#[test]
fn twenty_vfork_parents_are_waits_not_hung_tasks() {
    if !is_root() {
        return;
    }
    let mut parents = Vec::new();
    for _ in 0..20 {
        match vfork_parent(DStateTask::spawn_vfork(Duration::from_secs(120))) {
            Some(p) => parents.push(p),
            None => return,
        }
    }
    let ours: HashSet<i32> = parents.iter().map(|(t, _)| t.pid).collect();
    let children: HashSet<i32> = parents.iter().map(|(_, c)| *c).collect();
    let (_, a) = scan_twice(&hung_policy(1));

    // None of them, nor their children, is counted or even a candidate.
    let counted: Vec<i32> = hung(&a)
        .iter()
        .map(|h| h.process.pid)
        .filter(|p| ours.contains(p) || children.contains(p))
        .collect();
    assert!(
        counted.is_empty(),
        "vfork parents counted as hung: {counted:?}"
    );

    // Every one is listed as waiting on its own child, blocked for longer
    // than minDuration (other waits on the host may take some of the 20
    // places, and are then counted as omitted).
    let listed = waits(&a);
    let omitted = match &verdict(&a, Detector::HungTasks).offenders {
        nodemedic_agent::detect::finding::Offenders::HungTasks { waits_omitted, .. } => {
            *waits_omitted
        }
        other => panic!("hung verdict holds {other:?}"),
    };
    let others = (listed.len() as u64 + omitted).saturating_sub(20);
    let mut seen = 0;
    for (task, child) in &parents {
        let Some(w) = listed.iter().find(|w| w.process.pid == task.pid) else {
            continue;
        };
        seen += 1;
        assert_eq!(w.tid, task.pid);
        assert_eq!(
            w.waits_on.pid, *child,
            "parent {} waits on its child",
            task.pid
        );
        assert_eq!(w.waits_on.comm, "python3");
        assert!(!w.waits_on_hung, "a sleeping child is not hung");
        assert!(
            w.blocked_seconds >= MIN_DURATION.as_secs_f64(),
            "{} blocked {}s, longer than minDuration",
            task.pid,
            w.blocked_seconds
        );
    }
    assert!(
        seen as u64 >= 20 - others.min(20),
        "only {seen} of the 20 vfork parents listed as waits ({} listed, {omitted} omitted)",
        listed.len()
    );

    // The report: nodemedic's count leaves them out, the waits count has them.
    let s = status(
        &a.observation,
        std::slice::from_ref(&a.assessment),
        &a.enrichment,
        &a.pids,
        k8s_openapi::jiff::Timestamp::now(),
        AgentMeta::default(),
    );
    assert!(
        s.summary.waiting_tasks.is_some_and(|n| n >= 20),
        "{:?}",
        s.summary
    );
    let reported: HashSet<i32> = s
        .waiting_tasks
        .iter()
        .filter(|w| ours.contains(&w.process.host_pid))
        .map(|w| w.process.host_pid)
        .collect();
    assert_eq!(
        reported.len(),
        seen,
        "status.waitingTasks lists what the verdict lists"
    );
    assert!(
        s.waiting_tasks
            .iter()
            .filter(|w| ours.contains(&w.process.host_pid))
            .all(|w| children.contains(&w.waits_on.host_pid) && w.waits_on.start_time > 0)
    );
    assert!(
        s.findings
            .hung_tasks
            .iter()
            .all(|h| !ours.contains(&h.process.host_pid))
    );
    if Path::new("/proc/sys/kernel/hung_task_detect_count").exists() {
        assert!(s.summary.hung_task_detect_count.is_some());
    }

    // `nodemedic-agent scan`: JSON and table show the waits too.
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_nodemedic-agent"))
        .args(["scan", "-o", "json", "--sample-interval", "10ms"])
        .output()
        .expect("run nodemedic-agent scan");
    assert!(json.status.success(), "{json:?}");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    let status = &report["status"];
    let in_json: Vec<&serde_json::Value> = status["waitingTasks"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    assert!(in_json.len() <= 20, "bounded to 20");
    for w in in_json.iter().filter(|w| {
        w["process"]["hostPid"]
            .as_i64()
            .is_some_and(|p| ours.contains(&(p as i32)))
    }) {
        assert_eq!(w["reason"], "VforkChild");
        let child = w["waitsOn"]["hostPid"].as_i64().expect("waitsOn.hostPid") as i32;
        assert!(children.contains(&child), "{w}");
    }
    assert!(
        status["summary"]["waitingTasks"]
            .as_u64()
            .is_some_and(|n| n >= 20)
    );
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_nodemedic-agent"))
        .args(["scan", "--sample-interval", "10ms"])
        .output()
        .expect("run nodemedic-agent scan");
    let table = String::from_utf8_lossy(&table.stdout);
    let (task, child) = &parents[0];
    let line = table
        .lines()
        .find(|l| l.contains("waiting, not hung") && l.contains(&format!("for child {child} ")))
        .unwrap_or_else(|| panic!("no wait row for {} in:\n{table}", task.pid));
    assert!(line.contains(&task.pid.to_string()), "{line}");
}

#[test]
fn threads_stuck_on_an_unanswering_fuse_daemon_are_hung() {
    if !can_mount_fuse() {
        return;
    }
    let exe = workload_exe();
    let mut fuse = StuckFuse::start(&exe).expect("mount the FUSE filesystem");
    let readers = fuse.readers(&exe, 4).expect("start the readers");
    let stuck_threads = || -> Vec<i32> {
        std::fs::read_dir(format!("/proc/{readers}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&t| t != readers)
            .filter(|t| {
                stat_of(&format!("/proc/{readers}/task/{t}/stat")).is_some_and(|s| s.state == b'D')
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || stuck_threads().len() == 4),
        "4 reader threads never blocked in D: {:?}; daemon events: {}",
        stuck_threads(),
        fuse.events()
    );
    let tids: HashSet<i32> = stuck_threads().into_iter().collect();
    let (first, second) = scan_twice(&hung_policy(4));
    let rows = |a: &Scan| -> Vec<(i32, f64, bool)> {
        hung(a)
            .iter()
            .filter(|h| tids.contains(&h.tid))
            .map(|h| (h.tid, h.blocked_seconds, h.exceeds))
            .collect()
    };
    let (r1, r2) = (rows(&first), rows(&second));
    assert_eq!(
        r2.len(),
        4,
        "every stuck reader thread is a hung-task candidate: {r2:?}"
    );
    for &(tid, secs, exceeds) in &r2 {
        assert!(exceeds, "thread {tid} blocked {secs}s >= minDuration");
        assert!(secs >= MIN_DURATION.as_secs_f64(), "thread {tid}: {secs}s");
        if let Some(&(_, before, _)) = r1.iter().find(|r| r.0 == tid) {
            assert!(secs >= before + 1.0, "thread {tid}: {before}s then {secs}s");
        }
    }
    assert!(
        hung(&second)
            .iter()
            .filter(|h| tids.contains(&h.tid))
            .all(|h| h.process.pid == readers),
        "attributed to the reader process"
    );
    assert!(
        waits(&second).iter().all(|w| !tids.contains(&w.tid)),
        "not a wait"
    );
    let v = verdict(&second, Detector::HungTasks);
    assert!(v.value >= 4.0 && v.exceeded, "{} hung threads", v.value);
    let s = status(
        &second.observation,
        std::slice::from_ref(&second.assessment),
        &second.enrichment,
        &second.pids,
        k8s_openapi::jiff::Timestamp::now(),
        AgentMeta::default(),
    );
    assert!(
        s.summary.hung_tasks.is_some_and(|n| n >= 4),
        "{:?}",
        s.summary
    );
    drop(fuse);
    assert!(
        wait_until(Duration::from_secs(5), || state_of(readers).is_none()),
        "the readers are gone once the FUSE connection is aborted"
    );
}

#[test]
fn a_vfork_child_stuck_on_fuse_is_the_hung_task_its_parent_waits() {
    if !can_mount_fuse() {
        return;
    }
    let exe = workload_exe();
    let fuse = StuckFuse::start(&exe).expect("mount the FUSE filesystem");
    let Some((task, child)) = vfork_parent(DStateTask::spawn_vfork_reading(&fuse.stuck_file()))
    else {
        return;
    };
    assert!(
        wait_until(Duration::from_secs(10), || state_of(child) == Some(b'D')),
        "the vfork child {child} never blocked on the FUSE read; daemon events: {}",
        fuse.events()
    );
    let (_, a) = scan_twice(&hung_policy(1));
    let h = hung(&a)
        .iter()
        .find(|h| h.tid == child)
        .unwrap_or_else(|| panic!("the stuck child {child} is not a hung-task candidate"));
    assert!(
        h.exceeds,
        "the child blocked {}s is hung",
        h.blocked_seconds
    );
    assert!(
        hung(&a).iter().all(|h| h.process.pid != task.pid),
        "the parent is not counted"
    );
    let w = waits(&a)
        .iter()
        .find(|w| w.process.pid == task.pid)
        .unwrap_or_else(|| panic!("parent {} not listed as waiting", task.pid));
    assert_eq!(w.waits_on.pid, child);
    assert!(w.waits_on_hung, "the parent waits on a hung child");
    drop(fuse);
    drop(task);
}
