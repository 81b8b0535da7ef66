"""BP4D and BP4D+ builders on fixtures in the releases' on-disk layout: frame folders per subject and task, one AU CSV
per subject and task with more AU columns than the 12 used, and codes 0, 1 and 9."""

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from clef_hf.vocabulary import BP4D_ACTIVITIES, BP4D_PLUS_ACTIVITIES
from dataset_builders import BadDataError, MissingDataError, au_ids_of, build_dataset
from dataset_builders.bp4d import even_quotas
from dataset_builders.folds import BP4D_PARTS, THREE_FOLD_TEST_PART, k_fold_split
from dataset_builders.schema import BP4D_AU_IDS

#: AU columns as in the released CSVs: many more than the 12 evaluated, with gaps.
CSV_AU_COLUMNS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 43, 99)
CODE_VALUE = {0: 0, 1: 1, 9: -1}
ALL_BP4D_SUBJECTS = sorted(s for part in BP4D_PARTS for s in part)


def write_frames(folder: Path, numbers, pad: int = 4, size: int = 8, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number in numbers:
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{number:0{pad}d}.jpg")


def write_codes(path: Path, codes: dict[int, dict[int, int]], columns=CSV_AU_COLUMNS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(["Frame", *map(str, columns)])]
    lines += [",".join([str(number), *(str(codes[number][au]) for au in columns)]) for number in sorted(codes)]
    path.write_text("\n".join(lines) + "\n")


def write_release(root: Path, frames_dir: str, label_dir: str, frames: dict, labelled=None, seed: int = 0) -> dict:
    """Frames `{(subject, task): numbers}` under `frames_dir`, and a CSV under `label_dir` for each key in
    `labelled` (all if None) with random codes for every frame. Returns `{(subject, task, number): {au: code}}`."""
    rng = np.random.default_rng(seed)
    expected = {}
    for index, ((subject, task), numbers) in enumerate(sorted(frames.items())):
        # Zero-padded names for some subjects, plain frame numbers for others, as both occur.
        write_frames(root / frames_dir / subject / task, numbers, pad=4 if index % 2 else 1, seed=index)
        if labelled is not None and (subject, task) not in labelled:
            continue
        codes = {n: {au: int(rng.choice([0, 1, 9], p=[0.45, 0.35, 0.2])) for au in CSV_AU_COLUMNS} for n in numbers}
        columns = CSV_AU_COLUMNS[::-1] if index % 3 == 0 else CSV_AU_COLUMNS  # columns found by header, not place
        write_codes(root / label_dir / f"{subject}_{task}.csv", codes, columns)
        expected.update({(subject, task, n): c for n, c in codes.items()})
    return expected


def rows(split: datasets.Dataset) -> list[dict]:
    """The rows, with the image as its file path (undecoded) and the frame number read from it."""
    table = split.cast_column("image", datasets.Image(decode=False)).to_list()
    for row in table:
        row["image"] = row["image"]["path"]
        row["frame"] = int(Path(row["image"]).stem)
    return table


def expected_au(codes: dict[int, int], au_ids: list[str]) -> list[int]:
    return [CODE_VALUE[codes[int(au_id[2:])]] for au_id in au_ids]


# ------------------------------------------------------------------------------------------------ BP4D

#: Every BP4D subject with 2 frames of T1 (so the folds are the full standard parts), and three subjects, one per
#: part, with T2 and T8 as well.
BP4D_FRAMES = {(s, "T1"): [7, 8] for s in ALL_BP4D_SUBJECTS}
BP4D_FRAMES.update({(s, t): [100, 101, 102] for s in ("F001", "M011", "F007") for t in ("T2", "T8")})
BP4D_NUM_FRAMES = 2 * 41 + 3 * 2 * 3


@pytest.fixture(scope="module")
def bp4d(tmp_path_factory):
    """The release folder, its expected codes, and a cached `build(config, **options)`."""
    root = tmp_path_factory.mktemp("bp4d")
    expected = write_release(root / "BP4D", "BP4D-training", "AUCoding/AUCoding", BP4D_FRAMES)
    built = {}

    def build(config, **options):
        key = (config, tuple(sorted(options.items())))
        if key not in built:
            built[key] = build_dataset("bp4d", config, data_dir=str(root / "BP4D"),
                                       cache_dir=str(root / f"cache{len(built)}"), return_report=True, **options)
        return built[key]

    return root / "BP4D", expected, build


def test_bp4d_pretrain_keeps_every_frame_with_its_codes_and_activity(bp4d):
    _, expected, build = bp4d
    splits, report = build("pretrain")
    assert list(splits) == ["train"] and len(splits["train"]) == BP4D_NUM_FRAMES
    assert not report
    au_ids = au_ids_of(splits["train"])
    assert au_ids == list(BP4D_AU_IDS)
    table = rows(splits["train"])
    assert {(r["subject"], r["activity"], r["frame"]) for r in table} == set(expected)
    for row in table:
        assert row["au"] == expected_au(expected[row["subject"], row["activity"], row["frame"]], au_ids)
        assert row["activity_description"] == BP4D_ACTIVITIES[row["activity"]].description
    values = {v for row in table for v in row["au"]}
    assert values == {-1, 0, 1}  # 9 became -1 somewhere, and 0 and 1 were kept
    # Code 9 is unknown, never absent: every 9 in the CSVs is -1 in the data set.
    nines = [(r, i) for r in table for i, a in enumerate(au_ids)
             if expected[r["subject"], r["activity"], r["frame"]][int(a[2:])] == 9]
    assert nines and all(r["au"][i] == -1 for r, i in nines)


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_bp4d_folds_are_the_standard_subject_exclusive_parts(bp4d, fold):
    _, expected, build = bp4d
    splits, report = build(f"fold{fold}")
    assert not report
    subjects = {name: set(split["subject"]) for name, split in splits.items()}
    test_part = set(BP4D_PARTS[THREE_FOLD_TEST_PART[fold]])
    assert subjects["test"] == test_part
    assert subjects["train"] == set(ALL_BP4D_SUBJECTS) - test_part
    counted = {name: sum(len(n) for (s, _), n in BP4D_FRAMES.items() if s in subjects[name]) for name in splits}
    assert {name: len(split) for name, split in splits.items()} == counted
    assert counted["test"] > 0 and counted["train"] > 0
    test_rows = rows(splits["test"])
    assert all(r["au"] == expected_au(expected[r["subject"], r["activity"], r["frame"]], au_ids_of(splits["test"]))
               for r in test_rows)


def test_bp4d_num_proc_2_gives_the_same_rows(bp4d):
    _, _, build = bp4d
    one, _ = build("pretrain")
    two, report = build("pretrain", num_proc=2)
    assert not report
    assert rows(two["train"]) == rows(one["train"])


def test_bp4d_accepts_the_flat_label_folder(tmp_path):
    frames = {("F001", "T1"): [1, 2], ("F007", "T3"): [5]}
    expected = write_release(tmp_path / "BP4D", "BP4D-training", "AUCoding", frames)
    splits = build_dataset("bp4d", "fold1", data_dir=str(tmp_path / "BP4D"), cache_dir=str(tmp_path / "cache"))
    table = rows(splits["train"]) + rows(splits["test"])
    assert sorted((r["subject"], r["activity"], r["frame"]) for r in table) == sorted(expected)
    assert all(r["au"] == expected_au(expected[r["subject"], r["activity"], r["frame"]], list(BP4D_AU_IDS))
               for r in table)


def test_bp4d_missing_folders_are_named(tmp_path):
    with pytest.raises(MissingDataError, match=r"missing .*BP4D-training"):
        build_dataset("bp4d", "pretrain", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "BP4D-training" / "F001" / "T1").mkdir(parents=True)
    with pytest.raises(MissingDataError, match=r"missing .*AUCoding(?s:.*)AUCoding/AUCoding/\{subject\}_\{task\}.csv"):
        build_dataset("bp4d", "pretrain", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "AUCoding" / "AUCoding").mkdir(parents=True)
    with pytest.raises(MissingDataError, match=r"no folder of the test subjects .*F007"):
        build_dataset("bp4d", "fold1", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="choose a config"):
        build_dataset("bp4d", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def messy_bp4d(tmp_path):
    """F001 (part 1) and F007 (part 3), T1, frames 1-4 coded; then frame 5 with no row, a row for frame 99 with no
    file, and a folder for a subject in no standard part."""
    root = tmp_path / "BP4D"
    expected = write_release(root, "BP4D-training", "AUCoding/AUCoding", {("F001", "T1"): [1, 2, 3, 4],
                                                                          ("F007", "T1"): [1, 2, 3, 4]})
    write_frames(root / "BP4D-training" / "F007" / "T1", [5])
    with open(root / "AUCoding" / "AUCoding" / "F001_T1.csv", "a") as file:
        file.write("99," + ",".join("0" for _ in CSV_AU_COLUMNS) + "\n")
    write_frames(root / "BP4D-training" / "X999" / "T1", [1])
    return root, expected


def test_unmatched_frames_and_labels_are_counted(messy_bp4d, tmp_path):
    root, _ = messy_bp4d
    frames = root / "BP4D-training" / "F001" / "T1"  # frames named 1.jpg .. 4.jpg
    (frames / "1.jpg").rename(frames / "01.jpg")
    write_frames(frames, [1], pad=3)  # 001.jpg: frame 1 twice
    (frames / "notes.txt").write_text("not a frame")
    # T2 is coded (for F007), but F001's T2 has no CSV.
    write_frames(root / "BP4D-training" / "F001" / "T2", [1])
    write_frames(root / "BP4D-training" / "F007" / "T2", [1])
    write_codes(root / "AUCoding" / "AUCoding" / "F007_T2.csv", {1: {au: 0 for au in CSV_AU_COLUMNS}})
    write_codes(root / "AUCoding" / "AUCoding" / "F007_T3.csv", {1: {au: 0 for au in CSV_AU_COLUMNS}})  # no T3 folder
    splits, report = build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c1"),
                                   return_report=True)
    assert {name: len(split) for name, split in splits.items()} == {"train": 4, "test": 5}
    assert report.examples["task_without_labels"] == [str(root / "BP4D-training" / "F001" / "T2")]
    assert report.counts["frame_without_labels"] == 1
    assert report.examples["frame_without_labels"][0].endswith("F007/T1/0005.jpg")
    assert report.counts["labels_without_frame"] == 2
    assert any(e.endswith("F001_T1.csv:99") for e in report.examples["labels_without_frame"])
    assert any(e.startswith(str(root / "AUCoding" / "AUCoding" / "F007_T3.csv") + ": no frames folder")
               for e in report.examples["labels_without_frame"])
    assert report.counts["subject_not_in_standard_parts"] == 1
    assert "X999" in report.examples["subject_not_in_standard_parts"][0]
    # 41 - 2 subjects of the standard parts have no folder; each is counted once, in its split.
    assert report.counts["standard_subject_missing"] == 39
    assert report.examples["duplicate_frame"] == ["%s: frame 1 is also 001.jpg" % (frames / "01.jpg")]
    assert report.examples["unexpected_file"] == [str(frames / "notes.txt")]
    assert set(report.counts) == {"frame_without_labels", "labels_without_frame", "subject_not_in_standard_parts",
                                  "standard_subject_missing", "duplicate_frame", "unexpected_file",
                                  "task_without_labels"}

    # Pre-training keeps the uncoded frame, with every AU unknown.
    splits, report = build_dataset("bp4d", "pretrain", data_dir=str(root), cache_dir=str(tmp_path / "c2"),
                                   return_report=True)
    table = rows(splits["train"])
    assert len(table) == 11
    assert [r["au"] for r in table if (r["subject"], r["frame"]) == ("F007", 5)] == [[-1] * 12]
    assert [r["au"] for r in table if (r["subject"], r["activity"]) == ("F001", "T2")] == [[-1] * 12]
    assert [r["au"] for r in table if (r["subject"], r["activity"]) == ("F007", "T2")] == [[0] * 12]
    assert report.counts == {"labels_without_frame": 2, "subject_not_in_standard_parts": 1, "duplicate_frame": 1,
                             "unexpected_file": 1}


def test_corrupt_frame_raises_naming_it_or_is_skipped_and_counted(messy_bp4d, tmp_path):
    root, _ = messy_bp4d
    (root / "BP4D-training" / "F001" / "T1" / "3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadDataError, match=r"unreadable_image: .*F001/T1/3.jpg"):
        build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True)
    assert len(splits["train"]) == 3 and 3 not in [r["frame"] for r in rows(splits["train"])]
    assert report.counts["unreadable_image"] == 1
    assert "F001/T1/3.jpg" in report.examples["unreadable_image"][0]


def test_garbage_label_rows_raise_naming_the_line_or_are_skipped(messy_bp4d, tmp_path):
    root, expected = messy_bp4d
    csv_path = root / "AUCoding" / "AUCoding" / "F007_T1.csv"
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    lines[2] = ",".join(["2"] + ["7" if cell == "12" else "0" for cell in header[1:]])  # frame 2: code 7 for AU12
    lines.insert(3, "three,0,1")
    lines.append(",".join(["4"] + ["1"] * (len(header) - 1)))  # frame 4 again, line 7
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadDataError, match=r"unparseable_label_row: .*F007_T1.csv:3"):
        build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True)
    # Lines 3 (frame 2) and 4 are bad; frame 2 then has no labels and is counted as such, like frame 5.
    assert report.counts["unparseable_label_row"] == 2
    assert {e.split(": ")[0].rsplit(":", 1)[1] for e in report.examples["unparseable_label_row"]} == {"3", "4"}
    assert report.counts["duplicate_label_row"] == 1
    assert report.examples["duplicate_label_row"][0].split(": ")[0].endswith("F007_T1.csv:7")
    test_rows = rows(splits["test"])
    assert sorted(r["frame"] for r in test_rows) == [1, 3, 4]
    frame_4 = expected[("F007", "T1", 4)]
    assert [r["au"] for r in test_rows if r["frame"] == 4] == [expected_au(frame_4, list(BP4D_AU_IDS))]  # the first
    assert report.counts["frame_without_labels"] == 2


def test_label_file_without_the_12_au_columns_raises_or_is_skipped(messy_bp4d, tmp_path):
    root, _ = messy_bp4d
    write_release(root, "BP4D-training", "AUCoding/AUCoding", {("M007", "T1"): [1, 2]})  # so train is not empty
    csv_path = root / "AUCoding" / "AUCoding" / "F001_T1.csv"
    write_codes(csv_path, {1: {au: 1 for au in CSV_AU_COLUMNS}}, columns=[c for c in CSV_AU_COLUMNS if c != 24])
    with pytest.raises(BadDataError, match=r"unparseable_label_file: .*F001_T1.csv:1: the header row has no column "
                                           r"for AUs \[24\]"):
        build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("bp4d", "fold1", data_dir=str(root), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True)
    assert set(splits["train"]["subject"]) == {"M007"}  # F001's frames lost their labels, and are counted
    assert report.counts["unparseable_label_file"] == 1
    assert report.counts["frame_without_labels"] == 4 + 1  # F001's 4, and F007's frame 5


def test_crop_faces_stores_face_crops_and_counts_frames_without_a_face(tmp_path):
    from skimage.data import astronaut

    folder = tmp_path / "BP4D" / "BP4D-training" / "F001" / "T1"
    folder.mkdir(parents=True)
    frame = Image.new("RGB", (512, 384), (128, 128, 128))
    frame.paste(Image.fromarray(astronaut()).resize((256, 256)), (128, 64))  # face at about (214-265, 95-146)
    frame.save(folder / "0001.jpg", quality=95)
    Image.new("RGB", (512, 384), (128, 128, 128)).save(folder / "0002.jpg")
    codes = {n: {au: 1 for au in CSV_AU_COLUMNS} for n in (1, 2)}
    write_codes(tmp_path / "BP4D" / "AUCoding" / "AUCoding" / "F001_T1.csv", codes)
    splits, report = build_dataset("bp4d", "pretrain", data_dir=str(tmp_path / "BP4D"),
                                   cache_dir=str(tmp_path / "cache"), crop_faces=True, face_size=64,
                                   return_report=True)
    assert len(splits["train"]) == 1
    stored = splits["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert stored["bytes"] is not None  # the crop itself is the cache, not a path to the frame
    crop = splits["train"][0]["image"]
    assert crop.size == (64, 64)
    assert np.asarray(crop.convert("L")).std() > 20  # a face, not the flat gray background
    assert report.counts == {"no_face": 1}
    assert report.examples["no_face"][0].endswith("0002.jpg")


# ------------------------------------------------------------------------------------------------ BP4D+

BP4D_PLUS_SUBJECTS = ("F001", "F002", "F082", "M001", "M058")
CODED_TASKS = ("T1", "T6", "T7", "T8")
#: 4 frames per subject in T1-T9, but only 1 in T10, so T10 cannot give an equal share of a large sample.
BP4D_PLUS_FRAMES = {(s, f"T{t}"): list(range(10, 14)) if t < 10 else [10]
                    for s in BP4D_PLUS_SUBJECTS for t in range(1, 11)}


@pytest.fixture(scope="module")
def bp4d_plus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bp4d_plus")
    labelled = {key for key in BP4D_PLUS_FRAMES if key[1] in CODED_TASKS}
    expected = write_release(root / "BP4DPlus", "2D+3D", "AUCoding/AU_OCC", BP4D_PLUS_FRAMES, labelled, seed=1)
    counter = iter(range(100))

    def build(config, **options):
        return build_dataset("bp4d_plus", config, data_dir=str(root / "BP4DPlus"),
                             cache_dir=str(root / f"cache{next(counter)}"), return_report=True, **options)

    return expected, build


def test_even_quotas_share_the_shortfall():
    counts = {f"T{t}": 20 for t in range(1, 10)} | {"T10": 5}
    assert even_quotas(counts, 100) == {"T1": 11, "T2": 11, "T3": 11, "T4": 11, "T5": 11, "T6": 10, "T7": 10,
                                        "T8": 10, "T9": 10, "T10": 5}
    assert even_quotas(counts, 10_000) == counts
    assert even_quotas({"T1": 3, "T2": 0, "T3": 9}, 4) == {"T1": 2, "T2": 0, "T3": 2}


def test_bp4d_plus_pretrain_samples_evenly_across_tasks(bp4d_plus):
    expected, build = bp4d_plus
    everything, report = build("pretrain")
    assert len(everything["train"]) == 9 * 5 * 4 + 5
    assert not report

    sample, _ = build("pretrain", pretrain_size=100)
    table = rows(sample["train"])
    per_task = {t: sum(r["activity"] == t for r in table) for t in BP4D_PLUS_ACTIVITIES}
    # 10 each, but T10 has only 5 frames: its shortfall of 5 goes one each to the first tasks.
    assert per_task == {"T1": 11, "T2": 11, "T3": 11, "T4": 11, "T5": 11, "T6": 10, "T7": 10, "T8": 10, "T9": 10,
                        "T10": 5}
    assert len({(r["subject"], r["activity"], r["frame"]) for r in table}) == 100
    assert len({r["subject"] for r in table if r["activity"] == "T1"}) > 1  # drawn across subjects, not the first
    for row in table:
        assert row["activity_description"] == BP4D_PLUS_ACTIVITIES[row["activity"]].description
        key = (row["subject"], row["activity"], row["frame"])
        assert row["au"] == (expected_au(expected[key], au_ids_of(sample["train"])) if key in expected else [-1] * 12)

    again, _ = build("pretrain", pretrain_size=100)
    assert rows(again["train"]) == table
    other_seed, _ = build("pretrain", pretrain_size=100, seed=1)
    assert {r["image"] for r in rows(other_seed["train"])} != {r["image"] for r in table}


def test_bp4d_plus_four_folds_over_the_subjects_on_disk(bp4d_plus):
    expected, build = bp4d_plus
    tested = []
    for fold in range(1, 5):
        splits, report = build(f"fold{fold}")
        subjects = {name: set(split["subject"]) for name, split in splits.items()}
        assert subjects["test"] == set(k_fold_split(list(BP4D_PLUS_SUBJECTS), fold, 4)["test"])
        assert subjects["train"] == set(BP4D_PLUS_SUBJECTS) - subjects["test"]
        assert {t for split in splits.values() for t in split["activity"]} == set(CODED_TASKS)
        assert sum(len(split) for split in splits.values()) == len(expected)
        # The 6 tasks nobody coded are counted once each, not once per subject or per frame.
        assert report.counts == {"uncoded_task": 6}
        assert sorted(e.split(":")[0] for e in report.examples["uncoded_task"]) == sorted(
            set(BP4D_PLUS_ACTIVITIES) - set(CODED_TASKS))
        tested += sorted(subjects["test"])
    assert sorted(tested) == sorted(BP4D_PLUS_SUBJECTS)  # every subject tested exactly once


def test_bp4d_plus_rejects_pretrain_size_on_folds(bp4d_plus):
    _, build = bp4d_plus
    with pytest.raises(ValueError, match="pretrain_size applies to the pretrain config only"):
        build("fold1", pretrain_size=10)


# ------------------------------------------------------------------------------------------------ intensity

INTENSITY_AUS = (6, 10, 12, 14, 17)


def write_intensity(root: Path, intensity_dir: str, frames: dict, seed: int = 1) -> dict:
    """Intensity CSVs as the releases ship them: one per AU, subject and task, `AU06/F001_T1_AU06.csv`, rows
    `frame,intensity` without a header, codes 0-5 and 9 (not coded); the last frame of each file has no row.
    Returns `{(subject, task, number): {au: code}}`."""
    rng = np.random.default_rng(seed)
    expected = {}
    for (subject, task), numbers in sorted(frames.items()):
        for au in INTENSITY_AUS:
            codes = {n: int(rng.choice([0, 1, 2, 3, 4, 5, 9])) for n in numbers[:-1]}
            path = root / intensity_dir / f"AU{au:02d}" / f"{subject}_{task}_AU{au:02d}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{n},{c}\n" for n, c in codes.items()))
            for n, c in codes.items():
                expected.setdefault((subject, task, n), {})[au] = c
    return expected


def expected_intensity(codes: dict[int, int] | None, au_ids: list[str]) -> list[float]:
    codes = codes or {}
    return [float(codes[int(a[2:])]) if codes.get(int(a[2:]), 9) != 9 else -1.0 for a in au_ids]


@pytest.mark.parametrize("builder, frames_dir, label_dir, intensity_dir, config", [
    ("bp4d", "BP4D-training", "AUCoding/AUCoding", "AU Intensity Codes3.0", "fold1"),
    ("bp4d_plus", "2D+3D", "AUCoding/AU_OCC", "AUCoding/AU_INT", "pretrain"),
])
def test_au_intensity_reads_the_intensity_codes_of_five_aus(tmp_path, builder, frames_dir, label_dir, intensity_dir,
                                                             config):
    subjects = ("F001", "M011", "F007") if builder == "bp4d" else ("F001", "M002")
    frames = {(s, "T1"): [3, 4, 5, 6] for s in subjects}
    occurrence = write_release(tmp_path, frames_dir, label_dir, frames)
    intensity = write_intensity(tmp_path, intensity_dir, frames)
    splits = build_dataset(builder, config, data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"),
                           au_intensity=True)
    seen = 0
    for split in splits.values():
        assert "au_intensity" in split.column_names
        au_ids = au_ids_of(split)
        for row in rows(split):
            key = (row["subject"], row["activity"], row["frame"])
            assert row["au"] == expected_au(occurrence[key], au_ids)
            assert row["au_intensity"] == expected_intensity(intensity.get(key), au_ids)
            seen += 1
    assert seen == sum(len(n) for n in frames.values())
    values = {v for split in splits.values() for row in split["au_intensity"] for v in row}
    assert -1.0 in values and {0.0, 5.0} <= values  # AUs without codes, 9s and rowless frames are unknown
    # Without the option the column is absent, as before.
    plain = build_dataset(builder, config, data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache-plain"))
    assert all("au_intensity" not in split.column_names for split in plain.values())


def test_au_intensity_without_the_intensity_folder_is_named(tmp_path):
    write_release(tmp_path, "BP4D-training", "AUCoding/AUCoding", {("F001", "T1"): [1, 2]})
    with pytest.raises(MissingDataError, match="au_intensity=True needs the intensity codes.*AU Intensity Codes3.0"):
        build_dataset("bp4d", "pretrain", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), au_intensity=True)


def test_garbage_intensity_rows_raise_naming_the_line(tmp_path):
    frames = {("F001", "T1"): [1, 2]}
    write_release(tmp_path, "BP4D-training", "AUCoding/AUCoding", frames)
    write_intensity(tmp_path, "AU Intensity Codes3.0", frames)
    path = tmp_path / "AU Intensity Codes3.0" / "AU12" / "F001_T1_AU12.csv"
    path.write_text("1,2\n2,7\n")
    with pytest.raises(BadDataError, match=r"F001_T1_AU12.csv:2.*intensity 0-5 or 9"):
        build_dataset("bp4d", "pretrain", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), au_intensity=True)
