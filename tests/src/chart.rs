//! Helpers for the Helm chart tests (`tests/tests/chart.rs`): running helm
//! without a cluster, splitting rendered manifests, and ServiceAccount tokens
//! bound to a Pod, like the ones the kubelet projects into a pod.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::assets::Assets;
use crate::control_plane::{CmdOutput, ControlPlane, client_from_kubeconfig, unique_name};
use crate::error::{Error, Result};

/// `charts/nodemedic` of this repository.
pub fn chart_dir() -> PathBuf {
    crate::repo_root().join("charts").join("nodemedic")
}

/// Run the provisioned `helm` for commands that need no cluster (`lint`,
/// `template`, `show`), with its cache and config in a fresh temp dir and no
/// kubeconfig.
pub async fn helm_offline(args: &[&str]) -> Result<CmdOutput> {
    let assets = Assets::locate()?;
    let helm = assets.helm.as_ref().ok_or_else(|| Error::MissingBinaries {
        dir: assets.dir.clone(),
        missing: "helm".into(),
    })?;
    let home = tempfile::Builder::new()
        .prefix("nodemedic-helm-")
        .tempdir()
        .map_err(|e| Error::io("create helm temp dir", e))?;
    let out = tokio::process::Command::new(helm)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io("run helm", e))?;
    Ok(CmdOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The non-empty YAML documents of a rendered manifest stream, as JSON values.
pub fn manifests(yaml: &str) -> Result<Vec<serde_json::Value>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(doc).map_err(|source| Error::Yaml {
            path: "<rendered chart>".into(),
            source,
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Serialise JSON values back into one multi-document YAML stream.
pub fn to_yaml_stream(objects: &[serde_json::Value]) -> Result<String> {
    let mut text = String::new();
    for obj in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(obj).map_err(|source| Error::Yaml {
            path: "<manifest>".into(),
            source,
        })?);
    }
    Ok(text)
}

/// A token for ServiceAccount `namespace/service_account` bound to `pod` (which must
/// exist and use that ServiceAccount), as the kubelet requests for a projected
/// token volume. For a Pod with `spec.nodeName`, the API server embeds the node's
/// name and UID, and later puts them into the user info of every request made with
/// the token (`authentication.kubernetes.io/node-name`, `.../node-uid`).
pub async fn pod_bound_token(
    cp: &ControlPlane,
    namespace: &str,
    service_account: &str,
    pod: &Pod,
) -> Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(cp.client().await?, namespace);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let issued = sas
        .create_token_request(service_account, &PostParams::default(), &tr)
        .await?;
    issued
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Other(format!(
                "TokenRequest for {namespace}/{service_account} returned no token"
            ))
        })
}

/// Write a kubeconfig (in the control plane's temp dir) that authenticates with `token`.
pub fn token_kubeconfig(cp: &ControlPlane, token: &str) -> Result<PathBuf> {
    let path = cp
        .dir()
        .join(format!("{}.kubeconfig", unique_name("token")));
    write_token_kubeconfig(&path, cp.server_url(), cp.ca_cert(), token)?;
    Ok(path)
}

/// A client that authenticates with `token`, and the kubeconfig file behind it
/// (for kubectl).
pub async fn token_client(cp: &ControlPlane, token: &str) -> Result<(Client, PathBuf)> {
    let path = token_kubeconfig(cp, token)?;
    Ok((client_from_kubeconfig(&path).await?, path))
}

fn write_token_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) -> Result<()> {
    crate::control_plane::write_kubeconfig(path, server, ca, serde_json::json!({ "token": token }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_skip_empty_documents() {
        let docs =
            manifests("---\n# only a comment\n---\na: 1\n---\n\n---\nb: [2]\n").expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["a"], 1);
        let back = manifests(&to_yaml_stream(&docs).expect("serialise")).expect("reparse");
        assert_eq!(back, docs);
    }

    #[test]
    fn chart_dir_holds_the_chart() {
        assert!(chart_dir().join("Chart.yaml").is_file());
    }
}

/// The chart's RBAC and admission objects of one release, installed for real
/// in a fresh namespace: what the product binaries run with in tests.
#[derive(Debug, Clone)]
pub struct InstalledRbac {
    /// The release's namespace.
    pub namespace: String,
    /// The ValidatingAdmissionPolicy that pins agents to their node's report.
    pub admission_policy: String,
    /// The agent's ServiceAccount.
    pub agent_service_account: String,
    /// The operator's ServiceAccount.
    pub operator_service_account: String,
}

/// Renders the chart (`helm template` for the pinned Kubernetes version) and
/// applies its ServiceAccounts, (Cluster)Roles, bindings and the admission
/// policy to `cp`, so that tests run the binaries with exactly the rights the
/// chart ships.
pub async fn install_chart_rbac(cp: &ControlPlane, prefix: &str) -> Result<InstalledRbac> {
    let namespace = cp.create_namespace(prefix).await?;
    let release = unique_name("nm");
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let kube_version = format!(
        "--kube-version={}",
        crate::assets::pinned_kubernetes_version()
    );
    let out = helm_offline(&[
        "template",
        &release,
        &chart,
        "--namespace",
        &namespace,
        &kube_version,
    ])
    .await?;
    if !out.success {
        return Err(Error::Other(format!("helm template failed:\n{out}")));
    }
    let objs = manifests(&out.stdout)?;
    let wanted = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    let kind = |o: &serde_json::Value| o["kind"].as_str().unwrap_or("").to_owned();
    let selected: Vec<serde_json::Value> = objs
        .iter()
        .filter(|o| wanted.contains(&kind(o).as_str()))
        .cloned()
        .collect();
    let stream = to_yaml_stream(&selected)?;
    let out = cp
        .kubectl_with(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "--field-manager=helm", "-f", "-"],
            Some(stream.as_bytes()),
        )
        .await?;
    if !out.success {
        return Err(Error::Other(format!(
            "installing the chart's RBAC and admission objects:\n{out}"
        )));
    }
    let sa_of = |component: &str| {
        objs.iter()
            .find(|o| {
                kind(o) == "ServiceAccount"
                    && o["metadata"]["labels"]["app.kubernetes.io/component"] == component
            })
            .and_then(|o| o["metadata"]["name"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Other(format!("the chart renders no {component} ServiceAccount")))
    };
    let admission_policy = objs
        .iter()
        .find(|o| kind(o) == "ValidatingAdmissionPolicy")
        .and_then(|o| o["metadata"]["name"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::Other("the chart renders no ValidatingAdmissionPolicy".into()))?;
    Ok(InstalledRbac {
        admission_policy,
        agent_service_account: sa_of("agent")?,
        operator_service_account: sa_of("operator")?,
        namespace,
    })
}

/// A kubeconfig for the agent on `node`, as in a real pod: a Pod bound to
/// the node and using the agent ServiceAccount, and a token bound to that Pod
/// (the API server then knows the caller's node, which the chart's admission
/// policy checks).
pub async fn agent_kubeconfig(
    cp: &ControlPlane,
    rbac: &InstalledRbac,
    node: &str,
) -> Result<PathBuf> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": unique_name("agent"), "namespace": rbac.namespace},
        "spec": {
            "nodeName": node,
            "serviceAccountName": rbac.agent_service_account,
            "automountServiceAccountToken": false,
            "containers": [{"name": "agent", "image": "ghcr.io/nodemedic/nodemedic:0.1.0"}],
        },
    }))
    .map_err(|e| Error::Other(format!("agent pod: {e}")))?;
    let pod = Api::<Pod>::namespaced(cp.client().await?, &rbac.namespace)
        .create(&PostParams::default(), &pod)
        .await?;
    let token = pod_bound_token(cp, &rbac.namespace, &rbac.agent_service_account, &pod).await?;
    token_kubeconfig(cp, &token)
}
