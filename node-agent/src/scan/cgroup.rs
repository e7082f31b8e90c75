//! CPU bandwidth of container cgroups (and of any cgroup with a quota).

use super::attribution::{Attribution, attribute_path};
use super::parse::{self, CpuQuota, CpuStat, Pressure};
use super::reader::ScanCounters;
use serde::Serialize;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A hierarchy that has the cpu controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuHierarchy {
    pub version: CgroupVersion,
    pub mount: PathBuf,
}

/// One cgroup's CPU bandwidth counters at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupCpuObs {
    pub version: CgroupVersion,
    /// Path below the hierarchy's mount point, starting with `/`.
    pub path: String,
    pub quota: Option<CpuQuota>,
    pub stat: CpuStat,
    pub pressure: Option<Pressure>,
    pub attribution: Attribution,
}

/// Bounds that keep a pathological cgroup tree from stalling a scan.
const MAX_DEPTH: usize = 12;
const MAX_CGROUPS: usize = 20_000;

/// Finds the cpu hierarchies under `<host root>/sys/fs/cgroup`: a pure v2
/// mount, or the v1 `cpu` (or `cpu,cpuacct`) mount; a hybrid host's
/// `unified` mount is used only if the cpu controller is enabled there.
pub fn discover(host_root: &Path) -> Vec<CpuHierarchy> {
    let base = host_root.join("sys/fs/cgroup");
    let has_cpu_v2 = |dir: &Path| {
        std::fs::read_to_string(dir.join("cgroup.controllers"))
            .map(|c| c.split_ascii_whitespace().any(|w| w == "cpu"))
            .unwrap_or(false)
    };
    let mut out = Vec::new();
    if base.join("cgroup.controllers").exists() {
        if has_cpu_v2(&base) {
            out.push(CpuHierarchy {
                version: CgroupVersion::V2,
                mount: base,
            });
        }
        return out;
    }
    for name in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
        let dir = base.join(name);
        if dir.join("cpu.cfs_quota_us").exists() {
            let canonical = dir.canonicalize().unwrap_or(dir);
            if !out.iter().any(|h: &CpuHierarchy| h.mount == canonical) {
                out.push(CpuHierarchy {
                    version: CgroupVersion::V1,
                    mount: canonical,
                });
            }
        }
    }
    let unified = base.join("unified");
    if has_cpu_v2(&unified) {
        out.push(CpuHierarchy {
            version: CgroupVersion::V2,
            mount: unified,
        });
    }
    out
}

fn count_io(counters: &mut ScanCounters, e: &std::io::Error) {
    match e.kind() {
        ErrorKind::NotFound => counters.vanished += 1,
        ErrorKind::PermissionDenied => counters.permission_denied += 1,
        _ => counters.io_errors += 1,
    }
}

fn read_quota(
    dir: &Path,
    version: CgroupVersion,
) -> std::io::Result<Option<Result<Option<CpuQuota>, parse::ParseError>>> {
    match version {
        CgroupVersion::V1 => {
            let q = match std::fs::read_to_string(dir.join("cpu.cfs_quota_us")) {
                Ok(q) => q,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let p = std::fs::read_to_string(dir.join("cpu.cfs_period_us"))?;
            Ok(Some(parse::parse_cfs_quota(&q, &p)))
        }
        CgroupVersion::V2 => match std::fs::read_to_string(dir.join("cpu.max")) {
            Ok(m) => Ok(Some(parse::parse_cpu_max(&m))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// Walks one hierarchy and samples every container cgroup and every other
/// cgroup that has a CPU quota. Pod-level and QoS-level cgroups are skipped:
/// their containers are reported individually.
pub fn sample(h: &CpuHierarchy, counters: &mut ScanCounters) -> Vec<CgroupCpuObs> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(h.mount.clone(), 0)];
    let mut visited = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_CGROUPS {
            counters.cgroups_truncated += 1 + stack.len() as u64;
            break;
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
            Err(e) => {
                count_io(counters, &e);
                continue;
            }
        }
        if dir == h.mount {
            continue;
        }
        let rel = format!(
            "/{}",
            dir.strip_prefix(&h.mount).unwrap_or(&dir).to_string_lossy()
        );
        if let Some(obs) = sample_one(h.version, &dir, rel, counters) {
            out.push(obs);
        }
    }
    counters.cgroups += out.len() as u64;
    out
}

fn sample_one(
    version: CgroupVersion,
    dir: &Path,
    rel: String,
    counters: &mut ScanCounters,
) -> Option<CgroupCpuObs> {
    let attribution = attribute_path(&rel);
    let is_container = attribution.container_id.is_some() && !attribution.conmon;
    if attribution.conmon || (attribution.pod_uid.is_some() && !is_container) {
        return None;
    }
    let quota = match read_quota(dir, version) {
        Ok(Some(Ok(q))) => q,
        Ok(Some(Err(_))) => {
            counters.unparsable += 1;
            None
        }
        Ok(None) => None,
        Err(e) => {
            count_io(counters, &e);
            None
        }
    };
    if !is_container && quota.is_none() {
        return None;
    }
    let stat = match std::fs::read_to_string(dir.join("cpu.stat")) {
        Ok(t) => match parse::parse_cpu_stat(&t) {
            Ok(s) => s,
            Err(_) => {
                counters.unparsable += 1;
                return None;
            }
        },
        Err(e) => {
            count_io(counters, &e);
            return None;
        }
    };
    let pressure = match version {
        CgroupVersion::V2 => std::fs::read_to_string(dir.join("cpu.pressure"))
            .ok()
            .and_then(|t| parse::parse_pressure(&t).ok()),
        CgroupVersion::V1 => None,
    };
    Some(CgroupCpuObs {
        version,
        path: rel,
        quota,
        stat,
        pressure,
        attribution,
    })
}
