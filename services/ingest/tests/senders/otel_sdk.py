"""Sends traces, logs and metrics with the real OpenTelemetry Python SDK and
its OTLP exporters, the way an instrumented application does.

    otel_sdk.py grpc|http ENDPOINT API_KEY RUN_ID

Prints the trace id of the trace it made (hex) on the last line. Exits 1
when an exporter reports a failure.
"""

import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader, MetricExportResult
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor, LogRecordExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

transport, endpoint, api_key, run_id = sys.argv[1:5]
headers = {"x-api-key": api_key}

if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    kw = dict(endpoint=endpoint, headers=headers, insecure=True)
    span_exporter, metric_exporter, log_exporter = (
        OTLPSpanExporter(**kw), OTLPMetricExporter(**kw), OTLPLogExporter(**kw))
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    span_exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", headers=headers)
    metric_exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", headers=headers)
    log_exporter = OTLPLogExporter(endpoint=endpoint + "/v1/logs", headers=headers)

failures = []


def checked(exporter, ok):
    """Wraps an exporter's export to record failures."""
    inner = exporter.export

    def export(*args, **kwargs):
        result = inner(*args, **kwargs)
        if result != ok:
            failures.append(f"{type(exporter).__name__}: {result}")
        return result

    exporter.export = export
    return exporter


resource = Resource.create({
    "service.name": f"checkout-{transport}",
    "service.instance.id": "pod-1",
    "k8s.namespace.name": "shop",
    "host.name": "node-a",
})

traces = TracerProvider(resource=resource)
traces.add_span_processor(SimpleSpanProcessor(checked(span_exporter, SpanExportResult.SUCCESS)))
tracer = traces.get_tracer("sender")
with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as parent:
    parent.set_attribute("http.route", "/checkout")
    parent.set_attribute("run.id", run_id)
    with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as child:
        child.set_attribute("db.system", "postgresql")
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "deadlock"))
    trace_id = format(parent.get_span_context().trace_id, "032x")

    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(SimpleLogRecordProcessor(
        checked(log_exporter, LogRecordExportResult.SUCCESS)))
    logger = logging.getLogger("sender")
    logger.propagate = False
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logs))
    logger.setLevel(logging.INFO)
    logger.error("payment declined for order %s", run_id)
    logger.info("checkout finished %s", run_id)
    logs.force_flush()

metrics = MeterProvider(
    resource=resource,
    metric_readers=[PeriodicExportingMetricReader(
        checked(metric_exporter, MetricExportResult.SUCCESS), export_interval_millis=60_000)],
)
meter = metrics.get_meter("sender")
requests = meter.create_counter("http.server.requests", unit="1")
requests.add(3, {"http.route": "/checkout", "run": run_id})
latency = meter.create_histogram(
    "http.server.duration", unit="s",
    explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0])
for value in (0.05, 0.3, 0.7, 2.0):
    latency.record(value, {"run": run_id})
meter.create_gauge("queue.depth").set(17, {"run": run_id})
metrics.force_flush()
metrics.shutdown()
traces.shutdown()
logs.shutdown()

if failures:
    print("export failed:", failures, file=sys.stderr)
    sys.exit(1)
print(trace_id)
