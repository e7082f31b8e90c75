//! Pid headroom: the node's limits (`kernel.pid_max`, `kernel.threads-max`)
//! and task count, and each pod cgroup's `pids.current` against its
//! `pids.max` (the cgroup v1 pids controller, or cgroup v2).

use super::attribution::attribute_path;
use super::cgroup::CgroupVersion;
use super::parse::ParseError;
use super::reader::ScanCounters;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Node-wide pid figures; each `None` when its file is missing or bad.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodePidsObs {
    pub pid_max: Option<u64>,
    pub threads_max: Option<u64>,
    /// Tasks (threads) on the node: the kernel's `nr_threads` from
    /// `/proc/loadavg`, zombies included (they hold their pid until reaped).
    pub tasks: Option<u64>,
}

/// One pod-level cgroup of a pids hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPidsObs {
    pub version: CgroupVersion,
    /// Path below the hierarchy's mount point, starting with `/`.
    pub path: String,
    pub pod_uid: String,
    /// `pids.current`: tasks charged to the pod, zombies included.
    pub current: u64,
    /// `pids.max`; `None` for "max" (no limit of its own).
    pub max: Option<u64>,
}

/// Everything about pids one scan saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsObs {
    pub node: NodePidsObs,
    pub pods: Vec<PodPidsObs>,
}

/// A mounted hierarchy with the pids controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsHierarchy {
    pub version: CgroupVersion,
    pub mount: PathBuf,
}

/// Bounds that keep a pathological cgroup tree from stalling a scan.
const MAX_DEPTH: usize = 12;
const MAX_CGROUPS: usize = 20_000;

/// Finds the pids hierarchy under `<host root>/sys/fs/cgroup`: a pure v2
/// mount with the pids controller, the v1 `pids` mount, or a hybrid host's
/// `unified` mount when the pids controller is bound there.
pub fn discover(host_root: &Path) -> Vec<PidsHierarchy> {
    let base = host_root.join("sys/fs/cgroup");
    let has_pids_v2 = |dir: &Path| {
        std::fs::read_to_string(dir.join("cgroup.controllers"))
            .map(|c| c.split_ascii_whitespace().any(|w| w == "pids"))
            .unwrap_or(false)
    };
    let mut out = Vec::new();
    if base.join("cgroup.controllers").exists() {
        if has_pids_v2(&base) {
            out.push(PidsHierarchy {
                version: CgroupVersion::V2,
                mount: base,
            });
        }
        return out;
    }
    let v1 = base.join("pids");
    if v1.join("cgroup.procs").exists() {
        out.push(PidsHierarchy {
            version: CgroupVersion::V1,
            mount: v1.canonicalize().unwrap_or(v1),
        });
    }
    let unified = base.join("unified");
    if has_pids_v2(&unified) {
        out.push(PidsHierarchy {
            version: CgroupVersion::V2,
            mount: unified,
        });
    }
    out
}

/// `pids.max`: a number, or "max" for no limit.
pub fn parse_pids_max(text: &str) -> Result<Option<u64>, ParseError> {
    match text.trim() {
        "max" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| ParseError::BadNumber("pids.max")),
    }
}

/// `pids.current`.
pub fn parse_pids_current(text: &str) -> Result<u64, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| ParseError::BadNumber("pids.current"))
}

fn count_io(counters: &mut ScanCounters, e: &std::io::Error) {
    match e.kind() {
        ErrorKind::NotFound => counters.vanished += 1,
        ErrorKind::PermissionDenied => counters.permission_denied += 1,
        _ => counters.io_errors += 1,
    }
}

/// Walks one hierarchy down to the pod-level cgroups (not below: a pod's
/// limit and count cover its containers) and reads their pids files.
pub fn sample(h: &PidsHierarchy, counters: &mut ScanCounters) -> Vec<PodPidsObs> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(h.mount.clone(), 0)];
    let mut visited = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_CGROUPS {
            counters.cgroups_truncated += 1 + stack.len() as u64;
            break;
        }
        let rel = format!(
            "/{}",
            dir.strip_prefix(&h.mount).unwrap_or(&dir).to_string_lossy()
        );
        let attribution = attribute_path(&rel);
        if let Some(uid) = attribution
            .pod_uid
            .filter(|_| attribution.container_id.is_none() && !attribution.conmon && dir != h.mount)
        {
            if let Some(obs) = sample_pod(h.version, &dir, rel, uid, counters) {
                out.push(obs);
            }
            continue;
        }
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if depth + 1 > MAX_DEPTH {
                            counters.cgroups_truncated += 1;
                        } else {
                            stack.push((entry.path(), depth + 1));
                        }
                    }
                }
            }
            Err(e) => count_io(counters, &e),
        }
    }
    out
}

fn sample_pod(
    version: CgroupVersion,
    dir: &Path,
    path: String,
    pod_uid: String,
    counters: &mut ScanCounters,
) -> Option<PodPidsObs> {
    let read =
        |file: &str, counters: &mut ScanCounters| match std::fs::read_to_string(dir.join(file)) {
            Ok(t) => Some(t),
            // A v2 pod cgroup without the pids controller enabled has no pids
            // files: nothing to report, and nothing wrong.
            Err(e) if e.kind() == ErrorKind::NotFound && dir.exists() => None,
            Err(e) => {
                count_io(counters, &e);
                None
            }
        };
    let current = read("pids.current", counters)?;
    let max = read("pids.max", counters)?;
    match (parse_pids_current(&current), parse_pids_max(&max)) {
        (Ok(current), Ok(max)) => Some(PodPidsObs {
            version,
            path,
            pod_uid,
            current,
            max,
        }),
        _ => {
            counters.unparsable += 1;
            None
        }
    }
}

/// Reads the node's limits; the task count comes from `/proc/loadavg`
/// (read with the node figures).
pub fn read_node_limits(
    proc_dir: impl rustix::fd::AsFd + Copy,
    counters: &mut ScanCounters,
) -> (Option<u64>, Option<u64>) {
    let mut buf = Vec::with_capacity(64);
    let mut number = |rel: &str, counters: &mut ScanCounters| match super::reader::read_at(
        proc_dir, rel, &mut buf,
    ) {
        Ok(()) => String::from_utf8_lossy(&buf)
            .trim()
            .parse::<u64>()
            .map_err(|_| counters.unparsable += 1)
            .ok(),
        Err(e) => {
            counters.record(e);
            None
        }
    };
    let pid_max = number("sys/kernel/pid_max", counters);
    let threads_max = number("sys/kernel/threads-max", counters);
    (pid_max, threads_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_files_parse_and_reject_garbage() {
        assert_eq!(parse_pids_max("max\n"), Ok(None));
        assert_eq!(parse_pids_max("1024\n"), Ok(Some(1024)));
        assert!(parse_pids_max("-1").is_err());
        assert!(parse_pids_max("").is_err());
        assert_eq!(parse_pids_current("17\n"), Ok(17));
        assert!(parse_pids_current("lots").is_err());
    }

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(file), text).expect("write");
    }

    const UID: &str = "0f6a1b3c-1111-4222-8333-944455556666";

    #[test]
    fn v2_pod_cgroups_are_found_and_not_walked_below() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().join("sys/fs/cgroup");
        write(&base, "cgroup.controllers", "cpuset cpu io memory pids\n");
        let pod = base.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        ));
        write(&pod, "pids.current", "42\n");
        write(&pod, "pids.max", "100\n");
        // A container below the pod: not reported on its own.
        let ctr = pod.join("cri-containerd-aaaa.scope");
        write(&ctr, "pids.current", "40\n");
        write(&ctr, "pids.max", "max\n");
        // A pod cgroup without the pids controller: skipped quietly.
        write(
            &base.join("kubepods.slice/kubepods-pod0f6a1b3c_1111_4222_8333_944455550000.slice"),
            "cpu.max",
            "max 100000\n",
        );
        let hs = discover(root.path());
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].version, CgroupVersion::V2);
        let mut counters = ScanCounters::default();
        let pods = sample(&hs[0], &mut counters);
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].pod_uid, UID);
        assert_eq!((pods[0].current, pods[0].max), (42, Some(100)));
        assert_eq!(counters, ScanCounters::default());
    }

    #[test]
    fn v1_pod_cgroups_with_no_limit_and_bad_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let v1 = root.path().join("sys/fs/cgroup/pids");
        write(&v1, "cgroup.procs", "1\n");
        let pod = v1.join(format!("kubepods/besteffort/pod{UID}"));
        write(&pod, "pids.current", "7\n");
        write(&pod, "pids.max", "max\n");
        let bad = v1.join("kubepods/pod0f6a1b3c-1111-4222-8333-944455550000");
        write(&bad, "pids.current", "seven\n");
        write(&bad, "pids.max", "max\n");
        let hs = discover(root.path());
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].version, CgroupVersion::V1);
        let mut counters = ScanCounters::default();
        let pods = sample(&hs[0], &mut counters);
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].path, format!("/kubepods/besteffort/pod{UID}"));
        assert_eq!((pods[0].current, pods[0].max), (7, None));
        assert_eq!(counters.unparsable, 1);
    }

    #[test]
    fn no_pids_controller_no_hierarchy() {
        let root = tempfile::tempdir().expect("tempdir");
        write(
            &root.path().join("sys/fs/cgroup"),
            "cgroup.controllers",
            "cpu memory\n",
        );
        assert!(discover(root.path()).is_empty());
    }
}
