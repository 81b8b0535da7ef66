"""The shared core of dataset_builders: folds, data reports, the schema and the registry."""

import pytest

import dataset_builders
from dataset_builders import build_dataset
from dataset_builders.data_report import BadDataError, DataReport, MissingDataError, bad_data, require_paths
from dataset_builders.folds import BP4D_PARTS, DISFA_PARTS, k_fold_split, three_fold_split
from dataset_builders.schema import BP4D_AU_IDS, au_ids_of, describe, facial_behavior_features


def test_standard_three_folds_are_subject_exclusive_and_cover_everyone():
    for parts, total in ((BP4D_PARTS, 41), (DISFA_PARTS, 27)):
        assert len({s for part in parts for s in part}) == total
        tested = set()
        for fold in (1, 2, 3):
            split = three_fold_split(parts, fold)
            assert not set(split["train"]) & set(split["test"])
            assert len(split["train"]) + len(split["test"]) == total
            tested |= set(split["test"])
        assert len(tested) == total
    assert three_fold_split(BP4D_PARTS, 1)["test"] == BP4D_PARTS[2]  # fold1 tests part3
    assert three_fold_split(DISFA_PARTS, 3)["test"] == DISFA_PARTS[0]  # fold3 tests part1
    with pytest.raises(ValueError, match="fold must be 1, 2 or 3"):
        three_fold_split(BP4D_PARTS, 4)


def test_k_fold_split_is_balanced_and_deterministic():
    subjects = [f"F{i:03d}" for i in range(1, 83)] + [f"M{i:03d}" for i in range(1, 59)]
    tests = [set(k_fold_split(list(reversed(subjects)), k, 4)["test"]) for k in range(1, 5)]
    assert sorted(len(t) for t in tests) == [35, 35, 35, 35]
    assert set().union(*tests) == set(subjects) and sum(len(t) for t in tests) == 140
    assert k_fold_split(subjects, 2, 4) == k_fold_split(list(reversed(subjects)), 2, 4)


def test_data_report_counts_merges_and_round_trips(tmp_path):
    report = DataReport()
    for index in range(25):
        report.add("unreadable_image", f"/data/{index}.jpg", "truncated")
    other = DataReport()
    other.add("unreadable_image", "/data/x.jpg")
    other.add("label_without_image", "/data/y.jpg")
    report.merge(other)
    assert report.counts == {"unreadable_image": 26, "label_without_image": 1}
    assert len(report.examples["unreadable_image"]) == 20
    report.write(tmp_path / "r.json")
    assert DataReport.read(tmp_path / "r.json") == report
    assert "unreadable_image: 26" in report.summary() and not DataReport()


def test_bad_data_raises_or_counts():
    report = DataReport()
    with pytest.raises(BadDataError, match="labels.csv:3"):
        bad_data(report, "raise", "unparseable_label_row", "labels.csv:3", "expected 2 fields")
    bad_data(report, "skip", "unparseable_label_row", "labels.csv:3", "expected 2 fields")
    assert report.counts == {"unparseable_label_row": 1}
    with pytest.raises(ValueError, match="on_bad_data must be one of"):
        bad_data(report, "ignore", "x", "y", "z")


def test_require_paths_names_the_missing_path(tmp_path):
    (tmp_path / "a").mkdir()
    assert require_paths(tmp_path, ["a"], "demo", "LAYOUT") == tmp_path
    with pytest.raises(MissingDataError, match=r"(?s)demo: missing .*/b\n.*LAYOUT"):
        require_paths(tmp_path, ["a", "b"], "demo", "LAYOUT")
    with pytest.raises(MissingDataError, match="needs data_dir"):
        require_paths(None, [], "demo", "LAYOUT")


def test_schema_columns_and_au_ids():
    features = facial_behavior_features(activity=True, au=True, au_intensity=True, expressions=("a", "b"))
    assert list(features) == ["image", "subject", "activity", "activity_description", "au", "au_intensity",
                              "expression"]
    assert features["au"].feature.dtype == "int8"

    class Info:
        description = describe("BP4D frames.", BP4D_AU_IDS)
        dataset_name = builder_name = "bp4d"

    assert au_ids_of(Info) == list(BP4D_AU_IDS)
    Info.description = "no AUs"
    with pytest.raises(ValueError, match="states no au_ids"):
        au_ids_of(Info)


def test_registry_names_and_unknown_name():
    assert set(dataset_builders.BUILDERS) == {"bp4d", "bp4d_plus", "disfa", "raf_db", "affectnet", "ferplus",
                                              "synthfaces"}
    with pytest.raises(ValueError, match="Unknown data set 'bp5d'"):
        build_dataset("bp5d")
