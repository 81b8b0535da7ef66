"""Smoke tests of the training benchmarks: each script runs end to end with `--tiny` in a subprocess (offline) and
writes a JSON report whose keys are there and whose measurements are finite and positive. No speed is asserted.

The three scripts run concurrently (each is mostly interpreter and import start-up), so the module takes well under a
minute on a small machine.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("training_loop_overhead", "data_loading", "pretraining_memory")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """Run every script with --tiny at once; their reports by script name."""
    root = tmp_path_factory.mktemp("benchmarks")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   "CUDA_VISIBLE_DEVICES": ""}  # the CPU paths, wherever the tests run
    processes = {}
    for name in SCRIPTS:
        command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--tiny", "--output",
                   str(root / f"{name}.json")]
        if name != "pretraining_memory":
            command += ["--cache-dir", str(root / f"cache-{name}")]
        if name == "data_loading":
            command += ["--workers", "2", "0", "1"]  # any worker counts, timed in increasing order
        processes[name] = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
    outputs = {name: process.communicate(timeout=300)[0] for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, f"{name} --tiny failed:\n{outputs[name][-4000:]}"
    return {name: json.loads((root / f"{name}.json").read_text()) for name in SCRIPTS}


def test_training_loop_overhead_report(reports):
    report = reports["training_loop_overhead"]
    assert report["verdict"] in ("PASS", "FAIL")
    assert positive(report["ratio_library_to_bare"]) and positive(report["target_ratio"])
    assert report["ratio_runs"] and all(positive(ratio) for ratio in report["ratio_runs"])
    assert positive(report["per_step_ratio_median"])
    for loop in ("library", "bare"):
        row = report["loops"][loop]
        for key in ("steps_per_second", "images_per_second", "step_seconds_median", "step_seconds_max",
                    "setup_seconds_median"):
            assert positive(row[key]), (loop, key, row[key])
        assert row["steps_per_second_runs"] and all(positive(rate) for rate in row["steps_per_second_runs"])
    assert positive(report["loops"]["library"]["teardown_seconds_median"])
    assert report["timed_steps_per_loop_and_repeat"] == report["max_steps"] - 1
    # Both loops did the same work: the same losses, to rounding.
    assert report["max_abs_logged_loss_difference"] < 1e-4


def test_data_loading_report(reports):
    report = reports["data_loading"]
    assert report["verdict"] in ("PASS", "FAIL") and report["worker_counts"] == [0, 1, 2]
    assert set(report["pairings"]) == {"64px_demo", "224px_vit_b16"}
    for name, row in report["pairings"].items():
        for workers in ("0", "1", "2"):
            assert positive(row["loading_images_per_second"][workers]), (name, workers)
            assert positive(row["loading_first_batch_seconds"][workers]), (name, workers)
            assert positive(row["loading_to_consumption"][workers]), (name, workers)
        assert positive(row["consumption_images_per_second"]) and all(positive(s) for s in row["step_seconds"])
        assert 0 < row["serial_loading_share"] < 1 and row["verdict"] in ("PASS", "FAIL")


def test_pretraining_memory_report(reports):
    report = reports["pretraining_memory"]
    assert report["rows"] and report["variants"]
    for row in report["rows"]:
        for setting in ("off", "on"):
            for key in ("ru_maxrss_gib", "step_peak_rss_gib", "forward_backward_peak_rss_gib", "optimizer_peak_rss_gib",
                        "resident_after_build_gib", "step_seconds", "images_per_second"):
                assert positive(row[key][setting]), (key, setting, row[key])
        for key in ("step_peak_ratio_on_to_off", "time_ratio_on_to_off"):
            assert positive(row[key]), key
    for variant in report["variants"]:
        assert positive(variant["peak_rss_bytes"]) and positive(variant["wait4_ru_maxrss_bytes"])
        assert variant["peak_rss_bytes"] >= variant["step_peak_rss_bytes"] >= variant["rss_after_build_bytes"]
    trend = report["trend_at_target_image_size"]
    for setting in ("off", "on"):
        assert positive(trend[setting]["predicted_peak_rss_bytes_at_target"])
    assert positive(trend["predicted_step_seconds_at_target"])
    assert report["measured_target"] is True  # the tiny target (batch 4) fits
