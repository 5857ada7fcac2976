"""OpenTelemetry SDK helpers of the tests: a tracer provider whose spans land in memory."""

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def new_provider():
    """``(provider, exporter)``: pass ``tracing=provider``; ``exporter.get_finished_spans()``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def hex_id(value, width):
    """A trace (32) or span (16) id as the hex digits a traceparent carries."""
    return format(value, f"0{width}x")
