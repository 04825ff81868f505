"""Metrics (Prometheus), readiness checks, traces (OpenTelemetry); logs: `logging_setup`."""
