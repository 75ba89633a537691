"""What the device telemetry writes (heartbeats, events) share."""
