//! Workload generator: real zombies, D-state tasks, fd hoarders, threads and
//! throttled busy loops, for benchmarks and demos. It makes itself a child
//! subreaper, and on exit (duration elapsed, stdin closed, SIGINT/SIGTERM)
//! kills and reaps everything it started, including reparented orphans.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nodemedic_testkit::soak;
use nodemedic_testkit::workload::{self, DStateTask, Spawned, ThrottledSpinner};
use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "nodemedic-workload",
    about = "spawns real problem processes; cleans up on exit"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Spawn a mixed workload and hold it until the duration elapses,
    /// SIGINT/SIGTERM arrives, or (with --stop-on-stdin-eof) stdin closes.
    Run(RunArgs),
    /// (helper) Open N fds under a lowered soft RLIMIT_NOFILE, then sleep.
    HoldFds {
        count: u64,
        #[arg(long)]
        soft_limit: Option<u64>,
        /// After the first COUNT, keep opening this many more per second (a leak).
        #[arg(long, default_value_t = 0)]
        leak_per_second: u64,
    },
    /// (helper) Burn CPU forever.
    Spin,
    /// (helper) Set this process's comm to NAME, then sleep.
    Rename { name: String },
    /// (helper) Start N sleeping threads, then sleep.
    Threads { count: usize },
    /// Thaw, kill and remove cgroups left by a generator killed with SIGKILL.
    Cleanup,
    /// Act as a container's init that hosts a zombie factory: become a child
    /// subreaper, start one parent process that makes COUNT zombies and
    /// never reaps them, and reap whatever is reparented to us — so that
    /// when the parent is killed its zombies are reaped, as in a real
    /// container whose init reaps. Runs until SIGTERM/SIGINT or DURATION.
    Zombies(ZombiesArgs),
    /// (helper) Start COUNT children that exit at once, never wait for
    /// them, then sleep: COUNT zombies under this process.
    ZombieParent {
        count: usize,
        /// Make them at this rate instead of all at once (a storm that
        /// builds up); ready after the first.
        #[arg(long, default_value_t = 0.0)]
        per_second: f64,
    },
    /// (helper) Exit at once.
    Exit,
    /// (probe) Print the pid and start time (stat field 22) of every process
    /// whose comm is NAME, one "PID STARTTIME" per line; exit 1 if none.
    FindPid { name: String },
    /// (helper) Mount a FUSE filesystem on DIR (type fuse.nodemedic-test)
    /// whose daemon never answers a read of its file `stuck`, and serve it
    /// until the connection is aborted or unmounted. Prints
    /// "ready PID conn=N" (N: /sys/fs/fuse/connections/N).
    FuseServe {
        dir: PathBuf,
        /// Append a line per READ and INTERRUPT to this file.
        #[arg(long)]
        events: Option<PathBuf>,
    },
    /// (helper) Open FILE, then read one byte of it in each of THREADS new
    /// threads (with 0: in the main thread, after the ready line); a read
    /// that returns is followed by sleeping.
    FuseRead {
        path: PathBuf,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// (probe) Read FILE and print how many bytes it holds, or the error;
    /// exit 0 when readable, 3 when permission is denied, 1 otherwise.
    /// Used to show what a pod with the agent's privileges can read.
    ReadFile { path: PathBuf },
    /// (soak) Repeat a parallel build of a small C project in DIR (written
    /// there first): `make clean`, then `make -jJOBS all test`, busy for
    /// DUTY of the time.
    BuildLoop {
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        jobs: usize,
        #[arg(long, default_value_t = 0.5)]
        duty: f64,
        /// Translation units in the project.
        #[arg(long, default_value_t = 24)]
        files: usize,
        /// Runs of the built program per round (through `xargs -P 4`).
        #[arg(long, default_value_t = 200)]
        tests: usize,
        #[command(flatten)]
        soak: SoakArgs,
    },
    /// (soak) THREADS threads starting PROGRAM with posix_spawn (vfork) and
    /// waiting for it, RATE times a second in all.
    SpawnChurn {
        #[arg(long, default_value_t = 4)]
        threads: usize,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value = "/bin/true")]
        program: PathBuf,
        #[command(flatten)]
        soak: SoakArgs,
    },
    /// (soak) Open and close RATE fds a second around a level wandering
    /// between BASE and BASE+SWING, under a soft RLIMIT_NOFILE.
    FdChurn {
        #[arg(long, default_value_t = 2048)]
        base: u64,
        #[arg(long, default_value_t = 1024)]
        swing: u64,
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        #[arg(long, default_value_t = 4096)]
        soft_limit: u64,
        #[command(flatten)]
        soak: SoakArgs,
    },
    /// (soak) A service under a CPU quota: Poisson requests with
    /// exponential CPU cost, periodic spikes, a startup burst.
    Burst {
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = 10.0)]
        rps: f64,
        #[arg(long, default_value_t = 8.0)]
        mean_ms: f64,
        #[arg(long, value_parser = parse_duration, default_value = "2m")]
        spike_every: Duration,
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        spike_for: Duration,
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        startup: Duration,
        #[command(flatten)]
        soak: SoakArgs,
    },
    /// (soak) A healthy parent: PER_SECOND children a second, each reaped
    /// REAP_AFTER later (a zombie until then).
    ReapingParent {
        #[arg(long, default_value_t = 10.0)]
        per_second: f64,
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        reap_after: Duration,
        #[arg(long, default_value = "/bin/true")]
        program: PathBuf,
        #[command(flatten)]
        soak: SoakArgs,
    },
    /// (soak) Hold COUNT fds (/dev/null) under a soft RLIMIT_NOFILE, stably.
    HoldSteady {
        count: u64,
        #[arg(long, default_value_t = 65536)]
        soft_limit: u64,
        #[command(flatten)]
        soak: SoakArgs,
    },
}

/// What every soak workload takes.
#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// Join these cgroup directories first (pod-shaped container cgroups,
    /// one per hierarchy).
    #[arg(long)]
    join_cgroup: Vec<PathBuf>,
    /// Publish counters to this file.
    #[arg(long)]
    stats: Option<PathBuf>,
}

impl SoakArgs {
    /// Dies with the parent, joins the cgroups, starts publishing, says ready.
    fn start(&self, counters: &[&'static str]) -> Result<soak::Stats> {
        die_with_parent();
        soak::join_cgroups(&self.join_cgroup)?;
        let stats = soak::Stats::new(self.stats.clone(), counters);
        stats.publish_every();
        soak::ready();
        Ok(stats)
    }
}

#[derive(Debug, clap::Args)]
struct ZombiesArgs {
    /// Zombies under the parent.
    #[arg(long, env = "NODEMEDIC_WL_ZOMBIES", default_value_t = 30)]
    count: usize,
    /// Make them at this rate (a storm building up) instead of all at once.
    #[arg(long, env = "NODEMEDIC_WL_ZOMBIES_PER_SECOND", default_value_t = 0.0)]
    per_second: f64,
    /// Move this process into these cgroup directories first (writes its
    /// pid into each `cgroup.procs`), e.g. a pod-shaped path in each v1
    /// hierarchy, so that everything it starts is attributed there.
    #[arg(long, env = "NODEMEDIC_WL_JOIN_CGROUP")]
    join_cgroup: Vec<PathBuf>,
    /// Stop after this long.
    #[arg(long, env = "NODEMEDIC_WL_DURATION", value_parser = parse_duration, default_value = "1h")]
    duration: Duration,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, env = "NODEMEDIC_WL_SLEEPERS", default_value_t = 5000)]
    sleepers: usize,
    #[arg(long, env = "NODEMEDIC_WL_ZOMBIE_PARENTS", default_value_t = 2)]
    zombie_parents: usize,
    #[arg(long, env = "NODEMEDIC_WL_ZOMBIES_PER_PARENT", default_value_t = 25)]
    zombies_per_parent: usize,
    #[arg(long, env = "NODEMEDIC_WL_D_STATE", default_value_t = 2)]
    d_state: usize,
    #[arg(long, env = "NODEMEDIC_WL_FD_HOARDERS", default_value_t = 2)]
    fd_hoarders: usize,
    #[arg(long, env = "NODEMEDIC_WL_FDS_EACH", default_value_t = 900)]
    fds_each: u64,
    #[arg(long, env = "NODEMEDIC_WL_FD_SOFT_LIMIT", default_value_t = 1024)]
    fd_soft_limit: u64,
    /// Threads in one multi-threaded process.
    #[arg(long, env = "NODEMEDIC_WL_THREADS", default_value_t = 64)]
    threads: usize,
    /// Busy loops, each in its own cgroup v1 CPU group with a 10% quota.
    #[arg(long, env = "NODEMEDIC_WL_SPINNERS", default_value_t = 1)]
    spinners: usize,
    /// Also stop when stdin reaches end of file (for a parent holding a pipe).
    #[arg(long, env = "NODEMEDIC_WL_STOP_ON_STDIN_EOF")]
    stop_on_stdin_eof: bool,
    /// Hold the workload this long at most.
    #[arg(long, env = "NODEMEDIC_WL_DURATION", value_parser = parse_duration, default_value = "10m")]
    duration: Duration,
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Helpers die with their parent so that nothing outlives a crashed generator.
fn die_with_parent() {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::HoldFds {
            count,
            soft_limit,
            leak_per_second,
        } => {
            die_with_parent();
            if let Some(soft) = soft_limit {
                let cur = rustix::process::getrlimit(Resource::Nofile);
                rustix::process::setrlimit(
                    Resource::Nofile,
                    Rlimit {
                        current: Some(soft),
                        maximum: cur.maximum,
                    },
                )
                .context("lowering RLIMIT_NOFILE")?;
            }
            let files = (0..count)
                .map(|_| std::fs::File::open("/dev/null"))
                .collect::<std::io::Result<Vec<_>>>()
                .context("opening fds")?;
            workload::announce_ready();
            let mut files = files;
            if leak_per_second == 0 {
                sleep_forever()
            }
            // Paced by the clock, not by the sleeps: a late wakeup on a busy
            // machine catches up, so the leak rate stays the one asked for.
            let pause = Duration::from_secs(1) / u32::try_from(leak_per_second).unwrap_or(u32::MAX);
            let started = std::time::Instant::now();
            let mut leaked: u64 = 0;
            loop {
                std::thread::sleep(pause);
                let due = (started.elapsed().as_secs_f64() * leak_per_second as f64) as u64;
                while leaked < due {
                    leaked += 1;
                    // At the limit (EMFILE) the leak simply stops growing.
                    if let Ok(f) = std::fs::File::open("/dev/null") {
                        files.push(f);
                    }
                }
            }
        }
        Cmd::Spin => {
            die_with_parent();
            workload::announce_ready();
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Cmd::Rename { name } => {
            die_with_parent();
            let c = std::ffi::CString::new(name).context("name contains NUL")?;
            rustix::thread::set_name(&c).context("prctl(PR_SET_NAME)")?;
            workload::announce_ready();
            sleep_forever()
        }
        Cmd::Threads { count } => {
            die_with_parent();
            for _ in 0..count {
                std::thread::spawn(|| sleep_forever());
            }
            workload::announce_ready();
            sleep_forever()
        }
        Cmd::Zombies(args) => zombies(args),
        Cmd::ZombieParent { count, per_second } => {
            die_with_parent();
            let exe = std::env::current_exe().context("locating own binary")?;
            let gap = (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
            // Dropping a Child does not wait for it: each exits and stays a zombie.
            for i in 0..count {
                std::process::Command::new(&exe)
                    .arg("exit")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .context("spawning a child")?;
                match gap {
                    Some(gap) => {
                        if i == 0 {
                            workload::announce_ready();
                        }
                        std::thread::sleep(gap);
                    }
                    None if i + 1 == count => workload::announce_ready(),
                    None => {}
                }
            }
            if count == 0 {
                workload::announce_ready();
            }
            sleep_forever()
        }
        Cmd::Exit => Ok(()),
        Cmd::FindPid { name } => {
            let mut found = false;
            for entry in std::fs::read_dir("/proc")
                .context("reading /proc")?
                .flatten()
            {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                if stat[open + 1..close] != name {
                    continue;
                }
                // Fields after the comm start at field 3 (state); starttime is 22.
                if let Some(start) = stat[close + 1..].split_whitespace().nth(19) {
                    println!("{pid} {start}");
                    found = true;
                }
            }
            if found { Ok(()) } else { std::process::exit(1) }
        }
        Cmd::ReadFile { path } => match std::fs::read(&path) {
            Ok(bytes) => {
                println!("readable: {} bytes", bytes.len());
                Ok(())
            }
            Err(e) => {
                println!("{}: {e}", path.display());
                std::process::exit(if e.kind() == std::io::ErrorKind::PermissionDenied {
                    3
                } else {
                    1
                })
            }
        },
        Cmd::FuseServe { dir, events } => {
            die_with_parent();
            let events: Box<dyn std::io::Write> = match events {
                Some(p) => Box::new(
                    std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&p)
                        .with_context(|| format!("opening {}", p.display()))?,
                ),
                None => Box::new(std::io::sink()),
            };
            nodemedic_testkit::fuse::serve(
                &dir,
                |conn| say(&format!("ready {} conn={conn}", std::process::id())),
                events,
            )
            .with_context(|| format!("serving FUSE on {}", dir.display()))
        }
        Cmd::FuseRead { path, threads } => {
            die_with_parent();
            let file = std::sync::Arc::new(
                std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            );
            let read_one = |f: &std::fs::File| {
                use std::os::unix::fs::FileExt as _;
                let mut byte = [0u8; 1];
                let _ = f.read_at(&mut byte, 0);
            };
            for _ in 0..threads {
                let f = std::sync::Arc::clone(&file);
                std::thread::spawn(move || {
                    read_one(&f);
                    sleep_forever()
                });
            }
            workload::announce_ready();
            if threads == 0 {
                read_one(&file);
            }
            sleep_forever()
        }
        Cmd::BuildLoop {
            dir,
            jobs,
            duty,
            files,
            tests,
            soak,
        } => {
            soak::write_c_project(&dir, files, tests)
                .with_context(|| format!("writing the C project in {}", dir.display()))?;
            let stats = soak.start(&[
                "rounds",
                "failed_rounds",
                "procs_per_round",
                "round_ms_total",
            ])?;
            soak::build_loop(&dir, jobs, duty, &stats).context("running make")?;
            Ok(())
        }
        Cmd::SpawnChurn {
            threads,
            rate,
            program,
            soak,
        } => {
            let stats = soak.start(&["spawned", "failed", "behind"])?;
            soak::spawn_churn(threads, rate, &program, &stats)
        }
        Cmd::FdChurn {
            base,
            swing,
            rate,
            soft_limit,
            soak,
        } => {
            let stats = soak.start(&[
                "opened", "closed", "open_now", "open_max", "open_min", "errors",
            ])?;
            soak::fd_churn(base, swing, rate, soft_limit, &stats)
        }
        Cmd::Burst {
            workers,
            rps,
            mean_ms,
            spike_every,
            spike_for,
            startup,
            soak,
        } => {
            let stats = soak.start(&["requests", "busy_ms", "spikes"])?;
            soak::burst(
                workers,
                rps,
                mean_ms,
                spike_every,
                spike_for,
                startup,
                &stats,
            )
        }
        Cmd::ReapingParent {
            per_second,
            reap_after,
            program,
            soak,
        } => {
            let stats = soak.start(&["spawned", "reaped", "zombies_now", "zombies_max"])?;
            soak::reaping_parent(per_second, reap_after, &program, &stats)
        }
        Cmd::HoldSteady {
            count,
            soft_limit,
            soak,
        } => {
            let cur = rustix::process::getrlimit(Resource::Nofile);
            rustix::process::setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(soft_limit),
                    maximum: cur.maximum,
                },
            )
            .context("setting RLIMIT_NOFILE")?;
            let files = (0..count)
                .map(|_| std::fs::File::open("/dev/null"))
                .collect::<std::io::Result<Vec<_>>>()
                .context("opening fds")?;
            let stats = soak.start(&["held"])?;
            stats.set("held", files.len() as u64);
            stats.publish();
            sleep_forever()
        }
        Cmd::Cleanup => {
            let n = workload::cleanup_stale_groups();
            println!("removed {n} stale cgroup(s)");
            let m = nodemedic_testkit::fuse::cleanup_stale_mounts();
            println!("detached {m} stale FUSE mount(s)");
            Ok(())
        }
    }
}

/// A line on stdout; a reader that went away (a test that only waited for
/// the ready line) is no reason to stop reaping.
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    nodemedic_crds::parse_duration(s).map_err(|e| e.to_string())
}

fn zombies(args: ZombiesArgs) -> Result<()> {
    for dir in &args.join_cgroup {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {}", dir.display()))?;
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .context("PR_SET_CHILD_SUBREAPER")?;
    let exe = std::env::current_exe().context("locating own binary")?;
    let mut parent = workload::helper(
        &exe,
        &[
            "zombie-parent",
            &args.count.to_string(),
            "--per-second",
            &args.per_second.to_string(),
        ],
    )
    .context("starting the zombie parent")?;
    let parent_pid = parent.pid();
    println!(
        "ready zombie-parent={parent_pid} zombies={} init={}",
        args.count,
        std::process::id()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let deadline = tokio::time::sleep(args.duration);
        tokio::pin!(deadline);
        let mut reaped = 0u64;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    // Reap everything that ended: the parent when it is
                    // killed, and the zombies reparented to us then.
                    while let Ok(Some((pid, status))) =
                        rustix::process::waitpid(None, WaitOptions::NOHANG)
                    {
                        if pid.as_raw_nonzero().get() == parent_pid {
                            say(&format!("zombie parent {parent_pid} ended ({status:?})"));
                            parent.forget();
                        } else {
                            reaped += 1;
                        }
                    }
                    if reaped > 0 {
                        say(&format!("reaped {reaped} orphaned children"));
                        reaped = 0;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    drop(parent);
    reap_orphans();
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .context("PR_SET_CHILD_SUBREAPER")?;
    let exe = std::env::current_exe().context("locating own binary")?;
    let lifetime = args.duration + Duration::from_secs(30);
    let started = Instant::now();
    // Everything lives in these; dropping them kills and reaps.
    let mut plain: Vec<Spawned> = Vec::new();
    let mut d_tasks: Vec<DStateTask> = Vec::new();
    let mut spinners: Vec<ThrottledSpinner> = Vec::new();
    let result = (|| -> Result<()> {
        plain.extend(workload::sleepers(args.sleepers, lifetime).context("spawning sleepers")?);
        for _ in 0..args.zombie_parents {
            plain.push(workload::zombie_parent(args.zombies_per_parent, lifetime)?);
        }
        for _ in 0..args.d_state {
            d_tasks.push(DStateTask::spawn(lifetime).context("spawning a D-state task")?);
        }
        for _ in 0..args.fd_hoarders {
            plain.push(workload::fd_hoarder(
                &exe,
                args.fds_each,
                args.fd_soft_limit,
            )?);
        }
        if args.threads > 0 {
            plain.push(workload::helper(
                &exe,
                &["threads", &args.threads.to_string()],
            )?);
        }
        for _ in 0..args.spinners {
            spinners.push(ThrottledSpinner::spawn(&exe, 10_000, 100_000)?);
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("spawning failed, cleaning up: {e:#}");
    } else {
        println!(
            "ready: {} processes spawned in {:.1}s (pid {})",
            plain.len() + d_tasks.len() + spinners.len(),
            started.elapsed().as_secs_f64(),
            std::process::id()
        );
        wait_for_stop(args.duration, args.stop_on_stdin_eof)?;
    }
    drop(spinners);
    drop(d_tasks);
    drop(plain);
    reap_orphans();
    Ok(())
}

/// Blocks until the duration elapses, stdin reaches EOF, or a stop signal.
fn wait_for_stop(duration: Duration, stop_on_stdin_eof: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        let stdin_eof = async move {
            if !stop_on_stdin_eof {
                return std::future::pending().await;
            }
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = [0u8; 64];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            })
            .await;
        };
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = stdin_eof => {}
        }
        Ok(())
    })
}

/// Kills children reparented to us (orphaned zombies' siblings, vfork
/// children) and reaps until none is left.
fn reap_orphans() {
    let me = std::process::id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                let ppid = nodemedic_testkit::ppid_of(pid).map(|p| p.to_string());
                if ppid.as_deref() == Some(me.as_str())
                    && let Some(p) = Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(p, Signal::KILL);
                }
            }
        }
        match rustix::process::waitpid(None, WaitOptions::NOHANG) {
            Ok(Some(_)) => continue,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break, // ECHILD: nothing left; or the deadline passed.
        }
    }
}
