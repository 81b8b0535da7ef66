"""BP4D (Zhang et al., 2014) and BP4D+ (Zhang et al., 2016): spontaneous facial behaviour recorded per subject and
elicitation task, with frame-level occurrence codes for the 12 evaluated AUs and, with `au_intensity=True`, the
intensity codes the releases ship for AUs 6, 10, 12, 14 and 17 (FERA 2015's intensity AUs).

Configs:
  - `pretrain`: every frame, with its task (activity) and AU labels where coded; frames no coder saw keep all AUs at
    -1 (unknown). One `train` split. BP4D+ samples `pretrain_size` frames evenly across its 10 tasks (the paper used
    480,000); `None`, the default, keeps all 1.5 M.
  - `fold1`.. : subject-exclusive `train`/`test` splits of the AU-coded frames only. BP4D: the 3 standard parts
    (`folds.BP4D_PARTS`). BP4D+: 4 folds dealt from the subjects found on disk (`folds.k_fold_split`).

One shard is one (subject, task): generation reads one folder of frames and one CSV at a time, so it streams and
`num_proc` parallelises. Frames are matched with label rows per shard, in the workers.

What the data report counts (never raised): `frame_without_labels` (fold configs; pretrain keeps such frames with
AUs -1), `labels_without_frame` (a CSV row, or a whole CSV, with no frame), `task_without_labels` (a subject's folder
of a coded task with no CSV, fold configs), `uncoded_task` (a task no CSV codes, fold configs),
`subject_not_in_standard_parts` (a folder or CSV of an unknown subject: not used), `standard_subject_missing` (a
subject of the config's split with no folder), `unexpected_task`, `unexpected_file`, `duplicate_frame`. Bad data
(`on_bad_data`): `unreadable_image`, `unparseable_label_row`, `unparseable_label_file` (a header without the 12 AU
columns), `duplicate_label_row`, `unparseable_intensity_row` (with `au_intensity`).

Intensity (`au_intensity=True`): one CSV per AU, subject and task under the intensity folder, `AU06/F001_T1_AU06.csv`,
each row `frame,intensity` with 0 (absent), 1-5 (FACS A-E) or 9 (not coded). The `au_intensity` column holds the
intensities of the 12 AUs in `BP4D_AU_IDS` order: -1 for an AU without intensity codes, a frame without a row, or a 9.
The folder names follow the releases as OpenFace's and FERA 2015's scripts read them (BP4D: `AU Intensity
Codes3.0/`; BP4D+: `AUCoding/AU_INT/`); a copy laid out otherwise must be moved into one of `INTENSITY_DIRS`.
"""

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import datasets
import numpy as np

from clef_hf.vocabulary import BP4D_ACTIVITIES, BP4D_AU_NUMBERS, BP4D_PLUS_ACTIVITIES, Activity

from .data_report import DataReport, MissingDataError, bad_data, require_paths
from .facial_behavior_builder import VERSION, FacialBehaviorBuilder, FacialBehaviorConfig
from .folds import BP4D_PARTS, k_fold_split, three_fold_split
from .schema import (
    AU_ABSENT,
    AU_PRESENT,
    AU_UNKNOWN,
    BP4D_AU_IDS,
    INTENSITY_UNKNOWN,
    describe,
    facial_behavior_features,
)

HOMEPAGE = "https://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html"

#: AU occurrence codes in the released CSVs -> the schema's values. 9 means "not coded": unknown, never absent.
AU_CODES = {0: AU_ABSENT, 1: AU_PRESENT, 9: AU_UNKNOWN}
UNKNOWN_AUS: tuple[int, ...] = (AU_UNKNOWN,) * len(BP4D_AU_NUMBERS)
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
BP4D_SUBJECTS: tuple[str, ...] = tuple(sorted(s for part in BP4D_PARTS for s in part))
BP4D_PLUS_SUBJECTS: tuple[str, ...] = (
    tuple(f"F{n:03d}" for n in range(1, 83)) + tuple(f"M{n:03d}" for n in range(1, 59))
)
BP4D_PLUS_NUM_FOLDS = 4
#: A CSV header cell naming an AU: `12`, `AU12`, `au 12`.
_AU_HEADER = re.compile(r"^\s*(?:au)?\s*(\d+)\s*$", re.IGNORECASE)
#: An intensity folder (`AU06`, `AU6`) and an intensity file (`F001_T1_AU06.csv`, `F001_T1.csv`).
_INTENSITY_AU_DIR = re.compile(r"^au\s*0*(\d+)$", re.IGNORECASE)
_INTENSITY_FILE = re.compile(r"^([FM]\d{3})_(T\d+)(?:_.*)?$")
#: Intensity codes: 0-5 as they are, 9 not coded (unknown).
MAX_INTENSITY, INTENSITY_NOT_CODED = 5, 9

BP4D_LAYOUT = """\
data_dir/                                  the root of your BP4D release
  BP4D-training/{subject}/{task}/{frame}.jpg   full camera frames, e.g. BP4D-training/F001/T1/0123.jpg
                                           (file name = frame number, zero padding allowed); subjects F001-F023,
                                           M001-M018; tasks T1-T8
  AUCoding/AUCoding/{subject}_{task}.csv   AU occurrence codes, one CSV per subject and task, e.g. F001_T1.csv
                                           (AUCoding/{subject}_{task}.csv is accepted too). Header row: the frame
                                           column, then one column per AU number (1, 2, 4, ...); each row: the frame
                                           number, then 0 (absent), 1 (present) or 9 (not coded) per AU.
  AU Intensity Codes3.0/AU{nn}/{subject}_{task}_AU{nn}.csv   with au_intensity=True: intensity codes of AUs 6, 10,
                                           12, 14, 17, e.g. AU06/F001_T1_AU06.csv; each row `frame,intensity`,
                                           0-5 or 9 (not coded). AUCoding/AU_INT/ and AU_INT/ are accepted too."""

BP4D_PLUS_LAYOUT = """\
data_dir/                                  the root of your BP4D+ release
  2D+3D/{subject}/{task}/{frame}.jpg       full camera frames, e.g. 2D+3D/F001/T1/0123.jpg (file name = frame
                                           number, zero padding allowed); subjects F001-F082, M001-M058; tasks T1-T10
  AUCoding/AU_OCC/{subject}_{task}.csv     AU occurrence codes for the 4 coded tasks, e.g. F001_T1.csv. Header row:
                                           the frame column, then one column per AU number; each row: the frame
                                           number, then 0 (absent), 1 (present) or 9 (not coded) per AU.
  AUCoding/AU_INT/AU{nn}/{subject}_{task}_AU{nn}.csv   with au_intensity=True: intensity codes, e.g.
                                           AU06/F001_T1_AU06.csv; each row `frame,intensity`, 0-5 or 9 (not coded)."""


class Shard(NamedTuple):
    """One (subject, task): its frames folder, its label CSV (`None` if it has none), and, when the pretrain config
    samples, the names of the chosen frame files (`None`: every frame in the folder), and with `au_intensity` the
    intensity CSV of each AU that has one, as `(au_number, path)` pairs."""

    subject: str
    task: str
    frame_dir: str
    label_csv: str | None
    frames: tuple[str, ...] | None = None
    intensity_csvs: tuple[tuple[int, str], ...] = ()


@dataclass
class BP4DConfig(FacialBehaviorConfig):
    """BP4D options: those of `FacialBehaviorConfig`. The config name selects the frames: `pretrain` or `foldK`.

    Attributes:
        au_intensity: also read the intensity codes (AUs 6, 10, 12, 14, 17) into an `au_intensity` column; the
            intensity folder must then exist (see the module docstring).
    """

    au_intensity: bool = False

    @property
    def fold(self) -> int | None:
        """The fold number of a `foldK` config; `None` for `pretrain`."""
        return int(self.name[len("fold"):]) if self.name.startswith("fold") else None


@dataclass
class BP4DPlusConfig(BP4DConfig):
    """BP4D+ options.

    Attributes:
        pretrain_size: `pretrain` only: how many frames to sample, evenly across the 10 tasks (a task with fewer
            frames than its share gives all it has and the rest is shared among the others); `None` keeps every frame.
            The CLEF paper used 480,000.
        seed: the seed of that sample; the same seed and files give the same frames.
    """

    pretrain_size: int | None = None
    seed: int = 0


def _configs(config_class: type, dataset: str, num_folds: int, pretrain_text: str) -> list:
    configs = [config_class(name="pretrain", version=VERSION, description=pretrain_text)]
    for fold in range(1, num_folds + 1):
        configs.append(config_class(
            name=f"fold{fold}", version=VERSION,
            description=f"{dataset} fold {fold}: subject-exclusive train/test splits of the AU-coded frames.",
        ))
    return configs


class _BP4DFamily(FacialBehaviorBuilder):
    """The logic BP4D and BP4D+ share; the subclasses name their folders, subjects, tasks and folds."""

    NAME: str = ""
    FRAMES_DIR: str = ""
    #: Candidate label folders, first match wins; the first is the one the layout documents.
    LABEL_DIRS: tuple[str, ...] = ()
    #: Candidate intensity folders (`au_intensity=True`), first match wins; the first is the documented one.
    INTENSITY_DIRS: tuple[str, ...] = ()
    SUBJECTS: tuple[str, ...] = ()
    ACTIVITIES: dict[str, Activity] = {}
    DESCRIPTION: str = ""

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=describe(self.DESCRIPTION, BP4D_AU_IDS),
            features=facial_behavior_features(activity=True, au=True,
                                              au_intensity=bool(getattr(self.config, "au_intensity", False))),
            homepage=HOMEPAGE,
        )

    def _split_subjects(self, subjects_on_disk: list[str]) -> dict[str, tuple[str, ...]]:
        """`{split: subjects}` of the config; `subjects_on_disk` are the known subjects found under `FRAMES_DIR`."""
        raise NotImplementedError

    # ---------------------------------------------------------------- scan

    def _check_config(self) -> None:
        names = [config.name for config in self.BUILDER_CONFIGS]
        if self.config.name not in names:
            raise ValueError(f"{self.NAME}: choose a config, one of {names}; got {self.config.name!r}.")

    def _scan(self, data_dir: Path | None, report: DataReport) -> dict[str, list[Shard]]:
        self._check_config()
        root = require_paths(data_dir, [self.FRAMES_DIR, self.LABEL_DIRS[-1]], self.NAME, self.LAYOUT)
        label_dir = next(root / d for d in self.LABEL_DIRS if (root / d).is_dir())
        frames_root = root / self.FRAMES_DIR

        # (subject, task) -> folder, for known subjects and tasks only; anything else is counted, not used.
        frame_dirs: dict[tuple[str, str], Path] = {}
        for subject_dir in sorted(frames_root.iterdir()):
            if not subject_dir.is_dir():
                report.add("unexpected_file", subject_dir)
            elif subject_dir.name not in self.SUBJECTS:
                report.add("subject_not_in_standard_parts", subject_dir)
            else:
                for task_dir in sorted(subject_dir.iterdir()):
                    if task_dir.is_dir() and task_dir.name in self.ACTIVITIES:
                        frame_dirs[subject_dir.name, task_dir.name] = task_dir
                    else:
                        report.add("unexpected_task", task_dir)
        label_csvs: dict[tuple[str, str], Path] = {}
        for path in sorted(label_dir.iterdir()):
            subject, _, task = path.stem.partition("_")
            if path.suffix.lower() != ".csv" or not path.is_file() or task not in self.ACTIVITIES:
                if path.is_file():  # the nested AUCoding/AUCoding folder itself is not a stray file
                    report.add("unexpected_file", path)
            elif subject not in self.SUBJECTS:
                report.add("subject_not_in_standard_parts", path)
            else:
                label_csvs[subject, task] = path
        intensity_csvs = self._scan_intensity(root, report) if self.config.au_intensity else {}
        for key, path in label_csvs.items():
            if key not in frame_dirs:
                report.add("labels_without_frame", path, f"no frames folder {frames_root / key[0] / key[1]}")

        subjects_on_disk = sorted({subject for subject, _ in frame_dirs})
        coded_tasks = {task for _, task in label_csvs}
        if self.config.fold is not None:
            for task in self.ACTIVITIES:
                if task not in coded_tasks and any(t == task for _, t in frame_dirs):
                    report.add("uncoded_task", task, f"no {label_dir}/*_{task}.csv: its frames are in no fold")
        splits = {}
        for split, subjects in self._split_subjects(subjects_on_disk).items():
            wanted = set(subjects)
            missing = sorted(wanted.difference(subjects_on_disk))
            for subject in missing:
                report.add("standard_subject_missing", frames_root / subject, f"{split} split of {self.config.name}")
            if len(missing) == len(wanted):
                expected = sorted(wanted) or f"{self.SUBJECTS[0]}..{self.SUBJECTS[-1]}"
                raise MissingDataError(
                    f"{self.NAME}/{self.config.name}: no folder of the {split} subjects ({expected}) is under "
                    f"{frames_root}\nExpected layout under data_dir:\n{self.LAYOUT}"
                )
            shards = []
            for (subject, task), frame_dir in frame_dirs.items():
                if subject not in wanted:
                    continue
                label_csv = label_csvs.get((subject, task))
                if label_csv is None and self.config.fold is not None:
                    # Counted per folder, not per frame; a task nobody coded (6 of BP4D+'s 10) was counted once above.
                    if task in coded_tasks:
                        report.add("task_without_labels", frame_dir)
                    continue
                shards.append(Shard(subject, task, str(frame_dir), str(label_csv) if label_csv else None,
                                    intensity_csvs=tuple(sorted(intensity_csvs.get((subject, task), {}).items()))))
            splits[split] = shards
        return splits

    def _scan_intensity(self, root: Path, report: DataReport) -> dict[tuple[str, str], dict[int, str]]:
        """`{(subject, task): {au_number: csv path}}` of the intensity folder, for the 12 AUs."""
        folder = next((root / d for d in self.INTENSITY_DIRS if (root / d).is_dir()), None)
        if folder is None:
            raise MissingDataError(
                f"{self.NAME}: au_intensity=True needs the intensity codes in one of {list(self.INTENSITY_DIRS)} under "
                f"{root}; none is there.\nExpected layout under data_dir:\n{self.LAYOUT}"
            )
        found: dict[tuple[str, str], dict[int, str]] = {}
        for au_dir in sorted(folder.iterdir()):
            match = _INTENSITY_AU_DIR.match(au_dir.name)
            if not au_dir.is_dir() or match is None or int(match.group(1)) not in BP4D_AU_NUMBERS:
                report.add("unexpected_file", au_dir)
                continue
            for path in sorted(au_dir.iterdir()):
                name = _INTENSITY_FILE.match(path.stem)
                if path.suffix.lower() != ".csv" or name is None or name.group(2) not in self.ACTIVITIES:
                    report.add("unexpected_file", path)
                elif name.group(1) in self.SUBJECTS:
                    found.setdefault((name.group(1), name.group(2)), {})[int(match.group(1))] = str(path)
                else:
                    report.add("subject_not_in_standard_parts", path)
        return found

    def _read_intensities(self, shard: Shard, report: DataReport) -> dict[int, list[float]]:
        """Frame number -> the 12 AUs' intensities in `BP4D_AU_IDS` order (-1 unknown), for one shard."""
        by_frame: dict[int, list[float]] = {}
        for au, path in shard.intensity_csvs:
            column = BP4D_AU_NUMBERS.index(au)
            with open(path, newline="", encoding="utf-8", errors="replace") as file:
                for line_number, row in enumerate(csv.reader(file), start=1):
                    if not any(cell.strip() for cell in row):
                        continue
                    try:
                        frame, code = int(row[0]), int(float(row[1]))
                        if not (0 <= code <= MAX_INTENSITY or code == INTENSITY_NOT_CODED):
                            raise ValueError
                    except (ValueError, IndexError):
                        if line_number == 1 and row and not row[0].strip().isdigit():
                            continue  # a header row
                        bad_data(report, self.config.on_bad_data, "unparseable_intensity_row", f"{path}:{line_number}",
                                 f"expected `frame,intensity` with intensity 0-{MAX_INTENSITY} or "
                                 f"{INTENSITY_NOT_CODED} (not coded), got {row[:4]!r}")
                        continue
                    values = by_frame.setdefault(frame, [INTENSITY_UNKNOWN] * len(BP4D_AU_NUMBERS))
                    values[column] = INTENSITY_UNKNOWN if code == INTENSITY_NOT_CODED else float(code)
        return by_frame

    # ---------------------------------------------------------------- examples

    def _examples(self, shard: Shard, report: DataReport) -> Iterator[tuple[str, dict]]:
        labels = self._read_labels(Path(shard.label_csv), report) if shard.label_csv else {}
        if shard.frames is None:
            frames = self._list_frames(Path(shard.frame_dir), report)
        else:
            frames = {int(Path(name).stem): Path(shard.frame_dir) / name for name in shard.frames}
        activity_description = self.ACTIVITIES[shard.task].description
        intensities = self._read_intensities(shard, report) if self.config.au_intensity else None
        for number in sorted(frames):
            path = frames[number]
            au = labels.pop(number, None)
            if au is None:
                if self.config.fold is not None:
                    report.add("frame_without_labels", path)
                    continue
                au = UNKNOWN_AUS
            image = self.load_image(path, report)
            if image is None:
                continue
            example = {
                "image": image,
                "subject": shard.subject,
                "activity": shard.task,
                "activity_description": activity_description,
                "au": list(au),
            }
            if intensities is not None:
                example["au_intensity"] = intensities.get(number, [INTENSITY_UNKNOWN] * len(BP4D_AU_NUMBERS))
            yield f"{shard.subject}/{shard.task}/{number}", example
        if shard.frames is None:  # a sampled shard leaves most rows out on purpose
            for number in sorted(labels):
                report.add("labels_without_frame", f"{shard.label_csv}:{number}")

    def _list_frames(self, frame_dir: Path, report: DataReport) -> dict[int, Path]:
        """Frame number -> file, for the frames in one (subject, task) folder."""
        frames: dict[int, Path] = {}
        if not frame_dir.is_dir():
            return frames
        with os.scandir(frame_dir) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            path = frame_dir / name
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in FRAME_SUFFIXES or not stem.isdigit():
                report.add("unexpected_file", path)
            elif int(stem) in frames:
                report.add("duplicate_frame", path, f"frame {int(stem)} is also {frames[int(stem)].name}")
            else:
                frames[int(stem)] = path
        return frames

    def _read_labels(self, label_csv: Path, report: DataReport) -> dict[int, tuple[int, ...]]:
        """Frame number -> the 12 AU values (1, 0, -1) in `BP4D_AU_IDS` order, for one (subject, task) CSV."""
        labels: dict[int, tuple[int, ...]] = {}
        # Bytes that are not UTF-8 become U+FFFD, so that the row fails to parse and is named (not a bare
        # UnicodeDecodeError).
        with open(label_csv, newline="", encoding="utf-8", errors="replace") as file:
            reader = csv.reader(file)
            header = next(reader, [])
            columns = _au_columns(header)
            if isinstance(columns, str):
                bad_data(report, self.config.on_bad_data, "unparseable_label_file", f"{label_csv}:1", columns)
                return labels
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{label_csv}:{reader.line_num}"
                try:
                    number = int(row[0])
                    au = tuple(AU_CODES[int(row[column])] for column in columns)
                except (ValueError, IndexError, KeyError):
                    bad_data(report, self.config.on_bad_data, "unparseable_label_row", where,
                             f"expected a frame number then 0, 1 or 9 in the columns of AUs {BP4D_AU_NUMBERS}, "
                             f"got {row[:12]!r}{'...' if len(row) > 12 else ''}")
                    continue
                if number in labels:
                    bad_data(report, self.config.on_bad_data, "duplicate_label_row", where,
                             f"frame {number} is labelled twice")
                    continue
                labels[number] = au
        return labels


def _au_columns(header: list[str]) -> list[int] | str:
    """The column of each of the 12 AUs in a CSV header (the first column is the frame number), or what is wrong."""
    found: dict[int, int] = {}
    for column, cell in enumerate(header[1:], start=1):
        match = _AU_HEADER.match(cell)
        if match:
            found.setdefault(int(match.group(1)), column)
    missing = [n for n in BP4D_AU_NUMBERS if n not in found]
    if missing:
        return f"the header row has no column for AUs {missing}; got {header[:12]!r}{'...' if len(header) > 12 else ''}"
    return [found[n] for n in BP4D_AU_NUMBERS]


class BP4D(_BP4DFamily):
    """BP4D: 41 subjects x 8 tasks, 12 AUs. Configs `pretrain`, `fold1`-`fold3`. Expected layout: `LAYOUT`."""

    BUILDER_CONFIG_CLASS = BP4DConfig
    BUILDER_CONFIGS = _configs(BP4DConfig, "BP4D", 3,
                               "BP4D pre-training: every frame, with its task; uncoded frames have all AUs -1.")
    LAYOUT = BP4D_LAYOUT
    NAME = "bp4d"
    FRAMES_DIR = "BP4D-training"
    LABEL_DIRS = ("AUCoding/AUCoding", "AUCoding")
    INTENSITY_DIRS = ("AU Intensity Codes3.0", "AUCoding/AU_INT", "AU_INT")
    SUBJECTS = BP4D_SUBJECTS
    ACTIVITIES = BP4D_ACTIVITIES
    DESCRIPTION = ("BP4D-Spontaneous: full camera frames of 41 subjects in 8 emotion-eliciting tasks, with frame-level "
                   "occurrence labels (1 present, 0 absent, -1 not coded) for 12 action units.")

    def _split_subjects(self, subjects_on_disk: list[str]) -> dict[str, tuple[str, ...]]:
        if self.config.fold is None:
            return {"train": tuple(subjects_on_disk)}
        return three_fold_split(BP4D_PARTS, self.config.fold)


class BP4DPlus(_BP4DFamily):
    """BP4D+: 140 subjects x 10 tasks (4 AU-coded), 12 AUs. Configs `pretrain` (with `pretrain_size`, `seed`),
    `fold1`-`fold4`. Expected layout: `LAYOUT`."""

    BUILDER_CONFIG_CLASS = BP4DPlusConfig
    BUILDER_CONFIGS = _configs(BP4DPlusConfig, "BP4D+", BP4D_PLUS_NUM_FOLDS,
                               "BP4D+ pre-training: frames sampled evenly across the 10 tasks (pretrain_size), with "
                               "their task; uncoded frames have all AUs -1.")
    LAYOUT = BP4D_PLUS_LAYOUT
    NAME = "bp4d_plus"
    FRAMES_DIR = "2D+3D"
    LABEL_DIRS = ("AUCoding/AU_OCC",)
    INTENSITY_DIRS = ("AUCoding/AU_INT",)
    SUBJECTS = BP4D_PLUS_SUBJECTS
    ACTIVITIES = BP4D_PLUS_ACTIVITIES
    DESCRIPTION = ("BP4D+ (MMSE): full camera frames of 140 subjects in 10 emotion-eliciting tasks, with frame-level "
                   "occurrence labels (1 present, 0 absent, -1 not coded) for 12 action units in 4 tasks.")

    def _check_config(self) -> None:
        super()._check_config()
        size = self.config.pretrain_size
        if size is not None and self.config.fold is not None:
            raise ValueError(f"pretrain_size applies to the pretrain config only, not {self.config.name!r}.")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"pretrain_size must be a positive number of frames or None (all), got {size!r}.")

    def _split_subjects(self, subjects_on_disk: list[str]) -> dict[str, tuple[str, ...]]:
        if self.config.fold is None:
            return {"train": tuple(subjects_on_disk)}
        return k_fold_split(subjects_on_disk, self.config.fold, BP4D_PLUS_NUM_FOLDS)

    def _scan(self, data_dir: Path | None, report: DataReport) -> dict[str, list[Shard]]:
        splits = super()._scan(data_dir, report)
        if self.config.fold is None and self.config.pretrain_size is not None:
            splits["train"] = self._sample(splits["train"], self.config.pretrain_size, self.config.seed)
        return splits

    def _sample(self, shards: list[Shard], size: int, seed: int) -> list[Shard]:
        """Shards holding `size` frames drawn evenly across tasks, uniformly within each task, reproducibly.

        Only file names are listed here (about 1.5 M for the full set); labels and images are read later, per shard.
        """
        names_by_shard = [sorted(_frame_names(Path(shard.frame_dir))) for shard in shards]
        tasks = list(self.ACTIVITIES)
        by_task = {task: [i for i, shard in enumerate(shards) if shard.task == task] for task in tasks}
        counts = {task: sum(len(names_by_shard[i]) for i in members) for task, members in by_task.items()}
        chosen: list[list[str]] = [[] for _ in shards]
        for task_index, (task, quota) in enumerate(even_quotas(counts, size).items()):
            if quota == 0:
                continue
            # Frame j of the task is frame `j - offset` of shard `members[k]`, for the shard whose range holds j.
            members = by_task[task]
            offsets = np.cumsum([0] + [len(names_by_shard[i]) for i in members])
            rng = np.random.default_rng([seed, task_index])
            for j in np.sort(rng.choice(counts[task], size=quota, replace=False)):
                k = int(np.searchsorted(offsets, j, side="right")) - 1
                chosen[members[k]].append(names_by_shard[members[k]][j - offsets[k]])
        return [shard._replace(frames=tuple(names)) for shard, names in zip(shards, chosen) if names]


def _frame_names(frame_dir: Path) -> list[str]:
    """The frame files of a folder, by the same rule as `_list_frames` (which counts the others when it reads)."""
    with os.scandir(frame_dir) as entries:
        names = [entry.name for entry in entries]
    return [name for name in names
            if os.path.splitext(name)[1].lower() in FRAME_SUFFIXES and os.path.splitext(name)[0].isdigit()]


def even_quotas(counts: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` frames as evenly as possible over the tasks in `counts` (task -> frames available): equal
    shares, capped at what a task has, the shortfall shared again among the others; leftovers go to the first tasks
    in order. Returns task -> frames to take; the sum is `min(total, sum(counts))`."""
    quotas = {task: 0 for task in counts}
    open_tasks = [task for task in counts if counts[task] > 0]
    remaining = min(total, sum(counts.values()))
    while remaining and open_tasks:
        share, extra = divmod(remaining, len(open_tasks))
        for index, task in enumerate(open_tasks):
            give = min(share + (index < extra), counts[task] - quotas[task])
            quotas[task] += give
            remaining -= give
        open_tasks = [task for task in open_tasks if quotas[task] < counts[task]]
    return quotas
