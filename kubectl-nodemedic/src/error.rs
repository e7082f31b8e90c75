//! Errors a person can act on: each says what is wrong and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the cluster: {0}\n  check your kubeconfig and context (kubectl config current-context)"
    )]
    Connect(String),

    #[error(
        "the nodemedic CRDs are not installed in this cluster ({resource}.nodemedic.io not found)\n  install nodemedic first: helm install nodemedic charts/nodemedic -n nodemedic --create-namespace (docs/install.md)"
    )]
    NoCrds { resource: String },

    #[error(
        "forbidden: you cannot {verb} {resource}{scope}\n  ask for RBAC that grants verb \"{verb}\" on resource \"{resource}\" (API group \"{group}\"){hint}"
    )]
    Forbidden {
        verb: String,
        group: String,
        resource: String,
        scope: String,
        hint: String,
    },

    #[error("{kind} {name:?} not found{hint}")]
    NotFound {
        kind: String,
        name: String,
        hint: String,
    },

    #[error("{0}")]
    Api(String),

    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },

    #[error("{path}: not a NodeHealthPolicy: {reason}")]
    NotAPolicy { path: PathBuf, reason: String },

    #[error("the policy cannot be acted on (the operator would set Ready=False): {0}")]
    InvalidPolicy(String),

    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Exit code: 2 for what the user can fix in the command or the input,
    /// 1 for the cluster's answers.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Read { .. }
            | Error::NotAPolicy { .. }
            | Error::InvalidPolicy(_) => 2,
            _ => 1,
        }
    }

    /// Maps an API error for `verb` on `resource` (group `group`) to what a
    /// person can act on.
    pub fn from_kube(
        e: kube::Error,
        verb: &str,
        group: &str,
        resource: &str,
        name: Option<&str>,
    ) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 403 => Error::Forbidden {
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
                scope: name.map(|n| format!(" {n:?}")).unwrap_or_default(),
                hint: if group == "nodemedic.io" {
                    "; the chart's ClusterRole <release>-kubectl-viewer grants what status, explain and simulate read, <release>-kubectl-pauser also pause (docs/kubectl-plugin.md)".into()
                } else {
                    String::new()
                },
            },
            kube::Error::Api(s) if s.code == 404 && name.is_none() && group == "nodemedic.io" => {
                Error::NoCrds {
                    resource: resource.into(),
                }
            }
            kube::Error::Api(s) if s.code == 404 => Error::NotFound {
                kind: resource.trim_end_matches('s').into(),
                name: name.unwrap_or_default().into(),
                hint: String::new(),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Error::Connect(e.to_string()),
            _ => Error::Api(format!("{verb} {resource}: {e}")),
        }
    }
}
