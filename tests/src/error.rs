//! Errors of the harness: every one says what to do next.

use std::path::PathBuf;

/// Anything that can go wrong while provisioning or driving a test control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane binaries are not where the harness looked.
    #[error(
        "control-plane binaries missing in {dir}: {missing}. Run `tests/envtest/provision.sh` \
         from the repository root, or set KUBEBUILDER_ASSETS to a folder holding \
         kube-apiserver, etcd and kubectl"
    )]
    MissingBinaries {
        /// Folder searched.
        dir: PathBuf,
        /// Names of the missing binaries, comma separated.
        missing: String,
    },
    /// promtool or prometheus (the alert tests) is not where the harness looked.
    #[error(
        "promtool/prometheus not usable in {dir}: {reason}. Run `tests/prometheus/provision.sh` \
         from the repository root (it fetches Debian's `prometheus` package with apt-get \
         download), or set NODEMEDIC_PROMETHEUS_BIN_DIR to a folder holding promtool and \
         prometheus"
    )]
    MissingPrometheus {
        /// Folder searched.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A binary of the workspace could not be built for a test.
    #[error(
        "{binary}: {reason}. Build it with `cargo build -p {package}` (same CARGO_TARGET_DIR \
         and profile), or run `cargo test --workspace` (what `make test` runs)"
    )]
    WorkspaceBinary {
        /// The binary's path.
        binary: PathBuf,
        /// Its package.
        package: String,
        /// What went wrong.
        reason: String,
    },
    /// A process of the control plane exited while starting.
    #[error("{process} exited while starting (see {log})\n--- last lines of {log} ---\n{tail}")]
    ProcessExited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Its log file.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
    /// The API server did not become ready in time.
    #[error(
        "kube-apiserver did not become ready within {timeout_secs}s: {reason}\n\
         --- last lines of {log} ---\n{tail}"
    )]
    NotReady {
        /// How long we waited.
        timeout_secs: u64,
        /// Last error seen while probing `/readyz`.
        reason: String,
        /// API server log file.
        log: PathBuf,
        /// Last lines of that log.
        tail: String,
    },
    /// A CRD did not reach the Established condition.
    #[error("CRD {name} not Established within {timeout_secs}s (last conditions: {conditions})")]
    CrdNotEstablished {
        /// CRD name.
        name: String,
        /// How long we waited.
        timeout_secs: u64,
        /// Last seen conditions, rendered.
        conditions: String,
    },
    /// The shared control plane failed to start earlier in this test binary.
    #[error("the shared control plane failed to start: {0}")]
    SharedStartFailed(String),
    /// File-system or process-spawning failure.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),
    /// A kubeconfig could not be read or turned into a client config.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// An API call failed.
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    /// A YAML document could not be parsed or written.
    #[error("YAML in {path}: {source}")]
    Yaml {
        /// File (or description) of the YAML.
        path: String,
        /// Underlying error.
        #[source]
        source: serde_yaml::Error,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;
