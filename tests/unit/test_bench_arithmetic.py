"""The benchmark's own arithmetic (bench/): the figures BENCHMARKS.md states must follow from the measured ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import must_show
from bench.full_sync_import import predicted_share, processing_threshold


def test_the_processing_time_threshold_solves_the_ratio_from_the_run_s_figures() -> None:
    ceiling = {"seconds": 0.5, "files": 1}
    first = {"seconds": 11.9, "imports": 1}

    threshold = processing_threshold(ceiling, first)

    assert threshold == pytest.approx(3.3, abs=0.05)
    assert (0.5 + threshold) / (11.9 + threshold) == pytest.approx(0.25, abs=0.005)
    # two waves on each side (five files, three in flight): the waits count twice
    big = processing_threshold({"seconds": 2.8, "files": 5}, {"seconds": 101.3, "imports": 5})
    assert (2.8 + 2 * big) / (101.3 + 2 * big) == pytest.approx(0.25, abs=0.005)
    assert predicted_share(ceiling, first, threshold) == 0.25


def test_no_threshold_when_the_product_waits_more_often_than_the_ceiling() -> None:
    # one wave for the ceiling, five for the product: no processing time brings the ratio to 0.25... unless it
    # is already there
    assert processing_threshold({"seconds": 0.5, "files": 1}, {"seconds": 11.9, "imports": 15}) is None
    assert processing_threshold({"seconds": 10.0, "files": 3}, {"seconds": 20.0, "imports": 3}) == 0.0


def test_the_must_show_table_gives_the_threshold_beside_the_bare_ratio_and_keeps_it_not_met() -> None:
    run = {
        "persons": 10_000,
        "ceiling": {"seconds": 0.5, "files": 1},
        "first_load": {
            "seconds": 11.9,
            "imports": 1,
            "share_of_ceiling": 0.04,
            "processing_threshold_seconds": 3.3,
            "apsis_calls_per_1000": 0.4,
        },
        "processing_check": {
            "processing_seconds": 5.0,
            "ceiling_seconds": 6.6,
            "first_load_seconds": 18.8,
            "share_of_ceiling": 0.35,
            "predicted_share": 0.33,
        },
    }
    text = "\n".join(must_show.lines({"full_sync": {"persons": 10_000, "import": run}}))

    row = next(line for line in text.splitlines() if "import mode, 10,000: >= 0.25" in line)
    assert "0.04 (0.25 once APSIS takes >= 3.3 s per import" in row
    assert row.endswith("**not met** |")
    assert "it reaches 0.25 once T is at least 3.3 s (10,000 persons)" in text
    assert "taking 5 s per import on both sides: ceiling 6.6 s, first load 18.8 s, ratio 0.35" in text
    assert "(the arithmetic above predicts 0.33)" in text


def test_the_diff_must_show_reads_both_pairs_pooled() -> None:
    results = {
        "full_sync": {
            "persons": 10_000,
            "diff_mode": {"share_of_ceiling": 0.73, "apsis_calls_per_1000": 2346.0, "created": 8687},
            "diff_pairs": [0.73, 0.62],
            "diff_pooled_share": 0.67,
        }
    }
    row = next(line for line in must_show.lines(results) if "diff mode, first load" in line)

    assert "0.67 (pairs 0.73, 0.62)" in row
    assert row.endswith("**not met** |")  # the better pair alone would have passed


def test_cpu_use_counts_this_process_and_moto_s_apart_from_the_rest_of_the_machine() -> None:
    """bench.cpu: the CPU seconds of a phase, this process and another one (moto's server), read from /proc."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from bench.cpu import cpu_use

    if not __import__("os").path.exists("/proc/stat"):
        pytest.skip("Linux only")
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass\ninput()"],
        stdin=subprocess.PIPE,
    )
    try:
        with cpu_use(SimpleNamespace(moto=SimpleNamespace(pid=burner.pid))) as figures:
            spent = __import__("time").process_time()
            while __import__("time").process_time() - spent < 0.3:
                pass
            __import__("time").sleep(1.0)  # the burner spends its 0.6 s meanwhile
        assert figures["own"] >= 0.2 and figures["moto"] >= 0.4
        assert figures["work"] == round(figures["own"] + figures["moto"], 1) and figures["wall"] >= 1.0
        assert figures["others"] >= 0 and figures["steal"] >= 0  # steal: the host's share of `others`
    finally:
        burner.communicate(b"\n", timeout=10)

    with cpu_use(SimpleNamespace()) as nothing:  # no moto process: its share is 0, not an error
        pass
    assert nothing["moto"] == 0.0


def test_cpu_use_counts_this_process_s_garbage_collections_by_generation() -> None:
    """bench.cpu: the collections made while the phase ran, young to full, and their pauses; none after it."""
    import gc
    from types import SimpleNamespace

    from bench.cpu import cpu_use

    with cpu_use(SimpleNamespace()) as figures:
        gc.collect(0)
        gc.collect(0)
        gc.collect(2)
    assert figures["gc"][0] >= 2 and figures["gc"][2] >= 1  # the collector may run more on its own
    assert figures["gc_seconds"] >= 0
    counted = list(figures["gc"])
    gc.collect(2)
    assert figures["gc"] == counted  # its callback was removed at the end of the phase
    assert not any(type(callback).__name__ == "GcPauses" for callback in gc.callbacks)


def test_machine_time_reads_busy_and_steal_from_proc_stat(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """bench.cpu: /proc/stat's first line is user nice system idle iowait irq softirq steal [guest ...], in
    ticks; busy is everything but idle and iowait, steal is the hypervisor's share of it."""
    import bench.cpu as cpu

    stat = tmp_path / "stat"
    stat.write_text(f"cpu  {100 * cpu._TICK} 0 {50 * cpu._TICK} 999 7 0 {5 * cpu._TICK} {20 * cpu._TICK} 3 0\ncpu0 1\n")
    real = cpu.Path
    monkeypatch.setattr(cpu, "Path", lambda p: stat if p == "/proc/stat" else real(p))
    assert cpu._machine_time() == (175.0, 20.0)
    stat.write_text("nothing to read\n")
    assert cpu._machine_time() == (0.0, 0.0)
