//! Agent benchmark: the DaemonSet process (`nodemedic-agent run`) in steady
//! state on a live workload of ~5,000 processes, reporting to a real API
//! server, against the bare scan measured in the same run — and the tools
//! SREs use instead, as ratios of CPU per full look at every process.
//!
//! Measured, all on the same workload in one run:
//! - bare scan: observe + assess + enrich in this process (no reporting);
//! - `nodemedic-agent run` (release build) against the harness's real
//!   kube-apiserver: CPU per interval (utime+stime / scans), RSS with the
//!   kube client, report writes by reason;
//! - peers, skipped (and said so) when absent — the bench installs nothing:
//!   `ps -eLo pid,tid,stat,comm`, node_exporter's processes collector
//!   (`prometheus-node-exporter`), process-exporter
//!   (`prometheus-process-exporter`), each scraped repeatedly.
//!
//! `cargo bench -p nodemedic-agent --bench agent` (as root for the D-state
//! and cgroup parts of the workload). Environment: NODEMEDIC_BENCH_PROCS
//! (default 5000), NODEMEDIC_BENCH_SCANS (agent intervals measured, default
//! 90), NODEMEDIC_BENCH_SCRAPES (per peer, default 20).

use kube::api::{Api, Patch, PatchParams};
use nodemedic_agent::detect::Engine;
use nodemedic_agent::scan::Scanner;
use nodemedic_agent::scan::procfs::FdRecount;
use nodemedic_agent::scan_command::scan_once;
use nodemedic_crds::policy_document::parse_policy;
use nodemedic_crds::{NodeHealthPolicy, SelectedPolicy};
use nodemedic_testkit::bench::{env_usize, host, smoke_run, thread_cpu_ns};
use nodemedic_testkit::workload::Generator;
use nodemedic_tests::{ControlPlane, ControlPlaneOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_nodemedic-agent");

/// Every detector, thresholds that the workload exceeds steadily (so the
/// conditions settle at once and only heartbeats follow).
const POLICY: &str = "apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: bench}
spec:
  mode: DryRun
  detectors:
    zombies: {threshold: 40, perParentThreshold: 20, minAge: 0s, for: 0s}
    hungTasks: {minDuration: 1s, threshold: 1, for: 0s}
    fdLeak: {usageRatio: 0.8, minOpenFds: 256, for: 0s}
    cpuThrottling: {throttledRatio: 0.25, minPeriods: 10, window: 1m, for: 0s}
";

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// utime + stime of a process, in seconds.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (t(14) + t(15)) / ticks_per_second()
}

/// cutime + cstime of this process (waited-for children), in seconds.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (t(16) + t(17)) / ticks_per_second()
}

fn status_kib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(h, b)| {
        if h.starts_with("HTTP/1.1 200") || h.starts_with("HTTP/1.0 200") {
            b.to_owned()
        } else {
            String::new()
        }
    })
}

fn metric(addr: SocketAddr, prefix: &str) -> f64 {
    http_get(addr, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_http(addr: SocketAddr, path: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if http_get(addr, path).is_some_and(|b| !b.is_empty()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU per look of a scraped exporter: start it, warm it up, scrape `n`
/// times, CPU delta / n. `None` (and a note) when it is not installed.
fn exporter_cpu_per_scrape(
    name: &str,
    program: &str,
    args: &[String],
    addr: SocketAddr,
    n: usize,
) -> Option<f64> {
    if !Path::new(program).exists() {
        println!("- {name}: not installed ({program}); skipped (the bench installs nothing)");
        return None;
    }
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let _guard = Killed(child);
    if !wait_http(addr, "/metrics", Duration::from_secs(30)) {
        println!("- {name}: did not serve /metrics; skipped");
        return None;
    }
    for _ in 0..3 {
        http_get(addr, "/metrics");
    }
    let c0 = cpu_of(pid);
    for _ in 0..n {
        http_get(addr, "/metrics");
    }
    Some((cpu_of(pid) - c0) / n as f64)
}

fn main() {
    let smoke = smoke_run();
    let (procs, scans, scrapes) = if smoke {
        (50, 3, 1)
    } else {
        (
            env_usize("NODEMEDIC_BENCH_PROCS", 5000),
            env_usize("NODEMEDIC_BENCH_SCANS", 90).max(10),
            env_usize("NODEMEDIC_BENCH_SCRAPES", 20).max(3),
        )
    };
    let (root, kernel) = host();
    let policy = parse_policy(POLICY).expect("bench policy");
    let selected = SelectedPolicy::from_policy(&policy).expect("thresholds");
    let workload = Generator::start(procs, root).expect("start nodemedic-workload");
    eprintln!("workload: {}", workload.ready);

    // 1. The bare scan, as the agent does it in a watch loop.
    let mut scanner = Scanner::new(Path::new("/")).expect("scanner");
    scanner.set_fd_recount(FdRecount {
        every: 3,
        ..FdRecount::default()
    });
    let mut engine = Engine::new();
    for _ in 0..5 {
        scan_once(&mut scanner, &mut engine, &selected);
    }
    // Bare scans and scans plus report building alternate, so that both see
    // the same load on a shared machine.
    let iters = if smoke { 2 } else { 30 };
    let (mut bare_ns, mut build_ns) = (0u64, 0u64);
    for _ in 0..iters {
        let c0 = thread_cpu_ns();
        std::hint::black_box(scan_once(&mut scanner, &mut engine, &selected));
        bare_ns += thread_cpu_ns() - c0;
        let scan = scan_once(&mut scanner, &mut engine, &selected);
        let c0 = thread_cpu_ns();
        let status = nodemedic_agent::report::build::status(
            &scan.observation,
            std::slice::from_ref(&scan.assessment),
            &scan.enrichment,
            &scan.pids,
            k8s_openapi::jiff::Timestamp::now(),
            nodemedic_agent::report::build::AgentMeta::default(),
        );
        std::hint::black_box(nodemedic_agent::report::significance::significant(&status));
        build_ns += thread_cpu_ns() - c0;
    }
    let bare_before = bare_ns as f64 / 1e9 / f64::from(iters);
    let build = build_ns as f64 / 1e9 / f64::from(iters);

    // 2. The agent, reporting to a real API server.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cp = rt
        .block_on(ControlPlane::start(
            ControlPlaneOptions::from_env()
                .expect("control plane binaries (tests/envtest/provision.sh)"),
        ))
        .expect("start the control plane");
    let node = rt.block_on(cp.create_node("bench", &[])).expect("node");
    rt.block_on(async {
        let api: Api<NodeHealthPolicy> = Api::all(cp.client().await.expect("client"));
        api.patch(
            "bench",
            &PatchParams::apply("bench"),
            &Patch::Apply(&policy),
        )
        .await
        .expect("policy");
    });
    let admin = free_addr();
    let agent = Command::new(AGENT)
        .arg("run")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("NODE_NAME", &node)
        .env("NODEMEDIC_INTERVAL", "1s")
        .env("NODEMEDIC_ADMIN_ADDR", admin.to_string())
        .env(
            "NODEMEDIC_LOG",
            std::env::var("NODEMEDIC_BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the agent");
    let pid = agent.id();
    let agent = Killed(agent);
    assert!(
        wait_http(admin, "/readyz", Duration::from_secs(60)),
        "the agent did not become ready"
    );
    // Let the conditions settle (they fire at once: every `for` is 0s).
    std::thread::sleep(Duration::from_secs(5));
    let writes = |reason: &str| {
        metric(
            admin,
            &format!("nodemedic_agent_report_writes_total{{result=\"ok\",reason=\"{reason}\"}}"),
        )
    };
    let (s0, c0, w0, t0) = (
        metric(admin, "nodemedic_agent_scans_total"),
        cpu_of(pid),
        writes("change") + writes("heartbeat"),
        Instant::now(),
    );
    // Meanwhile, bare scans in this process, one per second: the agent's
    // figure is compared with bare scans under the same load.
    let mut during_ns = 0u64;
    let mut during = 0u32;
    while t0.elapsed() < Duration::from_secs(scans as u64) {
        let c = thread_cpu_ns();
        std::hint::black_box(scan_once(&mut scanner, &mut engine, &selected));
        during_ns += thread_cpu_ns() - c;
        during += 1;
        std::thread::sleep(
            Duration::from_millis(1000).saturating_sub(Duration::from_nanos(thread_cpu_ns() - c)),
        );
    }
    let bare = during_ns as f64 / 1e9 / f64::from(during.max(1));
    let (s1, c1, w1, window) = (
        metric(admin, "nodemedic_agent_scans_total"),
        cpu_of(pid),
        writes("change") + writes("heartbeat"),
        t0.elapsed(),
    );
    let agent_per_scan = (c1 - c0) / (s1 - s0).max(1.0);
    let rss = status_kib(pid, "VmRSS:") / 1024.0;
    let hwm = status_kib(pid, "VmHWM:") / 1024.0;
    let writes_in_window = w1 - w0;
    let change_writes_per_hour = writes_in_window * 3600.0 / window.as_secs_f64();
    // At the default heartbeat (5m) the agent writes 12 times an hour when
    // nothing changes, plus the change writes measured here.
    let writes_per_hour = 3600.0 / 300.0 + change_writes_per_hour;
    drop(agent);
    cp.shutdown();
    drop(scanner);

    // 3. The peers, on the same workload.
    println!("## agent benchmark");
    println!();
    println!(
        "kernel {kernel}, {} CPUs, workload: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        workload.ready
    );
    println!();
    let ps = {
        let c0 = children_cpu();
        for _ in 0..scrapes {
            let status = Command::new("ps")
                .args(["-eLo", "pid,tid,stat,comm"])
                .stdout(Stdio::null())
                .status()
                .expect("run ps");
            assert!(status.success());
        }
        (children_cpu() - c0) / scrapes as f64
    };
    let ne_addr = free_addr();
    let node_exporter = (!smoke)
        .then(|| {
            exporter_cpu_per_scrape(
                "node_exporter (processes collector)",
                "/usr/bin/prometheus-node-exporter",
                &[
                    "--collector.disable-defaults".to_owned(),
                    "--collector.processes".to_owned(),
                    format!("--web.listen-address={ne_addr}"),
                ],
                ne_addr,
                scrapes,
            )
        })
        .flatten();
    let pe_addr = free_addr();
    let pe_config = std::env::temp_dir().join("nodemedic-bench-process-exporter.yaml");
    std::fs::write(
        &pe_config,
        "process_names:\n  - name: \"{{.Comm}}\"\n    cmdline:\n      - '.+'\n",
    )
    .expect("process-exporter config");
    let process_exporter = (!smoke)
        .then(|| {
            exporter_cpu_per_scrape(
                "process-exporter (every process by comm, threads)",
                "/usr/bin/prometheus-process-exporter",
                &[
                    format!("-web.listen-address={pe_addr}"),
                    format!("-config.path={}", pe_config.display()),
                    "-threads=true".to_owned(),
                ],
                pe_addr,
                scrapes,
            )
        })
        .flatten();
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| agent CPU per interval (reporting on) / bare scan CPU | {:.2}x | <= 1.10x |",
        agent_per_scan / bare
    );
    println!(
        "| building the report and its change check / bare scan CPU | {:.4}x | (breakdown) |",
        build / bare_before
    );
    println!("| agent RSS with the kube client (peak) | {rss:.1} MiB ({hwm:.1} MiB) | <= 30 MiB |");
    println!(
        "| report writes in {:.0} s of steady state ({} scans) | {writes_in_window:.0} | heartbeats only |",
        window.as_secs_f64(),
        s1 - s0
    );
    println!(
        "| API writes per node per hour with no change, default heartbeat 5m | {writes_per_hour:.0} | <= 12 |"
    );
    println!(
        "| `ps -eLo pid,tid,stat,comm` CPU per look / bare scan | {:.2}x | (peer) |",
        ps / bare
    );
    for (name, v) in [
        ("node_exporter processes collector", node_exporter),
        ("process-exporter", process_exporter),
    ] {
        match v {
            Some(v) => println!(
                "| {name} CPU per scrape / bare scan | {:.2}x | (peer) |",
                v / bare
            ),
            None if smoke => {
                println!("| {name} CPU per scrape / bare scan | smoke run: skipped | (peer) |")
            }
            None => println!("| {name} CPU per scrape / bare scan | not installed | (peer) |"),
        }
    }
    println!();
    println!(
        "absolute (this machine only): bare scan {:.1} ms CPU, agent {:.1} ms CPU per interval, ps {:.1} ms{}{}",
        bare * 1e3,
        agent_per_scan * 1e3,
        ps * 1e3,
        node_exporter.map_or(String::new(), |v| format!(
            ", node_exporter {:.1} ms",
            v * 1e3
        )),
        process_exporter.map_or(String::new(), |v| format!(
            ", process-exporter {:.1} ms",
            v * 1e3
        )),
    );
    drop(workload);
}
