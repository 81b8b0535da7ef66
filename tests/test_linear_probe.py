"""The linear probe of frozen image features (`clef_hf.training.references.linear_probe`, `scripts/linear_probe.py`)
on real synthfaces splits and a tiny real model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clef_hf.feature_tsne import image_features
from clef_hf.training.references import DEFAULT_C_GRID, PROBE_ROW, linear_probe, reference_row, standardised
from dataset_builders import au_ids_of, build_dataset

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"num_subjects": 6, "num_validation_subjects": 1, "num_test_subjects": 1, "frames_per_activity": 2,
           "image_size": 32}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return build_dataset("synthfaces", cache_dir=str(tmp_path_factory.mktemp("probe-data")), **OPTIONS)


@pytest.mark.parametrize("task", ["au", "expression"])
def test_the_probe_fits_on_train_picks_C_on_validation_and_scores_test(splits, au_model, processor, task):
    label_ids = au_ids_of(splits["train"]) if task == "au" else splits["train"].features["expression"].names
    probe = linear_probe(au_model, processor, splits["train"], splits["validation"], splits["test"], task, label_ids)
    assert probe["num_images"] == {"train": 64, "validation": 16, "test": 16}
    row = probe["rows"][PROBE_ROW]
    assert row["C"] in DEFAULT_C_GRID and set(row["validation_by_C"]) == {str(C) for C in DEFAULT_C_GRID}
    assert row["num_features"] == au_model.config.projection_dim
    key = probe["selection_metric"]
    assert row["validation"][key] == max(row["validation_by_C"].values())
    # The same row as the classical protocol gives on the same features: the probe is that protocol, nothing else.
    features = standardised({name: image_features(au_model, processor, list(splits[name]["image"]))
                             for name in ("train", "validation", "test")})
    from clef_hf.training.references import label_array

    labels = {name: label_array(splits[name], task, label_ids, name) for name in ("train", "validation", "test")}
    again = reference_row(features, labels, task, label_ids, DEFAULT_C_GRID)
    assert again["test"][key] == pytest.approx(row["test"][key])


def test_the_probe_names_a_wrong_task_or_column(splits, au_model, processor):
    with pytest.raises(ValueError, match="'intensity'"):
        linear_probe(au_model, processor, splits["train"], splits["validation"], splits["test"], "intensity", [])
    with pytest.raises(ValueError, match=r"'test' split has no column \['au'\]"):
        linear_probe(au_model, processor, splits["train"], splits["validation"],
                     splits["test"].remove_columns("au"), "au", au_ids_of(splits["train"]))


def test_the_script_writes_each_models_probe(tmp_path, splits, au_model, processor):
    au_model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    splits.save_to_disk(str(tmp_path / "data"))
    output = tmp_path / "probe.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "linear_probe.py"), "--model", str(tmp_path / "model"),
         "--task", "au", "--dataset", str(tmp_path / "data"), "--output_file", str(output)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "probe test mean_f1" in completed.stdout
    record = json.loads(output.read_text())
    assert np.isfinite(record[str(tmp_path / "model")]["rows"][PROBE_ROW]["test"]["mean_f1"])
