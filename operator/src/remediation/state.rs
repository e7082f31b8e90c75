//! Writing a node's state: the ledger first, then the report's requests.
//!
//! The order is the write-ahead rule across two objects: a request exists
//! only once the ledger records its step as Started, so an operator that
//! dies between the writes finds the step and its request id in the ledger
//! (and asks again, under the same id, see `plan`), never a request it has
//! no record of.

use crate::controller::Context;
use crate::error::Result;
use crate::plan::{NodeState, Versions};

/// Writes what differs between `after` and `before` (what is stored), and
/// moves a ledger still kept in the report out of it. `versions` are the
/// preconditions and are advanced by each write. With `retry_unchanged`, a
/// report write that conflicts only with the agent's status is retried.
pub async fn write(
    ctx: &Context,
    node: &str,
    versions: &mut Versions,
    before: &NodeState,
    after: &NodeState,
    retry_unchanged: bool,
) -> Result<()> {
    let migrate = versions.legacy_in_report;
    if after.remediation != before.remediation || (migrate && versions.ledger.is_none()) {
        ctx.fence.check()?;
        versions.ledger = super::ledger::write(
            ctx,
            node,
            versions.node_uid.as_deref(),
            &after.remediation,
            versions.ledger.as_deref(),
        )
        .await?;
    }
    if after.action_requests != before.action_requests || migrate {
        ctx.fence.check()?;
        let written = super::report::write_spec(
            ctx,
            node,
            &after.action_requests,
            versions.report.as_deref(),
            retry_unchanged.then_some(&before.action_requests[..]),
        )
        .await?;
        versions.report = written.metadata.resource_version.clone();
        versions.legacy_in_report = false;
    }
    Ok(())
}
