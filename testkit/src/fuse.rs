//! A FUSE filesystem whose daemon stops answering: the real thing behind
//! "threads stuck on a dead network filesystem", made on demand.
//!
//! `nodemedic-workload fuse-serve DIR` opens `/dev/fuse`, mounts it on DIR
//! with `mount(2)` (type `fuse.nodemedic-test`) and speaks just enough of
//! the protocol to let a reader open the one file, `stuck`: it answers
//! INIT, LOOKUP, GETATTR, OPEN (direct I/O, so every read goes to the
//! daemon), FLUSH and RELEASE, and never answers READ. It answers INTERRUPT
//! with ENOSYS, as a daemon without interrupt support does.
//!
//! What the kernel (fs/fuse/dev.c, `request_wait_answer`) does with such a
//! read, seen on Linux 6.18: the reader first waits *interruptibly* (state
//! `S`); a signal turns that into a killable wait (`D`) and sends the daemon
//! an INTERRUPT; once the daemon has answered one INTERRUPT with ENOSYS the
//! connection is marked `no_interrupt` and every later request waits
//! killable (`D`) from the start. [`StuckFuse::start`] does exactly that
//! with a first reader (stopped with SIGSTOP), so the readers that follow
//! sit in `D` — a killable wait, like NFS's, that nodemedic must count.
//!
//! Cleanup never depends on the daemon's goodwill: dropping [`StuckFuse`]
//! aborts the connection (`/sys/fs/fuse/connections/N/abort` where fusectl
//! is mounted, which fails every pending request) and kills the daemon
//! (its `/dev/fuse` closing aborts the connection too), then kills the
//! readers, detaches the mount (`umount2(MNT_DETACH)`) and removes the
//! directory. If the test process
//! is killed outright, its helpers die with it (parent-death signal); the
//! daemon's `/dev/fuse` closing aborts the connection, and
//! `nodemedic-workload cleanup` detaches mounts left behind.

use crate::workload::{Spawned, helper, helper_line};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The filesystem type the daemon mounts (`fuse.` plus a subtype).
pub const FSTYPE: &str = "fuse.nodemedic-test";
/// The one file of the filesystem; reads of it never return.
pub const STUCK_FILE: &str = "stuck";

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;
const FOPEN_DIRECT_IO: u32 = 1;
const ROOT_ID: u64 = 1;
const FILE_ID: u64 = 2;
const IN_HEADER: usize = 40;

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// `struct fuse_attr` (88 bytes) of the root directory or the file.
fn attr(node: u64) -> Vec<u8> {
    let (size, mode, nlink): (u64, u32, u32) = if node == ROOT_ID {
        (0, 0o040_755, 2)
    } else {
        (1 << 20, 0o100_444, 1)
    };
    let mut a = Vec::with_capacity(88);
    for v in [node, size, size / 512, 0, 0, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    for v in [0u32, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    a
}

fn reply(dev: &OwnedFd, unique: u64, error: i32, payload: &[u8]) {
    let len = u32::try_from(16 + payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&error.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(payload);
    // ENOENT: the request was interrupted or aborted meanwhile.
    let _ = rustix::io::write(dev, &out);
}

/// "major:minor" of the mount on `dir`, from /proc/self/mountinfo (a
/// `stat()` of the mountpoint would itself wait for this daemon).
fn connection_of(dir: &Path) -> Option<u32> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_str()?;
    info.lines()
        .rev()
        .filter(|l| l.split(' ').nth(4) == Some(dir))
        .filter_map(|l| l.split(' ').nth(2))
        .filter_map(|dev| dev.split_once(':'))
        .filter(|(major, _)| *major == "0")
        .find_map(|(_, minor)| minor.parse().ok())
}

/// Mounts the filesystem on `dir` and serves it until the connection is
/// aborted or unmounted. `ready` gets the connection number (the name of
/// its directory below /sys/fs/fuse/connections) once mounted; `events`
/// gets one line per READ ("read pid=N") and INTERRUPT.
pub fn serve(
    dir: &Path,
    ready: impl FnOnce(u32),
    mut events: impl std::io::Write,
) -> std::io::Result<()> {
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let data = std::ffi::CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
        dev.as_raw_fd()
    ))
    .map_err(std::io::Error::other)?;
    rustix::mount::mount(
        "nodemedic-test",
        dir,
        FSTYPE,
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        data.as_c_str(),
    )?;
    let conn = connection_of(dir)
        .ok_or_else(|| std::io::Error::other("mounted, but not in /proc/self/mountinfo"))?;
    ready(conn);
    let mut buf = vec![0u8; (1 << 17) + 4096];
    loop {
        let n = match rustix::io::read(&dev, &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR | Errno::NOENT | Errno::AGAIN) => continue,
            // Unmounted or aborted.
            Err(Errno::NODEV | Errno::CONNABORTED) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let req = &buf[..n];
        if n < IN_HEADER {
            continue;
        }
        let opcode = u32_at(req, 4);
        let unique = u64_at(req, 8);
        let node = u64_at(req, 16);
        let pid = u32_at(req, 32);
        let body = &req[IN_HEADER..];
        let enoent = -(Errno::NOENT.raw_os_error());
        let enosys = -(Errno::NOSYS.raw_os_error());
        match opcode {
            FUSE_INIT => {
                let max_readahead = u32_at(body, 8);
                let mut out = Vec::with_capacity(64);
                for v in [7u32, 31, max_readahead, 0] {
                    out.extend_from_slice(&v.to_ne_bytes());
                }
                out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
                out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
                out.extend_from_slice(&4096u32.to_ne_bytes()); // max_write
                out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
                out.resize(64, 0);
                reply(&dev, unique, 0, &out);
            }
            FUSE_LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or_default();
                if node == ROOT_ID && name == STUCK_FILE.as_bytes() {
                    let mut out = Vec::with_capacity(128);
                    for v in [FILE_ID, 1, 3600, 3600] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    out.extend_from_slice(&[0u8; 8]);
                    out.extend_from_slice(&attr(FILE_ID));
                    reply(&dev, unique, 0, &out);
                } else {
                    reply(&dev, unique, enoent, &[]);
                }
            }
            FUSE_GETATTR => {
                let mut out = Vec::with_capacity(104);
                out.extend_from_slice(&3600u64.to_ne_bytes());
                out.extend_from_slice(&[0u8; 8]);
                out.extend_from_slice(&attr(if node == ROOT_ID { ROOT_ID } else { FILE_ID }));
                reply(&dev, unique, 0, &out);
            }
            FUSE_OPEN | FUSE_OPENDIR => {
                let flags = if opcode == FUSE_OPEN {
                    FOPEN_DIRECT_IO
                } else {
                    0
                };
                let mut out = Vec::with_capacity(16);
                out.extend_from_slice(&1u64.to_ne_bytes());
                out.extend_from_slice(&flags.to_ne_bytes());
                out.extend_from_slice(&0u32.to_ne_bytes());
                reply(&dev, unique, 0, &out);
            }
            FUSE_READ => {
                // The daemon "stops answering": this request stays pending.
                let _ = writeln!(events, "read pid={pid} unique={unique}");
                let _ = events.flush();
            }
            FUSE_INTERRUPT => {
                reply(&dev, unique, enosys, &[]);
                let _ = writeln!(events, "interrupt unique={unique} answered ENOSYS");
                let _ = events.flush();
            }
            FUSE_READDIR | FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_FLUSH => {
                reply(&dev, unique, 0, &[]);
            }
            FUSE_FORGET | FUSE_BATCH_FORGET => {}
            FUSE_DESTROY => {
                reply(&dev, unique, 0, &[]);
                return Ok(());
            }
            _ => reply(&dev, unique, enosys, &[]),
        }
    }
}

/// Aborts the connection `conn` (every pending request fails at once).
pub fn abort(conn: u32) -> std::io::Result<()> {
    std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1")
}

/// Detaches every mount of [`FSTYPE`] (left by a killed test), aborting
/// its connection first. Returns how many.
pub fn cleanup_stale_mounts() -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mut removed = 0;
    for line in info.lines() {
        let Some((_, after)) = line.split_once(" - ") else {
            continue;
        };
        if after.split(' ').next() != Some(FSTYPE) {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        if let Some(minor) = fields
            .get(2)
            .and_then(|d| d.strip_prefix("0:"))
            .and_then(|m| m.parse().ok())
        {
            let _ = abort(minor);
        }
        if let Some(dir) = fields.get(4)
            && rustix::mount::unmount(*dir, rustix::mount::UnmountFlags::DETACH).is_ok()
        {
            let _ = std::fs::remove_dir(dir);
            removed += 1;
        }
    }
    removed
}

/// The state letter of `pid`, from /proc.
fn state_of(pid: i32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// A mounted [`FSTYPE`] filesystem whose daemon never answers a read, with
/// the connection already in `no_interrupt` mode (every new read waits in
/// `D`); everything is undone on drop.
#[derive(Debug)]
pub struct StuckFuse {
    pub dir: PathBuf,
    pub conn: u32,
    events: PathBuf,
    readers: Vec<Spawned>,
    primer: Option<Spawned>,
    daemon: Option<Spawned>,
}

impl StuckFuse {
    /// Mounts a fresh filesystem under /tmp and primes it (see the module
    /// documentation). `exe` is the `nodemedic-workload` binary.
    pub fn start(exe: &Path) -> std::io::Result<Self> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nodemedic-fuse-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let events = dir.with_extension("events");
        std::fs::write(&events, "")?;
        let mut fuse = Self {
            dir,
            conn: 0,
            events,
            readers: Vec::new(),
            primer: None,
            daemon: None,
        };
        let dir_arg = fuse.dir.to_string_lossy().into_owned();
        let events_arg = fuse.events.to_string_lossy().into_owned();
        let (daemon, line) = helper_line(exe, &["fuse-serve", &dir_arg, "--events", &events_arg])?;
        fuse.daemon = Some(daemon);
        fuse.conn = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("conn="))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("daemon said {line:?}")))?;
        // The primer's read reaches the daemon, then SIGSTOP interrupts its
        // interruptible wait: the kernel sends INTERRUPT, the daemon answers
        // ENOSYS, and the connection is `no_interrupt` from then on.
        let primer = fuse.read_in_threads(exe, 0)?;
        let primer_pid = primer.pid();
        fuse.primer = Some(primer);
        fuse.wait_for_event(&format!("read pid={primer_pid} "))?;
        if let Some(p) = rustix::process::Pid::from_raw(primer_pid) {
            rustix::process::kill_process(p, rustix::process::Signal::STOP)?;
        }
        fuse.wait_for_event("interrupt")?;
        Ok(fuse)
    }

    /// The path whose reads never return.
    pub fn stuck_file(&self) -> PathBuf {
        self.dir.join(STUCK_FILE)
    }

    /// Starts a process whose `threads` threads each read the stuck file
    /// (with 0, its main thread reads); it is killed on drop.
    pub fn readers(&mut self, exe: &Path, threads: usize) -> std::io::Result<i32> {
        let r = self.read_in_threads(exe, threads)?;
        let pid = r.pid();
        self.readers.push(r);
        Ok(pid)
    }

    fn read_in_threads(&self, exe: &Path, threads: usize) -> std::io::Result<Spawned> {
        helper(
            exe,
            &[
                "fuse-read",
                &self.stuck_file().to_string_lossy(),
                "--threads",
                &threads.to_string(),
            ],
        )
    }

    /// Lines the daemon wrote so far (one per READ and INTERRUPT).
    pub fn events(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }

    fn wait_for_event(&self, what: &str) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.events().contains(what) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(std::io::Error::other(format!(
            "the FUSE daemon never saw {what:?}; events: {:?}; primer state {:?}",
            self.events(),
            self.primer
                .as_ref()
                .and_then(|p| state_of(p.pid()))
                .map(char::from)
        )))
    }
}

impl Drop for StuckFuse {
    fn drop(&mut self) {
        // Either ends every pending request: the abort file where fusectl
        // is mounted, and the daemon's death (its /dev/fuse closing) always.
        if self.conn != 0 {
            let _ = abort(self.conn);
        }
        self.daemon.take();
        self.readers.clear();
        self.primer.take();
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.events);
    }
}
