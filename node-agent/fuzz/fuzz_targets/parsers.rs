#![no_main]
//! Every parser of procfs/cgroupfs text must return an error, never panic,
//! whatever bytes a hostile or buggy kernel interface hands it.

use libfuzzer_sys::fuzz_target;
use nodemedic_agent::scan::attribution::attribute_path;
use nodemedic_agent::scan::parse::*;
use nodemedic_agent::scan::pods::{parse_container_log, parse_pod_dir};

fuzz_target!(|data: &[u8]| {
    let _ = parse_stat(data);
    let text = String::from_utf8_lossy(data);
    let _ = parse_status(&text);
    let _ = parse_nofile_soft_limit(&text);
    let _ = parse_sched_exec_start(&text);
    let _ = parse_schedstat_timeslices(&text);
    let _ = parse_loadavg(&text);
    let _ = parse_proc_stat_procs(&text);
    let _ = count_cpus(&text);
    let _ = parse_pressure(&text);
    let _ = parse_file_nr(&text);
    let _ = parse_cpu_stat(&text);
    let _ = parse_cpu_max(&text);
    if let Some((q, p)) = text.split_once('\n') {
        let _ = parse_cfs_quota(q, p);
    }
    if let Ok(lines) = parse_cgroup_lines(&text) {
        let _ = nodemedic_agent::scan::attribution::attribute_cgroup_lines(&lines);
    }
    let _ = attribute_path(&text);
    let _ = parse_pod_dir(&text);
    let _ = parse_container_log(&text);
});
