"""RAF-DB basic (Li et al., 2017): 15,339 face images, 7 expression classes, 12,271 train / 3,068 test."""

from dataclasses import dataclass
from pathlib import Path

import datasets

from .data_report import DataReport, bad_data, require_paths
from .facial_behavior_builder import VERSION, FacialBehaviorBuilder, FacialBehaviorConfig
from .schema import EXPRESSIONS_7, describe, facial_behavior_features

#: RAF-DB's label codes -> the package's expression ids.
RAF_DB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
LABEL_FILE = "EmoLabel/list_patition_label.txt"  # sic: the name as released
SHARD_SIZE = 2000

LAYOUT = """\
data_dir/                        the `basic` folder of RAF-DB (or a folder that contains `basic/`)
  EmoLabel/list_patition_label.txt   one row per image: `train_00001.jpg 5` (codes 1-7)
  Image/aligned/train_00001_aligned.jpg   the aligned 100x100 faces (image_variant="aligned", the default)
  Image/original/train_00001.jpg          the original images (image_variant="original")"""


@dataclass
class RAFDBConfig(FacialBehaviorConfig):
    """`image_variant`: `"aligned"` (default) or `"original"`."""

    image_variant: str = "aligned"


class RAFDB(FacialBehaviorBuilder):
    """RAF-DB basic, 7 classes, splits `train` and `test` from the file-name prefixes. Expected layout: `LAYOUT`."""

    BUILDER_CONFIG_CLASS = RAFDBConfig
    BUILDER_CONFIGS = [RAFDBConfig(name="default", version=VERSION, description="RAF-DB basic, 7 expressions.")]
    DEFAULT_CONFIG_NAME = "default"
    LAYOUT = LAYOUT

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=describe("RAF-DB basic: aligned face images with 7 expression classes."),
            features=facial_behavior_features(subject=False, expressions=EXPRESSIONS_7),
            homepage="http://www.whdeng.cn/RAF/model1.html",
        )

    def _image_path(self, root: Path, name: str) -> Path:
        if self.config.image_variant == "aligned":
            return root / "Image" / "aligned" / f"{Path(name).stem}_aligned{Path(name).suffix}"
        return root / "Image" / "original" / name

    def _scan(self, data_dir: Path | None, report: DataReport) -> dict[str, list]:
        if self.config.image_variant not in ("aligned", "original"):
            raise ValueError(f"image_variant must be 'aligned' or 'original', got {self.config.image_variant!r}.")
        if data_dir is not None and (data_dir / "basic").is_dir():
            data_dir = data_dir / "basic"
        image_dir = f"Image/{self.config.image_variant}"
        root = require_paths(data_dir, [LABEL_FILE, image_dir], "raf_db", LAYOUT)

        rows = {"train": [], "test": []}
        labelled = set()
        label_path = root / LABEL_FILE
        for number, line in enumerate(label_path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            split = fields[0].split("_")[0] if fields else ""
            if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) not in RAF_DB_CODES or split not in rows:
                bad_data(report, self.config.on_bad_data, "unparseable_label_row", f"{label_path}:{number}",
                         f"expected `train_00001.jpg <1-7>`, got {line!r}")
                continue
            image_path = self._image_path(root, fields[0])
            labelled.add(image_path.name)
            if not image_path.exists():
                report.add("label_without_image", image_path)
                continue
            rows[split].append((str(image_path), RAF_DB_CODES[int(fields[1])]))
        for image_path in sorted((root / image_dir).iterdir()):
            if image_path.name not in labelled:
                report.add("image_without_label", image_path)
        return {split: [items[i : i + SHARD_SIZE] for i in range(0, len(items), SHARD_SIZE)]
                for split, items in rows.items()}

    def _examples(self, shard: list, report: DataReport):
        for path, expression in shard:
            image = self.load_image(Path(path), report)
            if image is not None:
                yield Path(path).name, {"image": image, "expression": expression}
