//! The agent's pod is not privileged: it drops every capability and adds
//! back only KILL, SYS_PTRACE and DAC_READ_SEARCH (see the Helm chart).
//! These tests prove each of the scanning ones is needed, by running the
//! real `nodemedic-agent scan` as root with exactly a given capability set
//! (`setpriv --bounding-set`) against processes of another user:
//! - SYS_PTRACE: the kernel masks `/proc/PID/wchan` of other users' threads
//!   (where a hung thread sleeps) as "0" without it;
//! - DAC_READ_SEARCH: `/proc/PID/fd` of another user (mode 0500) can only be
//!   listed with it — the fd count's fallback when `st_size` is 0 (a
//!   process without open fds, and every process on kernels before 6.2).
//!
//! KILL (signalling another user's process) is proven with the agent's
//! action execution in `tests/cluster.rs`.

use nodemedic_crds::NodeHealthReport;
use nodemedic_testkit::real_host::{is_root, skip};
use nodemedic_testkit::workload::{DStateTask, Spawned, freezer_hierarchy};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_nodemedic-agent");
const NOBODY: &str = "65534";

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

/// `nodemedic-agent scan -o json` as root with exactly `caps` (setpriv
/// syntax, e.g. "+kill,+sys_ptrace").
fn scan_with(caps: &str, policy: &std::path::Path) -> NodeHealthReport {
    let out = Command::new("setpriv")
        .arg(format!("--bounding-set=-all{caps}"))
        .arg("--inh-caps=-all")
        .args([
            AGENT,
            "scan",
            "-o",
            "json",
            "--sample-interval",
            "10ms",
            "--policy",
        ])
        .arg(policy)
        .output()
        .expect("run the agent under setpriv");
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

#[test]
fn scanning_other_users_needs_sys_ptrace_and_dac_read_search() {
    if !is_root() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("setpriv (util-linux) is not installed");
        return;
    }
    let Some(freezer) = freezer_hierarchy() else {
        skip("no cgroup v1 freezer to hold a task in D state");
        return;
    };
    // A thread of another user hung in D state...
    let hung = DStateTask::spawn_frozen_with(&freezer, as_nobody("sleep", &["120"]))
        .expect("a frozen sleeper of user nobody");
    wait_state(hung.pid, 'D');
    // ...and a process of another user without a single open fd.
    let no_fds = Spawned::new(
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
    wait_state(no_fds.pid(), 'S');

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: nodemedic.io/v1alpha1\nkind: NodeHealthPolicy\nmetadata: {name: caps}\nspec:\n  detectors:\n    hungTasks: {minDuration: 1s}\n",
    )
    .expect("policy");
    let wchan = |r: &NodeHealthReport| {
        r.status
            .as_ref()
            .and_then(|s| s.findings.hung_tasks.iter().find(|h| h.tid == hung.pid))
            .map(|h| h.wchan.clone())
            .unwrap_or_else(|| panic!("the hung thread {} is listed", hung.pid))
    };
    let denied = |r: &NodeHealthReport| {
        r.status
            .as_ref()
            .map_or(0, |s| s.scan_errors.permission_denied)
    };

    let all = scan_with(",+kill,+sys_ptrace,+dac_read_search", &policy);
    assert!(
        wchan(&all).is_some_and(|w| !w.is_empty()),
        "with SYS_PTRACE the hung thread's wait channel is readable: {:?}",
        wchan(&all)
    );
    assert_eq!(denied(&all), 0, "nothing is denied with all three");

    let no_ptrace = scan_with(",+kill,+dac_read_search", &policy);
    assert_eq!(
        wchan(&no_ptrace),
        None,
        "without SYS_PTRACE the kernel masks another user's wchan"
    );

    let no_dac = scan_with(",+kill,+sys_ptrace", &policy);
    assert!(
        denied(&no_dac) >= 1,
        "without DAC_READ_SEARCH the fd directory of a process without fds cannot be listed"
    );
    drop(no_fds);
    drop(hung);
}
