//! Healthy busy-node activity for the soak benchmark (`nodemedic-soak`, see
//! docs/benchmarks.md): what a production worker node does all day and what
//! nodemedic must *not* take for a problem. Each workload runs in the
//! `nodemedic-workload` helper process (subcommands `build-loop`,
//! `spawn-churn`, `fd-churn`, `burst`, `reaping-parent`), joins the
//! pod-shaped cgroups it is given before it starts anything, and keeps its
//! counters in a small stats file (`key value` lines, replaced atomically
//! every two seconds) that the soak reads.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes this process's pid into `cgroup.procs` of each directory (a
/// pod-shaped container cgroup per hierarchy): everything it starts from
/// now on is charged there.
pub fn join_cgroups(dirs: &[PathBuf]) -> std::io::Result<()> {
    for dir in dirs {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("joining cgroup {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}

/// Counters of one workload, published to a stats file.
#[derive(Debug, Clone)]
pub struct Stats {
    path: Option<PathBuf>,
    started: Instant,
    counters: Arc<Vec<(&'static str, AtomicU64)>>,
}

impl Stats {
    /// Counters named `names`, all 0, written to `path` (if any) by
    /// [`Stats::publish_every`].
    pub fn new(path: Option<PathBuf>, names: &[&'static str]) -> Self {
        Self {
            path,
            started: Instant::now(),
            counters: Arc::new(names.iter().map(|n| (*n, AtomicU64::new(0))).collect()),
        }
    }

    fn counter(&self, name: &str) -> &AtomicU64 {
        &self
            .counters
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }

    pub fn add(&self, name: &str, n: u64) {
        self.counter(name).fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, name: &str, v: u64) {
        self.counter(name).store(v, Ordering::Relaxed);
    }

    pub fn max(&self, name: &str, v: u64) {
        self.counter(name).fetch_max(v, Ordering::Relaxed);
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counter(name).load(Ordering::Relaxed)
    }

    /// Writes the file once now (`elapsed_ms` plus every counter).
    pub fn publish(&self) {
        let Some(path) = &self.path else { return };
        let mut text = format!("elapsed_ms {}\n", self.started.elapsed().as_millis());
        for (name, v) in self.counters.iter() {
            text.push_str(&format!("{name} {}\n", v.load(Ordering::Relaxed)));
        }
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    /// A thread that publishes every two seconds, forever.
    pub fn publish_every(&self) {
        let me = self.clone();
        std::thread::spawn(move || {
            loop {
                me.publish();
                std::thread::sleep(Duration::from_secs(2));
            }
        });
    }
}

/// Reads a stats file back: `(key, value)` pairs.
pub fn read_stats(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A small deterministic generator (xorshift), so that workloads need no
/// dependency and a run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with this mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

fn seed() -> u64 {
    u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

// ---------------------------------------------------------------- build --

/// Writes a small C project to `dir`: `files` translation units, a
/// Makefile whose `all` links them and whose `test` runs the program
/// `tests` times through `xargs -P` (a CI job's unit tests as many short
/// processes).
pub fn write_c_project(dir: &Path, files: usize, tests: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut objs = Vec::new();
    for i in 0..files {
        let mut src = String::from("#include <stdio.h>\n#include <string.h>\n\n");
        // Enough code that cc1 works for a few tens of milliseconds.
        for f in 0..24 {
            src.push_str(&format!(
                "static int t{i}_{f}(const char *s, int n) {{\n  int h = {f};\n  for (int k = 0; k < n && s[k]; k++) {{\n    h = h * 31 + s[k];\n    if (h % 7 == {m}) h ^= (int)strlen(s + k);\n    switch (h & 3) {{ case 0: h += k; break; case 1: h -= {f}; break; default: h ^= 0x5a; }}\n  }}\n  return h;\n}}\n",
                m = f % 7
            ));
        }
        src.push_str(&format!("int unit{i}(const char *s) {{\n  int h = 0;\n"));
        for f in 0..24 {
            src.push_str(&format!("  h += t{i}_{f}(s, {});\n", 8 + f));
        }
        src.push_str("  return h;\n}\n");
        std::fs::write(dir.join(format!("unit{i}.c")), src)?;
        objs.push(format!("unit{i}.o"));
    }
    let mut main = String::from("#include <stdio.h>\n");
    for i in 0..files {
        main.push_str(&format!("int unit{i}(const char *s);\n"));
    }
    main.push_str("int main(int argc, char **argv) {\n  int h = 0;\n  const char *s = argc > 1 ? argv[1] : \"x\";\n");
    for i in 0..files {
        main.push_str(&format!("  h += unit{i}(s);\n"));
    }
    main.push_str("  return h == 42 ? 1 : 0;\n}\n");
    std::fs::write(dir.join("main.c"), main)?;
    let makefile = format!(
        "CFLAGS ?= -O1\nOBJS = main.o {objs}\n\nall: app\n\napp: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\ntest: app\n\tseq 1 {tests} | xargs -P 4 -n 1 ./app\n\nclean:\n\trm -f app *.o\n\n.PHONY: all test clean\n",
        objs = objs.join(" ")
    );
    std::fs::write(dir.join("Makefile"), makefile)
}

/// Forks since boot (`processes` of /proc/stat).
pub fn forks_since_boot() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
        .unwrap_or(0)
}

fn build_round(dir: &Path, jobs: usize) -> std::io::Result<bool> {
    let make = |goals: &[&str]| {
        Command::new("make")
            .args(["-s", "-C"])
            .arg(dir)
            .arg(format!("-j{jobs}"))
            .args(goals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    // `clean` apart: with -j, goals of one invocation may run at once.
    let cleaned = make(&["clean"])?;
    Ok(cleaned.success() && make(&["all", "test"])?.success())
}

/// Repeats a parallel build (`make clean`, `make -jJOBS all test`) of the project in
/// `dir`, busy for `duty` of the time (it sleeps after each round for as
/// long as keeps it there). Counters: `rounds`, `failed_rounds`,
/// `procs_per_round` (measured from /proc/stat's fork counter over the
/// quietest of the first three rounds: other processes on the machine
/// only add to it), `round_ms_total`.
pub fn build_loop(dir: &Path, jobs: usize, duty: f64, stats: &Stats) -> std::io::Result<()> {
    let duty = duty.clamp(0.05, 1.0);
    let mut per_round = u64::MAX;
    loop {
        let forks = forks_since_boot();
        let t = Instant::now();
        let ok = build_round(dir, jobs)?;
        let took = t.elapsed();
        let spawned = forks_since_boot().saturating_sub(forks);
        stats.add("rounds", 1);
        if !ok {
            stats.add("failed_rounds", 1);
        }
        stats.add("round_ms_total", took.as_millis() as u64);
        if stats.get("rounds") <= 3 && ok {
            per_round = per_round.min(spawned);
            stats.set("procs_per_round", per_round);
        }
        std::thread::sleep(took.mul_f64((1.0 - duty) / duty));
    }
}

// --------------------------------------------------------- spawn churn --

/// `threads` threads that each start `program` and wait for it, together
/// `rate` times a second. `std::process::Command` starts children with
/// glibc's `posix_spawn` (clone with CLONE_VM|CLONE_VFORK: the calling
/// thread waits in `D` until the child execs) when, as here, nothing has to
/// run between fork and exec. Counters: `spawned`, `failed`, `behind`
/// (ticks at which a thread could not keep the rate).
pub fn spawn_churn(threads: usize, rate: f64, program: &Path, stats: &Stats) -> ! {
    let threads = threads.max(1);
    let per_thread = (rate / threads as f64).max(0.1);
    for _ in 0..threads {
        let stats = stats.clone();
        let program = program.to_path_buf();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut done = 0u64;
            loop {
                let due = (started.elapsed().as_secs_f64() * per_thread) as u64;
                if due > done + per_thread as u64 {
                    // More than a second behind: do not catch up in a burst.
                    stats.add("behind", 1);
                    done = due - per_thread as u64;
                }
                while done < due {
                    done += 1;
                    match Command::new(&program)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .and_then(|mut c| c.wait())
                    {
                        Ok(_) => stats.add("spawned", 1),
                        Err(_) => stats.add("failed", 1),
                    }
                }
                std::thread::sleep(
                    Duration::from_secs_f64(1.0 / per_thread).min(Duration::from_millis(20)),
                );
            }
        });
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// ------------------------------------------------------------ fd churn --

/// Opens and closes `rate` fds a second around a working set that wanders
/// between `base` and `base + swing` (a new target level every few
/// seconds), under a soft RLIMIT_NOFILE of `soft_limit`: a busy server's
/// connections and files, not a leak. Counters: `opened`, `closed`,
/// `open_now`, `open_max`, `open_min`, `errors`.
pub fn fd_churn(base: u64, swing: u64, rate: f64, soft_limit: u64, stats: &Stats) -> ! {
    let cur = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(soft_limit),
            maximum: cur.maximum,
        },
    );
    let mut rng = Rng::new(seed());
    let mut files: VecDeque<std::fs::File> = VecDeque::new();
    let open = |files: &mut VecDeque<std::fs::File>| match std::fs::File::open("/dev/null") {
        Ok(f) => {
            files.push_back(f);
            stats.add("opened", 1);
        }
        Err(_) => stats.add("errors", 1),
    };
    for _ in 0..base {
        open(&mut files);
    }
    stats.set("open_min", u64::MAX);
    let started = Instant::now();
    let mut target = base;
    let mut next_level = Instant::now();
    let mut done = 0u64;
    loop {
        if Instant::now() >= next_level {
            target = base + (rng.unit() * swing as f64) as u64;
            next_level = Instant::now() + Duration::from_secs_f64(2.0 + rng.unit() * 8.0);
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let n = due.saturating_sub(done).min(rate as u64);
        done = due;
        // Each opened fd replaces the oldest one; the level then drifts
        // towards the target.
        for _ in 0..n {
            open(&mut files);
            let len = files.len() as u64;
            if len > target || rng.unit() < 0.5 && len > base {
                files.pop_front();
                stats.add("closed", 1);
            }
        }
        while (files.len() as u64) > target + 64 {
            files.pop_front();
            stats.add("closed", 1);
        }
        let now = files.len() as u64;
        stats.set("open_now", now);
        stats.max("open_max", now);
        if now < stats.get("open_min") {
            stats.set("open_min", now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --------------------------------------------------------------- burst --

/// A service in a container with a CPU quota: `workers` threads serve
/// requests arriving at `rps` a second (Poisson), each costing an
/// exponentially distributed `mean_ms` of CPU; every `spike_every` all
/// workers are busy for `spike_for` (a cache refresh, a GC, a batch job),
/// and the first `startup` after start too (a JVM warming up). Counters:
/// `requests`, `busy_ms` (CPU time asked for), `spikes`.
pub fn burst(
    workers: usize,
    rps: f64,
    mean_ms: f64,
    spike_every: Duration,
    spike_for: Duration,
    startup: Duration,
    stats: &Stats,
) -> ! {
    let workers = workers.max(1);
    let spin = |d: Duration| {
        let t = Instant::now();
        let mut x: u64 = 1;
        while t.elapsed() < d {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    };
    let started = Instant::now();
    for w in 0..workers {
        let stats = stats.clone();
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed() ^ (w as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
            let per_worker = rps / workers as f64;
            let mut next_spike = started + spike_every;
            spin(startup);
            loop {
                if !spike_every.is_zero() && Instant::now() >= next_spike {
                    if w == 0 {
                        stats.add("spikes", 1);
                    }
                    spin(spike_for);
                    stats.add("busy_ms", spike_for.as_millis() as u64);
                    next_spike += spike_every;
                }
                std::thread::sleep(Duration::from_secs_f64(rng.exp(1.0 / per_worker).min(30.0)));
                let cost = rng.exp(mean_ms).min(mean_ms * 10.0);
                spin(Duration::from_secs_f64(cost / 1000.0));
                stats.add("requests", 1);
                stats.add("busy_ms", cost as u64);
            }
        });
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// ------------------------------------------------------ reaping parent --

/// A healthy parent: starts `per_second` children a second (`program`,
/// which exits at once) and reaps each `reap_after` later — between its
/// exit and that wait() it is a zombie, as under any parent that reaps on
/// a timer or a loop rather than on SIGCHLD. Counters: `spawned`,
/// `reaped`, `zombies_now`, `zombies_max`.
pub fn reaping_parent(per_second: f64, reap_after: Duration, program: &Path, stats: &Stats) -> ! {
    let mut children: VecDeque<(Instant, Child)> = VecDeque::new();
    let started = Instant::now();
    let mut done = 0u64;
    loop {
        let due = (started.elapsed().as_secs_f64() * per_second) as u64;
        while done < due {
            done += 1;
            if let Ok(c) = Command::new(program)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                children.push_back((Instant::now(), c));
                stats.add("spawned", 1);
            }
        }
        while children
            .front()
            .is_some_and(|(t, _)| t.elapsed() >= reap_after)
        {
            if let Some((_, mut c)) = children.pop_front() {
                let _ = c.wait();
                stats.add("reaped", 1);
            }
        }
        let waiting = children.len() as u64;
        stats.set("zombies_now", waiting);
        stats.max("zombies_max", waiting);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prints the ready line and flushes (the soak waits for it).
pub fn ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
}
