//! What the agent's log collector and profiler cost. Figures only.
//!
//! - Log lines per second per core, with framing, multi-line joining,
//!   severity, trace ids and pattern extraction: one file of LINES lines
//!   (realistic templates with variable parts, 10 % errors with a
//!   three-line traceback), read in one collection.
//! - RSS with FILES active files: each gets new lines every round (measured
//!   first, before the big file's memory).
//! - Profiler overhead (root): the eBPF program's run time per sample
//!   (`kernel.bpf_stats_enabled`) and the agent's CPU to read and
//!   symbolize a window, while a CPU burner runs.
//!
//! ```sh
//! cargo bench -p vigil-agent --bench logs     # LINES=1000000 FILES=500
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

mod common;

use common::{bpf_run_time, bpf_stats, cpu_seconds, env, rss_mib};
use vigil_agent::logs::{LogCollector, LogsConfig};

/// Line `i` of a realistic log.
fn line(i: u64, out: &mut impl Write) {
    let t = format!(
        "2026-11-21 12:{:02}:{:02},{:03}",
        i / 60_000 % 60,
        i / 1000 % 60,
        i % 1000
    );
    match i % 10 {
        0 => {
            writeln!(
                out,
                "{t} ERROR payment {} failed for order {}: card declined trace_id={:032x}",
                i % 7,
                i,
                i * 7919
            )
            .unwrap();
            writeln!(out, "Traceback (most recent call last):").unwrap();
            writeln!(
                out,
                "  File \"/app/pay.py\", line {}, in charge",
                40 + i % 3
            )
            .unwrap();
            writeln!(out, "ValueError: card declined").unwrap();
        }
        1 | 2 => writeln!(
            out,
            "{t} WARNING slow query on table orders took {} ms",
            200 + i % 900
        )
        .unwrap(),
        3 => writeln!(
            out,
            "{{\"level\":\"info\",\"msg\":\"cache refreshed\",\"entries\":{},\"took_ms\":{}}}",
            i % 5000,
            i % 40
        )
        .unwrap(),
        _ => writeln!(
            out,
            "{t} INFO GET /api/items/{} 200 {} bytes in {} ms from 10.0.{}.{}",
            i % 1000,
            512 + i % 4096,
            i % 50,
            i % 256,
            i % 200
        )
        .unwrap(),
    }
}

fn collector(dir: &Path, files: Vec<std::path::PathBuf>) -> LogCollector {
    LogCollector::new(
        LogsConfig {
            files,
            pods_dir: dir.join("none"),
            docker_dir: dir.join("none"),
            journal: false,
            max_records_per_source: usize::MAX,
            max_bytes_per_file: 1 << 30,
            ..LogsConfig::default()
        },
        // Positions saved before (none for these files): read from the start.
        Some(b"{}"),
    )
}

fn main() {
    let lines = env("LINES", 1_000_000);
    let files = env("FILES", 500);
    let dir = tempfile::tempdir().unwrap();

    // Many files.
    let many: Vec<_> = (0..files)
        .map(|i| dir.path().join(format!("svc-{i}.log")))
        .collect();
    for p in &many {
        std::fs::write(p, "").unwrap();
    }
    let mut c = collector(dir.path(), vec![dir.path().join("svc-*.log")]);
    let rss0 = rss_mib("VmRSS:");
    let rounds = 10;
    let mut collect_cpu = 0.0;
    let mut physical = 0;
    for round in 0..rounds {
        for (n, p) in many.iter().enumerate() {
            let mut f =
                std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(p).unwrap());
            for i in 0..200 {
                line(round * 100_000 + n as u64 * 200 + i, &mut f);
            }
        }
        let cpu0 = cpu_seconds();
        let got = c.collect(0, 0);
        c.commit();
        collect_cpu += cpu_seconds() - cpu0;
        physical += got.logs.iter().map(|l| l.records.len()).sum::<usize>();
        drop(got);
    }
    println!(
        "logs: {files} active files, {rounds} collections of 200 entries each: RSS {:.0} MiB \
         (before the files {rss0:.0}, peak {:.0}); collecting took {collect_cpu:.2} s CPU for {physical} records",
        rss_mib("VmRSS:"),
        rss_mib("VmHWM:"),
    );

    // Throughput.
    let path = dir.path().join("app.log");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..lines {
            line(i, &mut out);
        }
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    let physical = std::fs::read(&path)
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    let mut c = collector(dir.path(), vec![path]);
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let got = c.collect(0, 0);
    let (cpu, wall) = (cpu_seconds() - cpu0, start.elapsed().as_secs_f64());
    let records: usize = got.logs.iter().map(|l| l.records.len()).sum();
    let patterns = got
        .series
        .iter()
        .filter(|s| s.name == "log_messages_total")
        .count();
    println!(
        "logs: {physical} lines ({:.0} MiB) -> {records} records, {patterns} (pattern, level) series in {wall:.2} s, \
         CPU {cpu:.2} s: {:.0} lines/s per core ({:.1} MiB/s)",
        bytes as f64 / (1 << 20) as f64,
        physical as f64 / cpu.max(1e-9),
        bytes as f64 / (1 << 20) as f64 / cpu.max(1e-9)
    );
    drop(got);

    // Profiler.
    let mut profiler = match vigil_agent::ebpf::Profiler::start() {
        Ok(p) => p,
        Err(reason) => return println!("profiler: not measured: {reason}"),
    };
    bpf_stats(true);
    let burner = std::thread::spawn(|| {
        let end = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while Instant::now() < end {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        x
    });
    std::thread::sleep(Duration::from_secs(10));
    let _ = burner.join();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let read = profiler.collect();
    let read_cpu = cpu_seconds() - cpu0;
    let samples: u64 = read.iter().flat_map(|p| &p.stacks).map(|s| s.1).sum();
    let (ns, runs) = bpf_run_time(&["cpu_sample"]);
    bpf_stats(false);
    match runs {
        0 => println!("profiler: bpftool gave no run time for cpu_sample"),
        _ => println!(
            "profiler: 10 s at 99 Hz x {} CPUs: {runs} samples, {:.1} µs eBPF per sample \
             ({:.3} % of a core); reading and symbolizing {samples} samples of {} processes: \
             {:.0} ms CPU ({:.0} ms wall)",
            aya::util::online_cpus().map_or(0, |c| c.len()),
            ns as f64 / runs as f64 / 1000.0,
            ns as f64 / 1e9 / 10.0 * 100.0,
            read.len(),
            read_cpu * 1000.0,
            start.elapsed().as_secs_f64() * 1000.0
        ),
    }
}
