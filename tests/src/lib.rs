//! Test harness for nodemedic: a real Kubernetes control plane (etcd +
//! kube-apiserver) started by the tests themselves, in the spirit of
//! controller-runtime's envtest.
//!
//! * [`assets`] finds the binaries: `$KUBEBUILDER_ASSETS`, else the cache that
//!   `tests/envtest/provision.sh` fills (`$HOME/.cache/nodemedic/envtest/<version>`).
//! * [`ControlPlane`] starts etcd and kube-apiserver on free loopback ports with a
//!   temporary data dir, TLS serving, client-certificate authentication for the
//!   admin, ServiceAccount tokens (TokenRequest) and RBAC authorization, installs
//!   the CRDs from `crds/yaml/` and waits for them to be Established.
//! * [`ControlPlane::shared`] gives one control plane per test binary; every test
//!   isolates itself with [`unique_name`] and its own namespaces.
//!
//! Processes are owned by a small bash supervisor that stops them by pid and
//! removes the temp dir as soon as the test process closes the supervisor's
//! stdin, which also happens when the test process dies.

pub mod assets;
pub mod chart;
pub mod control_plane;
pub mod error;
pub mod pki;
pub mod prometheus;
pub mod workspace_bin;

pub use assets::Assets;
pub use control_plane::{CmdOutput, ControlPlane, ControlPlaneOptions, unique_name};
pub use error::Error;

/// Root of the repository (the workspace), found from this crate's manifest dir.
pub fn repo_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}
