//! Where a detector's problem lives: one pod, or the node. Reported by the
//! agent per condition, read by the operator's ladders (StepScope) and
//! shown in the policy status.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::{MAX_LABEL_VALUE, MAX_NAME, MAX_WORD};

/// Where a detector's problem lives.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemScope {
    /// Every offender is in one pod.
    Pod,
    /// Host processes, or offenders in two or more pods.
    Node,
}

impl ProblemScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemScope::Pod => "Pod",
            ProblemScope::Node => "Node",
        }
    }
}

/// The pod a pod-contained problem lives in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CulpritPod {
    /// Pod UID (from the cgroup path).
    #[schemars(length(min = 1, max = MAX_WORD))]
    pub uid: String,
    /// Pod namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LABEL_VALUE))]
    pub namespace: Option<String>,
    /// Pod name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME))]
    pub name: Option<String>,
}

impl std::fmt::Display for CulpritPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => write!(f, "{ns}/{n}"),
            _ => write!(f, "pod {}", self.uid),
        }
    }
}
