//! eBPF spans join SDK spans in one trace (root and BTF; CI runs as root).
//! A Python program instrumented with the real OpenTelemetry SDK opens a
//! span, puts its traceparent on an HTTP request to Python's http.server
//! and exports its span to ingest over OTLP/HTTP. The agent (in this
//! process, eBPF on) ships what it saw to the same ingest. Ground truth: the
//! trace id and span id the SDK printed, the request's status and path, and
//! the SDK span's own start and end.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vigil_agent::AgentConfig;
use vigil_runtime::Shutdown;
use vigil_storage::trace::{SpanKind, hex};

const SDK_CLIENT: &str = r#"
import sys, urllib.request
from opentelemetry import trace, propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
endpoint, key, url = sys.argv[1:4]
provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers={"x-api-key": key})))
tracer = provider.get_tracer("vigil-test")
with tracer.start_as_current_span("checkout", kind=trace.SpanKind.CLIENT) as span:
    headers = {}
    propagate.inject(headers)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as r:
        r.read()
    ctx = span.get_span_context()
    print(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), flush=True)
provider.shutdown()
"#;

fn unhex<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_spans_join_the_sdk_trace() {
    let sdk_present = Command::new("python3")
        .args(["-c", "import opentelemetry.exporter.otlp.proto.http"])
        .status()
        .is_ok_and(|s| s.success());
    if !sdk_present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have the OpenTelemetry Python SDK: scripts/install-deps.sh installs it"
        );
        eprintln!("SKIPPED: the OpenTelemetry Python SDK is not installed");
        return;
    }
    // The agent loads its own programs; this only checks it can.
    if common::started(vigil_agent::ebpf::L7Tracer::start).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ingest = common::Ingest::start(None);
    let stop = Shutdown::new();
    let agent = tokio::spawn(vigil_agent::run(
        AgentConfig {
            ebpf: true,
            ..common::agent_config(dir.path(), ingest.config.grpc.listen)
        },
        stop.clone(),
    ));
    // Let the agent attach before the traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.txt"), "hello").unwrap();
    let web = common::free_addr();
    let _web = common::Killed(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &web.port().to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_listening(web);
    let otlp_http = ingest.config.http.listen;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                "-c",
                SDK_CLIENT,
                &format!("http://{otlp_http}/v1/traces"),
                common::INGEST_KEY,
                &format!("http://{web}/index.txt"),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK client: {printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ids = printed.split_whitespace();
    let trace_id: [u8; 16] = unhex(ids.next().unwrap());
    let sdk_span_id: [u8; 8] = unhex(ids.next().unwrap());

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = ingest.store.trace("p1", trace_id).await.unwrap();
        if spans.len() >= 3 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.trigger();
    agent.await.unwrap().unwrap();
    ingest.stop().await;
    for s in &spans {
        eprintln!(
            "{} {:?} {} parent {} service {} {:?}",
            hex(&s.span_id),
            s.kind,
            s.name,
            hex(&s.parent_span_id),
            s.service,
            s.attributes
        );
    }
    let sdk = spans
        .iter()
        .find(|s| s.span_id == sdk_span_id)
        .expect("the SDK's span is in the trace");
    assert_eq!(sdk.service, "shop");
    for kind in [SpanKind::Client, SpanKind::Server] {
        let ebpf = spans
            .iter()
            .find(|s| s.kind == kind && s.parent_span_id == sdk_span_id && s.span_id != sdk_span_id)
            .unwrap_or_else(|| panic!("an eBPF {kind:?} span, child of the SDK span"));
        let attr = |k: &str| ebpf.attributes.get(k).map(String::as_str);
        assert_eq!(ebpf.name, "GET");
        assert_eq!(attr("http.response.status_code"), Some("200"));
        assert_eq!(attr("url.path"), Some("/index.txt"));
        assert_eq!(ebpf.service, "python3");
        // The kernel's clock, turned into Unix time, puts the request
        // inside the SDK span that made it (1 ms allowed for rounding).
        assert!(
            ebpf.start_ns >= sdk.start_ns - 1_000_000 && ebpf.end_ns <= sdk.end_ns + 1_000_000,
            "{kind:?} span [{}, {}] outside the SDK span [{}, {}]",
            ebpf.start_ns,
            ebpf.end_ns,
            sdk.start_ns,
            sdk.end_ns
        );
        assert!(ebpf.end_ns > ebpf.start_ns);
    }
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client && s.span_id != sdk_span_id)
        .unwrap();
    assert_eq!(
        client.attributes.get("server.port").map(String::as_str),
        Some(web.port().to_string().as_str())
    );
}
