//! Reading a NodeHealthPolicy from a YAML document the way `kubectl apply`
//! and the API server would: strict decoding, the structural schema, then
//! the CEL rules, each failure worded as the API server words it.

use serde_json::Value;

use crate::NodeHealthPolicy;
use crate::schema_check::{self, SchemaRejection};

/// Why a document is not a valid NodeHealthPolicy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyDocumentError {
    #[error("not YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),
    #[error("expected apiVersion nodemedic.io/v1alpha1 and kind NodeHealthPolicy, found {found}")]
    WrongKind { found: String },
    /// The API server would reject it; one line per problem, in its words.
    #[error("the API server would reject it:\n  {}", .0.join("\n  "))]
    Rejected(Vec<String>),
}

/// What the API server adds when schema errors kept it from running the
/// CEL rules (its words, `<nil>` field included).
pub const CEL_NOT_CHECKED: &str = "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// The policy CRD's `openAPIV3Schema`, as served.
pub fn policy_schema() -> Value {
    use kube::CustomResourceExt as _;
    let crd = NodeHealthPolicy::crd();
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

/// Parses and validates one policy document.
pub fn parse_policy(text: &str) -> Result<NodeHealthPolicy, PolicyDocumentError> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(PolicyDocumentError::Yaml)?;
    let object: Value = serde_json::to_value(&yaml)
        .map_err(|e| PolicyDocumentError::Rejected(vec![format!("not a JSON object: {e}")]))?;
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    if api_version != Some("nodemedic.io/v1alpha1") || kind != Some("NodeHealthPolicy") {
        return Err(PolicyDocumentError::WrongKind {
            found: format!(
                "apiVersion {} and kind {}",
                api_version.unwrap_or("(none)"),
                kind.unwrap_or("(none)")
            ),
        });
    }
    let mut problems = Vec::new();
    match schema_check::validate(&policy_schema(), &object) {
        Ok(()) => {}
        // Strict decoding stops the API server before validation.
        Err(rejection @ SchemaRejection::UnknownFields(_)) => {
            return Err(PolicyDocumentError::Rejected(rejection.lines()));
        }
        // Like the API server, the CEL rules are not run after a wrong type,
        // enum value, missing field or exceeded size bound, and it says so.
        Err(rejection) if rejection.blocks_cel() => {
            let mut lines = rejection.lines();
            lines.push(CEL_NOT_CHECKED.to_owned());
            return Err(PolicyDocumentError::Rejected(lines));
        }
        Err(rejection) => problems = rejection.lines(),
    }
    let policy: NodeHealthPolicy = match serde_json::from_value(object) {
        Ok(p) => p,
        // A schema error already explains why typed decoding failed.
        Err(_) if !problems.is_empty() => return Err(PolicyDocumentError::Rejected(problems)),
        Err(e) => return Err(PolicyDocumentError::Rejected(vec![e.to_string()])),
    };
    if let Err(errors) = policy.validate_cel() {
        let typed = serde_json::to_value(&policy).unwrap_or(Value::Null);
        problems.extend(errors.as_slice().iter().map(|e| {
            // The API server prints a scalar value, never an object or list.
            match lookup(&typed, &e.field_path) {
                Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => format!(
                    "{}: Invalid value: {}: {}",
                    e.field_path,
                    schema_check::show(v),
                    e.message
                ),
                _ => format!("{}: Invalid value: {}", e.field_path, e.message),
            }
        }));
    }
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyDocumentError::Rejected(problems))
    }
}

/// The value at a path such as `spec.actions.zombies[0].taint`.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            at = at.get(name)?;
        }
        for idx in indexes
            .split(['[', ']'])
            .filter(|s| !s.is_empty())
            .map(str::parse::<usize>)
        {
            at = at.get(idx.ok()?)?;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "apiVersion: nodemedic.io/v1alpha1\nkind: NodeHealthPolicy\nmetadata:\n  name: t\n";

    fn problems(body: &str) -> Vec<String> {
        match parse_policy(&format!("{HEAD}{body}")) {
            Ok(_) => Vec::new(),
            Err(PolicyDocumentError::Rejected(p)) => p,
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn a_valid_policy_parses_with_defaults() {
        let p = parse_policy(&format!("{HEAD}spec:\n  detectors:\n    zombies: {{}}\n"))
            .expect("valid");
        assert_eq!(p.spec.detectors.zombies.map(|z| z.threshold), Some(50));
    }

    #[test]
    fn what_the_cel_rules_alone_missed() {
        assert_eq!(
            problems("spec:\n  detectors:\n    zombie: {}\n"),
            ["strict decoding error: unknown field \"spec.detectors.zombie\""]
        );
        assert_eq!(
            problems("spec:\n  detectors:\n    zombies: {threshold: 0}\n"),
            [
                "spec.detectors.zombies.threshold: Invalid value: 0: spec.detectors.zombies.threshold in body should be greater than or equal to 1"
            ]
        );
        let nine = "      - action: Event\n".repeat(9);
        assert_eq!(
            problems(&format!(
                "spec:\n  detectors:\n    zombies: {{}}\n  actions:\n    zombies:\n{nine}"
            )),
            [
                "spec.actions.zombies: Too many: 9: must have at most 8 items",
                CEL_NOT_CHECKED
            ]
        );
    }

    #[test]
    fn cel_failures_name_the_field_and_type() {
        assert_eq!(
            problems("spec:\n  detectors:\n    fdLeak: {usageRatio: 1.5}\n"),
            ["spec.detectors.fdLeak: Invalid value: usageRatio must be in (0, 1]"]
        );
    }

    #[test]
    fn no_execute_taint_needs_allow_no_execute() {
        let step = |taint: &str| {
            problems(&format!(
                "spec:\n  detectors:\n    hungTasks: {{}}\n  actions:\n    hungTasks:\n      - action: Taint\n        taint: {taint}\n"
            ))
        };
        assert_eq!(
            step("{key: k, effect: NoExecute}"),
            [
                "spec.actions.hungTasks[0].taint: Invalid value: a NoExecute taint evicts pods through the taint manager, bypassing PodDisruptionBudgets, excludeNamespaces, the protect annotation and the DaemonSet exemption; use a Drain step instead, or set allowNoExecute: true"
            ]
        );
        assert!(step("{key: k, effect: NoExecute, allowNoExecute: true}").is_empty());
        assert!(step("{key: k, effect: NoSchedule}").is_empty());
    }

    #[test]
    fn drain_options_only_on_drain_and_evict_pod() {
        let step = |action: &str| {
            problems(&format!(
                "spec:\n  detectors:\n    zombies: {{}}\n  actions:\n    zombies:\n      - action: {action}\n        drain: {{deleteEmptyDirData: true, evictUnmanagedPods: true}}\n"
            ))
        };
        assert!(step("Drain").is_empty());
        assert!(step("EvictPod").is_empty());
        assert_eq!(
            step("Cordon"),
            [
                "spec.actions.zombies[0]: Invalid value: drain is only meaningful for the Drain and EvictPod actions"
            ]
        );
        let p = parse_policy(&format!(
            "{HEAD}spec:\n  detectors:\n    zombies: {{}}\n  actions:\n    zombies:\n      - action: Drain\n        drain: {{evictUnmanagedPods: true}}\n"
        ))
        .expect("valid");
        let drain = p.spec.actions.zombies[0].drain.expect("drain options");
        assert!(drain.evict_unmanaged_pods && !drain.delete_emptydir_data);
    }

    #[test]
    fn wrong_kind_is_named() {
        let err = parse_policy("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
            .expect_err("not a policy");
        assert!(err.to_string().contains("kind ConfigMap"), "{err}");
    }

    #[test]
    fn lookup_walks_indexes() {
        let v = serde_json::json!({"spec": {"a": [{"b": 1}, {"b": 2}]}});
        assert_eq!(lookup(&v, "spec.a[1].b"), Some(&serde_json::json!(2)));
        assert_eq!(lookup(&v, "spec.a[5]"), None);
    }
}
