//! nodemedic node agent: reads `/proc` and cgroupfs, detects zombie buildup,
//! hung (D-state) tasks, fd leaks and CPU throttling, and signals processes
//! safely when the operator asks it to.

pub mod scan;
