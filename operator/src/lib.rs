//! nodemedic operator: reconciles `NodeHealthPolicy` objects against the
//! agents' `NodeHealthReport`s, plans remediations within the safety budgets
//! and carries them out. Not implemented yet; the crate holds its place in the
//! workspace layout fixed by the design.
