"""Sends GenAI spans with the real OpenTelemetry Python SDK and its OTLP exporter.

Usage: send_spans.py PROTOCOL ENDPOINT API_KEY SPEC_JSON
  PROTOCOL  http (OTLP/HTTP protobuf, gzip) or grpc
  ENDPOINT  http://HOST:PORT/v1/traces for http, HOST:PORT for grpc
  SPEC_JSON {"service": NAME, "spans": [{"name", "attributes", "error", "duration_ms"}]}

Spans go through the SDK's BatchSpanProcessor, as an instrumented application's do.
Each GenAI span gets a parent span without gen_ai.* attributes (an HTTP handler), which
ais must skip. Exits 1 if any export failed for good, after the exporter's own retries.
"""

import json
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode


class Recording(SpanExporter):
    """Wraps the OTLP exporter to remember whether every export succeeded."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0
        self.exports = 0

    def export(self, spans):
        result = self.inner.export(spans)
        self.exports += 1
        if result != SpanExportResult.SUCCESS:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def exporter(protocol, endpoint, api_key):
    headers = {"authorization": f"Bearer {api_key}"}
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, headers=headers, compression=Compression.Gzip, timeout=20)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, headers=headers, insecure=True, timeout=20)
    raise SystemExit(f"unknown protocol {protocol!r}: use http or grpc")


def main():
    protocol, endpoint, api_key, spec_json = sys.argv[1:5]
    spec = json.loads(spec_json)
    recording = Recording(exporter(protocol, endpoint, api_key))
    provider = TracerProvider(resource=Resource.create({"service.name": spec["service"]}))
    provider.add_span_processor(BatchSpanProcessor(recording))
    tracer = provider.get_tracer("ais-otel-test")
    for span_spec in spec["spans"]:
        with tracer.start_as_current_span("POST /answer", attributes={"http.request.method": "POST"}):
            start = time.time_ns()
            span = tracer.start_span(span_spec["name"], start_time=start, attributes=span_spec["attributes"])
            if span_spec.get("error"):
                span.set_status(Status(StatusCode.ERROR, "upstream failed"))
            span.end(end_time=start + int(span_spec["duration_ms"] * 1_000_000))
    provider.force_flush(60_000)
    provider.shutdown()
    print(json.dumps({"exports": recording.exports, "failures": recording.failures}))
    sys.exit(1 if recording.failures or not recording.exports else 0)


if __name__ == "__main__":
    main()
