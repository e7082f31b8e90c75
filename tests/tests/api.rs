//! The nodemedic API against a real kube-apiserver: the CRDs from `crds/yaml/`, the
//! policies under `examples/` (valid and deliberately invalid), printer columns,
//! `kubectl explain` text, the status subresource and server-side defaulting.
//!
//! All tests of this binary share one control plane (see `ControlPlane::shared`);
//! each test uses unique object names.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{ApiResource, Scope};
use kube::{Client, Resource as _};
use nodemedic_crds::report::{NodeSummary, TaskCounts};
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport, NodeHealthReportStatus, PolicyMode};
use nodemedic_tests::control_plane::{FIELD_MANAGER, read_yaml_documents, yaml_files_in};
use nodemedic_tests::{ControlPlane, repo_root, unique_name};
use serde_json::json;

const POLICY_CRD: &str = "nodehealthpolicies.nodemedic.io";
const REPORT_CRD: &str = "nodehealthreports.nodemedic.io";
const LEDGER_CRD: &str = "noderemediations.nodemedic.io";

async fn cp() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

fn valid_examples() -> Vec<PathBuf> {
    let files = yaml_files_in(&examples_dir()).expect("list examples/");
    assert!(!files.is_empty(), "no examples/*.yaml found");
    files
}

fn invalid_examples() -> Vec<PathBuf> {
    let files = yaml_files_in(&examples_dir().join("invalid")).expect("list examples/invalid/");
    assert!(!files.is_empty(), "no examples/invalid/*.yaml found");
    files
}

/// The `# expect-error: <text>` header lines of an invalid example.
fn expected_errors(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read example");
    let expected: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("# expect-error:"))
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(
        !expected.is_empty(),
        "{} has no `# expect-error: <message>` line",
        path.display()
    );
    expected
}

fn gvk_of(obj: &DynamicObject) -> GroupVersionKind {
    let types = obj.types.as_ref().expect("apiVersion and kind in example");
    GroupVersionKind::try_from(types).expect("parse apiVersion")
}

/// An `Api<DynamicObject>` for the kind of `obj`, resolved by discovery.
async fn dynamic_api(client: &Client, obj: &DynamicObject) -> Api<DynamicObject> {
    let gvk = gvk_of(obj);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
    match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &ar),
        Scope::Namespaced => {
            let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &ar)
        }
    }
}

fn policy_resource() -> ApiResource {
    ApiResource::erase::<NodeHealthPolicy>(&())
}

fn report_resource() -> ApiResource {
    ApiResource::erase::<NodeHealthReport>(&())
}

/// Paths where `served` and `generated` differ (at most 20 shown by callers).
fn json_diff(
    path: &str,
    served: &serde_json::Value,
    generated: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (served, generated) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                json_diff(
                    &format!("{path}.{k}"),
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a != b => out.push(format!("{path}: served {a} != generated {b}")),
        _ => {}
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- CRDs

#[tokio::test]
async fn every_crd_is_established_cluster_scoped_with_a_short_name() {
    let cp = cp().await;
    let installed = cp.installed_crds();
    for name in [POLICY_CRD, REPORT_CRD, LEDGER_CRD] {
        assert!(
            installed.iter().any(|n| n == name),
            "{name} not installed from crds/yaml (installed: {installed:?})"
        );
    }
    let api: Api<CustomResourceDefinition> = Api::all(cp.client().await.expect("client"));
    for (name, short) in [
        (POLICY_CRD, "nhp"),
        (REPORT_CRD, "nhr"),
        (LEDGER_CRD, "nrm"),
    ] {
        let crd = api.get(name).await.expect("get CRD");
        let conditions = crd
            .status
            .and_then(|s| s.conditions)
            .expect("CRD conditions");
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "{name}: {wanted} not True in {conditions:?}"
            );
        }
        assert_eq!(crd.spec.scope, "Cluster", "{name}");
        assert_eq!(crd.spec.group, "nodemedic.io");
        assert!(
            crd.spec
                .names
                .short_names
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|s| s == short),
            "{name} lacks short name {short}"
        );
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == "v1alpha1")
            .expect("v1alpha1 served");
        assert!(version.served && version.storage);
        // The ledger is the operator's alone, spec and all: no status.
        assert_eq!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            name != LEDGER_CRD,
            "{name}: status subresource"
        );
    }
}

/// The server stores exactly the schema the Rust types generate (as committed), so the
/// operator and agent compile against what the API server validates.
#[tokio::test]
async fn served_crds_match_the_rust_types() {
    let cp = cp().await;
    let api: Api<CustomResourceDefinition> = Api::all(cp.client().await.expect("client"));
    let generated = nodemedic_crds::crd_yaml::all();
    assert_eq!(generated.len(), 3);
    for (_, crd) in generated {
        let name = crd.metadata.name.clone().expect("crd name");
        let served = api.get(&name).await.expect("get CRD");
        let mut diffs = Vec::new();
        // Compare what the types define; the server adds defaults of its own
        // (conversion strategy, listKind) that the generator leaves out.
        json_diff(
            "spec.versions",
            &serde_json::to_value(&served.spec.versions).expect("served versions"),
            &serde_json::to_value(&crd.spec.versions).expect("generated versions"),
            &mut diffs,
        );
        assert_eq!(served.spec.scope, crd.spec.scope);
        assert_eq!(served.spec.names.plural, crd.spec.names.plural);
        assert_eq!(served.spec.names.short_names, crd.spec.names.short_names);
        assert_eq!(served.spec.names.categories, crd.spec.names.categories);
        assert!(
            diffs.is_empty(),
            "{name}: served CRD differs from the Rust types (regenerate crds/yaml):\n{}",
            diffs.join("\n")
        );
    }
}

/// The committed CRDs apply without any API server warning (unknown formats, etc.).
#[tokio::test]
async fn crds_apply_without_warnings() {
    let cp = cp().await;
    let dir = repo_root().join("crds").join("yaml");
    let out = cp
        .kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=warnings-check",
            "--force-conflicts",
            "-f",
            dir.to_str().expect("utf-8 path"),
        ])
        .await
        .expect("kubectl apply CRDs");
    assert!(out.success, "{out}");
    assert!(
        !out.stderr.contains("Warning"),
        "API server warnings: {out}"
    );
}

// ---------------------------------------------------------------- kubectl get / explain

/// Column headers kubectl prints for a CRD: its printer column names, upper-cased.
async fn printer_headers(cp: &ControlPlane, crd: &str) -> Vec<String> {
    let api: Api<CustomResourceDefinition> = Api::all(cp.client().await.expect("client"));
    let crd = api.get(crd).await.expect("get CRD");
    crd.spec.versions[0]
        .additional_printer_columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| c.name.to_uppercase())
        .collect()
}

#[tokio::test]
async fn kubectl_get_nhp_shows_the_printer_columns() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    let name = unique_name("columns");
    let api: Api<DynamicObject> = Api::all_with(client, &policy_resource());
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name},
        "spec": {"mode": "Enforce", "detectors": {"zombies": {}}},
    }))
    .expect("policy object");
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&policy),
    )
    .await
    .expect("apply policy");
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "matchedNodes": 7, "unhealthyNodes": 2, "actionsLast24h": 5
        }})),
    )
    .await
    .expect("write status");

    let headers = printer_headers(cp, POLICY_CRD).await;
    // DESIGN.md: Mode, Matched, Unhealthy, Actions(24h), Age.
    for h in ["MODE", "MATCHED", "UNHEALTHY", "ACTIONS", "AGE"] {
        assert!(
            headers.iter().any(|x| x == h),
            "CRD lacks column {h}: {headers:?}"
        );
    }
    let out = cp
        .kubectl(&["get", "nhp", &name])
        .await
        .expect("kubectl get");
    assert!(out.success, "{out}");
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("header line")
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines.next().expect("row line").split_whitespace().collect();
    let mut expected_header = vec!["NAME".to_string()];
    expected_header.extend(headers);
    assert_eq!(header, expected_header, "{out}");
    assert_eq!(
        &row[..5],
        &[name.as_str(), "Enforce", "7", "2", "5"],
        "{out}"
    );

    // The short name and the category work too.
    let out = cp
        .kubectl(&["get", "nodemedic", "-o", "name"])
        .await
        .expect("kubectl get category");
    assert!(
        out.success
            && out
                .stdout
                .contains(&format!("nodehealthpolicy.nodemedic.io/{name}")),
        "{out}"
    );
}

#[tokio::test]
async fn kubectl_get_nhr_shows_the_printer_columns() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    let name = unique_name("node");
    let api: Api<NodeHealthReport> = Api::all(client);
    let report = NodeHealthReport::new(&name, Default::default());
    api.create(&PostParams::default(), &report)
        .await
        .expect("create report");
    let status = NodeHealthReportStatus {
        healthy: false,
        problems: "zombies(212 under php-fpm)".into(),
        summary: NodeSummary {
            tasks: TaskCounts {
                zombie: 212,
                uninterruptible: 3,
                ..TaskCounts::default()
            },
            ..NodeSummary::default()
        },
        ..NodeHealthReportStatus::default()
    };
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .expect("write typed status through /status");

    let headers = printer_headers(cp, REPORT_CRD).await;
    let out = cp
        .kubectl(&["get", "nhr", &name])
        .await
        .expect("kubectl get");
    assert!(out.success, "{out}");
    let mut lines = out.stdout.lines();
    let header = normalize_ws(lines.next().expect("header"));
    let mut expected = vec!["NAME".to_string()];
    expected.extend(headers);
    assert_eq!(header, expected.join(" "), "{out}");
    let row = lines.next().expect("row");
    assert!(row.starts_with(&name), "{out}");
    for cell in ["false", "zombies(212 under php-fpm)", "212", "3"] {
        assert!(row.contains(cell), "row lacks {cell:?}: {out}");
    }
}

#[tokio::test]
async fn kubectl_explain_shows_the_doc_text() {
    let cp = cp().await;
    let out = cp
        .kubectl(&["explain", "nodehealthpolicy.spec.detectors"])
        .await
        .expect("kubectl explain");
    assert!(out.success, "{out}");
    let text = normalize_ws(&out.stdout);
    // The field's own doc comment, and each detector with its doc text.
    let crds: Vec<CustomResourceDefinition> = read_yaml_documents(
        &repo_root()
            .join("crds/yaml")
            .join(format!("{POLICY_CRD}.yaml")),
    )
    .expect("read CRD yaml");
    let schema = serde_json::to_value(&crds[0].spec.versions[0].schema).expect("schema");
    let detectors = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["detectors"];
    let description = detectors["description"].as_str().expect("detectors doc");
    assert!(
        text.contains(&normalize_ws(description)),
        "explain lacks the detectors doc {description:?}:\n{}",
        out.stdout
    );
    let props = detectors["properties"]
        .as_object()
        .expect("detector fields");
    for field in ["zombies", "hungTasks", "fdLeak", "cpuThrottling"] {
        assert!(props.contains_key(field), "schema lacks {field}");
        assert!(
            text.contains(field),
            "explain lacks {field}:\n{}",
            out.stdout
        );
        let doc = props[field]["description"].as_str().expect("field doc");
        // kubectl shows the first part of each field's description.
        let first_words: String = normalize_ws(doc).chars().take(40).collect();
        assert!(
            text.contains(&first_words),
            "explain lacks the start of {field}'s doc {first_words:?}:\n{}",
            out.stdout
        );
    }

    let out = cp
        .kubectl(&["explain", "nhr.status.summary.tasks.zombie"])
        .await
        .expect("kubectl explain nhr");
    assert!(out.success, "{out}");
    let crds: Vec<CustomResourceDefinition> = read_yaml_documents(
        &repo_root()
            .join("crds/yaml")
            .join(format!("{REPORT_CRD}.yaml")),
    )
    .expect("read CRD yaml");
    let schema = serde_json::to_value(&crds[0].spec.versions[0].schema).expect("schema");
    let mut node = &schema["openAPIV3Schema"];
    for field in ["status", "summary", "tasks", "zombie"] {
        node = &node["properties"][field];
    }
    let doc = node["description"].as_str().expect("zombie count doc");
    assert!(
        normalize_ws(&out.stdout).contains(&normalize_ws(doc)),
        "explain lacks {doc:?}:\n{}",
        out.stdout
    );
}

// ---------------------------------------------------------------- examples

#[tokio::test]
async fn valid_examples_apply_server_side_through_kube_rs() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    for file in valid_examples() {
        let docs: Vec<DynamicObject> = read_yaml_documents(&file).expect("parse example");
        assert!(!docs.is_empty(), "{} is empty", file.display());
        for mut obj in docs {
            let original = obj.metadata.name.clone().expect("example has a name");
            let name = unique_name(&format!("ssa-{}", &original[..original.len().min(30)]));
            obj.metadata.name = Some(name.clone());
            let api = dynamic_api(&client, &obj).await;
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("{} rejected by server-side apply: {e}", file.display())
                });
            assert_eq!(applied.metadata.name.as_deref(), Some(name.as_str()));
            if gvk_of(&obj).kind == "NodeHealthPolicy" {
                // What the server stored reads back into the Rust type.
                let typed: NodeHealthPolicy =
                    serde_json::from_value(serde_json::to_value(&applied).expect("to json"))
                        .unwrap_or_else(|e| {
                            panic!("{}: stored policy does not parse: {e}", file.display())
                        });
                assert_eq!(typed.meta().name.as_deref(), Some(name.as_str()));
            }
        }
    }
}

#[tokio::test]
async fn valid_examples_apply_with_kubectl() {
    let cp = cp().await;
    for file in valid_examples() {
        let path = file.to_str().expect("utf-8 path");
        let out = cp
            .kubectl(&["apply", "-f", path])
            .await
            .expect("kubectl apply");
        assert!(out.success, "kubectl apply -f {}: {out}", file.display());
        assert!(
            out.stdout.contains("created") || out.stdout.contains("configured"),
            "{out}"
        );
        assert!(
            !out.stderr.contains("Warning"),
            "API server warnings: {out}"
        );
        // Re-applying the same file changes nothing in storage, and kubectl
        // (like a GitOps tool) sees no diff: the schema defaults nothing
        // inside list items, which would make every merge patch non-empty.
        let get_rv = || async {
            let got = cp
                .kubectl(&[
                    "get",
                    "-f",
                    path,
                    "-o",
                    "jsonpath={.metadata.resourceVersion}",
                ])
                .await
                .expect("kubectl get");
            assert!(got.success, "{got}");
            got.stdout
        };
        let before = get_rv().await;
        let again = cp
            .kubectl(&["apply", "-f", path])
            .await
            .expect("kubectl apply");
        assert!(again.success, "{again}");
        assert!(
            again.stdout.contains("unchanged"),
            "re-applying {} is not a no-op for kubectl: {again}",
            file.display()
        );
        assert_eq!(
            get_rv().await,
            before,
            "re-applying {} changed the object",
            file.display()
        );
        let out = cp
            .kubectl(&[
                "apply",
                "--server-side",
                "--field-manager=kubectl-ssa-test",
                "--force-conflicts",
                "-f",
                path,
            ])
            .await
            .expect("kubectl apply --server-side");
        assert!(
            out.success,
            "kubectl apply --server-side -f {}: {out}",
            file.display()
        );
    }
}

#[tokio::test]
async fn invalid_examples_are_rejected_through_kube_rs() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    for file in invalid_examples() {
        let expected = expected_errors(&file);
        let docs: Vec<DynamicObject> = read_yaml_documents(&file).expect("parse example");
        assert_eq!(
            docs.len(),
            1,
            "{}: one object per invalid example",
            file.display()
        );
        let mut obj = docs.into_iter().next().expect("one doc");
        let name = unique_name("invalid");
        obj.metadata.name = Some(name.clone());
        let api = dynamic_api(&client, &obj).await;
        // Unknown fields are rejected under strict field validation, which
        // kubectl asks for; kube-rs 5 cannot ask for it on a create (the
        // server then only warns), and server-side apply rejects them in its
        // own words. So for those examples only apply is checked here, for
        // the field path.
        let unknown: Vec<&str> = expected
            .iter()
            .filter_map(|m| m.strip_prefix("unknown field \""))
            .filter_map(|m| m.strip_suffix('"'))
            .collect();
        let strict_only = !unknown.is_empty();
        if strict_only {
            let res = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).validation_strict(),
                    &Patch::Apply(&obj),
                )
                .await;
            match res {
                Ok(_) => panic!("{} was accepted by server-side apply", file.display()),
                Err(kube::Error::Api(status)) => {
                    for field in &unknown {
                        assert!(
                            status
                                .message
                                .contains(&format!(".{field}: field not declared in schema")),
                            "{}: expected {field} named in {:?}",
                            file.display(),
                            status.message
                        );
                    }
                }
                Err(e) => panic!("{}: unexpected error {e}", file.display()),
            }
            continue;
        }
        let hows: &[&str] = &["create", "server-side apply"];
        for &how in hows {
            let res = if how == "create" {
                api.create(&PostParams::default(), &obj).await
            } else {
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).validation_strict(),
                    &Patch::Apply(&obj),
                )
                .await
            };
            match res {
                Ok(_) => panic!("{} was accepted by {how}", file.display()),
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 422, "{}: {status:?}", file.display());
                    for msg in &expected {
                        assert!(
                            status.message.contains(msg.as_str()),
                            "{} ({how}): expected {msg:?} in {:?}",
                            file.display(),
                            status.message
                        );
                    }
                }
                Err(e) => panic!("{}: unexpected error {e}", file.display()),
            }
        }
        assert!(
            api.get_opt(&name).await.expect("get").is_none(),
            "{} was stored",
            file.display()
        );
    }
}

#[tokio::test]
async fn invalid_examples_are_rejected_by_kubectl_apply() {
    let cp = cp().await;
    for file in invalid_examples() {
        let expected = expected_errors(&file);
        let path = file.to_str().expect("utf-8 path");
        let out = cp
            .kubectl(&["apply", "-f", path])
            .await
            .expect("kubectl apply");
        assert!(!out.success, "kubectl accepted {}: {out}", file.display());
        for msg in &expected {
            assert!(
                out.stderr.contains(msg.as_str()),
                "kubectl apply -f {}: expected {msg:?} in stderr: {out}",
                file.display()
            );
        }
    }
}

// ---------------------------------------------------------------- status subresource

/// Writing status through `/status` works; a status change sent to the main
/// resource is ignored (and a spec change sent to `/status` too).
async fn check_status_subresource(
    cp: &ControlPlane,
    ar: &ApiResource,
    name: &str,
    spec: serde_json::Value,
    status_a: serde_json::Value,
    status_b: serde_json::Value,
    spec_change: serde_json::Value,
) {
    let client = cp.client().await.expect("client");
    let api: Api<DynamicObject> = Api::all_with(client, ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": name},
        "spec": spec,
        "status": status_b,
    }))
    .expect("object");
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    // Status in a create is dropped too.
    assert!(
        created.data.get("status").is_none_or(|s| s != &status_b),
        "status sent with create was stored: {:?}",
        created.data.get("status")
    );
    let generation = created.metadata.generation.expect("generation");

    let after_status = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status_a })),
        )
        .await
        .expect("write via /status");
    for (k, v) in status_a.as_object().expect("status object") {
        assert_eq!(
            &after_status.data["status"][k], v,
            "status.{k} after /status write"
        );
    }
    assert_eq!(
        after_status.metadata.generation,
        Some(generation),
        "a status write must not bump generation"
    );

    // Status change through the main resource: accepted but ignored.
    let after_main = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status_b })),
        )
        .await
        .expect("patch main resource");
    assert_eq!(after_main.data["status"], after_status.data["status"]);
    let fresh = api.get(name).await.expect("get");
    assert_eq!(
        fresh.data["status"], after_status.data["status"],
        "status changed via main resource"
    );

    // Spec change through /status: ignored.
    let after = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec_change })),
        )
        .await
        .expect("patch spec via /status");
    assert_eq!(
        after.data["spec"], fresh.data["spec"],
        "spec changed via /status"
    );
    assert_eq!(after.metadata.generation, Some(generation));
}

#[tokio::test]
async fn policy_status_subresource() {
    let cp = cp().await;
    check_status_subresource(
        cp,
        &policy_resource(),
        &unique_name("status-nhp"),
        json!({"detectors": {"zombies": {}}}),
        json!({"matchedNodes": 3, "unhealthyNodes": 1, "actionsLast24h": 0}),
        json!({"matchedNodes": 99, "unhealthyNodes": 42, "actionsLast24h": 9}),
        json!({"mode": "Enforce"}),
    )
    .await;
}

#[tokio::test]
async fn report_status_subresource() {
    let cp = cp().await;
    check_status_subresource(
        cp,
        &report_resource(),
        &unique_name("status-nhr"),
        json!({}),
        json!({"healthy": false, "problems": "zombies(3 under sh)"}),
        json!({"healthy": true, "problems": "forged"}),
        json!({"actionRequests": []}),
    )
    .await;
}

// ---------------------------------------------------------------- defaults

#[tokio::test]
async fn server_applies_the_documented_defaults() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    let name = unique_name("defaults");
    let minimal = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name},
        "spec": {"detectors": {"zombies": {}, "hungTasks": {}, "fdLeak": {}, "cpuThrottling": {}}},
    });
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &policy_resource());
    let obj: DynamicObject = serde_json::from_value(minimal.clone()).expect("object");
    let stored = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create minimal policy");
    assert_eq!(
        stored.data["spec"]["mode"],
        json!("DryRun"),
        "{:?}",
        stored.data
    );

    // Server-side defaults equal the client-side (serde) defaults of the Rust types,
    // so the operator sees the same policy whether or not it round-trips the server.
    let server: NodeHealthPolicy =
        serde_json::from_value(serde_json::to_value(&stored).expect("json")).expect("typed");
    let local: NodeHealthPolicy = serde_json::from_value(minimal).expect("local typed");
    assert_eq!(server.spec.mode, PolicyMode::DryRun);
    assert_eq!(
        server.spec, local.spec,
        "server-side defaults differ from the Rust defaults"
    );
    // And every defaulted field is really in the stored object (not just filled by serde).
    let zombies = &stored.data["spec"]["detectors"]["zombies"];
    assert!(
        zombies.as_object().is_some_and(|o| !o.is_empty()),
        "zombies detector not defaulted by the server: {zombies}"
    );
    let safety = &stored.data["spec"]["safety"];
    assert!(
        safety.is_object(),
        "spec.safety not defaulted by the server: {:?}",
        stored.data["spec"]
    );
}

/// `nodemedic-agent scan --policy` checks a policy file client-side
/// (`policy_document::parse_policy`). It must agree with the API server on
/// every example: the same verdict, and for invalid ones exactly the same
/// field paths and messages.
#[tokio::test]
async fn client_side_policy_check_agrees_with_the_api_server() {
    use nodemedic_crds::policy_document::{PolicyDocumentError, parse_policy};
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    for file in valid_examples() {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            parse_policy(&text).is_ok(),
            "{} is valid for the server but not client-side",
            file.display()
        );
    }
    for file in invalid_examples() {
        let text = std::fs::read_to_string(&file).expect("read");
        let client_lines = match parse_policy(&text) {
            Err(PolicyDocumentError::Rejected(lines)) => lines,
            other => panic!("{}: client-side check gave {other:?}", file.display()),
        };
        let mut obj: DynamicObject = read_yaml_documents(&file)
            .expect("parse")
            .into_iter()
            .next()
            .expect("one doc");
        obj.metadata.name = Some(unique_name("agree"));
        if client_lines[0].starts_with("strict decoding error:") {
            // kubectl asks for strict field validation and words it the same.
            let path = file.to_str().expect("utf-8 path");
            let out = cp.kubectl(&["apply", "-f", path]).await.expect("kubectl");
            assert!(!out.success);
            assert!(
                out.stderr.contains(&client_lines[0]),
                "{}: client says {:?}, kubectl says {}",
                file.display(),
                client_lines[0],
                out.stderr
            );
            continue;
        }
        let api = dynamic_api(&client, &obj).await;
        let status = match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(status)) => status,
            other => panic!("{}: server gave {other:?}", file.display()),
        };
        let mut server_lines: Vec<String> = status
            .details
            .as_ref()
            .map(|d| {
                d.causes
                    .iter()
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect()
            })
            .unwrap_or_default();
        let mut client_lines = client_lines;
        server_lines.sort();
        client_lines.sort();
        assert_eq!(
            client_lines,
            server_lines,
            "{}: client-side and server disagree (server message: {})",
            file.display(),
            status.message
        );
    }
}

// ---------------------------------------------------------------- bounds

/// Every field of `schema` that has a `maximum`, as a path of property names
/// (`[]` for "the first item"), with its maximum and minimum.
/// Integers without a maximum go to `unbounded`.
fn bounded_numbers(
    schema: &serde_json::Value,
    path: &[String],
    out: &mut Vec<NumberField>,
    unbounded: &mut Vec<String>,
) {
    let integer =
        schema["type"] == "integer" || schema["x-kubernetes-int-or-string"] == json!(true);
    match schema.get("maximum").and_then(serde_json::Value::as_f64) {
        Some(max) => out.push(NumberField {
            path: path.to_vec(),
            max,
            integer,
        }),
        None if integer => unbounded.push(path.join(".")),
        None => {}
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, s) in props {
            if path.is_empty() && name == "metadata" {
                continue;
            }
            let mut p = path.to_vec();
            p.push(name.clone());
            bounded_numbers(s, &p, out, unbounded);
        }
    }
    if let Some(items) = schema.get("items") {
        let mut p = path.to_vec();
        p.push("[]".into());
        bounded_numbers(items, &p, out, unbounded);
    }
}

#[derive(Debug)]
struct NumberField {
    path: Vec<String>,
    max: f64,
    integer: bool,
}

impl NumberField {
    /// `spec.actions.zombies[0].after` style, as the API server prints it.
    fn display(&self) -> String {
        let mut s = String::new();
        for part in &self.path {
            if part == "[]" {
                s.push_str("[0]");
            } else {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(part);
            }
        }
        s
    }

    /// The slot for this field in `object`, if the fixture has it.
    fn slot<'a>(&self, object: &'a mut serde_json::Value) -> Option<&'a mut serde_json::Value> {
        let mut at = object;
        for part in &self.path {
            at = if part == "[]" {
                at.get_mut(0)?
            } else {
                at.get_mut(part.as_str())?
            };
        }
        Some(at)
    }

    /// The maximum itself, and the smallest value above it that the API
    /// server (which compares as float64) sees as above it.
    fn at_and_above(&self) -> (serde_json::Value, serde_json::Value) {
        if !self.integer {
            return (json!(self.max), json!(self.max + 1.0));
        }
        let max = self.max as u64;
        // Above 2^53 a float64 does not tell max from max + 1: the next
        // float64 above the maximum is the smallest value it refuses.
        let above = if self.max > 9_007_199_254_740_991.0 {
            let next = f64::from_bits(self.max.to_bits() + 1);
            next as u64
        } else {
            max + 1
        };
        (json!(max), json!(above))
    }
}

fn crd_schema(crd: &str) -> serde_json::Value {
    let crds: Vec<CustomResourceDefinition> =
        read_yaml_documents(&repo_root().join("crds/yaml").join(format!("{crd}.yaml")))
            .expect("read CRD yaml");
    serde_json::to_value(&crds[0].spec.versions[0].schema).expect("schema")["openAPIV3Schema"]
        .clone()
}

/// A policy with every optional part present, so that every bounded
/// number of its schema has a place in it.
fn full_policy(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "DryRun",
            "nodeSelector": {"matchLabels": {"pool": "a"}},
            "detectors": {
                "zombies": {"threshold": 50, "perParentThreshold": 20},
                "hungTasks": {"threshold": 1},
                "fdLeak": {"minOpenFds": 256, "growth": {"minFdsPerMinute": 10.0, "window": "10m"}},
                "cpuThrottling": {"minPeriods": 100},
            },
            "safety": {"maxUnhealthy": 3, "maxConcurrentActions": 1, "maxSignalsPerHour": 10},
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
            "matchedNodes": 1, "unhealthyNodes": 1, "actionsLast24h": 1,
        },
    })
}

/// A report with every optional part present, built from the Rust types.
fn full_report(name: &str) -> serde_json::Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use nodemedic_crds::conditions::Detector;
    use nodemedic_crds::policy::{ActionKind, ParentSignal};
    use nodemedic_crds::remediation::{
        DrainProgress, Episode, HistoryEntry, Remediation, StepPhase, StepRecord,
    };
    use nodemedic_crds::report::*;
    let t = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"));
    let process = ProcessRef {
        host_pid: 10,
        ns_pid: Some(1),
        comm: "sh".into(),
        start_time: 5,
        workload: None,
    };
    let spec = NodeHealthReportSpec {
        action_requests: vec![ActionRequest {
            id: "r1".into(),
            action: NodeAction::SignalParent,
            target: Some(ProcessTarget {
                pid: 10,
                start_time: 5,
                comm: "sh".into(),
            }),
            signal: Some(ParentSignal::SIGCHLD),
            policy: "p".into(),
            requested_at: t.clone(),
            reason: None,
        }],
        remediation: Remediation {
            episodes: vec![Episode {
                policy: "p".into(),
                detector: Detector::Zombies,
                since: t.clone(),
                observed_at: Some(t.clone()),
                steps: vec![StepRecord {
                    index: 0,
                    action: ActionKind::Drain,
                    phase: StepPhase::Started,
                    since: t.clone(),
                    started_at: None,
                    request_id: None,
                    attempts: 1,
                    last_attempt_at: None,
                    reason: None,
                    target: None,
                    pod: None,
                    process: Some(ProcessTarget {
                        pid: 10,
                        start_time: 5,
                        comm: "sh".into(),
                    }),
                    signal: Some(ParentSignal::SIGTERM),
                    message: None,
                    drain: Some(DrainProgress {
                        evicted: 1,
                        remaining: 1,
                        skipped: 1,
                    }),
                }],
                slot_since: Some(t.clone()),
                needs_attention_since: None,
            }],
            history: vec![HistoryEntry {
                at: t.clone(),
                policy: "p".into(),
                detector: Detector::Zombies,
                action: ActionKind::Drain,
                step: 0,
                planned: false,
            }],
        },
    };
    let status = NodeHealthReportStatus {
        summary: NodeSummary {
            psi: Some(PressureSummary {
                cpu: Some(Pressure {
                    some_avg10: 1.0,
                    full_avg10: Some(1.0),
                }),
                memory: Some(Pressure {
                    some_avg10: 1.0,
                    full_avg10: Some(1.0),
                }),
                io: Some(Pressure {
                    some_avg10: 1.0,
                    full_avg10: Some(1.0),
                }),
            }),
            hung_task_timeout_secs: Some(120),
            hung_task_detect_count: Some(1),
            hung_tasks: Some(1),
            waiting_tasks: Some(1),
            ..NodeSummary::default()
        },
        pids: Some(PidsStatus {
            node: Some(NodePids {
                tasks: 1,
                pid_max: Some(1),
                threads_max: Some(1),
                limit: 1,
                headroom: 1,
                zombie_share: Some(0.5),
                growth_per_minute: Some(1.0),
                exhaustion_eta_seconds: Some(1),
            }),
            pods: vec![PodPids {
                cgroup: "/kubepods/pod1".into(),
                current: 1,
                limit: 1,
                headroom: 1,
                zombies: 1,
                zombie_share: Some(0.5),
                growth_per_minute: Some(1.0),
                exhaustion_eta_seconds: Some(1),
                ..PodPids::default()
            }],
            pods_omitted: 1,
        }),
        waiting_tasks: vec![WaitingTaskFinding {
            process: process.clone(),
            reason: WaitReason::VforkChild,
            waits_on: process.clone(),
            waits_on_hung: true,
            ..WaitingTaskFinding::default()
        }],
        findings: Findings {
            zombies: vec![ZombieFinding {
                parent: process.clone(),
                exceeded_under_omitted: 1,
                ..ZombieFinding::default()
            }],
            hung_tasks: vec![HungTaskFinding {
                process: process.clone(),
                exceeded_under_omitted: 1,
                ..HungTaskFinding::default()
            }],
            fd_leak: vec![FdLeakFinding {
                process,
                soft_limit: Some(1024),
                exhaustion_eta_seconds: Some(60),
                exceeded_under_omitted: 1,
                ..FdLeakFinding::default()
            }],
            node_file_handles: Some(NodeFileHandlesFinding {
                exceeded_under_omitted: 1,
                ..NodeFileHandlesFinding::default()
            }),
            cpu_throttling: vec![CpuThrottlingFinding {
                pressure_some_avg10: Some(1.0),
                exceeded_under_omitted: 1,
                ..CpuThrottlingFinding::default()
            }],
            omitted: OmittedFindings {
                zombies: 1,
                hung_tasks: 1,
                fd_leak: 1,
                cpu_throttling: 1,
            },
        },
        action_results: vec![ActionResult {
            id: "r1".into(),
            outcome: ActionResultOutcome::Signalled,
            reason: None,
            message: String::new(),
            completed_at: t.clone(),
            follow_up: Some(SignalFollowUp {
                zombies_before: 1,
                zombies_now: 0,
                parent_exited: false,
                reaped: false,
                checked_at: t,
            }),
        }],
        ..NodeHealthReportStatus::default()
    };
    json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeHealthReport",
        "metadata": {"name": name},
        "spec": spec,
        "status": status,
    })
}

/// Whether the server accepted `object` with `field` set to `value`: a
/// spec field through a create, a status field through /status.
async fn try_number(
    api: &Api<DynamicObject>,
    base: &serde_json::Value,
    field: &NumberField,
    value: &serde_json::Value,
) -> Result<(), String> {
    let mut object = base.clone();
    *field.slot(&mut object).expect("fixture has the field") = value.clone();
    let name = unique_name("bound");
    object["metadata"]["name"] = json!(name);
    let is_status = field.path[0] == "status";
    let status = object
        .as_object_mut()
        .and_then(|o| o.remove("status"))
        .expect("fixture has a status");
    let created: DynamicObject = serde_json::from_value(if is_status {
        let mut o = base.clone();
        o["metadata"]["name"] = json!(name);
        o
    } else {
        object
    })
    .expect("object");
    let result = api.create(&PostParams::default(), &created).await;
    let result = match (result, is_status) {
        (Ok(_), true) => api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map(|_| ()),
        (r, _) => r.map(|_| ()),
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => panic!("{}: {e}", field.display()),
    }
}

/// A value above a maximum that fits the Rust type is refused by the API
/// server with a message naming the field and its bound; the maximum itself
/// is accepted. Table-driven over every bounded number of both CRDs, found
/// in the generated schemas: a new field with a maximum joins the table (and
/// fails it until the fixtures above hold it).
#[tokio::test]
async fn every_integer_field_has_a_maximum_that_fits_its_type() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    for (crd, ar, base) in [
        (POLICY_CRD, policy_resource(), full_policy("base")),
        (REPORT_CRD, report_resource(), full_report("base")),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let mut fields = Vec::new();
        let mut unbounded = Vec::new();
        bounded_numbers(&crd_schema(crd), &[], &mut fields, &mut unbounded);
        assert!(
            unbounded.is_empty(),
            "{crd}: integers without a maximum (a value the Rust type cannot hold would be stored): {unbounded:?}"
        );
        assert!(
            fields.len() > 10,
            "{crd}: only {} bounded numbers",
            fields.len()
        );
        let mut base = base;
        let missing: Vec<String> = fields
            .iter()
            .filter(|f| f.slot(&mut base).is_none())
            .map(NumberField::display)
            .collect();
        assert!(
            missing.is_empty(),
            "{crd}: the test fixture lacks {missing:?}; add them so that their bounds are tested"
        );
        for field in &fields {
            let path = field.display();
            let (at, above) = field.at_and_above();
            if let Err(message) = try_number(&api, &base, field, &at).await {
                panic!("{crd} {path} = {at} (its maximum) was refused: {message}");
            }
            match try_number(&api, &base, field, &above).await {
                Ok(()) => panic!("{crd} {path} = {above} (above its maximum) was accepted"),
                // Go prints a float bound and value as %g (2.147483647e+09).
                Err(message) => assert!(
                    message.contains(&if field.integer {
                        format!("{path}: Invalid value: {above}")
                    } else {
                        format!("{path}: Invalid value: ")
                    }) && message.contains("in body should be less than or equal to"),
                    "{crd} {path} = {above}: not a message naming the field and its bound: {message}"
                ),
            }
        }
    }
}

/// A list, a map or a string longer than its bound is refused, in words
/// that name the field and the bound.
#[tokio::test]
async fn oversized_lists_maps_and_strings_are_refused() {
    let cp = cp().await;
    let client = cp.client().await.expect("client");
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &policy_resource());
    let mut policy = full_policy(&unique_name("oversized"));
    policy.as_object_mut().map(|o| o.remove("status"));
    let namespaces: Vec<String> = (0..65).map(|i| format!("ns-{i}")).collect();
    policy["spec"]["safety"]["excludeNamespaces"] = json!(namespaces);
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("l{i}"), json!("v"))).collect();
    policy["spec"]["nodeSelector"]["matchLabels"] = json!(labels);
    let obj: DynamicObject = serde_json::from_value(policy).expect("object");
    let message = match policies.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("oversized policy: {other:?}"),
    };
    for expected in [
        "spec.safety.excludeNamespaces: Too many: 65: must have at most 64 items",
        "spec.nodeSelector.matchLabels: Too many: 33: must have at most 32 items",
    ] {
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message}"
        );
    }

    let reports: Api<DynamicObject> = Api::all_with(client, &report_resource());
    let name = unique_name("oversized");
    let mut report = full_report(&name);
    let status = report.as_object_mut().and_then(|o| o.remove("status"));
    assert!(status.is_some());
    let obj: DynamicObject = serde_json::from_value(report).expect("object");
    reports
        .create(&PostParams::default(), &obj)
        .await
        .expect("create report");
    let message = match reports
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"problems": "x".repeat(4097)}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("oversized problems: {other:?}"),
    };
    assert!(
        message.contains("status.problems: Too long: may not be more than 4096 bytes"),
        "{message}"
    );
}
