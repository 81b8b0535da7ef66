"""AffectNet (Mollahosseini et al., 2017), manually annotated part: 8 expression classes (AffectNet-8) or 7 without
contempt (AffectNet-7); `train` from the training list, `test` from the official validation list (500 per class).

Labels 8 (none), 9 (uncertain) and 10 (no face) are not expressions: those rows are excluded and counted as
`excluded_label`, and contempt rows under the 7-class config as `excluded_contempt`.

Face box: the file lists give each image's face box. With `use_face_box=True` (the default) the stored image is the
box's crop (clipped to the image), at its own resolution (the image processor resizes later), JPEG-encoded, with
subDirectory_filePath as its path. The released images are mostly face crops already, but the box is the data set's
own statement of where the face is, and cropping to it costs little; `use_face_box=False` stores the images as
released, by path (no copy).
"""

import io
import math
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image

from .data_report import BadDataError, DataReport, bad_data, require_paths
from .facial_behavior_builder import VERSION, FacialBehaviorBuilder, FacialBehaviorConfig
from .schema import describe, expression_classes, facial_behavior_features

#: AffectNet's expression codes -> the package's expression ids (the orders coincide).
AFFECTNET_CODES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
                   7: "contempt"}
#: Codes that are not an expression: excluded, counted.
NON_EXPRESSION_CODES = {8: "none", 9: "uncertain", 10: "no-face"}
LIST_DIR = "Manually_Annotated_file_lists"
IMAGE_DIR = "Manually_Annotated_Images"
#: file list -> split.
SPLIT_FILES = {"train": f"{LIST_DIR}/training.csv", "test": f"{LIST_DIR}/validation.csv"}
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
REQUIRED_COLUMNS = ("subDirectory_filePath", *BOX_COLUMNS, "expression")
SHARD_SIZE = 2000

LAYOUT = """\
data_dir/
  Manually_Annotated_file_lists/
    training.csv       -> split `train`
    validation.csv     -> split `test` (the official validation set)
                       header `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
                       expression,valence,arousal`; expression codes 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear,
                       5 disgust, 6 anger, 7 contempt, 8 none, 9 uncertain, 10 no-face
  Manually_Annotated_Images/{subDirectory_filePath}   e.g. Manually_Annotated_Images/689/737db248...ca.jpg
  (or Manually_Annotated/Manually_Annotated_Images/..., one level down, as the image archive unpacks)"""


@dataclass
class AffectNetConfig(FacialBehaviorConfig):
    """`num_classes`: 8 (AffectNet-8, the default) or 7 (AffectNet-7, contempt rows dropped and counted).
    `use_face_box`: store the crop of the face box the file lists give (default) rather than the whole image."""

    num_classes: int = 8
    use_face_box: bool = True


class AffectNet(FacialBehaviorBuilder):
    """AffectNet manually annotated images. Configs `"8"` (default) and `"7"`; splits `train` and `test`.
    Expected layout: `LAYOUT`."""

    BUILDER_CONFIG_CLASS = AffectNetConfig
    BUILDER_CONFIGS = [
        AffectNetConfig(name="8", num_classes=8, version=VERSION, description="AffectNet-8: 8 expressions."),
        AffectNetConfig(name="7", num_classes=7, version=VERSION,
                        description="AffectNet-7: 7 expressions (contempt dropped)."),
    ]
    DEFAULT_CONFIG_NAME = "8"
    LAYOUT = LAYOUT

    @property
    def expressions(self) -> tuple[str, ...]:
        return expression_classes(self.config.num_classes)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=describe(
                f"AffectNet (manually annotated): face images with {self.config.num_classes} expression classes; "
                "test is the official validation set."
            ),
            features=facial_behavior_features(subject=False, expressions=self.expressions),
            homepage="http://mohammadmahoor.com/affectnet/",
        )

    # ---------------------------------------------------------------- scan (main process)

    def _scan(self, data_dir: Path | None, report: DataReport) -> dict[str, list]:
        if self.config.num_classes not in (7, 8):
            raise ValueError(f"num_classes must be 7 or 8, got {self.config.num_classes!r}.")
        if self.config.use_face_box and self.config.crop_faces:
            raise ValueError("use_face_box=True crops the annotated face box; crop_faces=True would detect faces "
                             "instead. Pass use_face_box=False to use the detector.")
        if data_dir is not None and not (data_dir / IMAGE_DIR).is_dir() and (data_dir / "Manually_Annotated").is_dir():
            image_root = data_dir / "Manually_Annotated"
        else:
            image_root = data_dir
        root = require_paths(data_dir, list(SPLIT_FILES.values()), "affectnet", LAYOUT)
        image_dir = require_paths(image_root, [IMAGE_DIR], "affectnet", LAYOUT) / IMAGE_DIR
        splits = {}
        for split, relative in SPLIT_FILES.items():
            rows = self._scan_list(root / relative, image_dir, report)
            splits[split] = [(str(root / relative), str(image_dir), tuple(rows[i : i + SHARD_SIZE]))
                             for i in range(0, len(rows), SHARD_SIZE)]
        return splits

    def _scan_list(self, path: Path, image_dir: Path, report: DataReport) -> list[tuple]:
        """The rows of one file list to generate, as `(subDirectory_filePath, line, face box or None, expression)`.

        The list is read line by line: training.csv holds ~415k rows with 68 landmarks each (hundreds of MB).
        """
        rows = []
        with open(path, encoding="utf-8", errors="replace", newline="") as file:
            header = [name.strip() for name in file.readline().split(",")]
            missing = [name for name in REQUIRED_COLUMNS if name not in header]
            if missing:
                raise BadDataError(f"unexpected_header: {path}:1: missing columns {missing}; expected "
                                   f"{list(REQUIRED_COLUMNS)} among {header}.")
            column = {name: header.index(name) for name in REQUIRED_COLUMNS}
            for number, line in enumerate(file, start=2):
                if not line.strip():
                    continue
                # The landmarks column separates its numbers with ';', so a plain split on ',' is safe.
                fields = [field.strip() for field in line.split(",")]
                parsed = self._parse_row(fields, len(header), column)
                if isinstance(parsed, str):
                    bad_data(report, self.config.on_bad_data, "unparseable_label_row", f"{path}:{number}", parsed)
                    continue
                name, box, code = parsed
                if code in NON_EXPRESSION_CODES:
                    report.add("excluded_label", f"{path}:{number}", f"{name}: {code} ({NON_EXPRESSION_CODES[code]})")
                    continue
                expression = AFFECTNET_CODES[code]
                if expression not in self.expressions:
                    report.add("excluded_contempt", f"{path}:{number}", name)
                    continue
                if not (image_dir / name).is_file():
                    report.add("label_without_image", image_dir / name, f"{path}:{number}")
                    continue
                rows.append((name, number, box if self.config.use_face_box else None, expression))
        return rows

    @staticmethod
    def _parse_row(fields: list[str], count: int, column: dict[str, int]) -> tuple | str:
        """`(image name, (x0, y0, x1, y1), code)`, or what is wrong with the row."""
        if len(fields) != count:
            return f"expected {count} columns, got {len(fields)}"
        name = fields[column["subDirectory_filePath"]]
        code = fields[column["expression"]]
        if not name:
            return "empty subDirectory_filePath"
        if not code.isdigit() or int(code) not in {**AFFECTNET_CODES, **NON_EXPRESSION_CODES}:
            return f"expression must be an integer code 0-10, got {code!r}"
        try:
            x, y, width, height = (float(fields[column[c]]) for c in BOX_COLUMNS)
        except ValueError:
            return f"face box must be numbers, got {[fields[column[c]] for c in BOX_COLUMNS]}"
        if not all(math.isfinite(v) for v in (x, y, width, height)) or width <= 0 or height <= 0:
            return f"face box must have a positive width and height, got {(x, y, width, height)}"
        box = (round(x), round(y), round(x + width), round(y + height))
        return name, box, int(code)

    # ---------------------------------------------------------------- generation (workers)

    def _examples(self, shard: tuple, report: DataReport):
        list_path, image_dir, rows = shard
        for name, line, box, expression in rows:
            path = Path(image_dir) / name
            if box is None:
                image = self.load_image(path, report)
            else:
                image = self._crop_box(path, name, box, f"{list_path}:{line}", report)
            if image is not None:
                yield name, {"image": image, "expression": expression}  # subDirectory_filePath names the image

    def _crop_box(self, path: Path, name: str, box: tuple[int, int, int, int], row: str,
                  report: DataReport) -> dict | None:
        """The crop of `box` (clipped to the image) as a JPEG image value named `name`, or `None` if the image or the
        box is bad and skipped."""
        try:
            with Image.open(path) as image:
                image.load()
                width, height = image.size
                x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
                crop = image.crop((x0, y0, x1, y1)).convert("RGB") if x1 > x0 and y1 > y0 else None
        except Exception as error:  # noqa: BLE001 - any decoding failure, as in `FacialBehaviorBuilder.load_image`
            bad_data(report, self.config.on_bad_data, "unreadable_image", path, f"{type(error).__name__}: {error}")
            return None
        if crop is None:
            bad_data(report, self.config.on_bad_data, "face_box_outside_image", row,
                     f"box {box} lies outside the {width}x{height} image {path}")
            return None
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=95)
        return {"bytes": buffer.getvalue(), "path": name}
