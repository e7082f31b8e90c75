//! Schemas with bounds for the Kubernetes types the API embeds
//! (`LabelSelector`, `Condition`, `IntOrString`): the schemas k8s-openapi
//! generates for them leave lists, maps, strings and integers unbounded.
//! Used through `#[schemars(schema_with = ...)]`; the Rust types stay the
//! upstream ones.

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::bounds::{MAX_COUNT, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_NODES, MAX_WORD};

/// Entries of `matchLabels` and of `matchExpressions`.
pub const MAX_SELECTOR_TERMS: u32 = 32;
/// Values of one `matchExpressions` entry.
pub const MAX_SELECTOR_VALUES: u32 = 64;
/// Conditions of a policy status.
pub const MAX_POLICY_CONDITIONS: u32 = 8;
/// A condition message (the metav1.Condition bound).
pub const MAX_CONDITION_MESSAGE: u32 = 32_768;
/// A condition reason (the metav1.Condition bound).
pub const MAX_CONDITION_REASON: u32 = 1024;

/// `spec.nodeSelector`: a LabelSelector over Node labels.
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "properties": {
            "matchExpressions": {
                "description": "Requirements on Node labels; all must hold.",
                "type": "array",
                "maxItems": MAX_SELECTOR_TERMS,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "description": "The label key.",
                            "type": "string",
                            "maxLength": MAX_LABEL_KEY,
                        },
                        // Not an enum: the operator reports an unknown
                        // operator on the policy (Ready=False,
                        // InvalidSelector), as for selectors stored before.
                        "operator": {
                            "description": "In, NotIn, Exists or DoesNotExist.",
                            "type": "string",
                            "maxLength": 16,
                        },
                        "values": {
                            "description": "Label values: non-empty for In and NotIn, empty for Exists and DoesNotExist.",
                            "type": "array",
                            "maxItems": MAX_SELECTOR_VALUES,
                            "items": {"type": "string", "maxLength": MAX_LABEL_VALUE},
                        },
                    },
                },
            },
            "matchLabels": {
                "description": "Labels the Node must carry with exactly these values.",
                "type": "object",
                "maxProperties": MAX_SELECTOR_TERMS,
                "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE},
                "x-kubernetes-validations": [{
                    "rule": "self.all(k, size(k) <= 317)",
                    "message": "matchLabels keys must be at most 317 characters (a 253-character prefix, '/' and a 63-character name)",
                }],
            },
        },
    })
}

/// `spec.safety.maxUnhealthy`: a node count or a percentage.
pub fn max_unhealthy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "nullable": true,
        "maximum": MAX_NODES,
        "maxLength": 7,
        "default": "10%",
    })
}

/// `status.conditions` of a policy: metav1.Condition with its upstream
/// bounds, at most eight, a list-map keyed by `type`.
pub fn policy_conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_POLICY_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "lastTransitionTime is the last time the condition transitioned from one status to another.",
                    "type": "string",
                    "format": "date-time",
                },
                "message": {
                    "description": "message is a human readable message indicating details about the transition. This may be an empty string.",
                    "type": "string",
                    "maxLength": MAX_CONDITION_MESSAGE,
                },
                "observedGeneration": {
                    "description": "observedGeneration represents the .metadata.generation that the condition was set based upon.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                    "maximum": MAX_COUNT,
                },
                "reason": {
                    "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition.",
                    "type": "string",
                    "maxLength": MAX_CONDITION_REASON,
                },
                "status": {
                    "description": "status of the condition, one of True, False, Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                },
                "type": {
                    "description": "type of condition in CamelCase.",
                    "type": "string",
                    "maxLength": MAX_WORD,
                },
            },
        },
    })
}
