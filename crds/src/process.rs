//! A process named so that PID reuse cannot redirect an action to another
//! one: pid plus start time. Used by the report's action requests and by
//! the operator's ledger.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::{MAX_COMM, MAX_COUNT, MAX_PID};

/// A process identity that survives PID reuse: pid plus start time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.startTime > 0").message(
    "target.startTime must be the process start time (/proc/PID/stat field 22); without it the agent cannot re-verify the target"
))]
pub struct ProcessTarget {
    /// PID in the host PID namespace.
    #[schemars(range(min = 2, max = MAX_PID))]
    pub pid: i32,
    /// Start time in clock ticks after boot (/proc/PID/stat field 22).
    #[schemars(range(max = MAX_COUNT))]
    pub start_time: u64,
    /// Command name (comm) when observed.
    #[serde(default)]
    #[schemars(length(max = MAX_COMM))]
    pub comm: String,
}
