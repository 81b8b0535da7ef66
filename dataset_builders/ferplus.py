"""FERPlus (Barsoum et al., ICMI 2016): the FER2013 48x48 grayscale faces relabelled by 10 crowd taggers each; one
label per image by majority vote, splits Training -> train, PublicTest -> validation, PrivateTest -> test.

The majority rule follows the FERPlus reference reader (github.com/microsoft/FERPlus, `src/ferplus.py`,
`FERPlusReader._process_data`, mode "majority"):
  1. take the 10 vote counts (8 emotions, `unknown`, `NF` = not a face);
  2. drop every count of a single vote as tagger noise (a count of 1 becomes 0);
  3. the label is the column with the most remaining votes if it holds more than half of them; otherwise there is
     no majority;
  4. a majority for `unknown` or `NF`, and no majority, exclude the image.
Exclusions are counted in the data report (`no_majority`, `unknown_majority`, `not_a_face`, `excluded_contempt`
with the 7-class config), as are the rows FERPlus left without an image name (`no_image_name`; the FERPlus authors
removed those images, and their own converter skips them).

One deliberate difference from the reference: its reader keeps a row only if the winning index is below
`emotion_count - 2`, which with 8 emotions also drops fear and contempt majorities; this builder keeps them, since
the stated intent (and the FERPlus paper's 8-class results) is to drop only `unknown` and `NF`.
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
from PIL import Image

from .data_report import BadDataError, DataReport, bad_data, require_paths
from .facial_behavior_builder import VERSION, FacialBehaviorBuilder, FacialBehaviorConfig
from .schema import describe, expression_classes, facial_behavior_features

FER_FILE = "fer2013.csv"
FERPLUS_FILE = "fer2013new.csv"
#: fer2013's `Usage` -> split name.
USAGE_SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
#: The vote columns of fer2013new.csv, in the file's order.
VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
#: FERPlus's emotion columns -> the package's expression ids.
FERPLUS_EXPRESSIONS = {
    "neutral": "neutral", "happiness": "happiness", "surprise": "surprise", "sadness": "sadness", "anger": "anger",
    "disgust": "disgust", "fear": "fear", "contempt": "contempt",
}
#: Why a row with a valid vote count is left out, by the majority outcome.
EXCLUSION_KINDS = {None: "no_majority", "unknown": "unknown_majority", "NF": "not_a_face"}
IMAGE_SIDE = 48
SHARD_SIZE = 2000

LAYOUT = """\
data_dir/
  fer2013.csv      the FER2013 release: header `emotion,pixels,Usage`, one row per image, `pixels` holding
                   48*48 = 2304 space-separated gray values, `Usage` one of Training, PublicTest, PrivateTest
  fer2013new.csv   the FERPlus votes (github.com/microsoft/FERPlus): header
                   `Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF`,
                   rows in the same order as fer2013.csv"""


def majority_vote(votes: Sequence[int], drop_single_votes: bool = True) -> str | None:
    """The FERPlus majority label of one image, or `None` if no column holds a majority.

    Args:
        votes: the 10 vote counts, in `VOTE_COLUMNS` order.
        drop_single_votes: treat a column with a single vote as noise (count 0) first, as the reference does.

    Returns:
        One of `VOTE_COLUMNS` (including `"unknown"` and `"NF"`), or `None` if no column has more than half of the
        (remaining) votes.
    """
    if len(votes) != len(VOTE_COLUMNS):
        raise ValueError(f"Expected {len(VOTE_COLUMNS)} vote counts ({', '.join(VOTE_COLUMNS)}), got {len(votes)}.")
    counts = [0 if drop_single_votes and count <= 1 else count for count in votes]
    top = max(counts)
    # More than half of the votes: the winner is unique, so index() picks it regardless of column order.
    if top > 0 and 2 * top > sum(counts):
        return VOTE_COLUMNS[counts.index(top)]
    return None


@dataclass
class FERPlusConfig(FacialBehaviorConfig):
    """`num_classes`: 8 (with contempt, the default) or 7 (contempt rows dropped and counted).
    `drop_single_votes`: discard single votes as tagger noise before the majority vote (the reference's rule)."""

    num_classes: int = 8
    drop_single_votes: bool = True


@dataclass(frozen=True)
class _Columns:
    """Where the columns a file needs sit in its rows, read off its header."""

    indices: dict[str, int]
    count: int


def _header_columns(path: Path, header: list[str], required: Sequence[str]) -> _Columns:
    names = [name.strip() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        # A header without the columns is no row to skip: nothing in the file can be read.
        raise BadDataError(f"unexpected_header: {path}:1: missing columns {missing}; expected {list(required)}, "
                           f"got {names}.")
    return _Columns({name: names.index(name) for name in required}, len(names))


class FERPlus(FacialBehaviorBuilder):
    """FERPlus majority-vote labels on the FER2013 images. Configs `"8"` (default) and `"7"` (no contempt).
    Expected layout: `LAYOUT`."""

    BUILDER_CONFIG_CLASS = FERPlusConfig
    BUILDER_CONFIGS = [
        FERPlusConfig(name="8", num_classes=8, version=VERSION,
                      description="FERPlus majority vote, 8 expressions (with contempt)."),
        FERPlusConfig(name="7", num_classes=7, version=VERSION,
                      description="FERPlus majority vote, 7 expressions (contempt majorities dropped)."),
    ]
    DEFAULT_CONFIG_NAME = "8"
    LAYOUT = LAYOUT

    @property
    def expressions(self) -> tuple[str, ...]:
        return expression_classes(self.config.num_classes)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=describe(
                f"FERPlus: FER2013's 48x48 grayscale faces with the majority vote of 10 crowd taggers, "
                f"{self.config.num_classes} expression classes."
            ),
            features=facial_behavior_features(subject=False, expressions=self.expressions),
            homepage="https://github.com/microsoft/FERPlus",
        )

    # ---------------------------------------------------------------- scan (main process)

    def _scan(self, data_dir: Path | None, report: DataReport) -> dict[str, list]:
        if self.config.num_classes not in (7, 8):
            raise ValueError(f"num_classes must be 7 or 8, got {self.config.num_classes!r}.")
        if self.config.crop_faces:
            raise ValueError("FERPlus images are already 48x48 face crops; crop_faces=True is not supported.")
        root = require_paths(data_dir, [FER_FILE, FERPLUS_FILE], "ferplus", LAYOUT)
        fer_path, votes_path = root / FER_FILE, root / FERPLUS_FILE
        images, pixels_column = self._scan_images(fer_path, report)
        labels = self._scan_votes(votes_path, report)

        if len(images) != len(labels):
            bad_data(report, self.config.on_bad_data, "row_count_mismatch", f"{votes_path}:{len(labels) + 1}",
                     f"{FERPLUS_FILE} has {len(labels)} data rows but {FER_FILE} has {len(images)}; the files must "
                     f"align row by row (only the first {min(len(images), len(labels))} rows are paired)")
            for image in images[len(labels):]:
                if image is not None:
                    report.add("image_without_label", f"{fer_path}:{image[0]}")
            for label in labels[len(images):]:
                if label is not None:
                    report.add("label_without_image", f"{votes_path}:{label[0]}")

        rows = {split: [] for split in USAGE_SPLITS.values()}
        for image, label in zip(images, labels):
            if image is None or label is None:
                continue  # counted where it was read
            fer_line, offset, usage = image
            votes_line, votes_usage, name, votes = label
            if usage != votes_usage:
                bad_data(report, self.config.on_bad_data, "usage_mismatch", f"{votes_path}:{votes_line}",
                         f"Usage {votes_usage!r} here but {usage!r} at {fer_path}:{fer_line}")
                continue
            if not name:
                report.add("no_image_name", f"{votes_path}:{votes_line}")
                continue
            winner = majority_vote(votes, self.config.drop_single_votes)
            if winner not in FERPLUS_EXPRESSIONS:
                report.add(EXCLUSION_KINDS[winner], f"{votes_path}:{votes_line}", f"{name} votes {votes}")
                continue
            expression = FERPLUS_EXPRESSIONS[winner]
            if expression not in self.expressions:
                report.add("excluded_contempt", f"{votes_path}:{votes_line}", f"{name} votes {votes}")
                continue
            rows[USAGE_SPLITS[usage]].append((fer_line, offset, name, expression))

        return {split: [(str(fer_path), pixels_column, tuple(items[i : i + SHARD_SIZE]))
                        for i in range(0, len(items), SHARD_SIZE)]
                for split, items in rows.items()}

    def _scan_images(self, path: Path, report: DataReport) -> tuple[list, int]:
        """One entry per data row of fer2013.csv: `(line, byte offset, usage)`, or `None` for a bad row.

        Only the byte offsets are kept, not the pixels: the workers re-read their own rows, so that the main
        process never holds the whole file.
        """
        entries = []
        with open(path, "rb") as file:
            header = file.readline()
            columns = _header_columns(path, header.decode("utf-8", "replace").strip().split(","),
                                      ("pixels", "Usage"))  # FER2013's own `emotion` label is not used
            offset = len(header)
            for number, raw in enumerate(file, start=2):
                line_offset, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                fields = raw.decode("utf-8", "replace").rstrip("\r\n").split(",")
                usage = fields[columns.indices["Usage"]].strip().strip('"') if len(fields) == columns.count else None
                if usage is None or usage not in USAGE_SPLITS:
                    detail = (f"expected {columns.count} columns, got {len(fields)}" if usage is None
                              else f"unknown Usage {usage!r}; expected one of {list(USAGE_SPLITS)}")
                    bad_data(report, self.config.on_bad_data, "unparseable_image_row", f"{path}:{number}", detail)
                    entries.append(None)
                    continue
                entries.append((number, line_offset, usage))
        return entries, columns.indices["pixels"]

    def _scan_votes(self, path: Path, report: DataReport) -> list:
        """One entry per data row of fer2013new.csv: `(line, usage, image name, votes)`, or `None` for a bad row."""
        entries = []
        with open(path, "rb") as file:
            lines = file.read().decode("utf-8", "replace").splitlines()
        columns = _header_columns(path, lines[0].split(",") if lines else [], ("Usage", "Image name", *VOTE_COLUMNS))
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = [field.strip() for field in line.split(",")]
            problem = None
            if len(fields) != columns.count:
                problem = f"expected {columns.count} columns, got {len(fields)}"
            else:
                usage = fields[columns.indices["Usage"]]
                counts = [fields[columns.indices[name]] for name in VOTE_COLUMNS]
                if usage not in USAGE_SPLITS:
                    problem = f"unknown Usage {usage!r}; expected one of {list(USAGE_SPLITS)}"
                elif not all(count.isdigit() for count in counts):
                    problem = f"vote counts must be non-negative integers, got {counts}"
            if problem:
                bad_data(report, self.config.on_bad_data, "unparseable_label_row", f"{path}:{number}", problem)
                entries.append(None)
                continue
            entries.append((number, usage, fields[columns.indices["Image name"]], [int(c) for c in counts]))
        return entries

    # ---------------------------------------------------------------- generation (workers)

    def _examples(self, shard: tuple, report: DataReport):
        fer_path, pixels_column, rows = shard
        with open(fer_path, "rb") as file:
            for line, offset, name, expression in rows:
                file.seek(offset)
                fields = file.readline().decode("utf-8", "replace").rstrip("\r\n").split(",")
                image = self._decode_pixels(fields[pixels_column].strip().strip('"'), f"{fer_path}:{line}", report)
                if image is not None:
                    yield name, {"image": {"bytes": image, "path": name}, "expression": expression}

    def _decode_pixels(self, pixels: str, where: str, report: DataReport) -> bytes | None:
        """The 48x48 grayscale PNG encoded from a `pixels` field, or `None` if it is bad and skipped."""
        try:
            # Text-mode fromstring parses whitespace-separated integers a few times faster than str.split and
            # np.array, and raises on anything that is not one (letters, decimals, commas).
            gray = np.fromstring(pixels, dtype=np.int64, sep=" ")
        except ValueError:
            bad_data(report, self.config.on_bad_data, "unparseable_image_row", where,
                     "pixel values must be integers 0-255 separated by spaces")
            return None
        if gray.size != IMAGE_SIDE * IMAGE_SIDE:
            bad_data(report, self.config.on_bad_data, "unparseable_image_row", where,
                     f"expected {IMAGE_SIDE * IMAGE_SIDE} pixel values, got {gray.size}")
            return None
        if gray.min() < 0 or gray.max() > 255:
            bad_data(report, self.config.on_bad_data, "unparseable_image_row", where,
                     f"pixel values must be in 0-255, got {gray.min()}..{gray.max()}")
            return None
        buffer = io.BytesIO()
        Image.fromarray(gray.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)).save(buffer, format="PNG")
        return buffer.getvalue()
