//! Client-side validation of an object against its CRD's structural schema,
//! the way the API server does it on `kubectl apply`: strict decoding
//! (unknown fields), then types, enums, ranges, lengths, item counts and
//! required fields, with the API server's field paths and messages. The CEL
//! rules are checked separately (`validate_cel`), as the server does.
//!
//! This lets `nodemedic-agent scan --policy` reject exactly what the API
//! server would reject, with the same words.

use std::fmt;

use serde_json::Value;

/// One invalid field, as the API server words it (`field: detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `spec.actions.zombies[0].taint.key`.
    pub field: String,
    /// What is wrong, e.g. `Required value` or `Too many: 9: must have at most 8 items`.
    pub detail: String,
    /// A wrong type, unsupported enum value, missing required field, or a
    /// size bound exceeded: the API server does not run the CEL rules on an
    /// object with such an error.
    pub blocks_cel: bool,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

/// Why an object does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaRejection {
    /// Fields the schema does not declare. The API server's strict decoding
    /// rejects these before it validates anything else.
    UnknownFields(Vec<String>),
    /// Fields that break the schema.
    Invalid(Vec<FieldError>),
}

impl SchemaRejection {
    /// Whether the API server would skip the CEL rules for this object.
    pub fn blocks_cel(&self) -> bool {
        match self {
            SchemaRejection::UnknownFields(_) => true,
            SchemaRejection::Invalid(errors) => errors.iter().any(|e| e.blocks_cel),
        }
    }

    /// One line per problem, in the API server's words.
    pub fn lines(&self) -> Vec<String> {
        match self {
            SchemaRejection::UnknownFields(fields) => vec![format!(
                "strict decoding error: {}",
                fields
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            SchemaRejection::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }
}

impl fmt::Display for SchemaRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

/// Validates `object` (a whole custom resource: apiVersion, kind, metadata,
/// spec, ...) against `schema` (the version's `openAPIV3Schema`).
pub fn validate(schema: &Value, object: &Value) -> Result<(), SchemaRejection> {
    let mut unknown = Vec::new();
    collect_unknown(schema, object, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(SchemaRejection::UnknownFields(unknown));
    }
    let mut errors = Vec::new();
    check_metadata(object, &mut errors);
    check(schema, object, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SchemaRejection::Invalid(errors))
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// apiVersion, kind and metadata belong to every object; the API server
/// checks them itself, whatever the CRD's schema lists.
fn is_type_meta(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "metadata")
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Fields of `value` that `schema` does not declare (metadata is the API
/// server's own business and is not walked).
fn collect_unknown(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if preserves_unknown(schema) {
                return;
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, v) in map {
                let p = child(path, key);
                if path.is_empty() && is_type_meta(key) {
                    continue;
                }
                match (properties.and_then(|m| m.get(key)), additional) {
                    (Some(s), _) => collect_unknown(s, v, &p, out),
                    (None, Some(s)) if s.is_object() => collect_unknown(s, v, &p, out),
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) if properties.is_some() || additional.is_some() => out.push(p),
                    // An object schema without properties keeps anything.
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    collect_unknown(item_schema, v, &index(path, i), out);
                }
            }
        }
        _ => {}
    }
}

fn check_metadata(object: &Value, errors: &mut Vec<FieldError>) {
    let meta = object.get("metadata");
    let has = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !has("name") && !has("generateName") {
        errors.push(FieldError {
            field: "metadata.name".to_owned(),
            detail: "Required value: name or generateName is required".to_owned(),
            blocks_cel: true,
        });
    }
}

/// How the API server prints a value inside an error: strings quoted,
/// numbers and booleans bare, objects and arrays by their type.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".to_owned(),
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match (expected, value) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn invalid(errors: &mut Vec<FieldError>, path: &str, value: &Value, detail: String) {
    errors.push(FieldError {
        field: path.to_owned(),
        detail: format!("Invalid value: {}: {detail}", show(value)),
        blocks_cel: false,
    });
}

/// Go's `%v` of a float64 bound: integral values print without a fraction.
fn show_bound(bound: &Value) -> String {
    match bound.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => bound.to_string(),
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && let Some(t) = schema.get("type").and_then(Value::as_str)
        {
            errors.push(FieldError {
                field: path.to_owned(),
                detail: format!(
                    "Invalid value: \"null\": {path} in body must be of type {t}: \"null\""
                ),
                blocks_cel: true,
            });
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(FieldError {
                field: path.to_owned(),
                detail: format!(
                    "Invalid value: {}: {path} in body must be of type integer,string: {:?}",
                    show(value),
                    json_type(value)
                ),
                blocks_cel: true,
            });
            return;
        }
        // The bounds apply to the form the value takes.
        match value {
            Value::Number(n) => check_number(schema, value, n.as_f64(), path, errors),
            Value::String(s) => check_string(schema, value, s, path, errors),
            _ => {}
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_matches(t, value)
    {
        errors.push(FieldError {
            field: path.to_owned(),
            detail: format!(
                "Invalid value: {}: {path} in body must be of type {t}: {:?}",
                show(value),
                json_type(value)
            ),
            blocks_cel: true,
        });
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed
            .iter()
            .map(|v| match v {
                Value::String(s) => format!("{s:?}"),
                other => format!("{:?}", other.to_string()),
            })
            .collect();
        errors.push(FieldError {
            field: path.to_owned(),
            detail: format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                supported.join(", ")
            ),
            blocks_cel: true,
        });
    }
    match value {
        Value::Number(n) => check_number(schema, value, n.as_f64(), path, errors),
        Value::String(s) => check_string(schema, value, s, path, errors),
        Value::Array(items) => {
            let len = items.len();
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len as u64 > max
            {
                errors.push(FieldError {
                    field: path.to_owned(),
                    detail: format!("Too many: {len}: must have at most {max} items"),
                    blocks_cel: true,
                });
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (len as u64) < min
            {
                invalid(
                    errors,
                    path,
                    value,
                    format!("{path} in body should have at least {min} items"),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(item_schema, v, &index(path, i), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errors.push(FieldError {
                    field: path.to_owned(),
                    detail: format!("Too many: {}: must have at most {max} items", map.len()),
                    blocks_cel: true,
                });
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    errors.push(FieldError {
                        field: child(path, required),
                        detail: "Required value".to_owned(),
                        blocks_cel: true,
                    });
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                if path.is_empty() && is_type_meta(key) {
                    continue;
                }
                if let Some(s) = properties.and_then(|m| m.get(key)).or(additional) {
                    check(s, v, &child(path, key), errors);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_number(
    schema: &Value,
    value: &Value,
    n: Option<f64>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(n) = n else { return };
    let exclusive = |k: &str| schema.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(min) = schema.get("minimum")
        && let Some(m) = min.as_f64()
    {
        if exclusive("exclusiveMinimum") && n <= m {
            invalid(
                errors,
                path,
                value,
                format!("{path} in body should be greater than {}", show_bound(min)),
            );
        } else if n < m {
            invalid(
                errors,
                path,
                value,
                format!(
                    "{path} in body should be greater than or equal to {}",
                    show_bound(min)
                ),
            );
        }
    }
    if let Some(max) = schema.get("maximum")
        && let Some(m) = max.as_f64()
    {
        if exclusive("exclusiveMaximum") && n >= m {
            invalid(
                errors,
                path,
                value,
                format!("{path} in body should be less than {}", show_bound(max)),
            );
        } else if n > m {
            invalid(
                errors,
                path,
                value,
                format!(
                    "{path} in body should be less than or equal to {}",
                    show_bound(max)
                ),
            );
        }
    }
}

fn check_string(schema: &Value, value: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    // The API server counts characters (runes) for both bounds.
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errors.push(FieldError {
            field: path.to_owned(),
            detail: format!("Too long: may not be more than {max} bytes"),
            blocks_cel: true,
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        invalid(
            errors,
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["detectors"],
                    "properties": {
                        "mode": {"type": "string", "enum": ["Observe", "DryRun", "Enforce"]},
                        "detectors": {"type": "object", "properties": {
                            "threshold": {"type": "integer", "minimum": 1.0},
                            "ratio": {"type": "number", "nullable": true}
                        }},
                        "steps": {"type": "array", "maxItems": 2, "items": {
                            "type": "object",
                            "properties": {"key": {"type": "string", "minLength": 1, "maxLength": 3}}
                        }},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "budget": {"x-kubernetes-int-or-string": true}
                    }
                }
            }
        })
    }

    fn lines(object: Value) -> Vec<String> {
        match validate(&schema(), &object) {
            Ok(()) => Vec::new(),
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn unknown_fields_come_first_and_alone() {
        let got = lines(json!({
            "metadata": {"name": "x"},
            "spec": {"detectors": {"threshold": 0, "thresold": 2}, "extra": true,
                     "steps": [{"kee": "a"}], "labels": {"any": "thing"}}
        }));
        assert_eq!(
            got,
            [
                "strict decoding error: unknown field \"spec.detectors.thresold\", unknown field \"spec.extra\", unknown field \"spec.steps[0].kee\""
            ]
        );
    }

    #[test]
    fn structural_errors_in_the_api_servers_words() {
        let mut got = lines(json!({
            "metadata": {},
            "spec": {
                "mode": "Yolo",
                "detectors": {"threshold": 0, "ratio": null},
                "steps": [{"key": ""}, {"key": "abcd"}, {}],
                "labels": {"a": 1},
                "budget": 1.5
            }
        }));
        got.sort();
        let mut want = vec![
            "metadata.name: Required value: name or generateName is required".to_owned(),
            "spec.mode: Unsupported value: \"Yolo\": supported values: \"Observe\", \"DryRun\", \"Enforce\"".to_owned(),
            "spec.detectors.threshold: Invalid value: 0: spec.detectors.threshold in body should be greater than or equal to 1".to_owned(),
            "spec.steps: Too many: 3: must have at most 2 items".to_owned(),
            "spec.steps[0].key: Invalid value: \"\": spec.steps[0].key in body should be at least 1 chars long".to_owned(),
            "spec.steps[1].key: Too long: may not be more than 3 bytes".to_owned(),
            "spec.labels.a: Invalid value: 1: spec.labels.a in body must be of type string: \"integer\"".to_owned(),
            "spec.budget: Invalid value: 1.5: spec.budget in body must be of type integer,string: \"number\"".to_owned(),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn int_or_string_and_map_bounds() {
        let schema = json!({
            "type": "object",
            "properties": {
                "budget": {"x-kubernetes-int-or-string": true, "maximum": 100.0, "maxLength": 4},
                "labels": {"type": "object", "maxProperties": 1,
                           "additionalProperties": {"type": "string"}}
            }
        });
        let lines = |v: Value| match validate(&schema, &v) {
            Ok(()) => Vec::new(),
            Err(e) => e.lines(),
        };
        assert!(lines(json!({"metadata": {"name": "x"}, "budget": 100})).is_empty());
        assert!(lines(json!({"metadata": {"name": "x"}, "budget": "10%"})).is_empty());
        assert_eq!(
            lines(json!({"metadata": {"name": "x"}, "budget": 101})),
            ["budget: Invalid value: 101: budget in body should be less than or equal to 100"]
        );
        assert_eq!(
            lines(json!({"metadata": {"name": "x"}, "budget": "12345"})),
            ["budget: Too long: may not be more than 4 bytes"]
        );
        assert_eq!(
            lines(json!({"metadata": {"name": "x"}, "labels": {"a": "1", "b": "2"}})),
            ["labels: Too many: 2: must have at most 1 items"]
        );
    }

    #[test]
    fn required_fields_and_a_valid_object() {
        assert_eq!(
            lines(json!({"metadata": {"name": "x"}, "spec": {}})),
            ["spec.detectors: Required value"]
        );
        assert!(
            lines(json!({"metadata": {"name": "x"}, "spec": {"detectors": {}, "budget": "10%"}}))
                .is_empty()
        );
    }
}
