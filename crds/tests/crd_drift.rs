//! The committed CRD YAML (crds/yaml and the Helm chart copy) must be exactly
//! what the Rust types generate. Regenerate with
//! `cargo run -p nodemedic-crds --bin crdgen`.

use std::fs;
use std::path::Path;

use nodemedic_crds::{api_doc, crd_yaml};

#[test]
fn committed_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copies = [
        root.join(crd_yaml::YAML_DIR),
        root.join("../charts/nodemedic/crds"),
    ];
    for (file, crd) in crd_yaml::all() {
        let generated = crd_yaml::render(&crd).expect("CRD renders");
        for dir in &copies {
            let path = dir.join(&file);
            let committed = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run crdgen", path.display()));
            assert!(
                committed == generated,
                "{} is out of date with crds/src; run `cargo run -p nodemedic-crds --bin crdgen`",
                path.display()
            );
        }
    }
}

#[test]
fn crds_carry_what_kubectl_needs() {
    for (file, crd) in crd_yaml::all() {
        assert_eq!(crd.spec.scope, "Cluster", "{file}");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["nodemedic".to_owned()][..]),
            "{file}"
        );
        assert_eq!(
            crd.spec.names.short_names.as_ref().map(Vec::len),
            Some(1),
            "{file}"
        );
        let version = &crd.spec.versions[0];
        // The ledger is the operator's alone, spec and all: no status.
        let wants_status = crd.spec.names.kind != "NodeRemediation";
        assert_eq!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            wants_status,
            "{file}: status subresource"
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 5),
            "{file}: printer columns"
        );
        let schema = serde_json::to_string(&version.schema).expect("schema serializes");
        assert!(
            schema.contains("x-kubernetes-validations"),
            "{file}: CEL rules"
        );
    }
}

#[test]
fn committed_field_reference_matches_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crds: Vec<_> = crd_yaml::all().into_iter().map(|(_, crd)| crd).collect();
    let path = root.join(api_doc::REFERENCE_PATH);
    let committed = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == api_doc::render(&crds),
        "{} is out of date; run `cargo run -p nodemedic-crds --bin crdgen`",
        path.display()
    );
    for field in [
        "spec.detectors.zombies.perParentThreshold",
        "spec.safety.maxUnhealthy",
        "status.findings.hungTasks[].blockedSeconds",
    ] {
        assert!(
            committed.contains(&format!("`{field}`")),
            "reference lacks {field}"
        );
    }
}
