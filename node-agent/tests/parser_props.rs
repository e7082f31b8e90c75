//! Property tests: the parsers never panic on arbitrary input and round-trip
//! what the kernel could write.

use nodemedic_agent::scan::attribution::{Runtime, attribute_path};
use nodemedic_agent::scan::parse::*;
use proptest::prelude::*;

fn comm_strategy() -> impl Strategy<Value = String> {
    // The kernel allows any byte but NUL in comm (15 bytes; longer for some
    // kernel threads); parentheses and spaces are the dangerous ones.
    proptest::collection::vec(
        prop_oneof![
            Just('('),
            Just(')'),
            Just(' '),
            Just('Z'),
            Just('\n'),
            proptest::char::range('!', '~')
        ],
        0..64,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stat_round_trips(
        pid in 1i32..4_194_304,
        comm in comm_strategy(),
        state in prop::sample::select(vec![b'R', b'S', b'D', b'Z', b'T', b't', b'I', b'X']),
        ppid in 0i32..4_194_304,
        flags in any::<u32>(),
        threads in 1u32..100_000,
        start in any::<u64>(),
    ) {
        let line = format!(
            "{pid} ({comm}) {} {ppid} 1 1 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 {threads} 0 {start} 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
            state as char
        );
        let s = parse_stat(line.as_bytes()).expect("valid line parses");
        prop_assert_eq!(s.pid, pid);
        prop_assert_eq!(s.comm, comm);
        prop_assert_eq!(s.state, state);
        prop_assert_eq!(s.ppid, ppid);
        prop_assert_eq!(s.flags, u64::from(flags));
        prop_assert_eq!(s.num_threads, threads);
        prop_assert_eq!(s.starttime, start);
    }

    #[test]
    fn stat_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_stat(&bytes);
    }

    #[test]
    fn text_parsers_never_panic(text in "\\PC{0,300}") {
        let _ = parse_status(&text);
        let _ = parse_nofile_soft_limit(&text);
        let _ = parse_sched_exec_start(&text);
        let _ = parse_schedstat_timeslices(&text);
        let _ = parse_loadavg(&text);
        let _ = parse_proc_stat_procs(&text);
        let _ = parse_pressure(&text);
        let _ = parse_file_nr(&text);
        let _ = parse_cpu_stat(&text);
        let _ = parse_cpu_max(&text);
        let _ = parse_cfs_quota(&text, &text);
        let _ = parse_cgroup_lines(&text);
        let _ = count_cpus(&text);
        let _ = attribute_path(&text);
    }

    #[test]
    fn structured_garbage_never_panics(
        key in prop::sample::select(vec!["NSpid:", "Max open files", "se.exec_start :", "nr_periods ", "some avg10=", "procs_running "]),
        value in "[-0-9a-z.= \t]{0,40}",
    ) {
        let text = format!("{key}{value}\n");
        let _ = parse_status(&text);
        let _ = parse_nofile_soft_limit(&text);
        let _ = parse_sched_exec_start(&text);
        let _ = parse_cpu_stat(&text);
        let _ = parse_pressure(&text);
        let _ = parse_proc_stat_procs(&text);
    }

    #[test]
    fn exec_start_round_trips(ms in 0u64..1_000_000_000_000, frac in 0u64..1_000_000) {
        let text = format!("se.exec_start                                :   {ms}.{frac:06}\n");
        prop_assert_eq!(parse_sched_exec_start(&text), Ok(ms * 1_000_000 + frac));
    }

    #[test]
    fn cpu_stat_round_trips(p in any::<u32>(), t in any::<u32>(), us in any::<u32>()) {
        let v2 = format!("usage_usec 1\nnr_periods {p}\nnr_throttled {t}\nthrottled_usec {us}\n");
        let s = parse_cpu_stat(&v2).expect("v2");
        prop_assert_eq!((s.nr_periods, s.nr_throttled, s.throttled_ns), (u64::from(p), u64::from(t), u64::from(us) * 1000));
    }

    #[test]
    fn attribution_finds_generated_ids(
        uid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        cid in "[0-9a-f]{64}",
        qos in prop::sample::select(vec!["", "burstable", "besteffort"]),
        shape in 0usize..4,
        prefix in prop::sample::select(vec!["", "/kubelet.slice/kubelet-kubepods.slice", "/docker/abc"]),
    ) {
        let us = uid.replace('-', "_");
        let (path, runtime) = match shape {
            0 => {
                let q = if qos.is_empty() { String::new() } else { format!("/{qos}") };
                (format!("{prefix}/kubepods{q}/pod{uid}/{cid}"), Runtime::Unknown)
            }
            1 => {
                let q = if qos.is_empty() { String::new() } else { format!("/{qos}") };
                (format!("{prefix}/kubepods{q}/pod{uid}/crio-{cid}"), Runtime::Crio)
            }
            2 => {
                let q = if qos.is_empty() { String::new() } else { format!("-{qos}") };
                (format!("{prefix}/kubepods.slice/kubepods{q}.slice/kubepods{q}-pod{us}.slice/cri-containerd-{cid}.scope"), Runtime::Containerd)
            }
            _ => {
                let q = if qos.is_empty() { String::new() } else { format!("-{qos}") };
                (format!("{prefix}/kubepods.slice/kubepods{q}.slice/kubepods{q}-pod{us}.slice/docker-{cid}.scope"), Runtime::Docker)
            }
        };
        let a = attribute_path(&path);
        prop_assert_eq!(a.pod_uid.as_deref(), Some(uid.as_str()));
        prop_assert_eq!(a.container_id.as_deref(), Some(cid.as_str()));
        prop_assert_eq!(a.runtime, Some(runtime));
    }
}
