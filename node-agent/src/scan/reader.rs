//! Low-level file access relative to an open directory, with one reused
//! buffer, and the classification of failures the scan counts instead of
//! aborting on.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;
use std::path::Path;

/// What went wrong reading one file; the scan counts these and moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFailure {
    /// The process or thread exited between listing and reading.
    Vanished,
    /// EACCES/EPERM (e.g. `/proc/PID/fd` of another user without privileges).
    PermissionDenied,
    /// Any other I/O error.
    Io,
}

impl From<Errno> for ReadFailure {
    fn from(e: Errno) -> Self {
        match e {
            Errno::NOENT | Errno::SRCH | Errno::NOTDIR => ReadFailure::Vanished,
            Errno::ACCESS | Errno::PERM => ReadFailure::PermissionDenied,
            _ => ReadFailure::Io,
        }
    }
}

/// Counters of everything a scan skipped, exposed in the output so that a
/// partial view is never mistaken for a complete one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanCounters {
    pub processes: u64,
    pub threads: u64,
    pub vanished: u64,
    pub permission_denied: u64,
    pub unparsable: u64,
    pub io_errors: u64,
    pub cgroups: u64,
    /// Cgroup directories not visited because a bound was hit.
    pub cgroups_truncated: u64,
}

impl ScanCounters {
    pub fn record(&mut self, failure: ReadFailure) {
        match failure {
            ReadFailure::Vanished => self.vanished += 1,
            ReadFailure::PermissionDenied => self.permission_denied += 1,
            ReadFailure::Io => self.io_errors += 1,
        }
    }
}

/// Opens `path` as a directory handle.
pub fn open_dir(path: &Path) -> Result<OwnedFd, ReadFailure> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Reads a whole small file at `dir`/`rel` into `buf` (cleared first).
/// An empty read of a procfs file means the task is gone.
pub fn read_at(dir: impl AsFd, rel: &str, buf: &mut Vec<u8>) -> Result<(), ReadFailure> {
    buf.clear();
    let fd = rustix::fs::openat(dir, rel, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        let offered = buf.capacity() - buf.len();
        let n = rustix::io::read(&fd, rustix::buffer::spare_capacity(buf))?;
        // procfs, sysfs and cgroupfs files produce their content in one go: a
        // short read is the end, which saves the extra read() that returns 0.
        // No file the agent reads is larger than 1 MiB; stop rather than grow.
        if n < offered || buf.len() > 1 << 20 {
            break;
        }
    }
    Ok(())
}

/// Lists the entries of `dir`/`rel` (or `dir` itself when `rel` is empty),
/// calling `f` with each name except `.` and `..`.
pub fn for_each_entry(
    dir: impl AsFd,
    rel: &str,
    mut f: impl FnMut(&[u8], rustix::fs::FileType),
) -> Result<(), ReadFailure> {
    let fd = rustix::fs::openat(
        dir,
        if rel.is_empty() { "." } else { rel },
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut entries = Dir::new(fd)?;
    for entry in &mut entries {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        f(name, entry.file_type());
    }
    Ok(())
}

/// `stat()` of `dir`/`rel`, returning `st_size`.
pub fn size_at(dir: impl AsFd, rel: &str) -> Result<u64, ReadFailure> {
    let st = rustix::fs::statat(dir, rel, AtFlags::empty())?;
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// True when `dir` is a real procfs mount, where `st_size` of `/proc/PID/fd`
/// is the number of open fds (Linux ≥ 6.2).
pub fn is_procfs(dir: impl AsFd) -> bool {
    rustix::fs::fstatfs(dir)
        .map(|s| s.f_type as u64 == rustix::fs::PROC_SUPER_MAGIC as u64)
        .unwrap_or(false)
}
