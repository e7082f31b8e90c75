//! The nodemedic API (`nodemedic.io/v1alpha1`) and the pure logic shared by
//! the agent and the operator: policy ↔ node matching, threshold evaluation,
//! duration parsing. No I/O and no Kubernetes client code lives here.

pub mod api_doc;
pub mod bounded;
pub mod bounds;
pub mod conditions;
pub mod crd_yaml;
pub mod duration;
pub mod lenient;
pub mod pause;
pub mod policy;
pub mod policy_document;
pub mod process;
pub mod protected;
pub mod remediation;
pub mod report;
pub mod schema_check;
pub mod scope;
pub mod selector;
pub mod thresholds;

pub use conditions::Detector;
pub use duration::{KubeDuration, parse_duration};
pub use policy::{NodeHealthPolicy, NodeHealthPolicySpec, NodeHealthPolicyStatus, PolicyMode};
pub use remediation::{NodeRemediation, NodeRemediationSpec};
pub use report::{NodeHealthReport, NodeHealthReportSpec, NodeHealthReportStatus};
pub use thresholds::{EffectiveThresholds, NodePolicies, SelectedPolicy};

/// API group of every kind.
pub const GROUP: &str = "nodemedic.io";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";
