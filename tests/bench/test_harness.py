"""bench/run's arithmetic: latencies merged over slices, ratios slice by slice,
the machine's idle share."""

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "bench" / "harness.py"


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PERCENTS = [*range(1, 100), *(round(99 + n / 10, 1) for n in range(1, 10)), 99.99, 100]


def quantiles_of(latencies_ms: list[float]) -> list[tuple[float, float]]:
    """What wrk's script reports: the latency under which each share falls."""
    ordered = sorted(latencies_ms)
    return [
        (p, ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))])
        for p in PERCENTS
    ]


def slice_of(
    harness: ModuleType,
    latencies_ms: list[float],
    seconds: float = 5.0,
    idle_s: float = 0.0,
) -> object:
    return harness.Slice(
        requests=len(latencies_ms),
        seconds=seconds,
        p50_ms=0.0,
        p99_ms=0.0,
        errors=0,
        server_cpu_s=0.0,
        database_cpu_s=None,
        idle_s=idle_s,
        # Two cores' worth of CPU time for the slice's wall time.
        machine_s=2 * seconds,
        quantiles=quantiles_of(latencies_ms),
    )


def exact(latencies_ms: list[float], percent: float) -> float:
    ordered = sorted(latencies_ms)
    return ordered[max(0, round(percent / 100 * len(ordered)) - 1)]


def test_one_slice_gives_back_its_own_percentiles(harness: ModuleType) -> None:
    latencies = [random.Random(1).uniform(1, 40) for _ in range(5000)]
    one = slice_of(harness, latencies)

    assert harness.merged_percentile([one], 50) == exact(latencies, 50)
    assert harness.merged_percentile([one], 99) == exact(latencies, 99)


def test_a_spike_in_one_slice_weighs_as_its_share_of_all_requests(
    harness: ModuleType,
) -> None:
    rng = random.Random(2)
    calm = [[rng.uniform(5, 20) for _ in range(10_000)] for _ in range(3)]
    # 2 % of one slice's requests, 0.5 % of all: past that slice's p99, but
    # not past the p99 of everything.
    spiky = [rng.uniform(5, 20) for _ in range(9_800)] + [200.0] * 200
    slices = [slice_of(harness, run) for run in [*calm, spiky]]
    everything = [ms for run in [*calm, spiky] for ms in run]

    merged = harness.merged_percentile(slices, 99)

    # High by at most one gap between quantiles: 1 % of the spiky slice's
    # requests, a quarter of a percent of all.
    assert exact(everything, 99) <= merged <= exact(everything, 99.25)
    assert harness.merged_percentile(slices, 99.9) == 200


def test_the_ratio_is_taken_slice_by_slice(harness: ModuleType) -> None:
    heartbeats = [slice_of(harness, [1.0] * 700), slice_of(harness, [1.0] * 600)]
    baseline = [slice_of(harness, [1.0] * 1000), slice_of(harness, [1.0] * 1000)]

    assert harness.slice_ratios(heartbeats, baseline) == [0.7, 0.6]


def test_idle_share_is_over_all_the_slices_machine_time(harness: ModuleType) -> None:
    slices = [
        slice_of(harness, [1.0] * 10, seconds=5.0, idle_s=1.0),
        slice_of(harness, [1.0] * 10, seconds=15.0, idle_s=9.0),
    ]

    # 10 idle seconds of 40: not the mean of the slices' 10 % and 30 %.
    assert harness.idle_percent(slices) == pytest.approx(25.0)
