//! Writing a node's remediation ledger (its `NodeRemediation`), which only
//! the operator writes and reads.
//!
//! The first write creates the object (and fails if one appeared
//! meanwhile: the plan was made without it); every later write replaces it
//! whole, with the resourceVersion the plan was made from as a
//! precondition. (Not server-side apply: merging the nested list-maps of
//! episodes and steps left a half-removed step behind when one policy's
//! episode went while another's stayed. The ledger has one writer, and the
//! object it writes is the whole truth.) A conflict, or a ledger deleted by
//! hand since it was read (an explicit reset), makes the policy replan from
//! the watch cache.

use kube::api::{Api, PostParams};
use nodemedic_crds::conditions::field_manager;
use nodemedic_crds::remediation::{NodeRemediation, Remediation};
use serde_json::json;

use crate::controller::Context;
use crate::controller::index::trim_ledger;
use crate::error::{Error, Result, api_code};

/// Writes `spec` as the ledger of `node`; `resource_version` is the version
/// the plan read (None: there was no ledger, create it). Returns the new
/// resourceVersion.
pub async fn write(
    ctx: &Context,
    node: &str,
    node_uid: Option<&str>,
    spec: &Remediation,
    resource_version: Option<&str>,
) -> Result<Option<String>> {
    let api: Api<NodeRemediation> = Api::all(ctx.client.clone());
    let mut metadata = json!({ "name": node });
    if let Some(uid) = node_uid {
        // A deleted Node takes its ledger with it (garbage collection).
        metadata["ownerReferences"] = json!([{
            "apiVersion": "v1",
            "kind": "Node",
            "name": node,
            "uid": uid,
        }]);
    }
    let body = json!({
        "apiVersion": "nodemedic.io/v1alpha1",
        "kind": "NodeRemediation",
        "metadata": metadata,
        "spec": spec,
    });
    let mut obj: NodeRemediation = serde_json::from_value(body).map_err(|e| Error::Serialize {
        what: format!("ledger of {node}"),
        source: e,
    })?;
    let params = PostParams {
        field_manager: Some(field_manager::OPERATOR.to_owned()),
        ..Default::default()
    };
    let result = match resource_version {
        None => {
            ctx.metrics.write("noderemediations", "create");
            api.create(&params, &obj).await
        }
        Some(rv) => {
            obj.metadata.resource_version = Some(rv.to_owned());
            ctx.metrics.write("noderemediations", "replace");
            api.replace(node, &params, &obj).await
        }
    };
    match result {
        Ok(mut written) => {
            trim_ledger(&mut written);
            let rv = written.metadata.resource_version.clone();
            ctx.ledgers_overlay
                .put(written, resource_version.map(str::to_owned));
            Ok(rv)
        }
        Err(e) => {
            if matches!(api_code(&e), Some(404 | 409)) {
                // What the plan read is gone or outdated: forget the own
                // write and replan from the cache.
                ctx.ledgers_overlay.forget(node);
                return Err(Error::Conflict {
                    what: format!("ledger of {node}"),
                    source: e,
                });
            }
            Err(Error::kube(format!("write ledger of {node}"), e))
        }
    }
}
