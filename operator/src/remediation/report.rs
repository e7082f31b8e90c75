//! Writing the report's spec (action requests and the durable remediation
//! state) by server-side apply with the operator's field manager, with the
//! resourceVersion the decision was based on as a precondition.

use kube::api::{Api, Patch, PatchParams};
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::{NodeHealthReport, NodeHealthReportSpec};
use serde_json::json;

use crate::controller::Context;
use crate::controller::index::trim_report;
use crate::error::{Error, Result, api_code};

/// Writes `spec` to the report of `node`.
///
/// `resource_version` is the precondition. On a conflict the report is read
/// again: when `expect` is given and the fresh spec still equals it (only the
/// agent's status changed in between), the write is retried against the
/// fresh version — the decision did not depend on what changed. Otherwise
/// the conflict is returned and the policy is replanned.
pub async fn write_spec(
    ctx: &Context,
    node: &str,
    spec: &NodeHealthReportSpec,
    resource_version: Option<&str>,
    expect: Option<&NodeHealthReportSpec>,
) -> Result<NodeHealthReport> {
    let api: Api<NodeHealthReport> = Api::all(ctx.client.clone());
    let params = PatchParams::apply(field_manager::OPERATOR).force();
    let mut rv = resource_version.map(str::to_owned);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut metadata = json!({ "name": node });
        if let Some(rv) = &rv {
            metadata["resourceVersion"] = json!(rv);
        }
        let body = json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthReport",
            "metadata": metadata,
            "spec": spec,
        });
        ctx.metrics.write("nodehealthreports", "apply");
        match api.patch(node, &params, &Patch::Apply(&body)).await {
            Ok(mut written) => {
                trim_report(&mut written);
                ctx.reports_overlay.put(written.clone(), rv.clone());
                return Ok(written);
            }
            Err(e) if api_code(&e) == Some(409) => {
                let fresh = api
                    .get(node)
                    .await
                    .map_err(|e| Error::kube(format!("get report {node}"), e))?;
                let same = expect.is_some_and(|x| *x == fresh.spec);
                let mut trimmed = fresh.clone();
                trim_report(&mut trimmed);
                ctx.reports_overlay.put(trimmed, rv.clone());
                if !same || attempts >= 4 {
                    return Err(Error::kube(format!("write report {node}"), e));
                }
                rv = fresh.metadata.resource_version.clone();
            }
            Err(e) => return Err(Error::kube(format!("write report {node}"), e)),
        }
    }
}
