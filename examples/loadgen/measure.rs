//! Counting and measuring a run: the latency histogram, what a run counts,
//! the CPU and memory read from /proc, and the one-line report.

use std::io;
use std::process::exit;
use std::time::{Duration, Instant};

use crate::Args;

/// /proc/PID/stat counts CPU time in ticks of 1/CLK_TCK s. std cannot call
/// sysconf(_SC_CLK_TCK); it is 100 on mainstream Linux (`getconf CLK_TCK`),
/// so we assume 100.
const CLK_TCK: f64 = 100.0;
/// Linux errno values for "out of file descriptors" (process, system).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Latencies in nanoseconds, log-linear: values under 32 have a bucket each,
/// then each power of two is split into 16 equal steps. Any value is kept
/// to within 1/16, in 1024 buckets, however many samples come.
struct Histogram(Vec<u64>);

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram(vec![0; 1024])
    }
}

impl Histogram {
    fn bucket(ns: u64) -> usize {
        if ns < 32 {
            return ns as usize;
        }
        let shift = 63 - ns.leading_zeros() - 4; // keep the top 5 bits
        shift as usize * 16 + (ns >> shift) as usize
    }

    /// The middle of bucket `i`, in nanoseconds.
    fn middle(i: usize) -> f64 {
        if i < 32 {
            return i as f64;
        }
        let shift = i / 16 - 1;
        ((i % 16 + 16) << shift) as f64 + (1u64 << shift) as f64 / 2.0
    }

    fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0[Self::bucket(ns)] += 1;
    }

    /// The `q` quantile (0 to 1), in microseconds.
    fn quantile_us(&self, q: f64) -> f64 {
        let rank = (q * self.0.iter().sum::<u64>() as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.0.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::middle(i) / 1000.0;
            }
        }
        0.0
    }
}

/// What a run counts. Errors are counted, never panicked on; the first is
/// kept to be shown on stderr.
#[derive(Default)]
pub struct Stats {
    pub ops: u64,
    errors: u64,
    pub lost: u64,
    pub late: u64,
    first_error: Option<String>,
    latency: Histogram,
}

impl Stats {
    pub fn record(&mut self, sent: Instant) {
        self.ops += 1;
        self.latency.record(sent.elapsed());
    }

    pub fn error(&mut self, e: io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// A connect that failed at once: out of descriptors is fatal (and the
    /// user's to fix), anything else is one more error.
    pub fn connect_error(&mut self, e: io::Error) {
        if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
            eprintln!("loadgen: out of file descriptors ({e}); raise the limit: ulimit -n 20000");
            exit(1);
        }
        self.error(e);
    }
}

/// utime + stime of a process in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    stat_ticks(pid, 2)
}

/// The sum of the first `n` of utime, stime, cutime, cstime (fields 14 to
/// 17 of /proc/PID/stat, counted after the `(comm)` field, which may hold
/// spaces), in clock ticks.
fn stat_ticks(pid: &str, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    fields.take(n).map(|f| f.parse::<u64>().ok()).sum()
}

/// The CPU ticks of a process and all its descendants: children that have
/// exited and been waited for are in its cutime + cstime, running ones are
/// listed in /proc/PID/task/TID/children. A child that exits while being
/// read is skipped (its time moves to the parent).
fn tree_ticks(pid: &str) -> Option<u64> {
    let mut ticks = stat_ticks(pid, 4)?;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        ticks += children
            .split_whitespace()
            .filter_map(tree_ticks)
            .sum::<u64>();
    }
    Some(ticks)
}

/// Resident memory of a process in KiB (the VmRSS line of /proc/PID/status).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    let kib = line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// The measured stretch of a run: when it started, and the CPU ticks the
/// server (with `--pid`; with its children) and this process had used by
/// then.
pub struct Window {
    pub started: Instant,
    server: Option<(String, u64)>,
    client: Option<u64>,
}

impl Window {
    pub fn open(pid: Option<u32>) -> Window {
        let server = pid.and_then(|p| Some((p.to_string(), tree_ticks(&p.to_string())?)));
        let client = cpu_ticks("self");
        Window {
            started: Instant::now(),
            server,
            client,
        }
    }

    /// Ends the window: its length and the CPU report fields.
    pub fn close(&self, ops: u64) -> (f64, String) {
        let secs = self.started.elapsed().as_secs_f64();
        let us = |t0: u64, t1: u64| t1.saturating_sub(t0) as f64 * 1e6 / CLK_TCK;
        let mut fields = String::new();
        if let Some((pid, t0)) = &self.server {
            let used = us(*t0, tree_ticks(pid).unwrap_or(*t0));
            let per_op = if ops > 0 { used / ops as f64 } else { f64::NAN };
            fields += &format!(" server_cpu_us_per_op={per_op:.3}");
            fields += &format!(" server_cpu_pct={:.0}", used / secs / 1e4);
        }
        if let (Some(t0), Some(t1)) = (self.client, cpu_ticks("self")) {
            fields += &format!(" client_cpu_pct={:.0}", us(t0, t1) / secs / 1e4);
        }
        (secs, fields)
    }
}

pub fn report(args: &Args, stats: &Stats, (secs, cpu): (f64, String), extra: &str) {
    let name = ["once", "line", "udp", "idle", "bulk"][args.scenario as usize];
    let (ops, h) = (stats.ops, &stats.latency);
    let (p50, p99, p999) = (
        h.quantile_us(0.5),
        h.quantile_us(0.99),
        h.quantile_us(0.999),
    );
    println!(
        "scenario={name} conns={} depth={} ops={ops} secs={secs:.2} rate={:.0}/s \
         p50_us={p50:.1} p99_us={p99:.1} p999_us={p999:.1} errors={} lost={} late={}{cpu}{extra}",
        args.conns,
        args.depth,
        ops as f64 / secs,
        stats.errors,
        stats.lost,
        stats.late,
    );
    if let Some(e) = &stats.first_error {
        eprintln!("loadgen: {} errors, the first: {e}", stats.errors);
    }
}
