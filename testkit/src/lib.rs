//! Dev-only test kit of nodemedic: real problem processes for tests,
//! benchmarks, demos and the kind end-to-end workload image. Nothing here
//! ships in the agent or the operator.

pub mod fuse;
pub mod soak;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The `nodemedic-workload` binary of this workspace, for the running test or
/// bench executable's profile and target directory.
///
/// Cargo builds a package's plain executables only for that package's own
/// integration tests. `cargo test --workspace` therefore builds this one (this
/// crate's `tests/workload_binary.rs` needs it), with the workspace's features;
/// that build is used when it is newer than every source it comes from.
/// Otherwise — `cargo test -p nodemedic-agent` on a fresh tree, `cargo bench`,
/// or sources changed since — the first call in a process runs `cargo build`
/// for it, so a test never runs a missing or stale generator.
pub fn workload_exe() -> PathBuf {
    static EXE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    match EXE.get_or_init(current_workload) {
        Ok(path) => path.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn current_workload() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable path: {e}"))?;
    // <target-dir>/<profile-dir>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| format!("{} is not in a cargo target directory", exe.display()))?;
    let built = profile_dir.join("nodemedic-workload");
    if is_current(&built) {
        return Ok(built);
    }
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no target directory", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err(format!("no profile in {}", profile_dir.display())),
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "nodemedic-workload",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!(
            "`cargo build -p nodemedic-testkit --profile {profile}` failed ({status}); see its output above"
        ));
    }
    if built.is_file() {
        Ok(built)
    } else {
        Err(format!(
            "cargo built nodemedic-workload but {} is missing",
            built.display()
        ))
    }
}

/// Newer than this crate's sources, the API crate it uses and the lock file.
fn is_current(exe: &Path) -> bool {
    let Ok(built) = exe.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        here.join("src"),
        here.join("Cargo.toml"),
        here.join("../crds/src"),
        here.join("../crds/Cargo.toml"),
        here.join("../Cargo.lock"),
    ];
    sources
        .iter()
        .try_fold(SystemTime::UNIX_EPOCH, |newest, p| {
            newest_mtime(p).map(|t| t.max(newest))
        })
        .is_some_and(|newest| newest <= built)
}

/// The newest modification time in a file or directory tree; `None` when
/// anything cannot be read (then the executable is rebuilt, to be safe).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = path.metadata().ok()?;
    let own = meta.modified().ok()?;
    if !meta.is_dir() {
        return Some(own);
    }
    std::fs::read_dir(path)
        .ok()?
        .try_fold(own, |newest, entry| {
            newest_mtime(&entry.ok()?.path()).map(|t| t.max(newest))
        })
}

/// Parent pid from a `/proc/PID/stat` line (comm may hold spaces and
/// parentheses: split on the last `)`).
pub fn ppid_of_stat(stat: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(stat).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Parent pid of `pid`, read from `/proc`.
pub fn ppid_of(pid: i32) -> Option<i32> {
    ppid_of_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ppid_survives_hostile_comms() {
        assert_eq!(
            super::ppid_of_stat(b"42 (a) b) (c) S 7 42 42 0 -1"),
            Some(7)
        );
        assert_eq!(super::ppid_of_stat(b"42 (x"), None);
    }
}

/// Real-host tests need root (cgroups, freezer, other users' /proc). Where
/// they cannot run they say so loudly; where they must run — CI, which runs
/// as root and sets `NODEMEDIC_REQUIRE_REAL_HOST=1` — a skip is a failure.
pub mod real_host {
    /// Whether skipping is a failure here.
    pub fn required() -> bool {
        std::env::var("NODEMEDIC_REQUIRE_REAL_HOST").is_ok_and(|v| v == "1")
    }

    /// Skips the calling test with `why`, or fails it when real-host tests
    /// are required. Returns so that callers can `return` after it.
    pub fn skip(why: &str) {
        assert!(
            !required(),
            "real-host test cannot run: {why} (NODEMEDIC_REQUIRE_REAL_HOST=1 makes this a failure)"
        );
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPING real-host test: {why}\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }

    /// True as root; otherwise skips (or fails, when required).
    pub fn is_root() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        skip(
            "not root; run `cargo test` as root to exercise real zombies, D-state tasks and cgroups",
        );
        false
    }
}

/// What the benchmark binaries share.
pub mod bench {
    /// `cargo bench` passes `--bench`. Without it (`cargo test
    /// --all-targets` runs bench targets too) a bench is a smoke run: a tiny
    /// size that proves the code works and measures nothing worth reading.
    pub fn smoke_run() -> bool {
        let smoke = !std::env::args().any(|a| a == "--bench");
        if smoke {
            eprintln!("smoke run (cargo test): tiny sizes; `cargo bench` gives the figures");
        }
        smoke
    }

    /// A size from the environment, or `default`.
    pub fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// CPU time of the calling thread (ns), from /proc/thread-self/schedstat.
    pub fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Whether this is root (the workload then includes D-state tasks and
    /// throttled cgroups), saying so when not; and the kernel release.
    pub fn host() -> (bool, String) {
        let root = rustix::process::geteuid().is_root();
        if !root {
            eprintln!(
                "!!! not root: the workload runs without D-state tasks and cgroup spinners !!!"
            );
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        (root, kernel)
    }
}
