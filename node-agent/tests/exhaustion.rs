//! Real-host tests of time to exhaustion: a process leaking fds at a steady
//! rate against a lowered soft RLIMIT_NOFILE, and a real pids cgroup (the
//! cgroup v1 pids controller on this host) holding zombies. They need root
//! and skip LOUDLY otherwise (a failure in CI, see `real_host.rs`).

mod common;

use common::{fd_users, policy};
use nodemedic_agent::detect::Engine;
use nodemedic_agent::output;
use nodemedic_agent::scan::Scanner;
use nodemedic_agent::scan::cgroup::CgroupVersion;
use nodemedic_agent::scan_command::scan_once;
use nodemedic_crds::report::{PidsLimitSource, ProblemScope};
use nodemedic_crds::thresholds::{EffectiveThresholds, FdLeakThresholds, ZombieThresholds};
use nodemedic_testkit::real_host::{is_root, skip};
use nodemedic_testkit::workload::{self, CgroupDir, Spawned};
use nodemedic_testkit::workload_exe;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A leak of 40 fds/s from ~25 fds to a soft limit of 600 runs out after
/// about 14 s. The agent, scanning every 250 ms with a 4 s fit window, must
/// predict the moment of EMFILE within 10% of the time left when it first
/// gives an ETA, and the exhaustionWithin rule must fire before it.
#[test]
fn fd_eta_predicts_emfile_within_ten_percent() {
    if !is_root() {
        return;
    }
    const LIMIT: u64 = 600;
    let leaker = workload::helper(
        &workload_exe(),
        &[
            "hold-fds",
            "20",
            "--soft-limit",
            &LIMIT.to_string(),
            "--leak-per-second",
            "40",
        ],
    )
    .expect("spawn leaker");
    let pid = leaker.pid();
    let within = Duration::from_secs(8);
    let p = policy(EffectiveThresholds {
        fd_leak: Some(FdLeakThresholds {
            usage_ratio: 1.0,
            min_open_fds: 10,
            growth: Some(nodemedic_crds::thresholds::FdGrowthThresholds {
                // Far above the leak: only the ETA rule can fire.
                min_fds_per_minute: 1e9,
                window: Duration::from_secs(4),
            }),
            exhaustion_within: Some(within),
            node_file_ratio: 1.0,
            for_duration: Duration::ZERO,
        }),
        ..EffectiveThresholds::default()
    });
    let mut scanner = Scanner::new(Path::new("/")).expect("scanner");
    let mut engine = Engine::new();
    let mut prediction: Option<(Instant, Instant)> = None;
    let mut fired_at: Option<(Instant, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && (prediction.is_none() || fired_at.is_none()) {
        let scan = scan_once(&mut scanner, &mut engine, &p);
        let at = scan.observation.taken_at;
        if let Some(f) = fd_users(&scan).iter().find(|f| f.process.pid == pid) {
            assert!(f.exhaustion_eta_seconds.is_none_or(|s| s >= 0.0), "{f:?}");
            if let Some(eta) = f.exhaustion_eta_seconds {
                prediction.get_or_insert((at, at + Duration::from_secs_f64(eta)));
                if f.exceeds && fired_at.is_none() {
                    fired_at = Some((at, eta));
                }
                assert_eq!(
                    f.exceeds,
                    eta <= within.as_secs_f64(),
                    "the ETA rule alone decides: {f:?}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (predicted_from, predicted_emfile) = prediction.expect("an ETA within 30 s");
    // The moment the leak hits the limit: the fd count stops at it.
    assert!(
        wait_until(Duration::from_secs(40), || open_fds(pid) as u64 >= LIMIT),
        "the leaker never reached {LIMIT} fds ({} open)",
        open_fds(pid)
    );
    let actual = Instant::now();
    let left = actual
        .saturating_duration_since(predicted_from)
        .as_secs_f64();
    let error = if predicted_emfile > actual {
        (predicted_emfile - actual).as_secs_f64()
    } else {
        (actual - predicted_emfile).as_secs_f64()
    };
    assert!(
        error <= 0.1 * left,
        "predicted EMFILE {error:.2}s off with {left:.1}s left (more than 10%)"
    );
    let (fired, eta) = fired_at.expect("exhaustionWithin fired");
    assert!(eta <= within.as_secs_f64());
    let lead = actual.saturating_duration_since(fired).as_secs_f64();
    assert!(
        lead >= 0.75 * within.as_secs_f64(),
        "fired only {lead:.1}s before EMFILE (exhaustionWithin {within:?})"
    );
    eprintln!(
        "fd ETA: predicted {:.1}s ahead, off by {error:.2}s; fired {lead:.1}s before EMFILE",
        left
    );
}

/// Polls `cond` every 20 ms for up to `limit`.
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

/// The v1 pids hierarchy, if mounted.
fn pids_v1_hierarchy() -> Option<PathBuf> {
    let p = PathBuf::from("/sys/fs/cgroup/pids");
    p.join("cgroup.procs").exists().then_some(p)
}

const POD_UID: &str = "e7a0c3f1-5b2d-4c6e-9f80-1a2b3c4d5e6f";

/// `nodemedic-workload zombie-parent N` started inside `cgroup` (the shell
/// moves itself in before exec, so every child is charged there too).
fn zombie_parent_in(cgroup: &Path, zombies: usize) -> Spawned {
    let procs = cgroup.join("cgroup.procs");
    let mut s = Spawned::new(
        Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1" && exec "$2" zombie-parent "$3""#)
            .arg("sh")
            .arg(&procs)
            .arg(workload_exe())
            .arg(zombies.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh"),
    );
    s.wait_ready().expect("zombie parent ready");
    s
}

/// A pod-shaped cgroup (`.../pod<uid>`) in the real pids hierarchy with
/// pids.max 50 and a parent holding 20 zombies in it: the scan finds the
/// pod, its count and headroom, and the zombies' share of it; with
/// pids.max "max" the node's limit applies.
#[test]
fn pod_pids_headroom_and_zombie_share_on_a_real_cgroup() {
    if !is_root() {
        return;
    }
    let Some(hierarchy) = pids_v1_hierarchy() else {
        skip("no cgroup v1 pids hierarchy (cgroup v2 pids is covered by the fixture tests)");
        return;
    };
    let group = CgroupDir::create(&hierarchy).expect("create group");
    let pod_dir = group.path.join(format!("pod{POD_UID}"));
    std::fs::create_dir(&pod_dir).expect("create pod cgroup");
    // Removed before its parent group (drop order is the reverse).
    let pod = PodDir(pod_dir.clone());
    std::fs::write(pod_dir.join("pids.max"), "50").expect("pids.max");
    let parent = zombie_parent_in(&pod_dir, 20);
    let charged = || {
        std::fs::read_to_string(pod_dir.join("pids.current"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(5), || charged() == Some(21)),
        "pids.current {:?}, want the parent and 20 zombies",
        charged()
    );
    // pids.current counts a child from its fork; wait until all 20 have
    // exited (are zombies), or the scan may see one still running.
    let ppid = parent.pid();
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children(ppid) == 20),
        "zombie children of {ppid}: {}, want 20",
        zombie_children(ppid)
    );

    let p = policy(EffectiveThresholds {
        zombies: Some(ZombieThresholds {
            threshold: 1000,
            per_parent_threshold: 5,
            min_age: Duration::ZERO,
            for_duration: Duration::ZERO,
        }),
        ..EffectiveThresholds::default()
    });
    let mut scanner = Scanner::new(Path::new("/")).expect("scanner");
    let mut engine = Engine::new();
    let scan = scan_once(&mut scanner, &mut engine, &p);
    let rel = format!(
        "/{}",
        pod_dir
            .strip_prefix(&hierarchy)
            .expect("below the hierarchy")
            .display()
    );
    let pp = scan
        .pids
        .pods
        .iter()
        .find(|x| x.pod_uid == POD_UID)
        .unwrap_or_else(|| panic!("pod cgroup {rel} not found: {:?}", scan.pids.pods));
    assert_eq!(pp.version, CgroupVersion::V1);
    assert_eq!(pp.cgroup, rel);
    assert_eq!((pp.current, pp.limit, pp.headroom), (21, 50, 29));
    assert_eq!(pp.limit_source, PidsLimitSource::PodCgroup);
    assert_eq!(pp.zombies, 20, "zombies placed by their parent's cgroup");
    assert_eq!(pp.zombie_share(), Some(20.0 / 21.0));
    assert_eq!(pp.eta_seconds, None, "one sample is no trend");
    let node = scan.pids.node.as_ref().expect("node pids");
    let pid_max: u64 = read_number("/proc/sys/kernel/pid_max");
    let threads_max: u64 = read_number("/proc/sys/kernel/threads-max");
    assert_eq!(node.limit, pid_max.min(threads_max));
    assert!(node.tasks >= 21 && node.headroom == node.limit - node.tasks);

    // The report and the scan table say the same.
    let status = nodemedic_agent::report::build::status(
        &scan.observation,
        std::slice::from_ref(&scan.assessment),
        &scan.enrichment,
        &scan.pids,
        k8s_openapi::jiff::Timestamp::now(),
        Default::default(),
    );
    let reported = status
        .pids
        .as_ref()
        .and_then(|s| {
            s.pods
                .iter()
                .find(|x| x.workload.as_ref().and_then(|w| w.pod_uid.as_deref()) == Some(POD_UID))
        })
        .expect("pod in status.pids");
    assert_eq!(
        (reported.current, reported.headroom, reported.zombies),
        (21, 29, 20)
    );
    let table = output::table(
        &scan.observation,
        &scan.assessment,
        &scan.enrichment,
        &scan.pids,
    );
    assert!(
        table.contains(&format!(
            "uid:{POD_UID}  21 of 50 pids (pids.max), 20 zombies (95%)"
        )),
        "{table}"
    );

    // Without a limit of its own, the node's applies.
    std::fs::write(pod_dir.join("pids.max"), "max").expect("pids.max");
    let scan = scan_once(&mut scanner, &mut engine, &p);
    let pp = scan
        .pids
        .pods
        .iter()
        .find(|x| x.pod_uid == POD_UID)
        .expect("pod still found");
    assert_eq!(pp.limit_source, PidsLimitSource::Node);
    assert_eq!(pp.limit, pid_max.min(threads_max));

    // Scope: the only zombie parent is in this pod, so a zombies verdict
    // that exceeds is the pod's problem (by UID: no kubelet names it here).
    let tight = policy(EffectiveThresholds {
        zombies: Some(ZombieThresholds {
            threshold: 10,
            per_parent_threshold: 5,
            min_age: Duration::ZERO,
            for_duration: Duration::ZERO,
        }),
        ..EffectiveThresholds::default()
    });
    let scan = scan_once(&mut scanner, &mut engine, &tight);
    let status = nodemedic_agent::report::build::status(
        &scan.observation,
        std::slice::from_ref(&scan.assessment),
        &scan.enrichment,
        &scan.pids,
        k8s_openapi::jiff::Timestamp::now(),
        Default::default(),
    );
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == nodemedic_crds::conditions::ConditionType::ZombiesDetected)
        .expect("zombies condition");
    let others_with_zombies = scan.observation.procs.zombies.len() > 20;
    if others_with_zombies {
        // Another parent on this host holds zombies too: node-wide.
        assert_eq!(cond.scope, Some(ProblemScope::Node), "{cond:?}");
    } else {
        assert_eq!(cond.scope, Some(ProblemScope::Pod), "{cond:?}");
        assert_eq!(cond.culprit.as_ref().map(|c| c.uid.as_str()), Some(POD_UID));
        let table = output::table(
            &scan.observation,
            &scan.assessment,
            &scan.enrichment,
            &scan.pids,
        );
        assert!(table.contains(&format!("Pod pod {POD_UID}")), "{table}");
    }
    drop(parent);
    drop(pod);
    let _ = std::io::stderr().flush();
}

/// Zombies whose parent is `ppid`, from /proc/*/stat.
fn zombie_children(ppid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let mut fields = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace();
            fields.next() == Some("Z") && fields.next().and_then(|p| p.parse().ok()) == Some(ppid)
        })
        .count()
}

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .expect("readable")
        .trim()
        .parse()
        .expect("a number")
}

/// Removes a nested cgroup directory once its tasks are gone.
struct PodDir(PathBuf);

impl Drop for PodDir {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
