"""What batchq tells operators: Prometheus metrics, OpenTelemetry traces (optional), logs."""
