"""Hardening: a corpus of bad inputs, generated here, fed to the `facial-behavior` pipeline (with and without face
detection) and to the data set builders (RAF-DB, AffectNet, FERPlus and BP4D layouts). Each must end in a clear
error naming the file or field (`ValueError` from the pipeline, `BadDataError` / `MissingDataError` /
`EmptySplitError` from the builders), or, with `on_bad_data="skip"`, in the documented skip counted in the data
report; never another exception, never a hang (every test has a timeout, 60 s for most), never an unbounded
allocation.

Decided behaviour for huge images: files larger than `PIL.Image.MAX_IMAGE_PIXELS` (Pillow's decompression-bomb
limit, ~89 megapixels) are refused before decoding, naming the file; smaller ones are processed at full size.

Already covered elsewhere, not repeated here:
- tests/test_pipeline.py::test_unreadable_inputs_name_themselves (missing file, text named .png, dead URL, an int),
  ::test_image_modes_become_rgb (conversion rules, -5..300 integers, 4-D arrays), ::test_the_pipeline_runs_on_every_mode
  (9 common modes), ::test_datasets_inputs (a data set without an Image column).
- tests/test_builder_raf_db.py (missing label file, unparseable rows, a corrupt image, a split emptied by skipping),
  tests/test_builder_affectnet.py (missing lists and image folder, wrong column counts, non-numeric boxes, boxes
  outside the image), tests/test_builder_ferplus.py (wrong pixel counts, non-numeric and out-of-range pixels, unknown
  Usage, misaligned files, a header without the vote columns), tests/test_builder_bp4d.py (missing folders, garbage
  rows, duplicate rows, a header without the 12 AU columns, a corrupt frame).
"""

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, PROJECTION_DIM, tiny_text_config, tiny_vision_config
from PIL import Image
from transformers import pipeline

from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor
from clef_hf.image_inputs import load_rgb_image
from clef_hf.vocabulary import au_labels
from dataset_builders import BadDataError, DataReport, EmptySplitError, build_dataset, get_builder

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(60)]

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def encoded(fmt: str, pixels: np.ndarray = PIXELS, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels but that holds an 8x8 image's data: what a decompression
    bomb looks like to the opener, at no cost to write."""
    data = bytearray(encoded("PNG", np.zeros((8, 8), np.uint8)))
    chunk = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = chunk
    data[29:33] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(data)


JPEG, PNG = encoded("JPEG"), encoded("PNG")
#: Unreadable image files: name -> content. Each name is what the error must mention.
BAD_FILES = {
    "truncated.jpg": JPEG[: len(JPEG) // 2],
    "truncated.png": PNG[: len(PNG) // 2],
    "garbage-after-header.jpg": JPEG[:20] + RNG.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "header-only.png": PNG[:33],
    "zero-bytes.jpg": b"",
    "text.jpg": b"not an image, just text named like one\n",
    "html.png": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
    "bomb.png": png_claiming(20000, 20000),  # beyond twice Pillow's limit: Pillow raises DecompressionBombError
    "over-limit.png": png_claiming(12000, 12000),  # between 1x and 2x the limit: Pillow only warns
}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-images")
    for name, content in BAD_FILES.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def au_pipe(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("au-model")
    config = CLEFConfig(vision_config=tiny_vision_config(), text_config=tiny_text_config(tokenizer),
                        projection_dim=PROJECTION_DIM, task="au", **au_labels([1, 2, 4]))
    torch.manual_seed(0)
    model = CLEFModel(config)
    model.update_label_embeddings(tokenizer)
    model.save_pretrained(directory)
    CLEFProcessor.from_tokenizer(tokenizer, image_size=IMAGE_SIZE).save_pretrained(directory)
    return pipeline("facial-behavior", model=str(directory))


DETECT = pytest.mark.parametrize("detect_faces", [True, False], ids=["detect", "no-detect"])


# ---------------------------------------------------------------- pipeline: unreadable files


@DETECT
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_raise_a_value_error_naming_them(au_pipe, bad_dir, name, detect_faces):
    with pytest.raises(ValueError, match=re.escape(name)):
        au_pipe(str(bad_dir / name), detect_faces=detect_faces)
    # the same bytes as a `datasets` Image value, and among good inputs
    with pytest.raises(ValueError, match=re.escape(name)):
        au_pipe([PIXELS, {"bytes": BAD_FILES[name], "path": name}], detect_faces=detect_faces)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_beyond_the_decompression_bomb_limit_are_refused_before_decoding(bad_dir, monkeypatch):
    with pytest.raises(ValueError, match=r"over-limit.png.*12000x12000 = 144000000 pixels exceeds "
                                         r"PIL.Image.MAX_IMAGE_PIXELS"):
        load_rgb_image(bad_dir / "over-limit.png")
    with pytest.raises(ValueError, match=r"bomb.png.*exceeds limit"):
        load_rgb_image(bad_dir / "bomb.png")
    # Raising the limit is honoured: the file is then decoded, and found to hold too little data.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ValueError, match=r"over-limit.png.*truncated"):
        load_rgb_image(bad_dir / "over-limit.png")


def test_a_folder_named_like_an_image_is_named(au_pipe, tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ValueError, match=r"folder.jpg': no such file"):
        au_pipe(str(tmp_path / "folder.jpg"))


@pytest.mark.filterwarnings("ignore")  # Pillow warns about the corrupt metadata it skips
@pytest.mark.parametrize("fmt", ["JPEG", "JPEG-EXIF", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA"])
def test_randomly_corrupted_files_decode_or_raise_a_value_error_naming_them(fmt):
    """Seeded byte flips and truncations of a valid file: whatever Pillow's decoder raises (OSError, SyntaxError,
    struct.error, ValueError, DecompressionBombError from a corrupted size...) becomes a ValueError with the name.
    Before, e.g. a PPM header with a bad number escaped as a ValueError that named no file. JPEG-EXIF flips bytes in
    the EXIF block (orientation 6), which is applied while reading."""
    rng = np.random.default_rng(sum(map(ord, fmt)))
    if fmt == "JPEG-EXIF":
        exif = Image.Exif()
        exif[0x0112], exif[0x010F] = 6, "camera maker " * 4  # orientation: rotate; a string tag
        original, span = encoded("JPEG", exif=exif), 200  # flips within the header and EXIF block
    else:
        original = encoded(fmt)
        span = len(original)
    outcomes = {"decoded": 0, "refused": 0}
    for index in range(60):
        data = bytearray(original)
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(0, span))] = int(rng.integers(0, 256))
        if index % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        name = f"fuzz-{fmt}-{index}"
        try:
            image = load_rgb_image({"bytes": bytes(data), "path": name})
        except ValueError as error:
            assert name in str(error), str(error)
            outcomes["refused"] += 1
        else:
            assert image.mode == "RGB" and min(image.size) >= 1
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 0, outcomes


# ---------------------------------------------------------------- pipeline: valid but extreme images


@DETECT
@pytest.mark.parametrize("height, width", [(1, 1), (1, 3000), (3000, 1), (2, 2), (23, 5000)])
def test_tiny_and_thin_images_are_scored_or_have_no_face(au_pipe, height, width, detect_faces):
    """1x3000 with detection used to crash in OpenCV's resize (`!dsize.empty()`): the strip shrank to 0 rows."""
    faces = au_pipe(np.full((height, width, 3), 120, np.uint8), detect_faces=detect_faces)
    if detect_faces:
        assert faces == []
    else:
        assert [face["box"] for face in faces] == [{"xmin": 0, "ymin": 0, "xmax": width, "ymax": height}]
        assert len(faces[0]["predictions"]) == 3


@pytest.mark.timeout(120)
def test_a_large_photo_within_the_limit_is_processed_at_full_size(au_pipe, tmp_path):
    """6000 x 8000 (48 megapixels, a high-end camera): ~1 GB peak, a few seconds on 2 CPU cores."""
    path = tmp_path / "large.jpg"
    Image.new("L", (6000, 8000), 128).save(path, quality=50)
    assert au_pipe(str(path)) == []
    assert au_pipe(str(path), detect_faces=False)[0]["box"] == {"xmin": 0, "ymin": 0, "xmax": 6000, "ymax": 8000}


def every_pillow_mode() -> list[Image.Image]:
    base = Image.fromarray(PIXELS)
    images = []
    for mode in [*Image.MODES, "I;16", "I;16L", "I;16B", "I;16N", "BGR;15", "BGR;16", "BGR;24"]:
        try:
            image = Image.new(mode, base.size)
        except (ValueError, KeyError):  # a mode this Pillow cannot create (the BGR;* modes are gone in Pillow 12)
            continue
        try:
            image = base.convert(mode)
        except ValueError:
            pass  # no conversion from RGB: keep the blank image of that mode
        images.append(image)
    return images


@DETECT
def test_every_pillow_mode_is_read(au_pipe, detect_faces):
    """Including La (premultiplied gray + alpha), which Pillow cannot convert to RGB or RGBA directly and which used
    to raise `conversion from La to L not supported` without naming the input."""
    images = every_pillow_mode()
    assert {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "I", "F",
            "I;16"} <= {image.mode for image in images}
    for image in images:
        assert load_rgb_image(image).mode == "RGB", image.mode
        faces = au_pipe(image, detect_faces=detect_faces)
        assert isinstance(faces, list) and len(faces) == (len(faces) if detect_faces else 1), image.mode
        assert all(len(face["predictions"]) == 3 for face in faces), image.mode


# ---------------------------------------------------------------- pipeline: arrays and tensors

BAD_ARRAYS = {
    "nan": (np.full((8, 8), np.nan), r"ndarray of shape \(8, 8\) and dtype float64: it holds NaN"),
    "some-nan": (np.where(np.eye(8) > 0, np.nan, 0.5), r"it holds NaN"),
    "inf": (np.full((8, 8, 3), np.inf, np.float32), r"dtype float32: it holds infinite"),
    "complex": (np.zeros((8, 8), complex), r"pixel dtype complex128 is not numeric"),
    "object": (np.array([[1, "a"], [None, 2.0]], dtype=object), r"pixel dtype object is not numeric"),
    "strings": (np.array([["a", "b"]]), r"pixel dtype <U1 is not numeric"),
    "datetime": (np.zeros((4, 4), "datetime64[s]"), r"pixel dtype datetime64\[s\] is not numeric"),
    "int64-out-of-range": (np.full((8, 8), 2**40, np.int64), r"dtype int64: integer pixel values from 1099511627776"),
    "uint64-huge": (np.full((8, 8), 2**63, np.uint64), r"dtype uint64: integer pixel values from 9223372036854775808"),
    "negative-int8": (np.full((8, 8), -3, np.int8), r"dtype int8: integer pixel values from -3 to -3"),
    "scalar": (np.array(7), r"shape \(\) .*expected an array of shape"),
    "1-d": (np.zeros(10), r"shape \(10,\) .*expected an array of shape"),
    "4-d": (np.zeros((2, 8, 8, 3), np.uint8), r"shape \(2, 8, 8, 3\) .*expected an array of shape"),
    "5-channels": (np.zeros((8, 9, 5), np.uint8), r"shape \(8, 9, 5\) .*expected an array of shape"),
    "empty": (np.zeros((0, 4, 3), np.uint8), r"shape \(0, 4, 3\) .*the image is empty"),
    "torch-complex": (torch.zeros(8, 8, dtype=torch.complex64), r"dtype complex64 is not numeric"),
    "torch-nan": (torch.full((3, 8, 8), float("nan")), r"it holds NaN"),
    "a-list": ([[0, 1], [2, 3]], r"Cannot read an image from a list"),
    "none": (None, r"Cannot read an image from a NoneType"),
    "bytes": (JPEG, r"Cannot read an image from a bytes"),
    "dict-without-image": ({"bytes": None, "path": None}, r"neither bytes nor a path"),
}


@DETECT
@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_bad_arrays_raise_a_value_error_naming_the_dtype_or_shape(au_pipe, name, detect_faces):
    value, message = BAD_ARRAYS[name]
    with pytest.raises(ValueError, match=message):
        au_pipe(value, detect_faces=detect_faces)


ODD_BUT_VALID_ARRAYS = {
    "bool": np.eye(16, dtype=bool),
    "float16": np.full((16, 16, 3), 0.5, np.float16),
    "longdouble": np.full((16, 16), 200, np.longdouble),
    "big-endian-uint16": np.full((16, 16), 40000, ">u2"),
    "int64-in-range": np.full((16, 16, 3), 255, np.int64),
    "fortran-order": np.asfortranarray(PIXELS),
    "non-contiguous": PIXELS[::2, ::-1],
    "read-only": np.frombuffer(PIXELS.tobytes(), np.uint8).reshape(PIXELS.shape),
    "torch-bfloat16": torch.rand(3, 16, 16).to(torch.bfloat16),  # numpy has no bfloat16: this used to be a TypeError
    "torch-requires-grad": torch.rand(3, 16, 16, requires_grad=True),
    "torch-uint8-channels-last": torch.from_numpy(PIXELS),
}


@pytest.mark.parametrize("name", list(ODD_BUT_VALID_ARRAYS))
def test_odd_but_valid_arrays_are_read(au_pipe, name):
    value = ODD_BUT_VALID_ARRAYS[name]
    assert load_rgb_image(value).mode == "RGB"
    assert len(au_pipe(value, detect_faces=False)) == 1


# ---------------------------------------------------------------- builders: bad image files


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_builders_load_image_names_every_bad_file_or_skips_it(tmp_path, bad_dir):
    """`load_image`, which every builder reads frames through: each corpus file raises a BadDataError naming it (the
    bomb used to escape as a bare DecompressionBombError, which `build_dataset` reported as datasets' generic
    "An error occurred while generating the dataset"), or is skipped and counted."""
    raising = get_builder("raf_db", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c1"))
    skipping = get_builder("raf_db", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c2"), on_bad_data="skip")
    report = DataReport()
    for name in BAD_FILES:
        with pytest.raises(BadDataError, match=rf"unreadable_image: .*{re.escape(name)}: "):
            raising.load_image(bad_dir / name, DataReport())
        assert skipping.load_image(bad_dir / name, report) is None
    assert report.counts == {"unreadable_image": len(BAD_FILES)}


def write_raf_db(root: Path, images: dict[str, bytes], label_lines: list[bytes]) -> Path:
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_bytes(b"\n".join(label_lines) + b"\n")
    for name, content in images.items():
        (root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")).write_bytes(content)
    return root


def raf_db_with_bad_images(root: Path) -> tuple[Path, list[str]]:
    """Two good images per split, and every corpus file as a further training image."""
    images = {"train_00001.jpg": JPEG, "train_00002.jpg": PNG, "test_0001.jpg": JPEG, "test_0002.jpg": JPEG}
    bad = {f"train_{100 + i:05d}.jpg": content for i, content in enumerate(BAD_FILES.values())}
    lines = [f"{name} {1 + i % 7}".encode() for i, name in enumerate([*images, *bad])]
    return write_raf_db(root, {**images, **bad}, lines), [n.replace(".jpg", "_aligned.jpg") for n in bad]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_raf_db_with_bad_images_stops_naming_one_or_skips_and_counts_them(tmp_path):
    data, bad = raf_db_with_bad_images(tmp_path / "raf")
    with pytest.raises(BadDataError, match=r"unreadable_image: .*train_00100_aligned.jpg"):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "c2"), on_bad_data="skip",
                                   return_report=True)
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 2, "test": 2}
    assert report.counts == {"unreadable_image": len(bad)}
    assert sorted(Path(e.split(": ")[0]).name for e in report.examples["unreadable_image"]) == sorted(bad)


@pytest.mark.parametrize("bad_line, detail", [
    (b"train_00003.jpg \xff\xfe4", "got 'train_00003.jpg \ufffd\ufffd4'"),  # not UTF-8: decoded with U+FFFD
    (b"\x00\x00\x00\x00", "got '\\x00\\x00\\x00\\x00'"),  # NUL bytes
    (b"train_00003.jpg 5 extra", "got 'train_00003.jpg 5 extra'"),
    (b"train_00003.jpg 0", "got 'train_00003.jpg 0'"),  # codes are 1-7
    (bytes(range(32, 256)), "expected `train_00001.jpg <1-7>`"),  # binary garbage (no line breaks)
], ids=["not-utf8", "nul", "extra-field", "bad-code", "binary"])
def test_raf_db_malformed_label_lines_are_named_or_skipped(tmp_path, bad_line, detail):
    """A line that is not UTF-8 used to stop the scan with a UnicodeDecodeError that named no file."""
    images = {"train_00001.jpg": JPEG, "test_0001.jpg": JPEG}
    data = write_raf_db(tmp_path / "raf", images, [b"train_00001.jpg 5", bad_line, b"test_0001.jpg 1"])
    where = r"unparseable_label_row: .*list_patition_label.txt:2: .*"
    with pytest.raises(BadDataError, match=where + re.escape(detail)):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "c2"), on_bad_data="skip",
                                   return_report=True)
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 1, "test": 1}
    assert report.counts == {"unparseable_label_row": 1}


def test_raf_db_empty_or_unreadable_label_file(tmp_path):
    data = write_raf_db(tmp_path / "empty", {"train_00001.jpg": JPEG}, [])
    (data / "EmoLabel" / "list_patition_label.txt").write_bytes(b"")
    with pytest.raises(EmptySplitError, match=r"(?s)hold no examples.*image_without_label: 1"):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "c1"))
    data = write_raf_db(tmp_path / "folder", {}, [])
    label_file = data / "EmoLabel" / "list_patition_label.txt"
    label_file.unlink()
    label_file.mkdir()  # a folder where the label file should be
    with pytest.raises(OSError, match=re.escape(str(label_file))):
        build_dataset("raf_db", data_dir=str(data), cache_dir=str(tmp_path / "c2"))


# ---------------------------------------------------------------- builders: AffectNet

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,"
                    "arousal")


def affectnet_row(name: str, code: int) -> bytes:
    return f"{name},2,2,20,16,1.5;2.5,{code},0.2,-0.4".encode()


def write_affectnet(root: Path, train: list[bytes], test: list[bytes], images: dict[str, bytes]) -> Path:
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    (lists / "training.csv").write_bytes(b"\n".join([AFFECTNET_HEADER.encode(), *train]) + b"\n")
    (lists / "validation.csv").write_bytes(b"\n".join([AFFECTNET_HEADER.encode(), *test]) + b"\n")
    for name, content in images.items():
        path = root / "Manually_Annotated_Images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("use_face_box", [True, False], ids=["face-box-crop", "whole-image"])
def test_affectnet_bad_images_and_rows_are_named_or_skipped(tmp_path, use_face_box):
    good = {"1/good.jpg": JPEG, "2/good.png": PNG}
    bad = {f"9/{name}": content for name, content in BAD_FILES.items()}
    train = [affectnet_row(name, 1) for name in [*good, *bad]]
    train += [b"\xff\xfe\x00garbage,1,2,3", b"\x00" * 40, b'"1/good.jpg, quoted",2,2,20,16,1;2,1,0,0',
              b"1/good.jpg,2,2,nan,16,1;2,1,0,0", b"1/good.jpg,2,2,inf,16,1;2,1,0,0"]
    data = write_affectnet(tmp_path / "affectnet", train, [affectnet_row("1/good.jpg", 2)], {**good, **bad})
    options = {"use_face_box": use_face_box}
    with pytest.raises(BadDataError, match=r"unparseable_label_row: .*training.csv:\d+: expected 9 columns, got 4"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "c1"), **options)
    # the bomb alone used to escape as a bare DecompressionBombError inside datasets' generic error
    bomb = write_affectnet(tmp_path / "bomb", [affectnet_row("9/bomb.png", 1)], [affectnet_row("1/good.jpg", 2)],
                           {"1/good.jpg": JPEG, "9/bomb.png": BAD_FILES["bomb.png"]})
    with pytest.raises(BadDataError, match=r"unreadable_image: .*9/bomb.png: DecompressionBombError"):
        build_dataset("affectnet", data_dir=str(bomb), cache_dir=str(tmp_path / "c3"), **options)
    splits, report = build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True, **options)
    assert len(splits["train"]) == 2 and len(splits["test"]) == 1
    assert report.counts == {"unreadable_image": len(bad), "unparseable_label_row": 5}
    assert all("training.csv:" in example for example in report.examples["unparseable_label_row"])


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 binary", AFFECTNET_HEADER.encode()[:40]],
                         ids=["zero-bytes", "binary", "truncated-header"])
def test_affectnet_unreadable_list_file_is_named(tmp_path, content):
    data = write_affectnet(tmp_path / "affectnet", [], [], {"1/good.jpg": JPEG})
    (data / "Manually_Annotated_file_lists" / "training.csv").write_bytes(content)
    with pytest.raises(BadDataError, match=r"unexpected_header: .*training.csv:1: missing columns"):
        build_dataset("affectnet", data_dir=str(data), cache_dir=str(tmp_path / "c"), on_bad_data="skip")


# ---------------------------------------------------------------- builders: FERPlus

VOTE_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def write_ferplus(root: Path, fer_lines: list[bytes], vote_lines: list[bytes]) -> Path:
    root.mkdir(parents=True)
    (root / "fer2013.csv").write_bytes(b"\n".join([b"emotion,pixels,Usage", *fer_lines]) + b"\n")
    (root / "fer2013new.csv").write_bytes(b"\n".join([VOTE_HEADER.encode(), *vote_lines]) + b"\n")
    return root


def fer_line(usage: str) -> bytes:
    return ("3," + " ".join(["100"] * 2304) + f",{usage}").encode()


def vote_line(usage: str, name: str) -> bytes:
    return f"{usage},{name},0,10,0,0,0,0,0,0,0,0".encode()


def test_ferplus_garbage_rows_and_a_file_cut_short_are_named_or_skipped(tmp_path):
    usages = ["Training", "Training", "PublicTest", "PublicTest", "PrivateTest", "Training", "Training"]
    fer = [fer_line(u) for u in usages]
    fer[1] = b"3," + bytes(range(128, 256)) * 18 + b",Training"  # not UTF-8, not numbers
    fer[5] = b"3," + b"1\x002 " * 768 + b",Training"  # NUL bytes among the pixels
    fer[6] = fer_line("Training")[:3000]  # the file ends in the middle of a row (an interrupted download)
    votes = [vote_line(u, f"fer{i:07d}.png") for i, u in enumerate(usages)]
    votes[2] = b"PublicTest,fer0000002.png,\xff\xfe,0,0,0,0,0,0,0,0,0"  # a vote count that is not UTF-8
    data = write_ferplus(tmp_path / "ferplus", fer, votes)
    (data / "fer2013.csv").write_bytes((data / "fer2013.csv").read_bytes().rstrip(b"\n"))
    with pytest.raises(BadDataError, match=r"unparseable_image_row: .*fer2013.csv:8: expected 3 columns, got 2"):
        build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True)
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 1, "validation": 1, "test": 1}
    assert report.counts == {"unparseable_image_row": 3, "unparseable_label_row": 1}
    lines = sorted(e.split(": ")[0].rsplit(":", 1)[1] for e in report.examples["unparseable_image_row"])
    assert lines == ["3", "7", "8"]
    assert "fer2013new.csv:4" in report.examples["unparseable_label_row"][0]


@pytest.mark.parametrize("file_name", ["fer2013.csv", "fer2013new.csv"])
@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n\x00\x00binary"], ids=["zero-bytes", "binary"])
def test_ferplus_unreadable_csv_is_named(tmp_path, file_name, content):
    data = write_ferplus(tmp_path / "ferplus", [fer_line("Training")], [vote_line("Training", "fer0000000.png")])
    (data / file_name).write_bytes(content)
    with pytest.raises(BadDataError, match=rf"unexpected_header: .*{re.escape(file_name)}:1: missing columns"):
        build_dataset("ferplus", data_dir=str(data), cache_dir=str(tmp_path / "c"), on_bad_data="skip")


# ---------------------------------------------------------------- builders: BP4D

AU_COLUMNS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)


def write_bp4d(root: Path, frames: dict[tuple[str, int], bytes], csv: dict[str, bytes]) -> Path:
    """Frames of task T1 for F001 (fold 1 train) and F007 (fold 1 test): `{(subject, number): content}`; label CSVs
    `{subject: content}`."""
    for (subject, number), content in frames.items():
        folder = root / "BP4D-training" / subject / "T1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{number:04d}.jpg").write_bytes(content)
    (root / "AUCoding" / "AUCoding").mkdir(parents=True)
    for subject, content in csv.items():
        (root / "AUCoding" / "AUCoding" / f"{subject}_T1.csv").write_bytes(content)
    return root


def codes(numbers) -> bytes:
    lines = [",".join(["Frame", *map(str, AU_COLUMNS)])] + [",".join([str(n)] + ["1"] * 12) for n in numbers]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bp4d_bad_frames_are_named_or_skipped(tmp_path):
    bad = list(BAD_FILES.values())
    frames = {("F001", n): JPEG for n in (1, 2)} | {("F007", n): JPEG for n in (1, 2)}
    frames |= {("F001", 10 + i): content for i, content in enumerate(bad)}
    numbers = [1, 2, *range(10, 10 + len(bad))]
    data = write_bp4d(tmp_path / "bp4d", frames, {"F001": codes(numbers), "F007": codes([1, 2])})
    with pytest.raises(BadDataError, match=r"unreadable_image: .*F001/T1/0010.jpg"):
        build_dataset("bp4d", "fold1", data_dir=str(data), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("bp4d", "fold1", data_dir=str(data), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True)
    assert len(splits["train"]) == 2 and len(splits["test"]) == 2
    assert report.counts["unreadable_image"] == len(bad)


@pytest.mark.parametrize("csv, where", [
    (codes([1, 2]).replace(b"2,1,1", b"2,\xff\xfe,1"), r"unparseable_label_row: .*F001_T1.csv:3"),  # not UTF-8
    (codes([1, 2]).replace(b"2,1,1", b"2,\x00,1"), r"unparseable_label_row: .*F001_T1.csv:3"),  # NUL byte
    (codes([1, 2])[:-8], r"unparseable_label_row: .*F001_T1.csv:3"),  # cut short in the last row
    (b"", r"unparseable_label_file: .*F001_T1.csv:1: the header row has no column"),
    (b"\x89PNG\r\n\x1a\n\x00binary", r"unparseable_label_file: .*F001_T1.csv:1"),
], ids=["not-utf8", "nul", "truncated", "zero-bytes", "binary"])
def test_bp4d_malformed_label_files_are_named_or_skipped(tmp_path, csv, where):
    """A CSV that is not UTF-8 used to escape as a UnicodeDecodeError inside datasets' generic
    DatasetGenerationError, naming no file."""
    frames = {(subject, n): JPEG for subject in ("F001", "M007", "F007") for n in (1, 2)}
    data = write_bp4d(tmp_path / "bp4d", frames, {"F001": csv, "M007": codes([1, 2]), "F007": codes([1, 2])})
    with pytest.raises(BadDataError, match=where):
        build_dataset("bp4d", "fold1", data_dir=str(data), cache_dir=str(tmp_path / "c1"))
    splits, report = build_dataset("bp4d", "fold1", data_dir=str(data), cache_dir=str(tmp_path / "c2"),
                                   on_bad_data="skip", return_report=True)
    assert len(splits["test"]) == 2  # F007
    # F001's frames whose rows (or whole file) were bad lost their labels, and are counted
    assert len(splits["train"]) + report.counts["frame_without_labels"] == 4
    assert report.counts.get("unparseable_label_row", 0) + report.counts.get("unparseable_label_file", 0) == 1
