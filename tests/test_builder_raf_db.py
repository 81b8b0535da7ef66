"""RAF-DB builder on a fixture in RAF-DB's released layout."""

import numpy as np
import pytest
from PIL import Image

from dataset_builders import BadDataError, EmptySplitError, MissingDataError, build_dataset

ROWS = [("train_00001.jpg", 5), ("train_00002.jpg", 4), ("train_00003.jpg", 7), ("test_0001.jpg", 1),
        ("test_0002.jpg", 6)]


def write_raf_db(root, rows=ROWS, extra_lines=(), missing=(), corrupt=(), unlabelled=()):
    (root / "basic" / "EmoLabel").mkdir(parents=True)
    aligned = root / "basic" / "Image" / "aligned"
    aligned.mkdir(parents=True)
    lines = [f"{name} {code}" for name, code in rows] + list(extra_lines)
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    for name, _ in list(rows) + [(n, 0) for n in unlabelled]:
        if name in missing:
            continue
        path = aligned / name.replace(".jpg", "_aligned.jpg")
        if name in corrupt:
            path.write_bytes(b"not a jpeg")
        else:
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return root


def test_builds_splits_and_maps_codes(tmp_path):
    data = write_raf_db(tmp_path / "raf")
    splits, report = build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   return_report=True)
    assert {name: len(split) for name, split in splits.items()} == {"train": 3, "test": 2}
    names = splits["train"].features["expression"].names
    assert names == ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
    train = sorted(zip(splits["train"]["expression"], [i.size for i in splits["train"]["image"]]))
    assert [names[e] for e, _ in train] == ["neutral", "happiness", "sadness"]  # codes 7, 4, 5
    assert [names[e] for e in sorted(splits["test"]["expression"])] == ["surprise", "anger"]  # codes 1, 6
    assert not report


def test_missing_label_file_names_the_path(tmp_path):
    (tmp_path / "raf" / "Image" / "aligned").mkdir(parents=True)
    with pytest.raises(MissingDataError, match=r"missing .*EmoLabel/list_patition_label.txt"):
        build_dataset("raf_db", data_dir=str(tmp_path / "raf"), cache_dir=str(tmp_path / "cache"))


def test_bad_rows_and_images_raise_or_are_counted(tmp_path):
    data = write_raf_db(tmp_path / "raf", extra_lines=["train_00009.jpg happy"], corrupt=["train_00002.jpg"],
                        missing=["test_0002.jpg"], unlabelled=["train_00077.jpg"])
    with pytest.raises(BadDataError, match=r"list_patition_label.txt:6"):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "cache1"))
    splits, report = build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "cache2"),
                                   on_bad_data="skip", return_report=True)
    assert {name: len(split) for name, split in splits.items()} == {"train": 2, "test": 1}
    assert report.counts == {"unparseable_label_row": 1, "unreadable_image": 1, "label_without_image": 1,
                             "image_without_label": 1}
    assert "train_00002_aligned.jpg" in report.examples["unreadable_image"][0]
    assert "test_0002_aligned.jpg" in report.examples["label_without_image"][0]


def test_corrupt_image_stops_by_default_naming_it(tmp_path):
    data = write_raf_db(tmp_path / "raf", corrupt=["test_0001.jpg"])
    with pytest.raises(BadDataError, match="test_0001_aligned.jpg"):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "cache"))


def test_split_left_empty_by_skipping_names_the_cause(tmp_path):
    data = write_raf_db(tmp_path / "raf", rows=[("train_00001.jpg", 5), ("test_0001.jpg", 1)], corrupt=["test_0001.jpg"])
    with pytest.raises(EmptySplitError, match=r"(?s)\['test'\] hold no examples.*unreadable_image: 1"):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "cache"), on_bad_data="skip")
