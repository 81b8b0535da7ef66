"""The base of every builder: shared config options, sharded generation with per-job data reports, and checked
image loading (decode check, optional face crop).

A subclass implements `_info`, `_scan(split_names) -> {split: shards}` (runs once, in the main process: it checks the
layout, matches frames with labels, and counts what does not match), and `_examples(shard, report)` (yields
`(key, example)` for one shard; runs in worker processes with `num_proc`). Shards are small picklable units such as
`(subject, task)`, so that generation streams and parallelises.
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import datasets
from PIL import Image

from .data_report import DataReport, bad_data, check_on_bad_data, job_report_path, report_directory
from .faces import FACE_DETECTORS, FaceFinder, crop_face

VERSION = datasets.Version("1.0.0")


@dataclass
class FacialBehaviorConfig(datasets.BuilderConfig):
    """Options every builder accepts (pass them to `build_dataset` as keywords).

    Attributes:
        on_bad_data: `"raise"` stops at the first unreadable image or label row, naming it; `"skip"` skips and
            counts such items in the data report.
        crop_faces: detect the face in each frame and store the crop (for full camera frames: BP4D, BP4D+, DISFA).
        face_size: side of the stored face crops, in pixels.
        face_margin: margin added around the face, as a fraction of its size, on each side.
        face_detector: "hog" (dlib's HOG, default), "cnn" (dlib's MMOD CNN) or "haar" (OpenCV), as the pipeline's
            `face_detector`; the face with the highest score (Haar: the largest) is kept.
        align_faces: store the face aligned on its five landmarks (`clef_hf.face_alignment.align_face`), as the
            pipeline crops at inference; `False` stores the square box crop (clef-hf's crops before alignment).
        verify_images: decode every image while preparing, to find corrupt files now rather than mid-training.
    """

    on_bad_data: str = "raise"
    crop_faces: bool = False
    face_size: int = 224
    face_margin: float = 0.2
    face_detector: str = "hog"
    align_faces: bool = True
    verify_images: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_on_bad_data(self.on_bad_data)
        check_face_detector(self.face_detector)


def check_face_detector(name: str) -> None:
    if name not in FACE_DETECTORS:
        raise ValueError(f"face_detector={name!r}: a builder takes a detector name, one of {FACE_DETECTORS}.")


class FacialBehaviorBuilder(datasets.GeneratorBasedBuilder):
    """Base builder: subclasses provide `_info`, `_scan` and `_examples`."""

    BUILDER_CONFIG_CLASS = FacialBehaviorConfig
    #: The expected directory layout, shown in errors about missing paths. Subclasses set it.
    LAYOUT: str = ""
    _face_finder: FaceFinder | None = None

    # ---------------------------------------------------------------- to implement

    def _scan(self, data_dir: Path, report: DataReport) -> dict[str, list]:
        """Check the layout, match labels with images, count mismatches; return the shards of each split."""
        raise NotImplementedError

    def _examples(self, shard: Any, report: DataReport) -> Iterator[tuple[str, dict]]:
        raise NotImplementedError

    # ---------------------------------------------------------------- generation

    def _split_generators(self, dl_manager):
        # Options passed as keywords to the builder bypass the config's __post_init__: check them here.
        check_on_bad_data(self.config.on_bad_data)
        check_face_detector(self.config.face_detector)
        reports = report_directory(self.cache_dir)
        if reports.is_dir():
            for stale in reports.glob("*.json"):
                stale.unlink()
        report = DataReport()
        splits = self._scan(Path(self.config.data_dir).expanduser() if self.config.data_dir else None, report)
        report.write(reports / "scan.json")
        return [
            datasets.SplitGenerator(name=name, gen_kwargs={"split": name, "shards": shards})
            for name, shards in splits.items()
        ]

    def _generate_examples(self, split: str, shards: list):
        report = DataReport()
        for shard in shards:
            yield from self._examples(shard, report)
        report.write(job_report_path(self.cache_dir, split, shards))

    # ---------------------------------------------------------------- images

    def load_image(self, path: Path, report: DataReport) -> Any:
        """The `image` value for the file at `path`, or `None` if it is bad and `on_bad_data="skip"`.

        Without face cropping, the value is the path itself (the prepared data refers to the user's files rather
        than copying them); the image is decoded once first if `verify_images`. With `crop_faces`, it is the crop;
        a frame with no detectable face is counted as `no_face` and skipped.

        Any exception while decoding counts as an unreadable image: besides OSError, Pillow's format plugins raise
        ValueError, SyntaxError or struct.error on malformed files, and DecompressionBombError (not an OSError) for
        images beyond twice `PIL.Image.MAX_IMAGE_PIXELS`.
        """
        if not self.config.verify_images and not self.config.crop_faces:
            return str(path)
        try:
            with Image.open(path) as image:
                image.load()
                decoded = image.copy() if self.config.crop_faces else None
        except Exception as error:  # noqa: BLE001 - any decoding failure: see the docstring
            bad_data(report, self.config.on_bad_data, "unreadable_image", path, f"{type(error).__name__}: {error}")
            return None
        return self.crop(decoded, path, report) if self.config.crop_faces else str(path)

    def crop(self, image: Image.Image, source: str | Path, report: DataReport) -> dict | None:
        """The face crop of `image` as an encoded image value, or `None` (counted as `no_face`) if none is found."""
        if self._face_finder is None:
            self._face_finder = FaceFinder(self.config.face_detector)
        face = crop_face(image, self._face_finder, self.config.face_size, self.config.face_margin,
                         align=self.config.align_faces)
        if face is None:
            report.add("no_face", source)
            return None
        buffer = io.BytesIO()
        face.save(buffer, format="JPEG", quality=95)
        return {"bytes": buffer.getvalue(), "path": None}
