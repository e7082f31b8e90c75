//! Pure parsers for the procfs and cgroupfs text formats the scanner reads.
//!
//! Every parser takes bytes or text that came from outside the process and
//! returns a typed error instead of panicking: the fuzz target and the property
//! tests hold them to that.

use thiserror::Error;

/// Why a file's content could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0} is not a valid number")]
    BadNumber(&'static str),
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: u8,
    pub ppid: i32,
    pub flags: u64,
    pub num_threads: u32,
    /// Clock ticks since boot.
    pub starttime: u64,
    /// Virtual memory size in bytes (field 23) and resident pages (field
    /// 24): figures of the task's address space (`mm`), so two tasks that
    /// share one (threads, a vfork child and its parent) show the same.
    /// `None` when the line is cut short.
    pub vsize: Option<u64>,
    pub rss: Option<u64>,
    /// CPU it last ran on (field 39); its `se.exec_start` is in that CPU's
    /// scheduler clock.
    pub processor: Option<u32>,
}

/// `PF_KTHREAD` from include/linux/sched.h: the task is a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// `PF_FORKNOEXEC` from include/linux/sched.h: the task was forked and has
/// not called `execve` since (set by `copy_process`, cleared by `exec`).
pub const PF_FORKNOEXEC: u64 = 0x0000_0040;

impl ProcStat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Forked and not yet exec'd.
    pub fn fork_no_exec(&self) -> bool {
        self.flags & PF_FORKNOEXEC != 0
    }
}

fn num<T: std::str::FromStr>(field: Option<&[u8]>, name: &'static str) -> Result<T, ParseError> {
    let raw = field.ok_or(ParseError::Missing(name))?;
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::BadNumber(name))
}

/// Parses `/proc/PID/stat`. The comm sits between the first `(` and the LAST
/// `)`, because a process may name itself `a) Z (b`.
pub fn parse_stat(buf: &[u8]) -> Result<ProcStat, ParseError> {
    let open = buf
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ParseError::Malformed("no '(' before comm"))?;
    let close = buf
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(ParseError::Malformed("no ')' after comm"))?;
    if close < open {
        return Err(ParseError::Malformed("')' before '('"));
    }
    let pid = num(Some(buf[..open].trim_ascii()), "pid")?;
    let comm = String::from_utf8_lossy(&buf[open + 1..close]).into_owned();
    let mut rest = buf[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty());
    // Fields numbered as in proc(5): 3 state, 4 ppid, 9 flags, 20 num_threads, 22 starttime.
    let state = match rest.next() {
        Some([s]) => *s,
        Some(_) => return Err(ParseError::Malformed("state is not one character")),
        None => return Err(ParseError::Missing("state")),
    };
    let ppid = num(rest.next(), "ppid")?;
    let flags = num(rest.nth(4), "flags")?;
    let num_threads = num(rest.nth(10), "num_threads")?;
    let starttime = num(rest.nth(1), "starttime")?;
    let vsize = rest.next().and_then(|f| num(Some(f), "vsize").ok());
    let rss = rest.next().and_then(|f| num(Some(f), "rss").ok());
    let processor = rest.nth(14).and_then(|f| num(Some(f), "processor").ok());
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid,
        flags,
        num_threads,
        starttime,
        vsize,
        rss,
        processor,
    })
}

/// The fields of `/proc/PID/status` the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// PIDs from the outermost to the innermost PID namespace; the last is the
    /// PID as the container sees it.
    pub nspid: Vec<i32>,
    pub voluntary_ctxt_switches: Option<u64>,
    pub nonvoluntary_ctxt_switches: Option<u64>,
}

impl ProcStatus {
    pub fn innermost_pid(&self) -> Option<i32> {
        self.nspid.last().copied()
    }
    pub fn switches(&self) -> Option<u64> {
        Some(self.voluntary_ctxt_switches? + self.nonvoluntary_ctxt_switches?)
    }
}

pub fn parse_status(text: &str) -> Result<ProcStatus, ParseError> {
    let mut out = ProcStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "NSpid" => {
                out.nspid = value
                    .split_ascii_whitespace()
                    .map(|p| p.parse().map_err(|_| ParseError::BadNumber("NSpid")))
                    .collect::<Result<_, _>>()?;
            }
            "voluntary_ctxt_switches" => {
                out.voluntary_ctxt_switches = Some(
                    value
                        .parse()
                        .map_err(|_| ParseError::BadNumber(key_name(key)))?,
                );
            }
            "nonvoluntary_ctxt_switches" => {
                out.nonvoluntary_ctxt_switches = Some(
                    value
                        .parse()
                        .map_err(|_| ParseError::BadNumber(key_name(key)))?,
                );
            }
            _ => {}
        }
    }
    Ok(out)
}

fn key_name(key: &str) -> &'static str {
    if key.starts_with("non") {
        "nonvoluntary_ctxt_switches"
    } else {
        "voluntary_ctxt_switches"
    }
}

/// A resource limit value: a number or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Limit {
    Value(u64),
    Unlimited,
}

impl Limit {
    pub fn as_option(self) -> Option<u64> {
        match self {
            Limit::Value(v) => Some(v),
            Limit::Unlimited => None,
        }
    }
}

fn parse_limit(word: &str) -> Result<Limit, ParseError> {
    if word == "unlimited" {
        return Ok(Limit::Unlimited);
    }
    word.parse()
        .map(Limit::Value)
        .map_err(|_| ParseError::BadNumber("limit"))
}

/// Extracts the soft "Max open files" limit from `/proc/PID/limits`.
pub fn parse_nofile_soft_limit(text: &str) -> Result<Limit, ParseError> {
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or(ParseError::Missing("Max open files"))?;
    let soft = line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()
        .ok_or(ParseError::Missing("soft limit"))?;
    parse_limit(soft)
}

/// `se.exec_start` from `/proc/PID/sched`, in nanoseconds of the scheduler
/// clock. The file prints it as milliseconds with six decimals.
pub fn parse_sched_exec_start(text: &str) -> Result<u64, ParseError> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("se.exec_start"))
        .ok_or(ParseError::Missing("se.exec_start"))?;
    let value = line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .ok_or(ParseError::Malformed("se.exec_start has no ':'"))?;
    parse_millis_fraction_to_ns(value).ok_or(ParseError::BadNumber("se.exec_start"))
}

fn parse_millis_fraction_to_ns(value: &str) -> Option<u64> {
    let (ms, frac) = value.split_once('.').unwrap_or((value, ""));
    let ms: u64 = ms.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(6 - frac.len() as u32)
    };
    ms.checked_mul(1_000_000)?.checked_add(frac_ns)
}

/// `/proc/PID/schedstat`: time on CPU (ns), time waiting (ns), timeslices run.
/// The third counter moves on every context switch in, which is what the
/// hung-task detector needs.
pub fn parse_schedstat_timeslices(text: &str) -> Result<u64, ParseError> {
    num(
        text.split_ascii_whitespace().nth(2).map(str::as_bytes),
        "timeslices",
    )
}

/// `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub runnable: u64,
    pub total_tasks: u64,
}

pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let mut words = text.split_ascii_whitespace();
    let f = |w: Option<&str>, name| -> Result<f64, ParseError> {
        let v: f64 = w
            .ok_or(ParseError::Missing(name))?
            .parse()
            .map_err(|_| ParseError::BadNumber(name))?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(ParseError::BadNumber(name))
        }
    };
    let one = f(words.next(), "load1")?;
    let five = f(words.next(), "load5")?;
    let fifteen = f(words.next(), "load15")?;
    let (running, total) = words
        .next()
        .and_then(|w| w.split_once('/'))
        .ok_or(ParseError::Missing("running/total"))?;
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        runnable: running
            .parse()
            .map_err(|_| ParseError::BadNumber("running"))?,
        total_tasks: total.parse().map_err(|_| ParseError::BadNumber("total"))?,
    })
}

/// `procs_running` and `procs_blocked` from `/proc/stat`.
pub fn parse_proc_stat_procs(text: &str) -> Result<(u64, u64), ParseError> {
    let mut running = None;
    let mut blocked = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("procs_running ") {
            running = Some(
                v.trim()
                    .parse()
                    .map_err(|_| ParseError::BadNumber("procs_running"))?,
            );
        } else if let Some(v) = line.strip_prefix("procs_blocked ") {
            blocked = Some(
                v.trim()
                    .parse()
                    .map_err(|_| ParseError::BadNumber("procs_blocked"))?,
            );
        }
    }
    Ok((
        running.ok_or(ParseError::Missing("procs_running"))?,
        blocked.ok_or(ParseError::Missing("procs_blocked"))?,
    ))
}

/// Online CPUs: the `cpuN` lines of `/proc/stat`.
pub fn count_cpus(text: &str) -> u32 {
    text.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .and_then(|r| r.split_once(' '))
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32
}

/// One PSI resource (`/proc/pressure/*` or a cgroup's `*.pressure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    pub some_avg10: f64,
    /// Absent for cpu on older kernels (and meaningless at the root).
    pub full_avg10: Option<f64>,
    /// Total stall time in microseconds (`some`).
    pub some_total_us: u64,
}

pub fn parse_pressure(text: &str) -> Result<Pressure, ParseError> {
    let mut out = Pressure::default();
    let mut saw_some = false;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let kind = words.next();
        let mut avg10 = None;
        let mut total = None;
        for w in words {
            if let Some(v) = w.strip_prefix("avg10=") {
                avg10 = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or(ParseError::BadNumber("avg10"))?,
                );
            } else if let Some(v) = w.strip_prefix("total=") {
                total = Some(
                    v.parse::<u64>()
                        .map_err(|_| ParseError::BadNumber("total"))?,
                );
            }
        }
        match kind {
            Some("some") => {
                saw_some = true;
                out.some_avg10 = avg10.ok_or(ParseError::Missing("some avg10"))?;
                out.some_total_us = total.ok_or(ParseError::Missing("some total"))?;
            }
            Some("full") => out.full_avg10 = avg10,
            _ => {}
        }
    }
    if saw_some {
        Ok(out)
    } else {
        Err(ParseError::Missing("some"))
    }
}

/// `/proc/sys/fs/file-nr`: allocated, unused (always 0 since 2.6), max.
pub fn parse_file_nr(text: &str) -> Result<(u64, u64), ParseError> {
    let mut w = text.split_ascii_whitespace().map(str::as_bytes);
    let allocated = num(w.next(), "file-nr allocated")?;
    let _unused: u64 = num(w.next(), "file-nr unused")?;
    let max = num(w.next(), "file-nr max")?;
    Ok((allocated, max))
}

/// Throttling counters of a cgroup's `cpu.stat`, normalised to nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_ns: u64,
}

/// Parses v1 (`throttled_time`, ns) and v2 (`throttled_usec`) `cpu.stat`.
pub fn parse_cpu_stat(text: &str) -> Result<CpuStat, ParseError> {
    let mut periods = None;
    let mut throttled = None;
    let mut throttled_ns = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        match key {
            "nr_periods" => {
                periods = Some(
                    value
                        .parse()
                        .map_err(|_| ParseError::BadNumber("nr_periods"))?,
                )
            }
            "nr_throttled" => {
                throttled = Some(
                    value
                        .parse()
                        .map_err(|_| ParseError::BadNumber("nr_throttled"))?,
                )
            }
            "throttled_time" => {
                throttled_ns = Some(
                    value
                        .parse()
                        .map_err(|_| ParseError::BadNumber("throttled_time"))?,
                )
            }
            "throttled_usec" => {
                let us: u64 = value
                    .parse()
                    .map_err(|_| ParseError::BadNumber("throttled_usec"))?;
                throttled_ns = Some(us.saturating_mul(1000));
            }
            _ => {}
        }
    }
    Ok(CpuStat {
        nr_periods: periods.ok_or(ParseError::Missing("nr_periods"))?,
        nr_throttled: throttled.ok_or(ParseError::Missing("nr_throttled"))?,
        throttled_ns: throttled_ns.unwrap_or(0),
    })
}

/// A CFS bandwidth limit: `quota` per `period`, both in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    pub fn cores(&self) -> f64 {
        if self.period_us == 0 {
            0.0
        } else {
            self.quota_us as f64 / self.period_us as f64
        }
    }
}

/// cgroup v2 `cpu.max`: `max 100000` (no limit) or `50000 100000`.
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, ParseError> {
    let mut w = text.split_ascii_whitespace();
    let quota = w.next().ok_or(ParseError::Missing("cpu.max quota"))?;
    let period = num(w.next().map(str::as_bytes), "cpu.max period")?;
    if quota == "max" {
        return Ok(None);
    }
    let quota_us = num(Some(quota.as_bytes()), "cpu.max quota")?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us: period,
    }))
}

/// cgroup v1 `cpu.cfs_quota_us` (-1 = no limit) and `cpu.cfs_period_us`.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Result<Option<CpuQuota>, ParseError> {
    let quota: i64 = quota
        .trim()
        .parse()
        .map_err(|_| ParseError::BadNumber("cfs_quota_us"))?;
    let period: u64 = period
        .trim()
        .parse()
        .map_err(|_| ParseError::BadNumber("cfs_period_us"))?;
    Ok(u64::try_from(quota).ok().map(|quota_us| CpuQuota {
        quota_us,
        period_us: period,
    }))
}

/// One line of `/proc/PID/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub hierarchy: u32,
    pub controllers: &'a str,
    pub path: &'a str,
}

pub fn parse_cgroup_lines(text: &str) -> Result<Vec<CgroupLine<'_>>, ParseError> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (id, rest) = line
                .split_once(':')
                .ok_or(ParseError::Malformed("cgroup line has no ':'"))?;
            let (controllers, path) = rest
                .split_once(':')
                .ok_or(ParseError::Malformed("cgroup line has one ':'"))?;
            Ok(CgroupLine {
                hierarchy: id
                    .parse()
                    .map_err(|_| ParseError::BadNumber("hierarchy id"))?,
                controllers,
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"4242 (a) Z (b) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_hostile_comm_splits_on_last_paren() {
        let s = parse_stat(STAT).expect("valid stat");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a) Z (b");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.starttime, 98765);
        assert_eq!(s.processor, Some(1));
        assert!(!s.is_kernel_thread());
    }

    #[test]
    fn stat_kernel_thread_flag() {
        let s = parse_stat(b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
            .expect("valid stat");
        assert!(s.is_kernel_thread());
    }

    #[test]
    fn stat_truncated_is_an_error() {
        assert_eq!(
            parse_stat(b"12 (x) S 1 2 3"),
            Err(ParseError::Missing("flags"))
        );
        assert!(parse_stat(b"12 x) S 1").is_err());
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"12 (x) SS 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1").is_err());
    }

    #[test]
    fn status_nspid_and_switches() {
        let s = parse_status(
            "Name:\tsleep\nNSpid:\t9001\t7\nvoluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t2\n",
        )
        .expect("valid status");
        assert_eq!(s.nspid, vec![9001, 7]);
        assert_eq!(s.innermost_pid(), Some(7));
        assert_eq!(s.switches(), Some(7));
        assert!(parse_status("NSpid:\tnope\n").is_err());
    }

    #[test]
    fn limits_soft_nofile() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \nMax processes             unlimited            unlimited            processes \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile_soft_limit(text), Ok(Limit::Value(1024)));
        let unl = text.replace("1024 ", "unlimited");
        assert_eq!(parse_nofile_soft_limit(&unl), Ok(Limit::Unlimited));
        assert!(parse_nofile_soft_limit("Max open files   lots  1 files").is_err());
    }

    #[test]
    fn sched_exec_start_in_ns() {
        let text = "cat (6537, #threads: 1)\n---\nse.exec_start                                :        222715.963691\n";
        assert_eq!(parse_sched_exec_start(text), Ok(222_715_963_691));
        assert_eq!(
            parse_sched_exec_start("se.exec_start : 5.5\n"),
            Ok(5_500_000)
        );
        assert!(parse_sched_exec_start("se.exec_start : 1.1234567\n").is_err());
    }

    #[test]
    fn node_files() {
        let l = parse_loadavg("0.50 1.25 2.00 3/412 9999\n").expect("loadavg");
        assert_eq!((l.one, l.runnable, l.total_tasks), (0.5, 3, 412));
        assert_eq!(
            parse_proc_stat_procs("cpu 1 2\nprocs_running 4\nprocs_blocked 2\n"),
            Ok((4, 2))
        );
        assert_eq!(count_cpus("cpu  1 2\ncpu0 1 2\ncpu1 3 4\nintr 5\n"), 2);
        assert_eq!(parse_file_nr("413\t0\t2466190\n"), Ok((413, 2466190)));
        let p = parse_pressure(
            "some avg10=6.91 avg60=3.42 avg300=2.40 total=11566394\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=0\n",
        )
        .expect("pressure");
        assert_eq!(p.some_avg10, 6.91);
        assert_eq!(p.full_avg10, Some(0.5));
        assert_eq!(p.some_total_us, 11566394);
        assert!(parse_pressure("some avg10=NaN total=1\n").is_err());
    }

    #[test]
    fn cpu_stat_v1_and_v2() {
        let v1 = parse_cpu_stat("nr_periods 100\nnr_throttled 40\nthrottled_time 123456789\n")
            .expect("v1");
        assert_eq!(v1.throttled_ns, 123_456_789);
        let v2 = parse_cpu_stat(
            "usage_usec 10\nuser_usec 5\nsystem_usec 5\nnr_periods 10\nnr_throttled 9\nthrottled_usec 800\n",
        )
        .expect("v2");
        assert_eq!(
            (v2.nr_periods, v2.nr_throttled, v2.throttled_ns),
            (10, 9, 800_000)
        );
        assert!(parse_cpu_stat("usage_usec 10\n").is_err());
    }

    #[test]
    fn cpu_quotas() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(
            parse_cpu_max("50000 100000\n"),
            Ok(Some(CpuQuota {
                quota_us: 50000,
                period_us: 100000
            }))
        );
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), Ok(None));
        assert_eq!(
            parse_cfs_quota("10000\n", "100000\n").map(|q| q.map(|q| q.cores())),
            Ok(Some(0.1))
        );
    }

    #[test]
    fn cgroup_lines() {
        let lines = parse_cgroup_lines("12:cpu,cpuacct:/kubepods/pod1/abc\n0::/\n").expect("ok");
        assert_eq!(lines[0].controllers, "cpu,cpuacct");
        assert_eq!(lines[1].hierarchy, 0);
        assert_eq!(lines[1].path, "/");
        assert!(parse_cgroup_lines("garbage\n").is_err());
    }
}
