"""What the service tells about itself: the per-request record, logs and metrics."""
