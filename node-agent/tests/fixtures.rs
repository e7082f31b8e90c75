//! Detectors and attribution over fixture host roots (no root needed).

mod common;

use common::{details, fd_users, hung, throttled, verdict, zombies};
use nodemedic_agent::detect::Engine;
use nodemedic_agent::detect::finding::{DurationSource, Offenders};
use nodemedic_agent::scan::Scanner;
use nodemedic_agent::scan_command::{Scan, load_policy, scan_once};
use nodemedic_crds::conditions::{ConditionReason, ConditionStatus, ConditionType};
use nodemedic_crds::{Detector, SelectedPolicy};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn strict() -> SelectedPolicy {
    load_policy(&fixture("policy-strict.yaml")).expect("fixture policy loads")
}

fn assess_once(root: &Path, policy: &SelectedPolicy) -> Scan {
    let mut scanner = Scanner::new(root).expect("scanner");
    let mut engine = Engine::new();
    scan_once(&mut scanner, &mut engine, policy)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("readdir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn kind_node_zombies_are_attributed_to_the_pod() {
    let a = assess_once(&fixture("kind-v2-systemd"), &strict());
    let z = zombies(&a);
    let parent = z
        .iter()
        .find(|f| f.parent.pid == 100)
        .expect("php-fpm listed");
    assert_eq!(parent.zombies, 3);
    // Ages from se.exec_start against "now" 1000 s: 100 s, 150 s and 10 s.
    assert_eq!(parent.past_min_age, 2);
    assert!(
        parent.exceeds,
        "2 zombies past minAge reach perParentThreshold 2"
    );
    assert_eq!(parent.oldest_age_seconds, 150.0);
    assert_eq!(parent.age_source, DurationSource::Sched);
    let d = details(&a, parent.parent.key());
    assert_eq!(d.nspid, Some(1));
    assert_eq!(d.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(d.pod_name.as_deref(), Some("php-7d9f"));
    assert_eq!(d.container_name.as_deref(), Some("php"));
    assert_eq!(d.attribution.runtime.map(|r| r.name()), Some("containerd"));
    assert_eq!(
        d.attribution.pod_uid.as_deref(),
        Some("0d8a5f7e-1c2b-4a3d-9e8f-123456789abc")
    );
    // 700 is a "Zl" leader whose thread still runs: shown in state Z, but not
    // a zombie anyone could reap.
    let summary = nodemedic_agent::report::build::node_summary(&a.observation);
    assert_eq!(summary.tasks.zombie, 4);
    let zombie_total: u32 = z.iter().map(|f| f.zombies).sum();
    assert_eq!(zombie_total, 3);
}

#[test]
fn kind_node_hung_thread_in_multithreaded_process() {
    let a = assess_once(&fixture("kind-v2-systemd"), &strict());
    let h = hung(&a);
    assert_eq!(h.len(), 1, "{h:?}");
    let t = &h[0];
    assert_eq!((t.process.pid, t.tid), (200, 201));
    assert_eq!(t.process.comm, "java");
    assert_eq!(t.thread_comm, "nfs-writer");
    assert_eq!(t.blocked_seconds, 300.0);
    assert_eq!(t.blocked_source, DurationSource::Sched);
    assert_eq!(t.wchan.as_deref(), Some("rpc_wait_bit_killable"));
    assert!(t.exceeds);
    assert_eq!(
        details(&a, t.process.key()).pod_name.as_deref(),
        Some("report-job-x1")
    );
    assert_eq!(a.observation.procs.tasks.disk_sleep, 1);
    // Seven single-threaded processes, java's three threads and the Zl
    // leader's two.
    assert_eq!(a.observation.counters.threads, 7 + 3 + 2);
    assert_eq!(a.observation.procs.tasks.zombie, 3 + 1);
}

#[test]
fn kind_node_fd_usage_and_node_summary() {
    let a = assess_once(&fixture("kind-v2-systemd"), &strict());
    let f = fd_users(&a);
    let leaky = f
        .iter()
        .find(|f| f.process.pid == 300)
        .expect("leaky listed");
    assert_eq!(leaky.open_fds, 90);
    assert_eq!(leaky.soft_limit, Some(100));
    assert!(leaky.exceeds);
    let php = f.iter().find(|f| f.process.pid == 100).expect("php listed");
    assert!(!php.exceeds, "8 fds is below minOpenFds");
    let Offenders::FdLeak {
        node: Some(node), ..
    } = &verdict(&a, Detector::FdLeak).offenders
    else {
        panic!("node file-nr listed");
    };
    assert!(node.exceeds, "9500/10000 >= 0.9");

    let s = nodemedic_agent::report::build::node_summary(&a.observation);
    assert_eq!(a.observation.hostname.as_deref(), Some("kind-worker"));
    assert_eq!(a.observation.node.kernel.as_deref(), Some("6.1.0-fixture"));
    assert_eq!((s.load.one, s.load.runnable, s.load.blocked), (2.5, 3, 1));
    assert_eq!(s.load.cpus, 2);
    assert_eq!(
        s.psi
            .as_ref()
            .and_then(|p| p.io.as_ref())
            .and_then(|p| p.full_avg10),
        Some(20.0)
    );
    assert_eq!(s.hung_task_timeout_secs, Some(120));
    assert_eq!(a.observation.counters.unparsable, 0);
}

#[test]
fn kind_node_throttling_needs_two_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("kind-v2-systemd"), dir.path());
    let policy = strict();
    let mut scanner = Scanner::new(dir.path()).expect("scanner");
    let mut engine = Engine::new();
    let first = scanner.observe_cgroups_only();
    assert_eq!(
        first.cgroups.len(),
        2,
        "two containers, the pod level skipped"
    );
    engine.prime(&first, std::slice::from_ref(&policy));
    std::thread::sleep(std::time::Duration::from_millis(20));

    let cg = "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod0d8a5f7e_1c2b_4a3d_9e8f_123456789abc.slice/cri-containerd-3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899.scope";
    std::fs::write(
        dir.path().join("sys/fs/cgroup").join(cg).join("cpu.stat"),
        "usage_usec 200\nnr_periods 1100\nnr_throttled 180\nthrottled_usec 9000000\n",
    )
    .expect("advance counters");
    let a = scan_once(&mut scanner, &mut engine, &policy);
    let t = throttled(&a);
    assert_eq!(
        t.len(),
        1,
        "the unchanged container has no periods in the window"
    );
    let f = &t[0];
    assert_eq!((f.periods, f.throttled_periods), (100, 80));
    assert_eq!(f.throttled_ratio, 0.8);
    assert_eq!(f.throttled_seconds, 4.0);
    assert_eq!(f.quota_cores, Some(0.5));
    assert_eq!(f.pressure_some_avg10, Some(40.0));
    assert!(f.exceeds);
    let d = a.enrichment.cgroup(&f.cgroup).expect("cgroup enriched");
    assert_eq!(d.pod_name.as_deref(), Some("php-7d9f"));
    assert_eq!(d.container_name.as_deref(), Some("php"));
}

#[test]
fn v1_cgroupfs_crio_attribution_and_throttling() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("v1-cgroupfs-crio"), dir.path());
    let policy = strict();
    let mut scanner = Scanner::new(dir.path()).expect("scanner");
    let mut counters = Default::default();
    let d = scanner.details(500, 1000, &mut counters);
    assert_eq!(d.pod_namespace.as_deref(), Some("web"));
    assert_eq!(d.pod_name.as_deref(), Some("nginx-0"));
    assert_eq!(d.container_name.as_deref(), Some("nginx"));
    assert_eq!(d.nspid, Some(1));
    assert_eq!(d.attribution.runtime.map(|r| r.name()), Some("cri-o"));
    let redis = scanner.details(600, 1000, &mut counters);
    assert_eq!(
        redis.attribution.container_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert!(redis.pod_name.is_none(), "no kubelet log dir for that pod");

    let mut engine = Engine::new();
    let first = scanner.observe_cgroups_only();
    let paths: Vec<&str> = first.cgroups.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths.contains(&"/batch-jobs"));
    assert!(!paths.iter().any(|p| p.contains("conmon")));
    engine.prime(&first, std::slice::from_ref(&policy));
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        dir.path()
            .join("sys/fs/cgroup/cpu,cpuacct/batch-jobs/cpu.stat"),
        "nr_periods 30\nnr_throttled 29\nthrottled_time 2900000000\n",
    )
    .expect("advance");
    let a = scan_once(&mut scanner, &mut engine, &policy);
    let t = throttled(&a);
    let f = t
        .iter()
        .find(|f| f.cgroup == "/batch-jobs")
        .expect("batch-jobs listed");
    assert_eq!(f.throttled_ratio, 19.0 / 20.0);
    assert!(f.exceeds);
    assert_eq!(f.quota_cores, Some(0.1));
}

#[test]
fn malformed_files_are_counted_not_fatal() {
    let a = assess_once(&fixture("malformed"), &strict());
    let k = a.observation.counters;
    // stat of 10 and 11, loadavg, file-nr, pressure/cpu, 14's sched, the
    // container's cpu.stat; 13's status, limits and cgroup are read by the
    // enrichment stage and counted there.
    let unparsable = k.unparsable + a.enrichment.counters.unparsable;
    assert!(unparsable >= 8, "{k:?} {:?}", a.enrichment.counters);
    assert!(
        k.vanished >= 1,
        "empty stat of 12 counts as vanished: {k:?}"
    );
    assert_eq!(k.processes, 3, "1, 13 and 14 parse");
    assert!(a.observation.node.load.is_none());
    assert!(a.observation.node.file_handles_max.is_none());
    let hung = hung(&a);
    assert_eq!(hung.len(), 1);
    assert_eq!(hung[0].blocked_source, DurationSource::Tracked);
    let fd = fd_users(&a);
    let hostile = fd.iter().find(|f| f.process.pid == 13).expect("13 listed");
    assert_eq!(hostile.process.comm, "a) Z (b");
    assert_eq!(hostile.soft_limit, None, "limits unparsable");
    assert_eq!(
        details(&a, hostile.process.key()).nspid,
        None,
        "NSpid unparsable"
    );
    assert!(!hostile.exceeds, "no limit, no ratio");
}

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nodemedic-agent"))
}

#[test]
fn scan_command_json_is_a_node_health_report() {
    let out = agent()
        .args([
            "scan",
            "--output",
            "json",
            "--sample-interval",
            "10ms",
            "--policy",
        ])
        .arg(fixture("policy-strict.yaml"))
        .arg("--host-root")
        .arg(fixture("kind-v2-systemd"))
        .output()
        .expect("run agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: nodemedic_crds::NodeHealthReport =
        serde_json::from_slice(&out.stdout).expect("stdout is a NodeHealthReport");
    assert_eq!(report.metadata.name.as_deref(), Some("kind-worker"));
    let status = report.status.expect("status");
    assert!(!status.healthy, "for: 0s, so exceeded detectors fire");
    assert_eq!(status.findings.zombies[0].parent.host_pid, 100);
    assert_eq!(status.findings.hung_tasks[0].tid, 201);
    assert_eq!(
        status.summary.tasks.zombie, 4,
        "processes in state Z, the Zl leader included"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.policy == "fixture-strict"
                && c.type_ == ConditionType::ZombiesDetected
                && c.status == ConditionStatus::True)
    );
    // The node's file table is reported, not dropped on the way.
    let files = status.findings.node_file_handles.expect("file-nr finding");
    assert!(files.exceeded && files.exceeded_under == ["fixture-strict"]);
}

#[test]
fn scan_command_fail_on_findings_exit_status() {
    let run = |root: &str, extra: &[&str]| {
        agent()
            .args(["scan", "--sample-interval", "10ms", "--host-root"])
            .arg(fixture(root))
            .args(extra)
            .output()
            .expect("run agent")
    };
    let bad = run("kind-v2-systemd", &["--fail-on-findings"]);
    assert_eq!(bad.status.code(), Some(3));
    let table = String::from_utf8_lossy(&bad.stdout);
    assert!(table.contains("EXCEEDED"), "{table}");
    assert!(table.contains("shop/php-7d9f"), "{table}");
    // Without the flag, findings do not change the exit status.
    assert_eq!(run("kind-v2-systemd", &[]).status.code(), Some(0));
    let yaml = run("v1-cgroupfs-crio", &["-o", "yaml"]);
    assert!(yaml.status.success());
    let _: nodemedic_crds::NodeHealthReport =
        serde_yaml::from_slice(&yaml.stdout).expect("yaml report");
}

#[test]
fn scan_command_rejects_a_bad_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "apiVersion: nodemedic.io/v1alpha1\nkind: NodeHealthPolicy\nmetadata: {name: bad}\nspec:\n  detectors:\n    fdLeak: {usageRatio: 1.5}\n",
    )
    .expect("write");
    let out = agent()
        .args(["scan", "--policy"])
        .arg(&p)
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("spec.detectors.fdLeak: Invalid value: usageRatio must be in (0, 1]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--policy` applies the API server's own rules, so a policy file that
/// `kubectl apply` would reject is rejected here with the same message, on
/// one line per problem and without a backtrace.
#[test]
fn scan_command_rejects_every_invalid_example_with_the_api_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/invalid") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read example");
        let out = agent()
            .env("RUST_BACKTRACE", "1")
            .args(["scan", "--policy"])
            .arg(&path)
            .output()
            .expect("run agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert!(
            !stderr.contains("backtrace"),
            "{}: {stderr}",
            path.display()
        );
        for expected in text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect-error:"))
        {
            assert!(
                stderr.contains(expected.trim()),
                "{}: want {expected:?} in {stderr}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} invalid examples");
}

#[test]
fn watch_mode_recounts_small_fd_holders_within_n_scans_and_big_ones_always() {
    use nodemedic_agent::scan::procfs::FdRecount;
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("kind-v2-systemd"), dir.path());
    let mut scanner = Scanner::new(dir.path()).expect("scanner");
    scanner.set_fd_recount(FdRecount {
        every: 3,
        always_at: 64,
    });
    let fds_of = |scanner: &mut Scanner, pid: i32| {
        let mut c = Default::default();
        scanner
            .scan_processes(&mut c)
            .processes
            .into_iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.fd_count)
    };
    assert_eq!(fds_of(&mut scanner, 100), Some(8));
    assert_eq!(fds_of(&mut scanner, 300), Some(90));
    for i in 8..20 {
        std::fs::write(dir.path().join(format!("proc/100/fd/{i}")), "").expect("add fd");
    }
    for i in 90..95 {
        std::fs::write(dir.path().join(format!("proc/300/fd/{i}")), "").expect("add fd");
    }
    assert_eq!(
        fds_of(&mut scanner, 300),
        Some(95),
        "at/above 64: every scan"
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(fds_of(&mut scanner, 100));
    }
    assert!(
        seen.contains(&Some(20)),
        "recounted within 3 scans: {seen:?}"
    );
}

#[test]
fn scan_command_watch_prints_one_json_object_per_scan() {
    let out = agent()
        .args([
            "scan",
            "--watch",
            "20ms",
            "--count",
            "3",
            "-o",
            "json",
            "--host-root",
        ])
        .arg(fixture("kind-v2-systemd"))
        .output()
        .expect("run agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<nodemedic_crds::NodeHealthReport> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one report per line"))
        .collect();
    assert_eq!(reports.len(), 3);
    // Built-in defaults: two old zombies under one parent are below the
    // per-parent default of 20.
    let status = reports[2].status.as_ref().expect("status");
    let zombies = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::ZombiesDetected)
        .expect("zombie condition");
    assert_eq!(zombies.policy, "builtin-defaults");
    assert_eq!(
        (zombies.status, zombies.reason),
        (ConditionStatus::False, ConditionReason::BelowThreshold)
    );
    let reason = |t: ConditionType| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status, c.reason))
            .expect("condition")
    };
    // The 300 s D-state thread fires at once (hungTasks `for` defaults to 0s)...
    assert_eq!(
        reason(ConditionType::HungTasksDetected),
        (ConditionStatus::True, ConditionReason::ThresholdExceeded)
    );
    // ...while the node's file-nr at 95% waits for fdLeak's default `for` of 2m.
    assert_eq!(
        reason(ConditionType::FdLeakDetected),
        (ConditionStatus::False, ConditionReason::Pending)
    );
    // The transition time is when the condition was first set, the same
    // in every scan, not "now".
    let first = reports[0].status.as_ref().expect("status");
    let t = |s: &nodemedic_crds::NodeHealthReportStatus, ty| {
        s.conditions
            .iter()
            .find(|c| c.type_ == ty)
            .map(|c| c.last_transition_time.clone())
    };
    assert_eq!(
        t(first, ConditionType::FdLeakDetected),
        t(status, ConditionType::FdLeakDetected)
    );
    assert!(!status.healthy);
}
