"""The small set of host numbers each heartbeat carries."""

import time

import psutil


def uptime_seconds() -> float:
    return max(0.0, time.time() - float(psutil.boot_time()))


def collect_metrics() -> dict[str, float | int]:
    """Load, memory and root disk use; a reading the host cannot give is left out.

    A heartbeat must go out even when one reading fails, so each is guarded.
    """
    metrics: dict[str, float | int] = {}

    try:
        load1, load5, load15 = psutil.getloadavg()
        metrics.update(load1=float(load1), load5=float(load5), load15=float(load15))
    except (OSError, AttributeError):
        pass

    try:
        metrics["mem_percent"] = float(psutil.virtual_memory().percent)
    except (OSError, RuntimeError):
        pass

    try:
        metrics["disk_percent"] = float(psutil.disk_usage("/").percent)
    except OSError:
        pass

    cpu_count = psutil.cpu_count()
    if cpu_count:
        metrics["cpu_count"] = int(cpu_count)

    return metrics
