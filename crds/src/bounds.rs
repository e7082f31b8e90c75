//! The bounds of every number, list and string in the API, named once.
//!
//! Every integer of both CRDs has a `maximum` that fits its Rust type, so that
//! no object the API server accepts fails to decode in the agent or the
//! operator (one such object would otherwise fail the whole list of a watch
//! cache). Every list has a `maxItems`, every string a `maxLength` (or an
//! enum or format), every map a `maxProperties`. A test walks the generated
//! schemas and fails on any field without its bound.
//!
//! The integer bounds follow the domain, and stay within 2^53 − 1 (the
//! largest integer a JSON number holds exactly, so that the API server's
//! float comparison is exact).

/// Tasks (processes or threads) one Linux node can hold: `PID_MAX_LIMIT` of
/// 64-bit kernels (2^22); `kernel.pid_max` cannot be set higher. Bounds the
/// detector thresholds, task counts and PIDs.
pub const MAX_TASKS: u32 = 4_194_304;

/// Largest PID (`pid_max` ≤ `PID_MAX_LIMIT`).
pub const MAX_PID: i32 = 4_194_304;

/// Largest integer a JSON number holds exactly (2^53 − 1): counters, clock
/// ticks, seconds and generations, none of which comes near it.
pub const MAX_COUNT: u64 = 9_007_199_254_740_991;

/// Kernel `long` values (`fs.file-max`, `file-nr`,
/// `hung_task_timeout_secs`). The API server cannot hold `LONG_MAX` as a
/// schema bound (its float64 rounds above the int64 range), so these are
/// bounded like counters and the agent reports a larger value — `fs.file-max`
/// is `LONG_MAX`, "no limit", where systemd raises it — as this bound.
pub const KERNEL_LONG_MAX: u64 = MAX_COUNT;

/// A file descriptor is a C `int`: no process holds more than `INT_MAX`
/// (`fs.nr_open` is lower still).
pub const MAX_FDS: u64 = i32::MAX as u64;

/// Nodes of one cluster, far above any supported cluster size.
pub const MAX_NODES: u32 = 1_000_000;

/// CPUs of one node (`NR_CPUS` is at most 8192 on x86-64), with headroom.
pub const MAX_CPUS: u32 = 65_536;

/// Pods of one node, far above any kubelet `maxPods`.
pub const MAX_PODS: u32 = 1_000_000;

/// Policies in a cluster (counts of them, e.g. `exceededUnderOmitted`).
pub const MAX_POLICIES: u32 = 1_000_000;

/// CFS periods a container must have run (`minPeriods`): 10^9 periods of
/// the shortest CFS period (1 ms) is over 11 days.
pub const MAX_MIN_PERIODS: u64 = 1_000_000_000;

/// Actions in 24 hours, attempts of one step: budgets keep them far lower.
pub const MAX_ACTIONS: u32 = 1_000_000_000;

/// Kubernetes object names (DNS subdomain).
pub const MAX_NAME: u32 = 253;

/// Kubernetes label values and DNS labels (namespaces, container names).
pub const MAX_LABEL_VALUE: u32 = 63;

/// Label and annotation keys: a 253-character prefix, `/` and a 63-character name.
pub const MAX_LABEL_KEY: u32 = 317;

/// Human messages written by nodemedic.
pub const MAX_MESSAGE: u32 = 1024;

/// Short machine words: detector and action names, reasons, durations.
pub const MAX_WORD: u32 = 64;

/// A kernel `comm` is at most 15 bytes; room for lossy UTF-8 decoding.
pub const MAX_COMM: u32 = 64;

/// A path (`PATH_MAX`).
pub const MAX_PATH: u32 = 4096;

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Fields of `schema` (under `path`) that lack their bound.
    fn unbounded(schema: &Value, path: &str, out: &mut Vec<String>) {
        let has = |k: &str| schema.get(k).is_some();
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match schema.get("type").and_then(Value::as_str) {
            _ if int_or_string => {
                if !has("maximum") || !has("maxLength") {
                    out.push(format!(
                        "{path}: int-or-string without maximum and maxLength"
                    ));
                }
            }
            Some("integer") => {
                if !has("maximum") || !has("minimum") {
                    out.push(format!("{path}: integer without minimum and maximum"));
                }
            }
            Some("string") => {
                if !has("maxLength") && !has("enum") && !has("format") {
                    out.push(format!("{path}: string without maxLength, enum or format"));
                }
            }
            Some("array") => {
                if !has("maxItems") {
                    out.push(format!("{path}: array without maxItems"));
                }
            }
            Some("object") => {
                if schema
                    .get("additionalProperties")
                    .is_some_and(Value::is_object)
                    && !has("maxProperties")
                {
                    out.push(format!("{path}: map without maxProperties"));
                }
            }
            Some("number" | "boolean") => {}
            other => out.push(format!("{path}: unexpected type {other:?}")),
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, s) in props {
                // metadata is the API server's own, validated by it.
                if path.is_empty() && name == "metadata" {
                    continue;
                }
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                unbounded(s, &p, out);
            }
        }
        if let Some(items) = schema.get("items") {
            unbounded(items, &format!("{path}[]"), out);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            unbounded(values, &format!("{path}{{}}"), out);
        }
    }

    /// So that no future field forgets its bound: every integer of both CRDs
    /// has a minimum and a maximum, every list a maxItems, every map a
    /// maxProperties, every string a maxLength, an enum or a format.
    #[test]
    fn every_field_of_both_crds_is_bounded() {
        let mut missing = Vec::new();
        for (file, crd) in crate::crd_yaml::all() {
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .map(|s| serde_json::to_value(s).expect("schema as JSON"))
                    .expect("openAPIV3Schema");
                let mut out = Vec::new();
                unbounded(&schema, "", &mut out);
                missing.extend(out.into_iter().map(|m| format!("{file}: {m}")));
            }
        }
        assert!(
            missing.is_empty(),
            "unbounded fields:\n{}",
            missing.join("\n")
        );
    }

    /// The walker itself finds what it must find.
    #[test]
    fn the_bound_walker_finds_unbounded_fields() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "metadata": {"type": "object"},
                "n": {"type": "integer", "minimum": 0},
                "s": {"type": "string"},
                "e": {"type": "string", "enum": ["A"]},
                "l": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                "m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}},
                "i": {"x-kubernetes-int-or-string": true, "maximum": 3},
            }
        });
        let mut out = Vec::new();
        unbounded(&schema, "", &mut out);
        out.sort();
        assert_eq!(
            out,
            [
                "i: int-or-string without maximum and maxLength",
                "l: array without maxItems",
                "m: map without maxProperties",
                "n: integer without minimum and maximum",
                "s: string without maxLength, enum or format",
            ]
        );
    }
}
