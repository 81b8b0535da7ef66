"""FERPlus builder on fixtures in the released layout: fer2013.csv (pixels) beside fer2013new.csv (crowd votes)."""

import datasets
import numpy as np
import pytest

from dataset_builders import BadDataError, MissingDataError, build_dataset
from dataset_builders.ferplus import majority_vote

VOTE_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"

# (usage, image name, votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF, expected)
# expected: the package expression id, or the report kind that excludes the row.
ROWS = [
    ("Training", "fer0000000.png", (0, 9, 0, 0, 0, 0, 0, 0, 1, 0), "happiness"),  # clear majority
    ("Training", "fer0000001.png", (5, 0, 0, 5, 0, 0, 0, 0, 0, 0), "no_majority"),  # tie
    ("Training", "fer0000002.png", (1, 0, 0, 0, 0, 0, 0, 0, 8, 1), "unknown_majority"),
    ("Training", "fer0000003.png", (0, 0, 0, 0, 0, 0, 0, 0, 3, 7), "not_a_face"),
    # 4 of 10 is no majority, but the five single votes are noise: 4 of the 4 remaining votes.
    ("Training", "fer0000004.png", (4, 0, 1, 1, 1, 1, 1, 0, 1, 0), "neutral"),
    ("Training", "fer0000005.png", (2, 0, 0, 0, 0, 0, 0, 6, 2, 0), "contempt"),
    ("Training", "", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10), "no_image_name"),  # removed by FERPlus
    ("Training", "fer0000007.png", (0, 0, 0, 0, 7, 3, 0, 0, 0, 0), "anger"),
    ("PublicTest", "fer0000008.png", (0, 0, 8, 0, 0, 0, 2, 0, 0, 0), "surprise"),
    ("PublicTest", "fer0000009.png", (0, 0, 3, 0, 0, 0, 7, 0, 0, 0), "fear"),
    ("PublicTest", "fer0000010.png", (5, 0, 0, 0, 0, 3, 0, 0, 2, 0), "no_majority"),  # exactly half: not more
    ("PrivateTest", "fer0000011.png", (1, 0, 0, 9, 0, 0, 0, 0, 0, 0), "sadness"),
    ("PrivateTest", "fer0000012.png", (0, 0, 0, 0, 2, 6, 0, 0, 0, 2), "disgust"),
    ("PrivateTest", "fer0000013.png", (0, 0, 0, 0, 0, 0, 0, 10, 0, 0), "contempt"),
]
SPLIT_OF = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
EXPRESSIONS_8 = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]


def pixels_of(index: int) -> np.ndarray:
    """A distinct 48x48 gray image per row, so that each example can be traced back to its row."""
    return ((np.arange(48 * 48) * (index + 1) + 7 * index) % 256).astype(np.uint8).reshape(48, 48)


def write_ferplus(root, rows=ROWS, pixel_rows=None, vote_lines=None, extra_fer_lines=(), extra_vote_lines=(),
                  usage_before_pixels=False):
    """fer2013.csv and fer2013new.csv for `rows`; `pixel_rows` / `vote_lines` override single lines by row index.
    `usage_before_pixels`: the column order of Kaggle's icml_face_data.csv (`emotion, Usage, pixels`)."""
    root.mkdir(parents=True)
    fer = ["emotion, Usage, pixels" if usage_before_pixels else "emotion,pixels,Usage"]
    votes = [VOTE_HEADER]
    for index, (usage, name, counts, _) in enumerate(rows):
        pixels = " ".join(str(v) for v in pixels_of(index).ravel())
        line = f"{index},{usage},{pixels}" if usage_before_pixels else f"{index},{pixels},{usage}"
        fer.append((pixel_rows or {}).get(index, line))
        votes.append((vote_lines or {}).get(index, ",".join([usage, name, *map(str, counts)])))
    (root / "fer2013.csv").write_text("\n".join(fer + list(extra_fer_lines)) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(votes + list(extra_vote_lines)) + "\n")
    return root


def expected(num_classes=8, rows=ROWS):
    splits = {"train": {}, "validation": {}, "test": {}}
    for usage, name, _, label in rows:
        if label in EXPRESSIONS_8[:num_classes]:
            splits[SPLIT_OF[usage]][name] = label
    return splits


def by_name(split) -> dict[str, str]:
    """Image name -> expression id of every example (the stored image keeps the FERPlus image name as its path)."""
    names = split.features["expression"].names
    raw = split.cast_column("image", datasets.Image(decode=False))
    return {image["path"]: names[e] for image, e in zip(raw["image"], raw["expression"])}


@pytest.mark.parametrize(
    "votes, drop_single_votes, winner",
    [
        ((0, 9, 0, 0, 0, 0, 0, 0, 1, 0), True, "happiness"),
        ((5, 0, 0, 5, 0, 0, 0, 0, 0, 0), True, None),  # tie
        ((5, 0, 0, 0, 0, 3, 0, 0, 2, 0), True, None),  # exactly half
        ((6, 0, 0, 0, 0, 3, 0, 0, 1, 0), True, "neutral"),  # 6 of 9 once the single unknown vote is dropped
        ((4, 0, 1, 1, 1, 1, 1, 0, 1, 0), True, "neutral"),
        ((4, 0, 1, 1, 1, 1, 1, 0, 1, 0), False, None),
        ((1, 1, 1, 1, 1, 1, 1, 1, 1, 1), True, None),  # every vote is noise
        ((1, 1, 1, 1, 1, 1, 1, 1, 1, 1), False, None),
        ((0, 0, 0, 0, 0, 0, 0, 0, 8, 2), True, "unknown"),
        ((0, 0, 0, 0, 0, 0, 0, 0, 3, 7), True, "NF"),
        ((0, 0, 0, 0, 0, 0, 0, 6, 4, 0), True, "contempt"),
        ((0, 0, 0, 0, 0, 0, 0, 0, 0, 1), False, "NF"),
    ],
)
def test_majority_vote(votes, drop_single_votes, winner):
    assert majority_vote(votes, drop_single_votes) == winner


def test_majority_vote_drops_single_votes_by_default():
    assert majority_vote((4, 0, 1, 1, 1, 1, 1, 0, 1, 0)) == "neutral"


def test_majority_vote_rejects_a_wrong_number_of_counts():
    with pytest.raises(ValueError, match="Expected 10 vote counts"):
        majority_vote((1, 2, 3))


def test_builds_splits_with_majority_labels_row_by_row(tmp_path):
    data = write_ferplus(tmp_path / "ferplus")
    splits, report = build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   return_report=True)
    assert splits["train"].features["expression"].names == EXPRESSIONS_8
    assert {name: by_name(split) for name, split in splits.items()} == expected(8)
    assert {name: len(split) for name, split in splits.items()} == {"train": 4, "validation": 2, "test": 3}
    assert report.counts == {"no_majority": 2, "unknown_majority": 1, "not_a_face": 1, "no_image_name": 1}
    assert "fer2013new.csv:3" in report.examples["no_majority"][0]  # the tie, on line 3 (row 1 after the header)

    # The stored image is the row's 48x48 gray pixels, exactly (PNG is lossless).
    raw_names = splits["validation"].cast_column("image", datasets.Image(decode=False))["image"]
    for image, raw in zip(splits["validation"]["image"], raw_names):
        index = int(raw["path"][3:10])
        assert image.mode == "L" and image.size == (48, 48)
        np.testing.assert_array_equal(np.asarray(image), pixels_of(index))


def test_columns_are_found_by_header_name(tmp_path):
    data = write_ferplus(tmp_path / "ferplus", usage_before_pixels=True)
    splits = build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    assert {name: by_name(split) for name, split in splits.items()} == expected(8)
    np.testing.assert_array_equal(np.asarray(splits["test"]["image"][0]), pixels_of(11))


def test_seven_classes_drop_contempt_and_count_it(tmp_path):
    data = write_ferplus(tmp_path / "ferplus")
    splits, report = build_dataset("ferplus", "7", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   return_report=True)
    assert splits["test"].features["expression"].names == EXPRESSIONS_8[:7]
    assert {name: by_name(split) for name, split in splits.items()} == expected(7)
    assert report.counts["excluded_contempt"] == 2
    assert any("fer0000013.png" in example for example in report.examples["excluded_contempt"])


def test_keeping_single_votes_changes_the_noisy_row_only(tmp_path):
    data = write_ferplus(tmp_path / "ferplus")
    splits, report = build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   drop_single_votes=False, return_report=True)
    labels = by_name(splits["train"])
    assert "fer0000004.png" not in labels
    assert labels == {k: v for k, v in expected(8)["train"].items() if k != "fer0000004.png"}
    assert report.counts["no_majority"] == 3


def test_missing_files_name_the_path(tmp_path):
    data = write_ferplus(tmp_path / "ferplus")
    (data / "fer2013new.csv").unlink()
    with pytest.raises(MissingDataError, match=r"missing .*fer2013new.csv(.|\n)*Usage,Image name"):
        build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(MissingDataError, match="needs data_dir"):
        build_dataset("ferplus", cache_dir=str(tmp_path / "cache"))


BAD_PIXELS = {
    5: "3," + " ".join(["9"] * 2303) + ",Training",  # 2303 values
    8: "3," + " ".join(["9"] * 2303 + ["x"]) + ",PublicTest",  # not a number
    11: "3," + " ".join(["9"] * 2303 + ["256"]) + ",PrivateTest",  # out of range
    3: "3," + " ".join(["9"] * 2304) + ",Holdout",  # unknown Usage
}


@pytest.mark.parametrize(
    "overrides, where",
    [
        ({"pixel_rows": {5: BAD_PIXELS[5]}}, "unparseable_image_row: .*fer2013.csv:7: expected 2304 pixel values"),
        ({"pixel_rows": {8: BAD_PIXELS[8]}}, "unparseable_image_row: .*fer2013.csv:10: pixel values must be"),
        ({"pixel_rows": {3: BAD_PIXELS[3]}}, "unparseable_image_row: .*fer2013.csv:5: unknown Usage 'Holdout'"),
        ({"pixel_rows": {0: "3,1 2 3"}}, "unparseable_image_row: .*fer2013.csv:2: expected 3 columns, got 2"),
        ({"vote_lines": {4: "Training,fer0000004.png,4,0,1"}},
         "unparseable_label_row: .*fer2013new.csv:6: expected 12"),
        ({"vote_lines": {5: "Training,fer0000005.png,2,0,0,0,0,0,0,six,2,0"}},
         "unparseable_label_row: .*fer2013new.csv:7: vote counts"),
        ({"vote_lines": {7: "PublicTest,fer0000007.png,0,0,0,0,7,3,0,0,0,0"}}, "usage_mismatch: .*fer2013new.csv:9"),
        ({"extra_vote_lines": ["Training,fer9999999.png,10,0,0,0,0,0,0,0,0,0"]},
         "row_count_mismatch: .*fer2013new.csv:16: fer2013new.csv has 15 data rows but fer2013.csv has 14"),
    ],
)
def test_bad_rows_stop_by_default_naming_file_and_line(tmp_path, overrides, where):
    data = write_ferplus(tmp_path / "ferplus", **overrides)
    with pytest.raises(BadDataError, match=where):
        build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"))


def test_bad_rows_are_skipped_and_counted(tmp_path):
    data = write_ferplus(
        tmp_path / "ferplus",
        pixel_rows=BAD_PIXELS,
        vote_lines={4: "Training,fer0000004.png,4,0,1", 7: "PublicTest,fer0000007.png,0,0,0,0,7,3,0,0,0,0"},
        extra_fer_lines=["3," + " ".join(["9"] * 2304) + ",Training"],
    )
    splits, report = build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   on_bad_data="skip", return_report=True)
    # Rows 3, 4, 5, 7, 8 and 11 are bad; the extra fer2013 row has no votes.
    assert {name: by_name(split) for name, split in splits.items()} == {
        "train": {"fer0000000.png": "happiness"},
        "validation": {"fer0000009.png": "fear"},
        "test": {"fer0000012.png": "disgust", "fer0000013.png": "contempt"},
    }
    assert report.counts == {
        "unparseable_image_row": 4, "unparseable_label_row": 1, "usage_mismatch": 1, "row_count_mismatch": 1,
        "image_without_label": 1, "no_majority": 2, "unknown_majority": 1, "no_image_name": 1,
    }
    assert "fer2013.csv:16" in report.examples["image_without_label"][0]


def test_header_without_the_vote_columns_is_refused(tmp_path):
    data = write_ferplus(tmp_path / "ferplus")
    text = (data / "fer2013new.csv").read_text().replace("contempt,unknown,NF", "contempt,unknown,nonface")
    (data / "fer2013new.csv").write_text(text)
    with pytest.raises(BadDataError, match=r"fer2013new.csv:1: missing columns \['NF'\]"):
        build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"), on_bad_data="skip")


def test_parallel_build_matches_and_merges_worker_reports(tmp_path, monkeypatch):
    monkeypatch.setattr("dataset_builders.ferplus.SHARD_SIZE", 2)  # several shards per split, so num_proc fans out
    data = write_ferplus(tmp_path / "ferplus", pixel_rows={5: BAD_PIXELS[5], 11: BAD_PIXELS[11]})
    splits, report = build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "cache"), num_proc=2,
                                   on_bad_data="skip", return_report=True)
    want = expected(8)
    del want["train"]["fer0000005.png"], want["test"]["fer0000011.png"]
    assert {name: by_name(split) for name, split in splits.items()} == want
    assert report.counts["unparseable_image_row"] == 2
    assert {e.split(": ")[0].rsplit("/", 1)[1] for e in report.examples["unparseable_image_row"]} == {
        "fer2013.csv:7", "fer2013.csv:13"}
