"""AffectNet builder on a fixture in the released layout: file lists beside the manually annotated images."""

import datasets
import numpy as np
import pytest
from PIL import Image

from dataset_builders import BadDataError, MissingDataError, build_dataset

HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
CODES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
         7: "contempt"}
EXPRESSIONS_8 = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
IMAGE_SIZE = (40, 30)  # width, height
BOX = (5, 4, 20, 16)  # face_x, face_y, face_width, face_height


def row(name, code, box=BOX):
    return f"{name},{box[0]},{box[1]},{box[2]},{box[3]},1.5;2.5;3.5;4.5,{code},0.25,-0.5"


# Every code 0-10 in training, 0-8 in validation; the name says the code.
TRAIN = [row(f"10{code}/train_{code}.jpg", code) for code in range(11)]
TEST = [row(f"20{code}/test_{code}.jpg", code) for code in range(9)]


def gradient(width=IMAGE_SIZE[0], height=IMAGE_SIZE[1]) -> np.ndarray:
    """A smooth image (JPEG keeps it nearly exact) whose pixels say where they are."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([x * 6, y * 8, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def write_affectnet(root, train=TRAIN, test=TEST, missing=(), corrupt=(), nested=False):
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    images = root / ("Manually_Annotated" if nested else "") / "Manually_Annotated_Images"
    (lists / "training.csv").write_text("\n".join([HEADER, *train]) + "\n")
    (lists / "validation.csv").write_text("\n".join([HEADER, *test]) + "\n")
    for line in [*train, *test]:
        name = line.split(",")[0]
        if name in missing or "/" not in name:
            continue
        path = images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name in corrupt:
            path.write_bytes(b"not a jpeg")
        else:
            Image.fromarray(gradient()).save(path, quality=98)
    return root


def labels_by_code(split) -> dict[int, str]:
    """The fixture's code (read off the stored image's path, `.../train_3.jpg`) -> the example's expression id."""
    names = split.features["expression"].names
    raw = split.cast_column("image", datasets.Image(decode=False))
    return {int(image["path"].rsplit("_", 1)[1].split(".")[0]): names[e]
            for image, e in zip(raw["image"], raw["expression"])}


def expressions_of(split) -> list[str]:
    names = split.features["expression"].names
    return sorted(names[e] for e in split["expression"])


def test_eight_classes_map_codes_and_exclude_non_expressions(tmp_path):
    data = write_affectnet(tmp_path / "affectnet")
    splits, report = build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   use_face_box=False, return_report=True)
    assert set(splits) == {"train", "test"}
    assert splits["train"].features["expression"].names == EXPRESSIONS_8
    # Each image path names its code: the stored path checks the mapping row by row.
    assert labels_by_code(splits["train"]) == CODES
    assert labels_by_code(splits["test"]) == CODES
    assert report.counts == {"excluded_label": 4}  # 8, 9, 10 in training; 8 in validation
    assert any("training.csv:12" in example and "no-face" in example for example in report.examples["excluded_label"])
    # Without the face box, the images are stored as released.
    assert {image.size for image in splits["train"]["image"]} == {IMAGE_SIZE}


def test_seven_classes_drop_contempt_and_count_it(tmp_path):
    data = write_affectnet(tmp_path / "affectnet")
    splits, report = build_dataset("affectnet", "7", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   return_report=True)
    assert splits["train"].features["expression"].names == EXPRESSIONS_8[:7]
    seven = {code: name for code, name in CODES.items() if name != "contempt"}
    assert labels_by_code(splits["train"]) == seven
    assert labels_by_code(splits["test"]) == seven
    assert report.counts == {"excluded_label": 4, "excluded_contempt": 2}
    assert any("107/train_7.jpg" in example for example in report.examples["excluded_contempt"])


def test_face_box_crop_is_stored_by_default(tmp_path):
    clipped = (30, 20, 20, 20)  # runs past the 40x30 image: clipped to 10x10
    data = write_affectnet(tmp_path / "affectnet", train=[row("1/a.jpg", 1), row("1/b.jpg", 2, clipped)],
                           test=[row("2/c.jpg", 3, (0, 0, 40, 30))])
    splits = build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    raw = splits["train"].cast_column("image", datasets.Image(decode=False))["image"]
    assert [image["path"] for image in raw] == ["1/a.jpg", "1/b.jpg"]  # crops keep subDirectory_filePath
    crops = dict(zip(splits["train"]["expression"], splits["train"]["image"]))
    happy, sad = crops[EXPRESSIONS_8.index("happiness")], crops[EXPRESSIONS_8.index("sadness")]
    assert happy.size == (BOX[2], BOX[3])
    assert sad.size == (10, 10)
    assert splits["test"]["image"][0].size == IMAGE_SIZE
    # The crop is the box's window of the image: the gradient (red = 6 * x, green = 8 * y) locates it.
    x, y, w, h = BOX
    pixels = np.asarray(happy.convert("RGB"), dtype=float)
    assert np.abs(pixels - gradient()[y : y + h, x : x + w]).mean() < 2
    assert pixels[..., 0].mean() / 6 - (w - 1) / 2 == pytest.approx(x, abs=0.3)
    assert pixels[..., 1].mean() / 8 - (h - 1) / 2 == pytest.approx(y, abs=0.3)


def test_images_one_level_down_as_the_archive_unpacks(tmp_path):
    data = write_affectnet(tmp_path / "affectnet", nested=True)
    splits = build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 8, "test": 8}


def test_missing_paths_are_named(tmp_path):
    data = write_affectnet(tmp_path / "affectnet")
    (data / "Manually_Annotated_file_lists" / "validation.csv").unlink()
    with pytest.raises(MissingDataError, match=r"missing .*Manually_Annotated_file_lists/validation.csv"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"))

    data = write_affectnet(tmp_path / "no_images", train=[], test=[])
    with pytest.raises(MissingDataError, match=r"missing .*no_images/Manually_Annotated_Images\n"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"))


def test_bad_rows_and_images_stop_by_default_naming_them(tmp_path):
    data = write_affectnet(tmp_path / "rows", train=[*TRAIN[:3], "101/x.jpg,5,4,20,16,1;2,happy,0,0"])
    with pytest.raises(BadDataError, match=r"unparseable_label_row: .*training.csv:5: expression must be"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache1"))

    data = write_affectnet(tmp_path / "images", corrupt=["203/test_3.jpg"])
    with pytest.raises(BadDataError, match=r"unreadable_image: .*203/test_3.jpg"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache2"))


def test_bad_rows_and_images_are_skipped_and_counted(tmp_path):
    train = [
        *TRAIN,
        "101/x.jpg,5,4,20,16,1;2,happy,0,0",  # not a code
        "101/y.jpg,5,4,20,16,1;2,1,0",  # a column short
        "101/z.jpg,5,4,wide,16,1;2,1,0,0",  # box not a number
        row("101/w.jpg", 1, (5, 4, 0, 16)),  # empty box
        row("101/v.jpg", 1, (50, 40, 10, 10)),  # box outside the image
    ]
    data = write_affectnet(tmp_path / "affectnet", train=train, missing=["102/train_2.jpg"],
                           corrupt=["203/test_3.jpg", "100/train_0.jpg"])
    splits, report = build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   on_bad_data="skip", return_report=True)
    assert expressions_of(splits["train"]) == sorted(["happiness", "surprise", "fear", "disgust", "anger", "contempt"])
    assert expressions_of(splits["test"]) == sorted(set(EXPRESSIONS_8) - {"surprise"})
    assert report.counts == {"excluded_label": 4, "unparseable_label_row": 4, "label_without_image": 1,
                             "unreadable_image": 2, "face_box_outside_image": 1}
    assert "102/train_2.jpg" in report.examples["label_without_image"][0]
    assert "training.csv:17" in report.examples["face_box_outside_image"][0]
    assert sorted(e.split(": ")[0].rsplit(":", 1)[1] for e in report.examples["unparseable_label_row"]) == [
        "13", "14", "15", "16"]


def test_unreadable_image_without_face_box_goes_through_load_image(tmp_path):
    data = write_affectnet(tmp_path / "affectnet", corrupt=["100/train_0.jpg"])
    splits, report = build_dataset("affectnet", "7", data_dir=str(data), cache_dir=str(tmp_path / "cache"),
                                   use_face_box=False, on_bad_data="skip", return_report=True)
    assert len(splits["train"]) == 6
    assert report.counts["unreadable_image"] == 1


def test_face_box_and_face_detection_are_exclusive(tmp_path):
    data = write_affectnet(tmp_path / "affectnet")
    with pytest.raises(ValueError, match="use_face_box=False"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "cache"), crop_faces=True)
