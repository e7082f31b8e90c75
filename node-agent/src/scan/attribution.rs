//! Maps a cgroup path to the pod and container that own it.
//!
//! Shapes handled (v1 and v2 paths look the same below the mount point):
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<cid>` (containerd),
//!   `.../pod<uid>/crio-<cid>` (CRI-O), `/docker/<cid>` (plain docker)
//! - systemd driver: `/kubepods.slice/kubepods-besteffort.slice/
//!   kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<cid>.scope`,
//!   `crio-<cid>.scope`, `docker-<cid>.scope`
//! - kind / nested nodes: any prefix before those (`/kubelet.slice/kubelet-kubepods.slice/...`,
//!   `/docker/<node>/kubepods/...`).

use super::parse::CgroupLine;
use serde::Serialize;

/// The container runtime a cgroup path points at, when the path says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    /// A bare container ID under a pod (containerd and docker with cgroupfs
    /// use the same shape).
    Unknown,
}

impl Runtime {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Unknown => "unknown",
        }
    }
}

/// Who owns a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribution {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// CRI-O's conmon monitor, not the workload itself.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conmon: bool,
}

impl Attribution {
    pub fn is_empty(&self) -> bool {
        self.pod_uid.is_none() && self.container_id.is_none()
    }
}

/// Attributes a single cgroup path.
pub fn attribute_path(path: &str) -> Attribution {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let pod_at = components
        .iter()
        .rposition(|c| pod_uid_of_component(c).is_some());
    let mut out = Attribution::default();
    if let Some(i) = pod_at {
        out.pod_uid = pod_uid_of_component(components[i]);
        if let Some(next) = components.get(i + 1)
            && let Some((id, runtime, conmon)) = container_of_component(next)
        {
            out.container_id = Some(id);
            out.runtime = Some(runtime);
            out.conmon = conmon;
        }
        return out;
    }
    // No pod: a plain docker container (`/docker/<id>`, `docker-<id>.scope`).
    if let Some(last) = components.last()
        && let Some((id, runtime, conmon)) = container_of_component(last)
    {
        let parent_is_docker =
            components.len() >= 2 && components[components.len() - 2] == "docker";
        if runtime != Runtime::Unknown || parent_is_docker {
            out.container_id = Some(id);
            out.runtime = Some(if parent_is_docker {
                Runtime::Docker
            } else {
                runtime
            });
            out.conmon = conmon;
        }
    }
    out
}

/// Attributes a process from the lines of its `/proc/PID/cgroup`: the unified
/// (v2) line wins when it points into a pod, else the first v1 line that does.
pub fn attribute_cgroup_lines(lines: &[CgroupLine<'_>]) -> Attribution {
    let unified = lines
        .iter()
        .filter(|l| l.hierarchy == 0 && l.controllers.is_empty());
    let v1 = lines
        .iter()
        .filter(|l| !(l.hierarchy == 0 && l.controllers.is_empty()));
    let mut best = Attribution::default();
    for line in unified.chain(v1) {
        let a = attribute_path(line.path);
        if a.container_id.is_some() {
            return a;
        }
        if best.is_empty() && !a.is_empty() {
            best = a;
        }
    }
    best
}

fn pod_uid_of_component(c: &str) -> Option<String> {
    // systemd: kubepods-burstable-pod<uid_underscored>.slice
    if let Some(stem) = c.strip_suffix(".slice")
        && let Some(idx) = stem.rfind("-pod")
    {
        let uid = stem[idx + 4..].replace('_', "-");
        return is_uid(&uid).then_some(uid);
    }
    // cgroupfs: pod<uid>
    let uid = c.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

/// Kubernetes pod UIDs are RFC 4122 UUIDs; static pods use a 32-hex hash.
fn is_uid(s: &str) -> bool {
    let hex_or_dash = s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let dashed = s.len() == 36
        && s.bytes()
            .enumerate()
            .all(|(i, b)| (b == b'-') == matches!(i, 8 | 13 | 18 | 23));
    let plain = s.len() == 32 && !s.contains('-');
    hex_or_dash && (dashed || plain)
}

fn container_of_component(c: &str) -> Option<(String, Runtime, bool)> {
    let stem = c.strip_suffix(".scope").unwrap_or(c);
    let (rest, runtime, conmon) = if let Some(r) = stem.strip_prefix("cri-containerd-") {
        (r, Runtime::Containerd, false)
    } else if let Some(r) = stem.strip_prefix("crio-conmon-") {
        (r, Runtime::Crio, true)
    } else if let Some(r) = stem.strip_prefix("crio-") {
        (r, Runtime::Crio, false)
    } else if let Some(r) = stem.strip_prefix("docker-") {
        (r, Runtime::Docker, false)
    } else {
        (stem, Runtime::Unknown, false)
    };
    let is_id = rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit());
    is_id.then(|| (rest.to_owned(), runtime, conmon))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::parse::parse_cgroup_lines;

    const UID: &str = "0d8a5f7e-1c2b-4a3d-9e8f-123456789abc";
    const UID_US: &str = "0d8a5f7e_1c2b_4a3d_9e8f_123456789abc";
    const CID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn check(path: &str, runtime: Option<Runtime>, pod: bool) {
        let a = attribute_path(path);
        assert_eq!(a.container_id.as_deref(), Some(CID), "{path}");
        assert_eq!(a.runtime, runtime, "{path}");
        assert_eq!(a.pod_uid.as_deref(), pod.then_some(UID), "{path}");
    }

    #[test]
    fn cgroupfs_driver_shapes() {
        check(
            &format!("/kubepods/burstable/pod{UID}/{CID}"),
            Some(Runtime::Unknown),
            true,
        );
        check(
            &format!("/kubepods/pod{UID}/{CID}"),
            Some(Runtime::Unknown),
            true,
        );
        check(
            &format!("/kubepods/besteffort/pod{UID}/crio-{CID}"),
            Some(Runtime::Crio),
            true,
        );
        check(&format!("/docker/{CID}"), Some(Runtime::Docker), false);
    }

    #[test]
    fn systemd_driver_shapes() {
        let base = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"
        );
        check(
            &format!("{base}/cri-containerd-{CID}.scope"),
            Some(Runtime::Containerd),
            true,
        );
        check(
            &format!("{base}/crio-{CID}.scope"),
            Some(Runtime::Crio),
            true,
        );
        check(
            &format!("{base}/docker-{CID}.scope"),
            Some(Runtime::Docker),
            true,
        );
        check(
            &format!("/system.slice/docker-{CID}.scope"),
            Some(Runtime::Docker),
            false,
        );
        let guaranteed =
            format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope");
        check(&guaranteed, Some(Runtime::Containerd), true);
    }

    #[test]
    fn kind_and_nested_shapes() {
        check(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{CID}.scope"
            ),
            Some(Runtime::Containerd),
            true,
        );
        check(
            &format!(
                "/docker/{}/kubepods/burstable/pod{UID}/{CID}",
                "a".repeat(64)
            ),
            Some(Runtime::Unknown),
            true,
        );
    }

    #[test]
    fn crio_conmon_is_marked() {
        let a = attribute_path(&format!("/kubepods/pod{UID}/crio-conmon-{CID}"));
        assert!(a.conmon);
    }

    #[test]
    fn pod_level_and_unrelated_paths() {
        let a = attribute_path(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(a.pod_uid.as_deref(), Some(UID));
        assert_eq!(a.container_id, None);
        assert!(attribute_path("/user.slice/user-0.slice/session-1.scope").is_empty());
        assert!(attribute_path("/").is_empty());
        assert!(attribute_path("/kubepods/podnot-a-uid/x").is_empty());
        assert!(attribute_path("/system.slice/containerd.service").is_empty());
    }

    #[test]
    fn v2_line_preferred_then_v1() {
        let text = format!("12:cpu,cpuacct:/kubepods/pod{UID}/{CID}\n1:name=systemd:/\n0::/\n");
        let lines = parse_cgroup_lines(&text).expect("parse");
        let a = attribute_cgroup_lines(&lines);
        assert_eq!(a.container_id.as_deref(), Some(CID));
        let v2 =
            format!("0::/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope\n");
        let lines = parse_cgroup_lines(&v2).expect("parse");
        assert_eq!(
            attribute_cgroup_lines(&lines).runtime,
            Some(Runtime::Containerd)
        );
    }
}
