"""DISFA (Mavadati et al., 2013): 27 subjects filmed by a left and a right camera, AU intensities 0-5 per frame.

The `au` column holds occurrence (intensity >= 2, the usual threshold) of the 8 AUs `schema.DISFA_AU_IDS`, and
`au_intensity` their intensities; configs `fold1`-`fold3` are the standard subject-exclusive parts.

Frames come from the released videos, decoded here in order with OpenCV (`video.VideoFrames`), or from frames you
extracted before (`frames_dir`). Frame `n` of the labels (numbered from 1) is frame index `n - 1` of the video.
Decoded frames are stored in the prepared data as JPEG (quality 95), or as face crops with `crop_faces=True`;
pre-extracted frames are referred to by path, as the base builder does.

What does not match is counted in the data report (never dropped silently):
  - `missing_subject_labels`: a subject of the fold has no folder under `ActionUnit_Labels` (the subject is left out).
  - `missing_label_file`: a subject lacks the file of one of the 8 AUs; that AU is unknown (-1) in all its frames.
  - `missing_au_row`: an AU file has no row for a frame that other AU files of the subject label; that AU is unknown
    (-1) in that frame, the frame is kept.
  - `missing_video` / `missing_frame_folder`: a labelled subject has no video (no frame folder) for a camera.
  - `frame_without_label`: a video frame (a frame file) with no label row in any AU file; not stored.
  - `label_without_frame`: a labelled frame beyond the end of the video (with no frame file); not stored.
  - `subject_outside_parts`: a subject folder that is none of the 27 of the standard parts; not used.
  - `unrecognised_frame_file` / `duplicate_frame_file`: under `frames_dir`, a file whose name is no frame number, or
    a second file for the same frame (the first by name is used). A file numbered 0 stops the build with a
    `ValueError`: frames extracted from 0 would all sit one frame off their labels.
Bad data goes through `on_bad_data` (raise, or skip and count): `unparseable_label_row`, `duplicate_label_row`,
`unreadable_video` (OpenCV cannot open it), `unreadable_frame` (a frame inside the video that does not decode; after
one, the rest of that video: see `video.py`), and `unreadable_image` for pre-extracted frames.
Mismatches are counted over all frames, whatever `frame_stride`. `verify_images` does not apply to videos: every
stored frame is decoded anyway.
"""

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
from PIL import Image

from clef_hf.vocabulary import DISFA_AU_NUMBERS

from .data_report import DataReport, MissingDataError, bad_data, require_paths
from .facial_behavior_builder import VERSION, FacialBehaviorBuilder, FacialBehaviorConfig
from .folds import DISFA_PARTS, three_fold_split
from .schema import AU_UNKNOWN, DISFA_AU_IDS, INTENSITY_UNKNOWN, describe, facial_behavior_features
from .video import UnreadableVideoError, VideoFrames

LABELS_DIR = "ActionUnit_Labels"
VIDEO_DIRS = {"left": "Videos_LeftCamera", "right": "Videos_RightCamera"}
VIDEO_NAMES = {"left": "LeftVideo{subject}_comp.avi", "right": "RightVideo{subject}_Comp.avi"}
CAMERAS = ("left", "right", "both")
#: Intensity from which an AU counts as present (the threshold used by the DISFA AU-detection literature).
OCCURRENCE_THRESHOLD = 2
MAX_INTENSITY = 5
#: A bound on label frame numbers, so that a typo cannot make the label arrays huge (DISFA videos have 4,845 frames).
MAX_FRAME_NUMBER = 1_000_000
#: Frames per shard for pre-extracted frames. A video is one shard: it is decoded in order, never by seeking.
FRAMES_PER_SHARD = 1000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_QUALITY = 95

_SUBJECT = re.compile(r"SN\d{3}", re.IGNORECASE)
_LABEL_ROW = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*")

LAYOUT = """\
data_dir/                                    your copy of DISFA as released
  ActionUnit_Labels/SN001/SN001_au1.txt      one file per subject and AU (AUs 1,2,4,5,6,9,12,15,17,20,25,26 are
                                             coded; the 8 AUs 1,2,4,6,9,12,25,26 are read); each line
                                             `frame,intensity`, frames numbered from 1, intensities 0-5
  Videos_LeftCamera/LeftVideoSN001_comp.avi      the left camera (camera="left", the default, or "both")
  Videos_RightCamera/RightVideoSN001_Comp.avi    the right camera (camera="right" or "both")
  Names are matched case-insensitively (the release mixes `_comp` and `_Comp`).
With frames_dir="Frames" (relative to data_dir, or an absolute path), frames you extracted are read instead of the
videos, which are then not needed:
  Frames/left/SN001/00001.png                frame 1 of SN001's left video (`right/` for the right camera); the
                                             file name is the label frame number, from 1 (zero padding optional;
                                             .png, .jpg or .jpeg)"""


@dataclass
class DISFAConfig(FacialBehaviorConfig):
    """DISFA options (pass them to `build_dataset` as keywords).

    Attributes:
        fold: 1, 2 or 3: the standard subject-exclusive part the `test` split holds (set by the config name).
        camera: `"left"` (default, as most papers use), `"right"`, or `"both"` (each labelled frame twice, once per
            camera; the key says which).
        frames_dir: read pre-extracted frames from this folder (see `LAYOUT`) instead of decoding the videos.
        frame_stride: keep every `frame_stride`-th frame (frames 1, 1 + stride, ...); 1 keeps all.
    """

    fold: int = 1
    camera: str = "left"
    frames_dir: str | None = None
    frame_stride: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_disfa_options(self)


def check_disfa_options(config: DISFAConfig) -> None:
    if config.fold not in (1, 2, 3):
        raise ValueError(f"fold must be 1, 2 or 3, got {config.fold!r}.")
    if config.camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {config.camera!r}.")
    if not isinstance(config.frame_stride, int) or config.frame_stride < 1:
        raise ValueError(f"frame_stride must be a positive integer, got {config.frame_stride!r}.")


@dataclass(frozen=True, eq=False)
class VideoShard:
    """One video of one subject: decoded in order by one generation job.

    `intensities[n - 1]` holds the 8 AU intensities of label frame `n` (-1 unknown); a row of -1 is a frame with no
    label row at all.
    """

    subject: str
    camera: str
    video: str
    intensities: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class FramesShard:
    """Up to `FRAMES_PER_SHARD` pre-extracted frames of one subject and camera: `frames[i]` (label frame number) is
    the file `folder/file_names[i]`, with intensities `intensities[i]`."""

    subject: str
    camera: str
    folder: str
    frames: tuple[int, ...]
    file_names: tuple[str, ...] = field(repr=False)
    intensities: np.ndarray = field(repr=False)


def _children(folder: Path) -> dict[str, Path]:
    """`folder`'s entries by lower-cased name (the release's capitalisation is inconsistent)."""
    return {path.name.lower(): path for path in folder.iterdir()}


def _child(folder: Path, name: str) -> Path:
    """`folder/name`, matched case-insensitively; `folder/name` as written when nothing matches."""
    if folder.is_dir():
        return _children(folder).get(name.lower(), folder / name)
    return folder / name


class DISFA(FacialBehaviorBuilder):
    """DISFA, configs `fold1`-`fold3` with splits `train` and `test`. Expected layout: `LAYOUT`."""

    BUILDER_CONFIG_CLASS = DISFAConfig
    BUILDER_CONFIGS = [
        DISFAConfig(name=f"fold{fold}", fold=fold, version=VERSION,
                    description=f"DISFA fold {fold} of the standard subject-exclusive three-fold split.")
        for fold in (1, 2, 3)
    ]
    DEFAULT_CONFIG_NAME = "fold1"
    LAYOUT = LAYOUT

    def _info(self) -> datasets.DatasetInfo:
        text = (
            "DISFA: 27 subjects filmed while watching video clips, left and right cameras, AU intensities 0-5 coded "
            f"per frame. `au`: occurrence (intensity >= {OCCURRENCE_THRESHOLD}) of the 8 evaluated AUs; "
            "`au_intensity`: their intensities, -1 where unknown. Camera: "
            f"{self.config.camera}; frame stride {self.config.frame_stride}."
        )
        return datasets.DatasetInfo(
            description=describe(text, DISFA_AU_IDS),
            features=facial_behavior_features(au=True, au_intensity=True),
            homepage="http://mohammadmahoor.com/disfa/",
        )

    # ---------------------------------------------------------------- scan (main process)

    def _scan(self, data_dir: Path | None, report: DataReport) -> dict[str, list]:
        config = self.config
        check_disfa_options(config)  # options passed as keywords bypass the config's __post_init__
        cameras = ("left", "right") if config.camera == "both" else (config.camera,)
        root = require_paths(data_dir, [], "disfa", LAYOUT)
        labels_dir = _child(root, LABELS_DIR)
        if config.frames_dir is None:
            sources = {camera: _child(root, VIDEO_DIRS[camera]) for camera in cameras}
            required = [labels_dir, *sources.values()]
        else:
            frames_root = root / Path(config.frames_dir).expanduser()  # an absolute frames_dir replaces root
            sources = {camera: _child(frames_root, camera) for camera in cameras}
            required = [labels_dir, frames_root, *sources.values()]
        require_paths(root, [str(path) for path in required], "disfa", LAYOUT)
        source_entries = {camera: _children(folder) for camera, folder in sources.items()}

        label_folders = {}
        for path in sorted(labels_dir.iterdir()):
            if path.is_dir() and _SUBJECT.fullmatch(path.name):
                label_folders[path.name.upper()] = path
        known = {subject for part in DISFA_PARTS for subject in part}
        for subject in sorted(set(label_folders) - known):
            report.add("subject_outside_parts", label_folders[subject])

        splits = {}
        for split, subjects in three_fold_split(DISFA_PARTS, config.fold).items():
            shards = []
            for subject in sorted(subjects):
                if subject not in label_folders:
                    report.add("missing_subject_labels", labels_dir / subject)
                    continue
                intensities = self._read_labels(subject, label_folders[subject], report)
                if intensities is None:
                    continue
                for camera in cameras:
                    if config.frames_dir is None:
                        shards.extend(self._video_shards(subject, camera, sources[camera],
                                                         source_entries[camera], intensities, report))
                    else:
                        shards.extend(self._frames_shards(subject, camera, sources[camera],
                                                          source_entries[camera], intensities, report))
            if not shards:
                raise MissingDataError(
                    f"disfa {config.name}: none of the {split} subjects ({', '.join(subjects)}) has both labels and "
                    f"{'frames' if config.frames_dir else 'a video'} under {root}.\nExpected layout:\n{LAYOUT}"
                )
            splits[split] = shards
        return splits

    def _read_labels(self, subject: str, folder: Path, report: DataReport) -> np.ndarray | None:
        """The subject's intensities, shape (last labelled frame, 8), int8, -1 unknown; row `n - 1` is frame `n`.
        None if none of the 8 AU files is there."""
        files = _children(folder)
        columns: list[dict[int, int] | None] = []
        paths = []
        for number in DISFA_AU_NUMBERS:
            path = files.get(f"{subject}_au{number}.txt".lower())
            paths.append(path)
            if path is None:
                report.add("missing_label_file", folder / f"{subject}_au{number}.txt")
                columns.append(None)
            else:
                columns.append(self._read_label_file(path, report))
        present = [column for column in columns if column is not None]
        if not present:
            return None
        labelled = sorted(set().union(*present))
        intensities = np.full((labelled[-1] if labelled else 0, len(DISFA_AU_NUMBERS)), AU_UNKNOWN, dtype=np.int8)
        for au_index, (column, path) in enumerate(zip(columns, paths)):
            if column is None:
                continue
            for frame in labelled:
                value = column.get(frame)
                if value is None:
                    report.add("missing_au_row", path, f"frame {frame}")
                else:
                    intensities[frame - 1, au_index] = value
        return intensities

    def _read_label_file(self, path: Path, report: DataReport) -> dict[int, int]:
        """`{frame: intensity}` of one AU file (`frame,intensity` per line)."""
        values: dict[int, int] = {}
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            match = _LABEL_ROW.fullmatch(line)
            frame, intensity = (int(match[1]), int(match[2])) if match else (0, 0)
            if not match or not 1 <= frame <= MAX_FRAME_NUMBER or intensity > MAX_INTENSITY:
                bad_data(report, self.config.on_bad_data, "unparseable_label_row", f"{path}:{number}",
                         f"expected `frame,intensity` with frame >= 1 and intensity 0-{MAX_INTENSITY}, got {line!r}")
                continue
            if frame in values:
                bad_data(report, self.config.on_bad_data, "duplicate_label_row", f"{path}:{number}",
                         f"frame {frame} is labelled twice; the first row is kept")
                continue
            values[frame] = intensity
        return values

    def _video_shards(self, subject: str, camera: str, folder: Path, entries: dict[str, Path],
                      intensities: np.ndarray, report: DataReport) -> list[VideoShard]:
        name = VIDEO_NAMES[camera].format(subject=subject)
        video = entries.get(name.lower())
        if video is None:
            report.add("missing_video", folder / name)
            return []
        return [VideoShard(subject, camera, str(video), intensities)]

    def _frames_shards(self, subject: str, camera: str, folder: Path, entries: dict[str, Path],
                       intensities: np.ndarray, report: DataReport) -> list[FramesShard]:
        subject_folder = entries.get(subject.lower())
        if subject_folder is None or not subject_folder.is_dir():
            report.add("missing_frame_folder", folder / subject)
            return []
        files: dict[int, str] = {}
        for path in sorted(subject_folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.stem.isdigit():
                report.add("unrecognised_frame_file", path)
            elif int(path.stem) in files:
                report.add("duplicate_frame_file", path, f"frame {int(path.stem)} is also {files[int(path.stem)]}")
            elif int(path.stem) == 0:
                # Skipping it would not help: every other file would still sit one frame off its labels.
                raise ValueError(
                    f"disfa: {path} is numbered 0, but frame files are numbered from 1 like the label rows (the "
                    "file for label frame n is n.png/.jpg). Renumber the extracted frames from 1."
                )
            else:
                files[int(path.stem)] = path.name
        labelled = set(np.flatnonzero((intensities >= 0).any(axis=1)) + 1)
        for frame in sorted(set(files) - labelled):
            report.add("frame_without_label", subject_folder / files[frame])
        for frame in sorted(labelled - set(files)):
            report.add("label_without_frame", subject_folder, f"frame {frame}")
        kept = [frame for frame in sorted(labelled & set(files)) if (frame - 1) % self.config.frame_stride == 0]
        return [
            FramesShard(subject, camera, str(subject_folder), tuple(chunk), tuple(files[f] for f in chunk),
                        intensities[np.asarray(chunk, dtype=np.int64) - 1])
            for chunk in (kept[i : i + FRAMES_PER_SHARD] for i in range(0, len(kept), FRAMES_PER_SHARD))
        ]

    # ---------------------------------------------------------------- generation (worker processes)

    def _examples(self, shard: VideoShard | FramesShard, report: DataReport) -> Iterator[tuple[str, dict]]:
        if isinstance(shard, VideoShard):
            yield from self._video_examples(shard, report)
        else:
            yield from self._frames_examples(shard, report)

    def _example(self, shard: VideoShard | FramesShard, frame: int, image, intensities: np.ndarray):
        au = np.where(intensities < 0, AU_UNKNOWN, intensities >= OCCURRENCE_THRESHOLD).astype(np.int8)
        au_intensity = np.where(intensities < 0, INTENSITY_UNKNOWN, intensities).astype(np.float32)
        key = f"{shard.subject}/{shard.camera}/{frame:05d}"
        return key, {"image": image, "subject": shard.subject, "au": au.tolist(), "au_intensity": au_intensity.tolist()}

    def _frames_examples(self, shard: FramesShard, report: DataReport):
        for frame, name, intensities in zip(shard.frames, shard.file_names, shard.intensities):
            image = self.load_image(Path(shard.folder) / name, report)
            if image is not None:
                yield self._example(shard, frame, image, intensities)

    def _video_examples(self, shard: VideoShard, report: DataReport):
        labelled = (shard.intensities >= 0).any(axis=1)
        stride = self.config.frame_stride
        wanted = {index for index in np.flatnonzero(labelled).tolist() if index % stride == 0}
        try:
            video = VideoFrames(shard.video)
        except UnreadableVideoError as error:
            bad_data(report, self.config.on_bad_data, "unreadable_video", shard.video, str(error))
            return
        with video:
            for index, rgb in video.read(wanted):
                frame = index + 1
                source = f"{shard.video}:frame{frame}"
                if rgb is None:
                    detail = "OpenCV could not decode this frame"
                    if video.broken_at is not None and index > video.broken_at:
                        detail = (f"after the decoding error at frame {video.broken_at + 1}, later frames cannot be "
                                  "matched to their labels with certainty")
                    bad_data(report, self.config.on_bad_data, "unreadable_frame", source, detail)
                    continue
                image = self._frame_value(rgb, source, report)
                if image is not None:
                    yield self._example(shard, frame, image, shard.intensities[index])
        for index in range(video.length):
            if index >= len(labelled) or not labelled[index]:
                report.add("frame_without_label", f"{shard.video}:frame{index + 1}")
        for index in np.flatnonzero(labelled[video.length:]).tolist():
            report.add("label_without_frame", f"{shard.video}:frame{video.length + index + 1}",
                       f"the video has {video.length} frames")

    def _frame_value(self, rgb: np.ndarray, source: str, report: DataReport) -> dict | None:
        """A decoded frame as an `image` value: its face crop with `crop_faces` (None, counted, without a face),
        else the whole frame as JPEG."""
        image = Image.fromarray(rgb)
        if self.config.crop_faces:
            return self.crop(image, source, report)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return {"bytes": buffer.getvalue(), "path": None}
