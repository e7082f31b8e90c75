//! The operator's errors. Each has a stable [`Error::reason`], used as the
//! `reason` label of `nodemedic_operator_reconcile_errors_total` and in logs.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the reconcile loop and of startup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This process does not hold the lease (or its lease may have expired):
    /// it must not act.
    #[error("not the leader; acting stopped")]
    NotLeader,

    /// A write lost an optimistic-concurrency race (409); retried.
    #[error("conflict writing {what}; retrying with fresh data")]
    Conflict {
        what: String,
        #[source]
        source: kube::Error,
    },

    /// Any other Kubernetes API error.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },

    /// The API server refused for lack of permissions (403).
    #[error("{what}: forbidden (check the operator's RBAC): {source}")]
    Forbidden {
        what: String,
        #[source]
        source: kube::Error,
    },

    /// An object could not be serialized for a write.
    #[error("serialize {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A watch cache has not synced yet.
    #[error("caches have not synced yet")]
    NotSynced,

    /// Bad flags or environment.
    #[error("configuration: {0}")]
    Config(String),

    /// The lease could not be managed.
    #[error("leader election: {0}")]
    Lease(String),

    /// The admin endpoint could not be served.
    #[error("admin endpoint {addr}: {source}")]
    Admin {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Every [`Error::reason`]: the metrics start each at 0, so that an
    /// error rate reads 0 (not "no data") until the first error.
    pub const REASONS: [&'static str; 9] = [
        "NotLeader",
        "Conflict",
        "KubeApi",
        "Forbidden",
        "Serialize",
        "NotSynced",
        "Config",
        "LeaderElection",
        "Admin",
    ];

    /// A stable, CamelCase reason for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotLeader => "NotLeader",
            Error::Conflict { .. } => "Conflict",
            Error::Kube { .. } => "KubeApi",
            Error::Forbidden { .. } => "Forbidden",
            Error::Serialize { .. } => "Serialize",
            Error::NotSynced => "NotSynced",
            Error::Config(_) => "Config",
            Error::Lease(_) => "LeaderElection",
            Error::Admin { .. } => "Admin",
        }
    }

    /// Classifies a client error from an operation described by `what`.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        let what = what.into();
        match api_code(&source) {
            Some(409) => Error::Conflict { what, source },
            Some(403) => Error::Forbidden { what, source },
            _ => Error::Kube { what, source },
        }
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable_camel_case_and_all_listed() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("x", "x").with_code(code),
            ))
        };
        let errors = [
            Error::NotLeader,
            Error::kube("x", api(409)),
            Error::kube("x", api(500)),
            Error::kube("x", api(403)),
            Error::Serialize {
                what: "x".into(),
                source: <serde_json::Error as serde::de::Error>::custom("x"),
            },
            Error::NotSynced,
            Error::Config("x".into()),
            Error::Lease("x".into()),
            Error::Admin {
                addr: "x".into(),
                source: std::io::Error::other("x"),
            },
        ];
        let reasons: std::collections::BTreeSet<_> = errors.iter().map(Error::reason).collect();
        assert_eq!(
            reasons,
            Error::REASONS.into_iter().collect(),
            "Error::REASONS lists every reason, once"
        );
        for r in reasons {
            assert!(r.chars().next().is_some_and(char::is_uppercase), "{r}");
            assert!(!r.contains(' '), "{r}");
        }
    }
}
