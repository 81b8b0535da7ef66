"""Smoke test of the inference benchmarks: `benchmarks/inference_vs_alternatives.py` and `benchmarks/scaling.py` run
end to end with `--tiny` (tiny models, a few images) and write JSON reports with the expected fields and finite,
positive measurements. Speed targets are not asserted here: the numbers of a tiny model on a shared machine mean
nothing; the benchmarks themselves report PASS/FAIL at full size."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "bf16 autocast", "int8 dynamic", "zero-shot", "zero-shot, batch_size=1", "bare forward")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    """Both benchmarks, run at the same time (each is mostly import time), in subprocesses."""
    directory = tmp_path_factory.mktemp("benchmarks")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    processes = {}
    for name in ("inference_vs_alternatives", "scaling"):
        output = directory / f"{name}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--tiny", "--output", str(output)]
        if name == "inference_vs_alternatives":
            command.append("--zero_shot_single")  # the zero-shot pipeline at its default batch_size=1 too
        processes[name] = (subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True), output)
    loaded = {}
    for name, (process, output) in processes.items():
        log, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name} failed:\n{log[-4000:]}"
        loaded[name] = (json.loads(output.read_text(encoding="utf-8")), log)
    return loaded


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_inference_vs_alternatives_report(reports):
    report, log = reports["inference_vs_alternatives"]
    assert report["tiny"] is True
    for key in ("num_faces", "batch_size", "torch_threads", "cpu_count"):
        assert _positive(report[key]), key
    assert len(report["load_average_before"]) == 3 and len(report["prompts"]) == 12
    for name in VARIANTS:
        row = report["variants"][name]
        assert _positive(row["images_per_second"]), name
        assert len(row["seconds_per_pass"]) == report["rounds"] and all(map(_positive, row["seconds_per_pass"]))
    for name in ("bf16 autocast", "int8 dynamic"):
        row = report["variants"][name]
        for key in ("presence_agreement_at_fp32_median", "presence_agreement_at_au_threshold"):
            assert 0.0 <= row[key] <= 1.0, (name, key)
        assert math.isfinite(row["max_abs_score_difference"])
    assert all(_positive(value) for value in report["ratios"].values())
    assert {"fp32 / zero-shot", "fp32 / bare forward", "bf16 autocast / zero-shot",
            "int8 dynamic / zero-shot"} <= set(report["ratios"])
    assert len(report["targets"]) == 6
    assert "fp32 / zero-shot, batch_size=1" in report["ratios"]
    assert report["fp32_ceiling_bare_forward_over_zero_shot"] == pytest.approx(
        report["ratios"]["bare forward / zero-shot"])
    for target in report["targets"]:
        assert _positive(target["ratio"]) and _positive(target["minimum"]) and isinstance(target["passed"], bool)
        assert ("PASS: " if target["passed"] else "FAIL: ") + target["target"] in log


def test_scaling_report(reports):
    report, log = reports["scaling"]
    assert report["tiny"] is True
    assert _positive(report["torch_threads"]) and _positive(report["process_max_rss_mib"])

    batch_rows = report["batch_size_scaling"]
    assert [row["batch_size"] for row in batch_rows][:2] == [1, 4] and len(batch_rows) == 3  # + the reference point
    for row in batch_rows:
        for key in ("seconds_per_batch", "ms_per_image", "images_per_second", "peak_activation_mib",
                    "peak_activation_mib_per_image", "image_tower_weights_mib"):
            assert _positive(row[key]), key

    label_rows = report["label_count_scaling"]
    assert [row["num_labels"] for row in label_rows] == [12, 100]
    for row in label_rows:
        for path in ("label_embeddings", "candidate_labels_first_call", "candidate_labels_cached",
                     "transformers_zero_shot"):
            assert _positive(row[path]["ms_per_image"]), path
        # the label-embedding paths never run the text encoder per image; the first zero-shot call encodes L texts
        assert row["label_embeddings"]["texts_encoded_per_call"] == 0
        assert row["candidate_labels_cached"]["texts_encoded_per_call"] == 0
        assert row["candidate_labels_first_call"]["texts_encoded_per_call"] == row["num_labels"]
        assert row["transformers_zero_shot"]["texts_encoded_per_call"] >= row["num_labels"]
        assert _positive(row["transformers_zero_shot"]["peak_tensor_mib"])

    assert all(_positive(row["us_per_image"]) for row in report["scoring_matmul_scaling"])
    for row in report["image_count_scaling"]:
        assert _positive(row["our_pipeline_candidate_labels"]["ms_per_image"])
        assert _positive(row["transformers_zero_shot"]["ms_per_image"])
        assert row["our_pipeline_candidate_labels"]["texts_encoded_per_call"] == row["num_labels"]
    assert "Batch size" in log and "Number of labels" in log


def test_every_recipe_sweep_row_changes_real_fine_tuning_arguments():
    """docs/diagnosis.md's sweep rows name options that exist, so a renamed option cannot silently drop out of a row;
    the new-recipe row is the library's recipe itself, and the old one differs from it where the diagnosis says."""
    import dataclasses

    sys.path.insert(0, str(ROOT))
    from benchmarks.recipe_sweep import ROWS
    from clef_hf.training.arguments import COMPONENTS, FineTuningArguments
    from clef_hf.training.recipes import SYNTHFACES_RECIPE

    fields = {field.name for field in dataclasses.fields(FineTuningArguments)}
    for name, changes in ROWS.items():
        assert set(changes) - {"components"} <= fields, name
        assert changes.get("components", "IND") in COMPONENTS, name
    assert ROWS["new-recipe"] == {}
    assert (SYNTHFACES_RECIPE["text_learning_rate_factor"], SYNTHFACES_RECIPE["max_grad_norm"]) == (1.0, None)
    assert ROWS["old-recipe"] == {"text_learning_rate_factor": 3.0, "max_grad_norm": 1.0}
