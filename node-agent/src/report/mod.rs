//! The agent's report: building it from a scan (pure, [`build`]), deciding
//! whether a new one is worth writing ([`significance`]), and publishing it
//! to the API server ([`publish`]).

pub mod build;
pub mod publish;
pub mod scope;
pub mod significance;
