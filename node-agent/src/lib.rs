//! nodemedic node agent: reads `/proc` and cgroupfs, detects zombie buildup,
//! hung (D-state) tasks, fd leaks and CPU throttling, and signals processes
//! safely when the operator asks it to.

pub mod act;
pub mod admin;
pub mod cli;
pub mod confine;
pub mod detect;
pub mod output;
pub mod report;
pub mod run;
pub mod scan;
pub mod scan_command;
