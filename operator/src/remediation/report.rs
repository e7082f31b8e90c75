//! Writing the report's spec (the action requests for the node's agent) as
//! a JSON merge patch with the operator's field manager, with the
//! resourceVersion the decision was based on as a precondition. The patch
//! replaces `actionRequests` as a whole and removes the deprecated
//! `spec.remediation` an older operator kept there.
//!
//! Not server-side apply: once the operator owns no field of `spec` (no
//! request pending), an apply leaves `spec` empty and the API server drops
//! it, which the schema refuses (`spec` must be an object).

use kube::api::{Api, Patch, PatchParams};
use nodemedic_crds::NodeHealthReport;
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::report::ActionRequest;
use serde_json::json;

use crate::controller::Context;
use crate::controller::index::trim_report;
use crate::error::{Error, Result, api_code};

/// Writes `requests` as the report spec of `node`.
///
/// `resource_version` is the precondition. On a conflict the report is read
/// again: when `expect` is given and the fresh requests still equal it (only the
/// agent's status changed in between), the write is retried against the
/// fresh version — the decision did not depend on what changed. Otherwise
/// the conflict is returned and the policy is replanned.
pub async fn write_spec(
    ctx: &Context,
    node: &str,
    requests: &[ActionRequest],
    resource_version: Option<&str>,
    expect: Option<&[ActionRequest]>,
) -> Result<NodeHealthReport> {
    let api: Api<NodeHealthReport> = Api::all(ctx.client.clone());
    let params = PatchParams {
        field_manager: Some(field_manager::OPERATOR.to_owned()),
        ..Default::default()
    };
    let requests = if requests.is_empty() {
        serde_json::Value::Null
    } else {
        json!(requests)
    };
    let mut rv = resource_version.map(str::to_owned);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut body = json!({
            "spec": { "actionRequests": requests, "remediation": null },
        });
        if let Some(rv) = &rv {
            body["metadata"] = json!({ "resourceVersion": rv });
        }
        ctx.metrics.write("nodehealthreports", "patch");
        match api.patch(node, &params, &Patch::Merge(&body)).await {
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
                let same = expect.is_some_and(|x| *x == fresh.spec.action_requests[..]);
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
