//! Pod and container names from the kubelet's log layout:
//! `/var/log/pods/<namespace>_<name>_<uid>/` and
//! `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`.
//! This is what a node knows without asking the API server or the CRI.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct PodDirectory {
    by_uid: HashMap<String, PodName>,
    container_names: HashMap<String, String>,
}

impl PodDirectory {
    pub fn load(host_root: &Path) -> Self {
        let mut dir = PodDirectory::default();
        if let Ok(entries) = std::fs::read_dir(host_root.join("var/log/pods")) {
            for e in entries.flatten() {
                if let Some((uid, pod)) = parse_pod_dir(&e.file_name().to_string_lossy()) {
                    dir.by_uid.insert(uid, pod);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(host_root.join("var/log/containers")) {
            for e in entries.flatten() {
                if let Some((cid, name)) = parse_container_log(&e.file_name().to_string_lossy()) {
                    dir.container_names.insert(cid, name);
                }
            }
        }
        dir
    }

    pub fn pod(&self, uid: &str) -> Option<&PodName> {
        self.by_uid.get(uid)
    }

    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        self.container_names.get(container_id).map(String::as_str)
    }
}

/// `<namespace>_<name>_<uid>`: namespaces and pod names are DNS labels or
/// subdomains, so they never contain `_`.
pub fn parse_pod_dir(name: &str) -> Option<(String, PodName)> {
    let mut parts = name.splitn(3, '_');
    let namespace = parts.next().filter(|s| !s.is_empty())?;
    let pod = parts.next().filter(|s| !s.is_empty())?;
    let uid = parts.next().filter(|s| !s.is_empty() && !s.contains('_'))?;
    Some((
        uid.to_owned(),
        PodName {
            namespace: namespace.to_owned(),
            name: pod.to_owned(),
        },
    ))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` → (container id, container).
pub fn parse_container_log(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, cid) = stem.rsplit_once('-')?;
    if cid.len() != 64 || !cid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let container = rest.rsplit_once('_')?.1;
    (!container.is_empty()).then(|| (cid.to_owned(), container.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dirs() {
        let (uid, pod) = parse_pod_dir(
            "kube-system_coredns-5d78c9869d-abcde_0d8a5f7e-1c2b-4a3d-9e8f-123456789abc",
        )
        .expect("valid");
        assert_eq!(uid, "0d8a5f7e-1c2b-4a3d-9e8f-123456789abc");
        assert_eq!(pod.namespace, "kube-system");
        assert_eq!(pod.name, "coredns-5d78c9869d-abcde");
        assert!(parse_pod_dir("nounderscore").is_none());
        assert!(parse_pod_dir("a__b").is_none());
    }

    #[test]
    fn container_logs() {
        let cid = "ab".repeat(32);
        let (id, name) =
            parse_container_log(&format!("web-0_shop_nginx-sidecar-{cid}.log")).expect("valid");
        assert_eq!(id, cid);
        assert_eq!(name, "nginx-sidecar");
        assert!(parse_container_log("web-0_shop_nginx-1234.log").is_none());
    }
}
