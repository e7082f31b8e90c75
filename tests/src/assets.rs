//! Locating kube-apiserver, etcd, kubectl (and optionally helm).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The Kubernetes version `tests/envtest/provision.sh` pins (single source of truth:
/// the `K8S_VERSION=` line of that script).
pub fn pinned_kubernetes_version() -> &'static str {
    pinned("K8S_VERSION=").unwrap_or("unknown")
}

/// The etcd version `tests/envtest/provision.sh` pins.
pub fn pinned_etcd_version() -> &'static str {
    pinned("ETCD_VERSION=").unwrap_or("unknown")
}

fn pinned(prefix: &str) -> Option<&'static str> {
    const SCRIPT: &str = include_str!("../envtest/provision.sh");
    SCRIPT
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

/// Paths of the control-plane binaries.
#[derive(Debug, Clone)]
pub struct Assets {
    /// Folder holding them.
    pub dir: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kubectl`.
    pub kubectl: PathBuf,
    /// `helm`, when present.
    pub helm: Option<PathBuf>,
}

impl Assets {
    /// The folder to use: `$KUBEBUILDER_ASSETS` when set, else
    /// `${NODEMEDIC_ENVTEST_DIR:-$HOME/.cache/nodemedic/envtest}/<pinned version>`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let root = std::env::var_os("NODEMEDIC_ENVTEST_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."));
                home.join(".cache").join("nodemedic").join("envtest")
            });
        root.join(pinned_kubernetes_version())
    }

    /// Find the binaries in [`Assets::default_dir`].
    pub fn locate() -> Result<Self> {
        Self::in_dir(&Self::default_dir())
    }

    /// Find the binaries in `dir`; error naming every missing one.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let required = ["kube-apiserver", "etcd", "kubectl"];
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|name| !is_executable(&dir.join(name)))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingBinaries {
                dir: dir.to_path_buf(),
                missing: missing.join(", "),
            });
        }
        let helm = dir.join("helm");
        Ok(Self {
            dir: dir.to_path_buf(),
            kube_apiserver: dir.join("kube-apiserver"),
            etcd: dir.join("etcd"),
            kubectl: dir.join("kubectl"),
            helm: is_executable(&helm).then_some(helm),
        })
    }
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_are_read_from_the_provisioning_script() {
        let v = pinned_kubernetes_version();
        assert!(
            v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
            "unexpected pinned version {v:?}"
        );
        assert_ne!(pinned_etcd_version(), "unknown");
    }

    #[test]
    fn missing_binaries_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Assets::in_dir(dir.path()).expect_err("empty dir must fail");
        let msg = err.to_string();
        assert!(msg.contains("kube-apiserver, etcd, kubectl"), "{msg}");
        assert!(msg.contains("provision.sh"), "{msg}");
    }
}
