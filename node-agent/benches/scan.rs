//! Scan benchmark: on one live workload of ~5,000 processes, compares in a
//! single run
//! - the full scan (observe + assess: every detector, enrichment of findings)
//! - the floor: read `/proc/PID/stat` of every pid and nothing else
//! - `ps -eLo pid,tid,stat,comm`
//!
//! and measures CPU time per scan, then peak RSS of a fresh process doing a
//! full scan with 10,000 processes present. Prints ratios (the figures
//! recorded in docs/benchmarks.md) with the kernel version.
//!
//! `cargo bench -p nodemedic-agent --bench scan` (as root, for the D-state
//! and cgroup parts of the workload). Environment: NODEMEDIC_BENCH_PROCS
//! (default 5000), NODEMEDIC_BENCH_RSS_PROCS (default 10000),
//! NODEMEDIC_BENCH_ITERS (default 30).

use nodemedic_agent::detect::Engine;
use nodemedic_agent::scan::Scanner;
use nodemedic_agent::scan::procfs::FdRecount;
use nodemedic_agent::scan_command::{builtin_policy, scan_once};
use nodemedic_testkit::bench::{env_usize, host, smoke_run, thread_cpu_ns};
use nodemedic_testkit::workload::Generator;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "NODEMEDIC_BENCH_CHILD";

fn start_workload(sleepers: usize, root: bool) -> Generator {
    let w = Generator::start(sleepers, root).expect("start nodemedic-workload");
    eprintln!("workload: {}", w.ready);
    w
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn full_scan(scanner: &mut Scanner, engine: &mut Engine) -> usize {
    let scan = scan_once(scanner, engine, &builtin_policy());
    scan.assessment
        .detectors
        .iter()
        .map(|d| d.verdict.offenders.len())
        .sum()
}

fn time_ps() -> Duration {
    let t = Instant::now();
    let status = Command::new("ps")
        .args(["-eLo", "pid,tid,stat,comm"])
        .stdout(Stdio::null())
        .status()
        .expect("run ps");
    assert!(status.success());
    t.elapsed()
}

/// Child mode: one full scan in a fresh process, then report peak RSS.
fn rss_child() {
    let mut scanner = Scanner::new(Path::new("/")).expect("scanner");
    let mut engine = Engine::new();
    let first = scanner.observe_cgroups_only();
    engine.prime(&first, &[builtin_policy()]);
    let n = full_scan(&mut scanner, &mut engine);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0");
    println!("{hwm} {n} {}", scanner_processes(&mut scanner));
}

fn scanner_processes(scanner: &mut Scanner) -> u64 {
    let mut c = Default::default();
    scanner.scan_processes(&mut c);
    c.processes
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        rss_child();
        return;
    }
    // Any filter argument of `cargo bench` is ignored.
    let smoke = smoke_run();
    let procs = if smoke {
        50
    } else {
        env_usize("NODEMEDIC_BENCH_PROCS", 5000)
    };
    let rss_procs = if smoke {
        50
    } else {
        env_usize("NODEMEDIC_BENCH_RSS_PROCS", 10_000)
    };
    let iters = if smoke {
        3
    } else {
        env_usize("NODEMEDIC_BENCH_ITERS", 30).max(3)
    };
    let (root, kernel) = host();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());

    let (floor, full, full_amortized, ps, cpu_per_scan, cpu_amortized, seen) = {
        let _w = start_workload(procs, root);
        let mut scanner = Scanner::new(Path::new("/")).expect("scanner");
        let mut engine = Engine::new();
        let seen = scanner_processes(&mut scanner);
        // Warm up caches (dentries, allocator) for both paths.
        for _ in 0..3 {
            scanner.floor();
            full_scan(&mut scanner, &mut engine);
        }
        // A second scanner in the watch loop's steady state: small fd
        // holders recounted every third scan (the `--watch` default).
        let mut watching = Scanner::new(Path::new("/")).expect("scanner");
        watching.set_fd_recount(FdRecount {
            every: 3,
            ..FdRecount::default()
        });
        let mut watch_engine = Engine::new();
        for _ in 0..3 {
            full_scan(&mut watching, &mut watch_engine);
        }
        let mut floor = Vec::new();
        let mut full = Vec::new();
        let mut amortized = Vec::new();
        let mut ps = Vec::new();
        let (mut cpu, mut cpu_am) = (0u64, 0u64);
        for i in 0..iters {
            let t = Instant::now();
            std::hint::black_box(scanner.floor());
            floor.push(t.elapsed());

            let c0 = thread_cpu_ns();
            let t = Instant::now();
            std::hint::black_box(full_scan(&mut scanner, &mut engine));
            full.push(t.elapsed());
            cpu += thread_cpu_ns().saturating_sub(c0);

            let c0 = thread_cpu_ns();
            let t = Instant::now();
            std::hint::black_box(full_scan(&mut watching, &mut watch_engine));
            amortized.push(t.elapsed());
            cpu_am += thread_cpu_ns().saturating_sub(c0);

            if i % 3 == 0 {
                ps.push(time_ps());
            }
        }
        (
            median(floor),
            median(full),
            median(amortized),
            median(ps),
            Duration::from_nanos(cpu / iters as u64),
            Duration::from_nanos(cpu_am / iters as u64),
            seen,
        )
    };

    let rss = {
        let _w = start_workload(rss_procs, root);
        let out = Command::new(std::env::current_exe().expect("own path"))
            .env(CHILD_ENV, "1")
            .output()
            .expect("rss child");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut rss_words = rss.split_whitespace();
    let rss_kib: f64 = rss_words.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let _findings = rss_words.next();
    let rss_seen = rss_words.next().unwrap_or("?");

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let core_pct_10s = cpu_per_scan.as_secs_f64() / 10.0 * 100.0;
    let core_pct_10s_am = cpu_amortized.as_secs_f64() / 10.0 * 100.0;
    println!("## scan benchmark");
    println!();
    println!(
        "kernel {kernel}, {cpus} CPUs, {seen} processes visible, {iters} iterations (medians)"
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| full scan / floor (stat only) | {:.2}x | <= 1.5x |",
        ratio(full, floor)
    );
    println!(
        "| watch-mode full scan (fds of small holders recounted every 3rd scan) / floor | {:.2}x | <= 1.5x |",
        ratio(full_amortized, floor)
    );
    println!(
        "| full scan / `ps -eLo pid,tid,stat,comm` | {:.2}x | < 1.0x |",
        ratio(full, ps)
    );
    println!(
        "| CPU per full scan, as % of one core at a 10 s interval | {core_pct_10s:.3}% | < 0.5% |"
    );
    println!(
        "| CPU per watch-mode scan, as % of one core at a 10 s interval | {core_pct_10s_am:.3}% | < 0.5% |"
    );
    println!(
        "| CPU of the floor alone, as % of one core at a 10 s interval | {:.3}% | (reference) |",
        floor.as_secs_f64() / 10.0 * 100.0
    );
    println!(
        "| peak RSS of a fresh scanning process, {rss_seen} processes | {:.1} MiB | <= 20 MiB |",
        rss_kib / 1024.0
    );
    println!();
    println!(
        "absolute (this machine only): floor {:.1} ms, full {:.1} ms, watch-mode {:.1} ms, ps {:.1} ms, cpu/scan {:.1} ms",
        floor.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3,
        full_amortized.as_secs_f64() * 1e3,
        ps.as_secs_f64() * 1e3,
        cpu_per_scan.as_secs_f64() * 1e3
    );
}
