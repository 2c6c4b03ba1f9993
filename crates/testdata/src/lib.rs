//! Generated telemetry for benchmarks: applications that look like the
//! agent's output (inbound HTTP with a latency histogram, a call to the next
//! application, TCP figures, container resources, error logs), one in ten
//! failing. Shared by the alerting and UI gateway benchmarks.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{sync::Arc, time::Instant};

use vigil_storage::{Labels, MetricBatch, Sample, SeriesWrite, TelemetryStore};

/// The time the generated samples cover.
pub struct Span {
    pub start: i64,
    pub end: i64,
    /// Between samples, in ms.
    pub step: i64,
}

/// One series with a sample every `step` ms: `level + per_second * t`.
pub fn series(
    metric: &str,
    pairs: &[(&str, String)],
    per_second: f64,
    level: f64,
    t: &Span,
) -> SeriesWrite {
    let step = t.step;
    let labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    SeriesWrite {
        metric: metric.into(),
        labels,
        samples: (0..=(t.end - t.start) / step)
            .map(|k| Sample {
                timestamp_ms: t.start + k * step,
                value: level + per_second * (k * step / 1000) as f64,
            })
            .collect(),
    }
}

const BOUNDS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// Requests at or under each bound: 99.7 % within 500 ms.
const SHARES: [f64; 12] = [
    0.5, 0.7, 0.85, 0.93, 0.97, 0.99, 0.997, 0.999, 1.0, 1.0, 1.0, 1.0,
];

/// ~37 series per application: inbound HTTP with a latency histogram, a
/// call to the next application (L7 and TCP), its listening address,
/// container resources and error logs. One in ten fails: 5xx, failed
/// connects, growing memory and error logs.
pub fn generate(apps: usize, t: &Span) -> Vec<SeriesWrite> {
    let mut out = Vec::new();
    let address = |i: usize| format!("10.1.{}.{}:8080", i / 250, i % 250 + 1);
    for i in 0..apps {
        let failing = i % 10 == 0;
        let base = [
            ("node", format!("node-{}", i % 20)),
            ("pid", (1000 + i).to_string()),
            ("process", "java".to_owned()),
            ("application", format!("app-{i:04}")),
        ];
        let with = |more: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            base.iter()
                .cloned()
                .chain(more.iter().map(|(k, v)| (*k, (*v).to_owned())))
                .collect()
        };
        let server = [
            ("side", "server"),
            ("protocol", "http"),
            ("operation", "GET"),
        ];
        for (status, rate) in [("200", 20.0), ("503", if failing { 5.0 } else { 0.01 })] {
            let l = with(&[server[0], server[1], server[2], ("status", status)]);
            out.push(series("process_l7_requests_total", &l, rate, 0.0, t));
        }
        out.push(series(
            "process_l7_request_seconds_total",
            &with(&server),
            1.0,
            0.0,
            t,
        ));
        for (le, share) in BOUNDS.iter().zip(SHARES) {
            let l = with(&[server[0], server[1], ("le", le)]);
            let rate = 20.0 * share;
            out.push(series(
                "process_l7_request_duration_seconds_bucket",
                &l,
                rate,
                0.0,
                t,
            ));
        }
        let to = address((i + 1) % apps);
        let call = with(&[
            ("side", "client"),
            ("protocol", "http"),
            ("destination", &to),
            ("operation", "GET"),
            ("status", "200"),
        ]);
        out.push(series("process_l7_requests_total", &call, 10.0, 0.0, t));
        let dest = with(&[("destination", &to)]);
        let failed = if failing { 0.5 } else { 0.0 };
        for (metric, rate, level) in [
            ("process_net_tcp_successful_connects_total", 1.0, 0.0),
            ("process_net_tcp_failed_connects_total", failed, 0.0),
            ("process_net_tcp_retransmits_total", 0.01, 0.0),
            ("process_net_tcp_connect_seconds_total", 0.0005, 0.0),
            ("process_net_tcp_active_connections", 0.0, 4.0),
        ] {
            out.push(series(metric, &dest, rate, level, t));
        }
        let listen = with(&[("listen", &address(i))]);
        out.push(series("process_net_tcp_listen_info", &listen, 0.0, 1.0, t));
        let id = format!("{i:012x}");
        let c = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            let mut l = with(extra);
            l.push(("container_id", id.clone()));
            l
        };
        let growth = if failing { 20_000.0 } else { 0.0 };
        for (metric, rate, level) in [
            ("container_cpu_usage_seconds_total", 0.4, 0.0),
            ("container_cpu_limit_cores", 0.0, 1.0),
            ("container_cpu_throttled_seconds_total", 0.01, 0.0),
            ("container_memory_rss_bytes", growth, 2e8),
            ("container_memory_limit_bytes", 0.0, 1e9),
            ("container_oom_kills_total", 0.0, 0.0),
            ("container_restarts_total", 0.0, 0.0),
        ] {
            out.push(series(metric, &c(&[]), rate, level, t));
        }
        for resource in ["cpu", "memory", "io"] {
            let l = c(&[("resource", resource), ("kind", "some")]);
            out.push(series(
                "container_pressure_waiting_seconds_total",
                &l,
                0.01,
                0.0,
                t,
            ));
        }
        let logs = with(&[("level", "error"), ("pattern_id", "00000000000000aa")]);
        out.push(series(
            "log_messages_total",
            &logs,
            if failing { 1.0 } else { 0.0 },
            0.0,
            t,
        ));
    }
    for n in 0..20 {
        let node = [("node", format!("node-{n}"))];
        out.push(series("host_cpu_usage_ratio", &node, 0.0, 0.3, t));
        let disk = [
            ("node", format!("node-{n}")),
            ("mount_point", "/".to_owned()),
        ];
        out.push(series("node_filesystem_size_bytes", &disk, 0.0, 1e11, t));
        out.push(series(
            "node_filesystem_available_bytes",
            &disk,
            0.0,
            4e10,
            t,
        ));
    }
    out
}

/// Writes `all` to `store` for `project`, in batches of 500 series.
pub async fn load(store: &Arc<dyn TelemetryStore>, project: &str, all: Vec<SeriesWrite>) {
    let t = Instant::now();
    let count = all.len();
    let samples: usize = all.iter().map(|s| s.samples.len()).sum();
    for (i, chunk) in all.chunks(500).enumerate() {
        store
            .write_metrics(MetricBatch {
                project: project.into(),
                batch_id: format!("b{i}"),
                series: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    println!(
        "  loaded {count} series, {samples} samples in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
