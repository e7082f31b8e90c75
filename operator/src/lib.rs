//! nodemedic operator: reconciles `NodeHealthPolicy` objects against the
//! agents' `NodeHealthReport`s, plans remediations within the safety budgets
//! and carries them out.
//!
//! * [`plan`] — the pure planner (validate → plan → settle) and the policy
//!   status; table-tested without a server.
//! * [`controller`] — watches, the reconcile loop, write-ahead, status.
//! * [`remediation`] — carrying out effects: Events, Node conditions,
//!   cordon/taint, evictions and drains, report spec writes.
//! * [`leader`] — Lease-based leader election and the acting fence.
//! * [`admin`] and [`metrics`] — `/metrics`, `/livez`, `/readyz`.
//! * [`cli`] — flags, each with an environment variable.
//! * [`watch_backoff`] — how the watches retry after an error.

pub mod admin;
pub mod cli;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod remediation;
pub mod simulate;
pub mod watch_backoff;
