//! Real problem processes for tests, benchmarks and demos: zombies under one
//! parent, D-state tasks, fd hoarders under a lowered limit, throttled busy
//! loops in a cgroup v1 CPU group, hostile names. Each handle kills and
//! reaps what it started when dropped, even if a test fails half-way.
//!
//! Helpers that need code in the child run the `nodemedic-workload` binary
//! (its path is passed in, see [`crate::workload_exe`]), because doing work
//! between fork and exec needs `unsafe`, which this workspace forbids.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every cgroup directory this module creates.
pub const CGROUP_PREFIX: &str = "nodemedic-test-";

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!(
        "{CGROUP_PREFIX}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process that is killed and reaped on drop.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
}

impl Spawned {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map_or(0, |c| i32::try_from(c.id()).unwrap_or(0))
    }

    /// Waits for the child to print one line (its "ready" handshake).
    pub fn wait_ready(&mut self) -> std::io::Result<String> {
        let out = self
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or_else(|| std::io::Error::other("child has no piped stdout"))?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::other("child exited before it was ready"));
        }
        Ok(line.trim().to_owned())
    }

    /// Gives up the handle of a child that was reaped elsewhere.
    pub fn forget(&mut self) {
        self.child = None;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A parent (`sleep`) with `n` zombie children it never reaps. The shell
/// starts `n` short sleeps in the background, then execs into `sleep`, which
/// keeps the pid and the children but never calls wait(). The children
/// outlive the exec by `delay`, so none is reaped by the shell.
pub fn zombie_parent(n: usize, lifetime: Duration) -> std::io::Result<Spawned> {
    let mut script = String::new();
    for _ in 0..n {
        script.push_str("sleep 0.3 & ");
    }
    script.push_str(&format!("exec sleep {}", lifetime.as_secs().max(1)));
    Ok(Spawned::new(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()?,
    ))
}

/// `n` plain `sleep` processes (they exit on their own after `lifetime`).
pub fn sleepers(n: usize, lifetime: Duration) -> std::io::Result<Vec<Spawned>> {
    (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg(lifetime.as_secs().max(1).to_string())
                .stdin(Stdio::null())
                .spawn()
                .map(Spawned::new)
        })
        .collect()
}

/// A cgroup v1 directory removed on drop (after its tasks are gone).
#[derive(Debug)]
pub struct CgroupDir {
    pub path: PathBuf,
}

impl CgroupDir {
    pub fn create(hierarchy: &Path) -> std::io::Result<Self> {
        let path = hierarchy.join(unique_name());
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    pub fn write(&self, file: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.path.join(file), value)
    }

    pub fn add(&self, pid: i32) -> std::io::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        // Tasks may take a moment to leave after being killed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The v1 freezer hierarchy, if mounted.
pub fn freezer_hierarchy() -> Option<PathBuf> {
    let p = PathBuf::from("/sys/fs/cgroup/freezer");
    p.join("tasks").exists().then_some(p)
}

/// The v1 cpu hierarchy, if mounted.
pub fn cpu_v1_hierarchy() -> Option<PathBuf> {
    ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cpu.cfs_quota_us").exists())
}

/// A task in uninterruptible sleep: a `sleep` inside a frozen cgroup v1
/// freezer group (frozen tasks show state `D`), or, without that freezer, a
/// python3 parent blocked in vfork() while its child sleeps. Dropping thaws,
/// kills and reaps it.
#[derive(Debug)]
pub struct DStateTask {
    pub pid: i32,
    freezer: Option<CgroupDir>,
    child: Spawned,
}

impl DStateTask {
    /// A frozen sleeper where the v1 freezer exists, else a vfork parent.
    pub fn spawn(lifetime: Duration) -> std::io::Result<Self> {
        match freezer_hierarchy() {
            Some(h) => Self::spawn_frozen(&h, lifetime),
            None => Self::spawn_vfork(lifetime),
        }
    }

    /// A `sleep` in a frozen cgroup v1 freezer group.
    pub fn spawn_frozen(freezer: &Path, lifetime: Duration) -> std::io::Result<Self> {
        let mut sleep = Command::new("sleep");
        sleep.arg(lifetime.as_secs().max(1).to_string());
        Self::spawn_frozen_with(freezer, sleep)
    }

    /// `cmd` (which must keep running, e.g. a `sleep`, possibly wrapped in
    /// `setpriv` to run as another user) frozen in a cgroup v1 freezer group.
    pub fn spawn_frozen_with(freezer: &Path, mut cmd: Command) -> std::io::Result<Self> {
        let group = CgroupDir::create(freezer)?;
        let child = Spawned::new(cmd.stdin(Stdio::null()).spawn()?);
        // A wrapper such as setpriv execs its command: freeze the command,
        // not the wrapper.
        let deadline = Instant::now() + Duration::from_secs(2);
        let wrapper = cmd.get_program().to_string_lossy().into_owned();
        while Instant::now() < deadline
            && std::fs::read_to_string(format!("/proc/{}/comm", child.pid()))
                .is_ok_and(|c| c.trim() == wrapper)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        group.add(child.pid())?;
        group.write("freezer.state", "FROZEN")?;
        Ok(Self {
            pid: child.pid(),
            freezer: Some(group),
            child,
        })
    }

    /// A python3 process blocked in vfork() (a killable uninterruptible
    /// wait, shown as `D`) while its child sleeps before exiting.
    pub fn spawn_vfork(lifetime: Duration) -> std::io::Result<Self> {
        Self::spawn_vfork_child(&format!("libc.sleep({})", lifetime.as_secs().max(1)))
    }

    /// A python3 process blocked in vfork() whose child reads one byte of
    /// `path` before it exits: if that read never returns, the child is
    /// stuck and its parent waits on it.
    pub fn spawn_vfork_reading(path: &Path) -> std::io::Result<Self> {
        let path = path
            .to_str()
            .filter(|p| !p.contains(['\'', '\\', '\n']))
            .ok_or_else(|| std::io::Error::other("path not usable in a script"))?;
        Self::spawn_vfork_child(&format!(
            "fd = libc.open(b'{path}', 0)\n    buf = ctypes.create_string_buffer(1)\n    libc.read(fd, buf, 1)"
        ))
    }

    /// The children of this task's process (`/proc/PID/task/PID/children`):
    /// for a vfork parent, its vfork child.
    pub fn children(&self) -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// python3 calling vfork(); the child runs `body` (python statements
    /// with `ctypes` and `libc` at hand, indented by four spaces after the
    /// first line), then `_exit(0)`.
    fn spawn_vfork_child(body: &str) -> std::io::Result<Self> {
        let script = format!(
            "import ctypes\nlibc = ctypes.CDLL(None)\nif libc.vfork() == 0:\n    {body}\n    libc._exit(0)\n"
        );
        let child = Spawned::new(
            Command::new("python3")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .spawn()?,
        );
        Ok(Self {
            pid: child.pid(),
            freezer: None,
            child,
        })
    }
}

/// SIGKILLs every process whose parent is `ppid` (read from /proc).
pub fn kill_children_of(ppid: i32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if crate::ppid_of(pid) == Some(ppid)
            && let Some(p) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for DStateTask {
    fn drop(&mut self) {
        // A frozen task cannot act on SIGKILL until thawed.
        if let Some(g) = &self.freezer {
            let _ = g.write("freezer.state", "THAWED");
        }
        // The vfork child would otherwise sleep on as an orphan.
        kill_children_of(self.pid);
        self.child.kill();
        self.freezer.take();
    }
}

/// Runs `nodemedic-workload <args>` and waits for its ready line.
pub fn helper(exe: &Path, args: &[&str]) -> std::io::Result<Spawned> {
    helper_line(exe, args).map(|(s, _)| s)
}

/// [`helper`], also returning the ready line.
pub fn helper_line(exe: &Path, args: &[&str]) -> std::io::Result<(Spawned, String)> {
    let mut s = Spawned::new(
        Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let line = s.wait_ready()?;
    Ok((s, line))
}

/// A process holding `count` extra fds under a soft RLIMIT_NOFILE of `soft`.
pub fn fd_hoarder(exe: &Path, count: u64, soft: u64) -> std::io::Result<Spawned> {
    helper(
        exe,
        &[
            "hold-fds",
            &count.to_string(),
            "--soft-limit",
            &soft.to_string(),
        ],
    )
}

/// A process whose comm is `name` (at most 15 bytes are kept by the kernel).
pub fn renamed(exe: &Path, name: &str) -> std::io::Result<Spawned> {
    helper(exe, &["rename", name])
}

/// A busy loop in a fresh cgroup v1 CPU group limited to `quota_us` per
/// `period_us`. Drop order (process, then group) is the field order.
#[derive(Debug)]
pub struct ThrottledSpinner {
    pub spinner: Spawned,
    pub group: CgroupDir,
}

impl ThrottledSpinner {
    pub fn spawn(exe: &Path, quota_us: u64, period_us: u64) -> std::io::Result<Self> {
        let h = cpu_v1_hierarchy()
            .ok_or_else(|| std::io::Error::other("no cgroup v1 cpu hierarchy"))?;
        let group = CgroupDir::create(&h)?;
        group.write("cpu.cfs_period_us", &period_us.to_string())?;
        group.write("cpu.cfs_quota_us", &quota_us.to_string())?;
        let spinner = helper(exe, &["spin"])?;
        group.add(spinner.pid())?;
        Ok(Self { spinner, group })
    }

    /// Path of the group below the cpu hierarchy's mount (as the scanner reports it).
    pub fn cgroup_path(&self) -> String {
        format!(
            "/{}",
            self.group
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        )
    }
}

/// Removes groups left behind by a generator that was killed with SIGKILL:
/// thaws and kills their tasks, then removes them. Returns how many.
pub fn cleanup_stale_groups() -> usize {
    let mut removed = 0;
    for h in [freezer_hierarchy(), cpu_v1_hierarchy()]
        .into_iter()
        .flatten()
    {
        let Ok(entries) = std::fs::read_dir(&h) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(CGROUP_PREFIX) {
                continue;
            }
            let dir = e.path();
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            let g = CgroupDir { path: dir };
            drop(g);
            removed += 1;
        }
    }
    removed
}

/// Prints the ready line a helper's parent waits for.
pub fn announce_ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
}

/// A running `nodemedic-workload run` (a mixed workload of `sleepers`
/// sleeping processes plus zombies, fd hoarders, threads and — as root —
/// D-state tasks and a throttled spinner), stopped and cleaned up when
/// dropped: closing its stdin makes it kill and reap everything.
#[derive(Debug)]
pub struct Generator {
    child: Child,
    /// Its ready line, e.g. "ready: 5012 processes spawned in 3.1s".
    pub ready: String,
}

impl Generator {
    pub fn start(sleepers: usize, root: bool) -> std::io::Result<Self> {
        let mut child = Command::new(crate::workload_exe())
            .args(["run", "--stop-on-stdin-eof", "--duration", "30m"])
            .args(["--sleepers", &sleepers.to_string()])
            .args(["--zombie-parents", "2", "--zombies-per-parent", "25"])
            .args(["--fd-hoarders", "2", "--fds-each", "900", "--threads", "64"])
            .args(["--d-state", if root { "2" } else { "0" }])
            .args(["--spinners", if root { "1" } else { "0" }])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut ready = String::new();
        BufReader::new(out).read_line(&mut ready)?;
        if !ready.starts_with("ready") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("workload failed: {ready:?}")));
        }
        Ok(Self {
            child,
            ready: ready.trim().to_owned(),
        })
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
