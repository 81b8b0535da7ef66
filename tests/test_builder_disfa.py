"""DISFA builder and video decoding, on a fixture in DISFA's released layout (`disfa_fixture.py`)."""

import shutil

import pytest
from disfa_fixture import (
    SUBJECTS, break_frame, expected_intensities, frame_identity, frame_pixels, video_path, write_disfa, write_video,
)
from PIL import Image

from dataset_builders import BadDataError, DataReport, MissingDataError, au_ids_of, build_dataset, get_builder
from dataset_builders.video import UnreadableVideoError, VideoFrames, read_video_frames

#: The 24 subjects of the standard parts the fixture leaves out (it has one subject of each part).
ABSENT_SUBJECTS = 24


def build(data, tmp_path, cache="cache", config="fold1", **kwargs):
    return build_dataset("disfa", config, data_dir=str(data), cache_dir=str(tmp_path / cache), return_report=True,
                         **kwargs)


def rows(split) -> list[tuple]:
    """`(subject, frame, camera, au, au_intensity)` of every row, the frame and camera read from the image."""
    table = []
    for row in split:
        frame, camera = frame_identity(row["image"])
        table.append((row["subject"], frame, camera, tuple(row["au"]), tuple(row["au_intensity"])))
    return sorted(table)


def frames_by_subject(table) -> dict[str, list[int]]:
    found = {}
    for subject, frame, *_ in table:
        found.setdefault(subject, []).append(frame)
    return found


def counts_without_absent_subjects(report) -> dict[str, int]:
    counts = dict(report.counts)
    assert counts.pop("missing_subject_labels") == ABSENT_SUBJECTS
    return counts


# ---------------------------------------------------------------- video decoding


def test_video_frames_streams_wanted_frames_in_order(tmp_path):
    frames = [frame_pixels("SN001", "left", n, (32, 24)) for n in range(1, 9)]
    path = write_video(tmp_path / "v.avi", frames)
    with VideoFrames(path) as video:
        read = [(index, frame_identity(Image.fromarray(rgb))) for index, rgb in video.read(wanted={6, 1, 4, 20})]
        assert (video.declared_frames, video.length, video.broken_at) == (8, 8, None)
    assert read == [(1, (2, "left")), (4, (5, "left")), (6, (7, "left"))]
    assert [index for index, _ in read_video_frames(path)] == list(range(8))


def test_video_frames_stops_trusting_a_video_after_a_decoding_error(tmp_path):
    frames = [frame_pixels("SN001", "left", n, (32, 24)) for n in range(1, 9)]
    path = write_video(tmp_path / "v.avi", frames)
    break_frame(path, 4)
    with VideoFrames(path) as video:
        read = [(index, None if rgb is None else frame_identity(Image.fromarray(rgb))[0])
                for index, rgb in video.read()]
        assert video.broken_at == 4 and video.length == 8
    assert read == [(0, 1), (1, 2), (2, 3), (3, 4), (4, None), (5, None), (6, None), (7, None)]


def test_video_frames_rejects_a_file_that_is_no_video(tmp_path):
    (tmp_path / "v.avi").write_bytes(b"not a video" * 100)
    with pytest.raises(UnreadableVideoError, match="v.avi"):
        VideoFrames(tmp_path / "v.avi")


# ---------------------------------------------------------------- the builder


def test_builds_a_fold_with_labels_aligned_to_their_frames(tmp_path):
    data = write_disfa(tmp_path / "disfa")
    splits, report = build(data, tmp_path)
    assert {name: len(split) for name, split in splits.items()} == {"train": 16, "test": 8}
    assert au_ids_of(splits["train"]) == ["AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26"]
    assert counts_without_absent_subjects(report) == {}
    assert splits["test"][0]["image"].size == (32, 24)
    pairs = set()
    for split in splits.values():
        table = rows(split)
        assert all(frames == list(range(1, 9)) for frames in frames_by_subject(table).values())
        for subject, frame, camera, au, au_intensity in table:
            expected = expected_intensities(subject, frame)
            assert camera == "left"
            assert au_intensity == tuple(float(value) for value in expected), (subject, frame)
            assert au == tuple(int(value >= 2) for value in expected), (subject, frame)
            pairs.update(zip(au_intensity, au))
    assert {(0.0, 0), (1.0, 0), (2.0, 1), (5.0, 1)} <= pairs


def test_folds_are_subject_exclusive_standard_parts(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), num_frames=3)
    # fold1 tests part3 (SN003), fold2 part2 (SN013), fold3 part1 (SN001).
    for fold, test_subject in ((1, "SN003"), (2, "SN013"), (3, "SN001")):
        splits, _ = build(data, tmp_path, cache=f"cache{fold}", config=f"fold{fold}")
        assert set(splits["test"]["subject"]) == {test_subject}
        assert set(splits["train"]["subject"]) == set(SUBJECTS) - {test_subject}


def test_camera_option(tmp_path):
    data = write_disfa(tmp_path / "disfa", num_frames=4)
    left = rows(build(data, tmp_path, cache="left")[0]["train"])
    right = rows(build(data, tmp_path, cache="right", camera="right")[0]["train"])
    both = rows(build(data, tmp_path, cache="both", camera="both")[0]["train"])
    assert {row[2] for row in left} == {"left"} and {row[2] for row in right} == {"right"}
    assert [row[:2] + row[3:] for row in left] == [row[:2] + row[3:] for row in right]
    assert both == sorted(left + right)
    # No column holds the camera (the schema has none): the example key names it.
    builder = get_builder("disfa", "fold1", data_dir=str(data), cache_dir=str(tmp_path / "keys"), camera="both")
    shards = builder._scan(data, DataReport())["test"]
    keys = [key for shard in shards for key, _ in builder._examples(shard, DataReport())]
    assert sorted(keys) == [f"SN003/{camera}/{frame:05d}" for camera in ("left", "right") for frame in range(1, 5)]
    with pytest.raises(ValueError, match="camera must be one of"):
        build(data, tmp_path, cache="bad", camera="middle")


@pytest.mark.parametrize("frames_dir", [None, "Frames"])
def test_frame_stride_keeps_every_nth_frame(tmp_path, frames_dir):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), write_frames=True)
    splits, report = build(data, tmp_path, frame_stride=3, frames_dir=frames_dir)
    table = rows(splits["train"])
    assert frames_by_subject(table) == {"SN001": [1, 4, 7], "SN013": [1, 4, 7]}
    assert all(row[4] == tuple(float(v) for v in expected_intensities(row[0], row[1])) for row in table)
    assert counts_without_absent_subjects(report) == {}


def test_names_match_whatever_their_case(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), num_frames=3)
    video_path(data, "SN013").rename(data / "Videos_LeftCamera" / "leftvideosn013_COMP.AVI")
    (data / "Videos_LeftCamera").rename(data / "videos_leftcamera")
    (data / "ActionUnit_Labels" / "SN003").rename(data / "ActionUnit_Labels" / "sn003")
    splits, report = build(data, tmp_path)
    assert counts_without_absent_subjects(report) == {}
    assert sorted(set(splits["train"]["subject"])) == ["SN001", "SN013"] and set(splits["test"]["subject"]) == {"SN003"}


def test_pre_extracted_frames_give_the_same_labels(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), write_frames=True)
    from_video = build(data, tmp_path, cache="video")[0]
    shutil.rmtree(data / "Videos_LeftCamera")  # not needed when reading frames
    from_frames, report = build(data, tmp_path, cache="frames", frames_dir="Frames")
    assert counts_without_absent_subjects(report) == {}
    for split in ("train", "test"):
        assert len(from_frames[split]) == len(from_video[split]) > 0
        assert rows(from_frames[split]) == rows(from_video[split])
    with pytest.raises(MissingDataError, match=r"missing .*Videos_LeftCamera"):
        build(data, tmp_path, cache="video2")


def test_missing_folders_name_the_path_and_the_layout(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), num_frames=2)
    with pytest.raises(MissingDataError, match=r"missing .*Videos_RightCamera(.|\n)*RightVideoSN001_Comp.avi"):
        build(data, tmp_path, cache="right", camera="right")
    with pytest.raises(MissingDataError, match=r"missing .*Frames"):
        build(data, tmp_path, cache="frames", frames_dir="Frames")
    with pytest.raises(MissingDataError, match="needs data_dir"):
        build_dataset("disfa", "fold1", cache_dir=str(tmp_path / "none"))
    shutil.rmtree(data / "ActionUnit_Labels" / "SN003")
    with pytest.raises(MissingDataError, match=r"none of the test subjects \(SN003"):
        build(data, tmp_path, cache="no_test_subject")


def test_bad_label_rows_raise_or_are_skipped_and_counted(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), replace_rows={("SN003", 2): {5: "5;3"}},
                       extra_rows={("SN001", 4): ["9,7"], ("SN013", 1): ["3,1"]})
    with pytest.raises(BadDataError, match=r"unparseable_label_row: .*SN001_au4.txt:9"):
        build(data, tmp_path, cache="raise")
    splits, report = build(data, tmp_path, cache="skip", on_bad_data="skip")
    assert counts_without_absent_subjects(report) == {
        "unparseable_label_row": 2, "missing_au_row": 1, "duplicate_label_row": 1,
    }
    assert any("SN003_au2.txt:5" in example for example in report.examples["unparseable_label_row"])
    assert {name: len(split) for name, split in splits.items()} == {"train": 16, "test": 8}
    test = {row[1]: row for row in rows(splits["test"])}
    assert test[5][3][1] == -1 and test[5][4][1] == -1.0  # AU2 of the bad row is unknown
    assert test[5][4][0] == expected_intensities("SN003", 5)[0] and test[4][4][1] != -1.0
    train = {(row[0], row[1]): row for row in rows(splits["train"])}
    assert train["SN013", 3][4][0] == expected_intensities("SN013", 3)[0]  # the first of the duplicate rows


def test_frame_and_label_mismatches_are_counted(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), video_frames={"SN001": 10}, label_frames={"SN013": 10},
                       drop_rows={("SN003", 26): {3}}, missing_label_files={("SN003", 9)})
    splits, report = build(data, tmp_path)
    assert counts_without_absent_subjects(report) == {
        "frame_without_label": 2, "label_without_frame": 2, "missing_au_row": 1, "missing_label_file": 1,
    }
    assert any("LeftVideoSN001_comp.avi:frame9" in e for e in report.examples["frame_without_label"])
    assert any("LeftVideoSN013_comp.avi:frame10" in e for e in report.examples["label_without_frame"])
    assert frames_by_subject(rows(splits["train"])) == {"SN001": list(range(1, 9)), "SN013": list(range(1, 9))}
    test = rows(splits["test"])
    assert [row[1] for row in test] == list(range(1, 9))
    au9, au26 = 4, 7
    assert all(row[3][au9] == -1 and row[4][au9] == -1.0 for row in test)
    assert [row[4][au26] for row in test] == [-1.0 if frame == 3 else float(expected_intensities("SN003", frame)[au26])
                                              for frame in range(1, 9)]


def test_pre_extracted_frame_mismatches_are_counted(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), write_videos=False, write_frames=True,
                       label_frames={"SN013": 10})
    (data / "Frames" / "left" / "SN001" / "00002.png").unlink()
    Image.new("RGB", (32, 24)).save(data / "Frames" / "left" / "SN003" / "00011.jpg")
    splits, report = build(data, tmp_path, frames_dir=str(data / "Frames"))
    assert counts_without_absent_subjects(report) == {"frame_without_label": 1, "label_without_frame": 3}
    assert frames_by_subject(rows(splits["train"])) == {"SN001": [1, 3, 4, 5, 6, 7, 8], "SN013": list(range(1, 9))}
    # frames extracted from 0 would all sit one frame off their labels: refused, naming the file
    Image.new("RGB", (32, 24)).save(data / "Frames" / "left" / "SN001" / "00000.png")
    with pytest.raises(ValueError, match=r"00000.png is numbered 0"):
        build(data, tmp_path, cache="zero", frames_dir="Frames", on_bad_data="skip")


def test_unreadable_video_raises_or_is_skipped(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",), num_frames=4)
    video_path(data, "SN013").write_bytes(b"\x00" * 4096)
    with pytest.raises(BadDataError, match=r"unreadable_video: .*LeftVideoSN013_comp.avi"):
        build(data, tmp_path, cache="raise")
    splits, report = build(data, tmp_path, cache="skip", on_bad_data="skip")
    assert counts_without_absent_subjects(report) == {"unreadable_video": 1}
    assert set(splits["train"]["subject"]) == {"SN001"}


def test_undecodable_frame_raises_or_is_skipped(tmp_path):
    data = write_disfa(tmp_path / "disfa", cameras=("left",))
    break_frame(video_path(data, "SN001"), 5)
    with pytest.raises(BadDataError, match=r"unreadable_frame: .*LeftVideoSN001_comp.avi:frame6"):
        build(data, tmp_path, cache="raise")
    splits, report = build(data, tmp_path, cache="skip", on_bad_data="skip")
    # Frame 6 fails; frames 7 and 8 follow it, so their positions are uncertain: all three are left out.
    assert counts_without_absent_subjects(report) == {"unreadable_frame": 3}
    table = rows(splits["train"])
    assert frames_by_subject(table)["SN001"] == [1, 2, 3, 4, 5]
    assert all(row[4] == tuple(float(v) for v in expected_intensities(row[0], row[1])) for row in table)


def test_parallel_preparation_gives_the_same_rows_and_report(tmp_path):
    data = write_disfa(tmp_path / "disfa", num_frames=4, video_frames={"SN001": 5, "SN013": 6})
    serial, serial_report = build(data, tmp_path, cache="serial", camera="both")
    parallel, parallel_report = build(data, tmp_path, cache="parallel", camera="both", num_proc=2)
    assert parallel_report.counts == serial_report.counts
    assert serial_report.counts["frame_without_label"] == 2 * (1 + 2)  # both cameras
    for split in ("train", "test"):
        assert rows(parallel[split]) == rows(serial[split])
