//! The /proc collector: host CPU, memory and load, and per-process CPU and
//! resident memory. CPU figures are rates, so they come from the difference
//! between two snapshots; the first collection primes them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use procfs::{FromRead, FromReadSI};

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {message}")]
pub struct CollectError {
    path: PathBuf,
    message: String,
}

impl CollectError {
    pub fn new(path: &Path, message: String) -> Self {
        Self {
            path: path.to_owned(),
            message,
        }
    }
}

fn read_err(path: &Path) -> impl FnOnce(procfs::ProcError) -> CollectError + '_ {
    move |e| CollectError {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Host figures of one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFigures {
    /// Busy share of all CPUs since the previous collection; None on the first.
    pub cpu_usage_ratio: Option<f64>,
    pub cpu_cores: f64,
    pub memory_total_bytes: f64,
    pub memory_available_bytes: f64,
    pub load1: f64,
}

/// One process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFigures {
    pub pid: u32,
    pub name: String,
    /// CPU seconds per second since the previous collection; None when new.
    pub cpu_usage_cores: Option<f64>,
    pub memory_rss_bytes: f64,
}

#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

/// Identifies a process across collections (pids are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProcessKey {
    pid: i32,
    start_ticks: u64,
}

#[derive(Debug)]
struct Snapshot {
    at: Instant,
    host: CpuTicks,
    processes: HashMap<ProcessKey, u64>,
}

/// Reads figures from a procfs mount.
#[derive(Debug)]
pub struct ProcCollector {
    root: PathBuf,
    ticks_per_second: f64,
    page_size: f64,
    previous: Option<Snapshot>,
}

impl ProcCollector {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            ticks_per_second: procfs::ticks_per_second() as f64,
            page_size: procfs::page_size() as f64,
            previous: None,
        }
    }

    /// Collects host figures and the processes using memory (kernel threads
    /// have none and are left out).
    pub fn collect(&mut self) -> Result<(HostFigures, Vec<ProcessFigures>), CollectError> {
        let now = Instant::now();
        let stat_path = self.root.join("stat");
        let system_info = procfs::current_system_info();
        let stats = procfs::KernelStats::from_file(&stat_path, system_info)
            .map_err(read_err(&stat_path))?;
        let t = &stats.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        // guest time is already counted in user and nice.
        let total = t.user
            + t.nice
            + t.system
            + idle
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        let host_ticks = CpuTicks {
            busy: total.saturating_sub(idle),
            total,
        };
        let meminfo_path = self.root.join("meminfo");
        let meminfo = procfs::Meminfo::from_file(&meminfo_path).map_err(read_err(&meminfo_path))?;
        let loadavg_path = self.root.join("loadavg");
        let load =
            procfs::LoadAverage::from_file(&loadavg_path).map_err(read_err(&loadavg_path))?;

        let cpu_usage_ratio = self.previous.as_ref().and_then(|prev| {
            let total = host_ticks.total.checked_sub(prev.host.total)?;
            let busy = host_ticks.busy.checked_sub(prev.host.busy)?;
            (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
        });
        let host = HostFigures {
            cpu_usage_ratio,
            cpu_cores: stats.cpu_time.len() as f64,
            memory_total_bytes: meminfo.mem_total as f64,
            memory_available_bytes: meminfo
                .mem_available
                .unwrap_or(meminfo.mem_free + meminfo.cached)
                as f64,
            load1: f64::from(load.one),
        };

        let mut processes = Vec::new();
        let mut ticks_now = HashMap::new();
        let iter =
            procfs::process::all_processes_with_root(&self.root).map_err(read_err(&self.root))?;
        for process in iter.flatten() {
            // Processes exit between listing and reading: skip them.
            let Ok(stat) = process.stat() else { continue };
            if stat.rss == 0 {
                continue;
            }
            let key = ProcessKey {
                pid: stat.pid,
                start_ticks: stat.starttime,
            };
            let ticks = stat.utime + stat.stime;
            ticks_now.insert(key, ticks);
            let cpu_usage_cores = self.previous.as_ref().and_then(|prev| {
                let before = prev.processes.get(&key)?;
                let secs = now.duration_since(prev.at).as_secs_f64();
                (secs > 0.0)
                    .then(|| ticks.saturating_sub(*before) as f64 / self.ticks_per_second / secs)
            });
            processes.push(ProcessFigures {
                pid: u32::try_from(stat.pid).unwrap_or(0),
                name: stat.comm,
                cpu_usage_cores,
                memory_rss_bytes: stat.rss as f64 * self.page_size,
            });
        }
        self.previous = Some(Snapshot {
            at: now,
            host: host_ticks,
            processes: ticks_now,
        });
        Ok((host, processes))
    }
}

/// The busiest `max` processes: by CPU, then by memory.
pub fn busiest(mut processes: Vec<ProcessFigures>, max: usize) -> Vec<ProcessFigures> {
    processes.sort_by(|a, b| {
        let key = |p: &ProcessFigures| (p.cpu_usage_cores.unwrap_or(0.0), p.memory_rss_bytes);
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    processes.truncate(max);
    processes
}

/// The kernel hostname read from `<proc_root>/sys/kernel/hostname`.
pub fn hostname(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host_and_this_process() {
        let mut collector = ProcCollector::new(Path::new("/proc"));
        let (first, _) = collector.collect().unwrap();
        assert_eq!(first.cpu_usage_ratio, None, "needs two snapshots");
        assert!(first.memory_total_bytes > first.memory_available_bytes);
        assert!(first.cpu_cores >= 1.0);
        // Burn some CPU so that this process shows up busy.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert_ne!(x, 1);
        let (second, processes) = collector.collect().unwrap();
        let ratio = second.cpu_usage_ratio.expect("second snapshot has a ratio");
        assert!((0.0..=1.0).contains(&ratio));
        let me = processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this test process is listed");
        assert!(me.memory_rss_bytes > 0.0);
        assert!(me.cpu_usage_cores.unwrap() > 0.1, "{me:?}");
    }

    #[test]
    fn missing_proc_root_is_an_error_naming_the_path() {
        let mut collector = ProcCollector::new(Path::new("/nonexistent-proc"));
        let err = collector.collect().unwrap_err().to_string();
        assert!(err.contains("/nonexistent-proc/stat"), "{err}");
    }

    #[test]
    fn busiest_first() {
        let p = |pid, cpu: Option<f64>, rss| ProcessFigures {
            pid,
            name: String::new(),
            cpu_usage_cores: cpu,
            memory_rss_bytes: rss,
        };
        let top = busiest(
            vec![
                p(1, None, 10.0),
                p(2, Some(0.5), 1.0),
                p(3, Some(0.0), 99.0),
            ],
            2,
        );
        assert_eq!(top.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![2, 3]);
    }
}
