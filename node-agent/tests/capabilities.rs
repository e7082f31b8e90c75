//! The agent's pod is not privileged: it runs as uid 0, drops every
//! capability and adds back only `KILL` (see the Helm chart and
//! `docs/security.md`). These tests run the real `nodemedic-agent scan` (or,
//! for what a compromised agent could read, `cat` and `ls`) as root with
//! exactly a given capability set (`setpriv --bounding-set`, no_new_privs as
//! in the pod) against processes of another user, and prove:
//! - the agent's whole scan of another user's processes — stat, status,
//!   limits, cgroup, sched, schedstat, task stats and the fd count, a
//!   process without open fds included — works with the chart's
//!   capabilities alone on this kernel (the fd count is `st_size` of
//!   `/proc/PID/fd`, Linux ≥ 6.2); only `wchan` (where a hung thread sleeps,
//!   shown in reports, not used to classify) is masked;
//! - what `CAP_DAC_READ_SEARCH` would add: listing another user's fd
//!   directory and reading its private files, past every file mode;
//! - what `CAP_SYS_PTRACE` would add: another process's filesystem through
//!   `/proc/PID/root` (where another pod's ServiceAccount token is), which
//!   the chart's capabilities do not open for a process of another uid.
//!
//! KILL (signalling another user's process) is proven with the agent's
//! action execution in `tests/cluster.rs`.

use nodemedic_agent::confine::{Confinement, confine_self};
use nodemedic_crds::NodeHealthReport;
use nodemedic_testkit::real_host::{is_root, skip};
use nodemedic_testkit::workload::{DStateTask, Spawned, freezer_hierarchy};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_nodemedic-agent");
const NOBODY: &str = "65534";
/// The capabilities the chart adds (setpriv syntax, appended to `-all`).
/// `pod_templates_have_the_documented_security_settings` in
/// `tests/tests/chart.rs` asserts the chart's list is `["KILL"]`.
const CHART_CAPS: &str = ",+kill";

fn as_nobody(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        program,
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// `program args` as root with exactly `caps` (setpriv syntax, e.g.
/// ",+kill,+sys_ptrace") and no_new_privs, as in the agent's pod.
fn with_caps(caps: &str, program: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .arg(format!("--bounding-set=-all{caps}"))
        .arg("--inh-caps=-all")
        .arg("--no-new-privs")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run under setpriv")
}

/// `nodemedic-agent scan -o json` with exactly `caps`.
fn scan_with(caps: &str, policy: &Path) -> NodeHealthReport {
    let policy = policy.to_str().expect("utf-8 path");
    let out = with_caps(
        caps,
        AGENT,
        &[
            "scan",
            "-o",
            "json",
            "--sample-interval",
            "10ms",
            "--policy",
            policy,
        ],
    );
    assert!(
        out.status.success(),
        "scan with caps {caps:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a NodeHealthReport")
}

fn wait_state(pid: i32, state: char) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with(state))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("pid {pid} never reached state {state}");
}

/// Root, setpriv and a kernel that counts fds in `st_size` (6.2+), or a
/// skip (a failure where real-host tests are required).
fn preconditions() -> bool {
    if !is_root() {
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("setpriv (util-linux) is not installed");
        return false;
    }
    let own = std::fs::metadata("/proc/self/fd").map_or(0, |m| m.len());
    if own == 0 {
        skip("this kernel does not count open fds in st_size of /proc/PID/fd (Linux < 6.2)");
        return false;
    }
    true
}

/// A process of user nobody without a single open fd.
fn nobody_without_fds() -> Spawned {
    let p = Spawned::new(
        as_nobody(
            "bash",
            &[
                "-c",
                // Close every fd, inherited ones (a jobserver pipe) included.
                r#"for f in /proc/$$/fd/*; do n=${f##*/}; eval "exec $n>&-"; done; exec sleep 120"#,
            ],
        )
        .spawn()
        .expect("spawn"),
    );
    wait_state(p.pid(), 'S');
    p
}

/// A process of user nobody holding 3 + `n` open fds.
fn nobody_with_fds(n: u32) -> Spawned {
    let script = format!("for i in $(seq {n}); do exec {{x}}</dev/null; done; exec sleep 120");
    let p = Spawned::new(as_nobody("bash", &["-c", &script]).spawn().expect("spawn"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{}/comm", p.pid())).unwrap_or_default()
        != "sleep\n"
    {
        assert!(
            Instant::now() < deadline,
            "the fd holder never exec'd sleep"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

fn open_fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("root lists the fd directory")
        .count() as u64
}

#[test]
fn the_agents_full_scan_of_another_users_processes_needs_only_cap_kill() {
    if !preconditions() {
        return;
    }
    let Some(freezer) = freezer_hierarchy() else {
        skip("no cgroup v1 freezer to hold a task in D state");
        return;
    };
    // A thread of another user hung in D state, a process of another user
    // without a single open fd, and one holding many.
    let hung = DStateTask::spawn_frozen_with(&freezer, as_nobody("sleep", &["120"]))
        .expect("a frozen sleeper of user nobody");
    wait_state(hung.pid, 'D');
    let no_fds = nobody_without_fds();
    let many_fds = nobody_with_fds(300);
    let expected_fds = open_fds(many_fds.pid());
    assert!(expected_fds >= 300, "{expected_fds}");

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: nodemedic.io/v1alpha1\nkind: NodeHealthPolicy\nmetadata: {name: caps}\nspec:\n  detectors:\n    hungTasks: {minDuration: 1s}\n    fdLeak: {minOpenFds: 250}\n",
    )
    .expect("policy");

    let report = scan_with(CHART_CAPS, &policy);
    let status = report.status.as_ref().expect("a status");
    assert_eq!(
        status.scan_errors.permission_denied, 0,
        "with the chart's capabilities nothing the agent reads is denied, \
         the fd count of a process without fds included: {:?}",
        status.scan_errors
    );
    let fd_user = status
        .findings
        .fd_leak
        .iter()
        .find(|f| f.process.host_pid == many_fds.pid())
        .unwrap_or_else(|| {
            panic!(
                "the fd holder {} is listed: {:?}",
                many_fds.pid(),
                status.findings.fd_leak
            )
        });
    assert_eq!(fd_user.open_fds, expected_fds, "the exact count, by stat()");
    assert!(
        fd_user.soft_limit.is_some(),
        "its RLIMIT_NOFILE (/proc/PID/limits) is read"
    );
    let blocked = status
        .findings
        .hung_tasks
        .iter()
        .find(|h| h.tid == hung.pid)
        .unwrap_or_else(|| panic!("the hung thread {} is listed", hung.pid));
    assert_eq!(
        blocked.wchan, None,
        "only wchan of another user's thread is masked without SYS_PTRACE"
    );
    drop((no_fds, many_fds, hung));
}

#[test]
fn dac_read_search_would_expose_every_file_mode_on_the_node() {
    if !preconditions() {
        return;
    }
    let victim = nobody_with_fds(1);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let private = dir.path().join("private");
    std::fs::write(&private, "another user's secret\n").expect("write");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    rustix::fs::chown(
        &private,
        Some(rustix::fs::Uid::from_raw(65534)),
        Some(rustix::fs::Gid::from_raw(65534)),
    )
    .expect("chown");
    let private = private.to_str().expect("utf-8");
    let fd_dir = format!("/proc/{}/fd", victim.pid());

    let chart_cat = with_caps(CHART_CAPS, "cat", &[private]);
    assert!(
        !chart_cat.status.success(),
        "the chart's capabilities do not pass file modes"
    );
    let chart_ls = with_caps(CHART_CAPS, "ls", &[&fd_dir]);
    assert!(
        !chart_ls.status.success(),
        "the chart's capabilities do not list another user's fd directory"
    );

    let dac = ",+kill,+dac_read_search";
    let dac_cat = with_caps(dac, "cat", &[private]);
    assert_eq!(
        String::from_utf8_lossy(&dac_cat.stdout),
        "another user's secret\n",
        "DAC_READ_SEARCH reads any file, whatever its mode"
    );
    assert!(
        with_caps(dac, "ls", &[&fd_dir]).status.success(),
        "DAC_READ_SEARCH lists another user's fd directory (the fd count on kernels < 6.2)"
    );
    drop(victim);
}

#[test]
fn without_sys_ptrace_another_users_files_are_closed_through_proc_root() {
    if !preconditions() {
        return;
    }
    // A file only reachable, for the test, through another process's root:
    // readable by anyone who can traverse to it (mode 0644, like a
    // ServiceAccount token in a projected volume).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let token = dir.path().join("token");
    std::fs::write(&token, "a pod's token\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let victim = nobody_with_fds(2);
    let pid = victim.pid();
    let through_root = format!("/proc/{pid}/root{}", token.display());

    let chart = with_caps(CHART_CAPS, "cat", &[&through_root]);
    assert!(
        !chart.status.success() && chart.stdout.is_empty(),
        "with the chart's capabilities another uid's /proc/PID/root is closed: {}",
        String::from_utf8_lossy(&chart.stdout)
    );
    assert!(
        String::from_utf8_lossy(&chart.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&chart.stderr)
    );
    // ...while what the agent reads of that process stays readable.
    let stat = with_caps(CHART_CAPS, "cat", &[&format!("/proc/{pid}/stat")]);
    assert!(
        String::from_utf8_lossy(&stat.stdout).starts_with(&format!("{pid} (sleep) S")),
        "{}",
        String::from_utf8_lossy(&stat.stdout)
    );
    let size = with_caps(
        CHART_CAPS,
        "stat",
        &["-c", "%s", &format!("/proc/{pid}/fd")],
    );
    assert_eq!(
        String::from_utf8_lossy(&size.stdout).trim(),
        open_fds(pid).to_string(),
        "the fd count is stat()'s st_size"
    );

    // What SYS_PTRACE would add: the other process's whole filesystem.
    let ptrace = with_caps(",+kill,+sys_ptrace", "cat", &[&through_root]);
    assert_eq!(
        String::from_utf8_lossy(&ptrace.stdout),
        "a pod's token\n",
        "SYS_PTRACE opens /proc/PID/root of another uid"
    );
    drop(victim);
}

/// The limit of dropping SYS_PTRACE, and what closes it. The kernel's
/// ptrace access check lets a process in when it has the same uid and at
/// least the target's capabilities: a process of uid 0 without capabilities
/// (a container running as root with `drop: [ALL]`) is open to the agent's
/// uid with the chart's capabilities alone. The agent's Landlock domain
/// (`confine_self`, entered at start-up) closes it: inside the domain the
/// check fails for every process outside it, even for root with every
/// capability, while the agent's own reads keep working.
#[test]
fn a_root_process_without_capabilities_is_closed_once_the_agent_confines_itself() {
    if !preconditions() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "a root pod's token\n").expect("write");
    let victim = Spawned::new(
        Command::new("setpriv")
            .args(["--bounding-set=-all", "--inh-caps=-all", "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let pid = victim.pid();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "setpriv never exec'd sleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    let through_root = format!("/proc/{pid}/root{}", token.display());
    let chart = with_caps(CHART_CAPS, "cat", &[&through_root]);
    assert_eq!(
        String::from_utf8_lossy(&chart.stdout),
        "a root pod's token\n",
        "same uid and a superset of its capabilities: the ptrace check passes"
    );

    // The agent's confinement, entered by a thread of this test (root with
    // every capability, more than the agent ever has).
    let expected_fds = open_fds(pid);
    let confined = std::thread::spawn(move || {
        let state = confine_self().expect("confine_self");
        let root = std::fs::read_to_string(&through_root);
        let closed: Vec<(&str, bool)> = ["io", "mem", "syscall", "stack"]
            .into_iter()
            .map(|f| (f, std::fs::read(format!("/proc/{pid}/{f}")).is_err()))
            .chain([
                (
                    "cwd",
                    std::fs::read_link(format!("/proc/{pid}/cwd")).is_err(),
                ),
                (
                    "fd/0",
                    std::fs::read_link(format!("/proc/{pid}/fd/0")).is_err(),
                ),
            ])
            .collect();
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan"));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let fds = std::fs::metadata(format!("/proc/{pid}/fd")).map(|m| m.len());
        (state, root, closed, wchan, stat, fds)
    })
    .join()
    .expect("the confined thread");
    let (state, root, closed, wchan, stat, fds) = confined;
    if state == Confinement::Unavailable {
        skip("this kernel has no Landlock");
        return;
    }
    let err = root.expect_err("/proc/PID/root is closed inside the domain");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    for (entry, is_closed) in closed {
        assert!(is_closed, "/proc/PID/{entry} is closed inside the domain");
    }
    assert_eq!(wchan.expect("wchan reads, masked").trim(), "0");
    assert!(
        stat.expect("stat stays readable")
            .starts_with(&format!("{pid} (sleep) S")),
    );
    assert_eq!(fds.expect("the fd count stays readable"), expected_fds);
    drop(victim);
}

/// The real binary enters the domain before it scans: even given
/// SYS_PTRACE it cannot pass the ptrace check of another process (the
/// kernel masks the hung thread's wchan), and the scan is otherwise whole.
#[test]
fn the_agent_binary_confines_itself_before_scanning() {
    if !preconditions() {
        return;
    }
    let Some(freezer) = freezer_hierarchy() else {
        skip("no cgroup v1 freezer to hold a task in D state");
        return;
    };
    let hung = DStateTask::spawn_frozen_with(&freezer, as_nobody("sleep", &["120"]))
        .expect("a frozen sleeper of user nobody");
    wait_state(hung.pid, 'D');
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: nodemedic.io/v1alpha1\nkind: NodeHealthPolicy\nmetadata: {name: caps}\nspec:\n  detectors:\n    hungTasks: {minDuration: 1s}\n",
    )
    .expect("policy");
    let report = scan_with(",+kill,+sys_ptrace", &policy);
    let status = report.status.as_ref().expect("a status");
    let blocked = status
        .findings
        .hung_tasks
        .iter()
        .find(|h| h.tid == hung.pid)
        .unwrap_or_else(|| panic!("the hung thread {} is listed", hung.pid));
    assert_eq!(
        blocked.wchan, None,
        "inside its Landlock domain the agent cannot read wchan even with SYS_PTRACE"
    );
    assert_eq!(status.scan_errors.permission_denied, 0);
    drop(hung);
}
