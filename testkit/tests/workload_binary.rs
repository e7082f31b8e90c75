//! The problem-process generator really makes the problems the other tests
//! rely on. Being an integration test of this package, it also makes
//! `cargo test --workspace` build the `nodemedic-workload` executable with the
//! workspace's features, next to every test that runs it.

use std::path::Path;
use std::time::{Duration, Instant};

use nodemedic_testkit::workload;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_nodemedic-workload");

/// (state, ppid) of a process, from `/proc/PID/stat`.
fn state_and_ppid(pid: u32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn zombies_under(parent: i32) -> usize {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(state_and_ppid)
                .filter(|&(state, ppid)| state == 'Z' && ppid == parent)
                .count()
        })
        .unwrap_or(0)
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn zombie_parent_never_reaps_its_children() {
    let parent = workload::helper(Path::new(WORKLOAD), &["zombie-parent", "7"]).expect("spawn");
    eventually("7 zombies under the helper", || {
        zombies_under(parent.pid()) == 7
    });
    // Still 7 a moment later: nobody reaps them while the parent lives.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(zombies_under(parent.pid()), 7);
}

#[test]
fn hold_fds_holds_them_under_the_lowered_soft_limit() {
    let hoarder = workload::fd_hoarder(Path::new(WORKLOAD), 200, 256).expect("spawn");
    let pid = hoarder.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir of our own child")
        .count();
    assert!(open >= 200, "{open} fds open, expected at least 200");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("Max open files line");
    assert_eq!(soft, "256");
}

#[test]
fn workload_exe_finds_the_executable_cargo_built() {
    let found = nodemedic_testkit::workload_exe();
    assert_eq!(
        found.canonicalize().expect("found path"),
        Path::new(WORKLOAD).canonicalize().expect("cargo's path")
    );
}
