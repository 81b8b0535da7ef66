"""The `synthfaces` builder: procedural synthetic faces (`generator.py`) in the schema every builder fills.

Subjects are recorded during the 8 BP4D tasks; each task shapes which displays (and so which AUs and expressions)
occur, as the tasks of BP4D do. Subjects are numbered from `first_subject`; the `test` split holds the last
`num_test_subjects` of them, the `validation` split the `num_validation_subjects` before those, and the `train` split
the others (train | validation | test, subject-exclusive). One shard is one (subject, task) pair, and every frame is
drawn from its own seed `(seed, subject, task, frame)`, so the data are the same for any `num_proc`. Each frame also
has a web-style `caption` (`captions.py`) for stage 0's image-text pre-training.

    from dataset_builders import build_dataset
    splits = build_dataset("synthfaces", num_subjects=16, num_test_subjects=4, image_size=64, seed=0)
    # 200 more subjects (S1001...), disjoint from those above, for stage 0:
    captioned = build_dataset("synthfaces", first_subject=1000, num_subjects=200, num_test_subjects=0)
"""

from dataclasses import dataclass

import datasets

from clef_hf.vocabulary import BP4D_ACTIVITIES

from ..data_report import DataReport
from ..facial_behavior_builder import VERSION, FacialBehaviorBuilder, FacialBehaviorConfig
from ..schema import EXPRESSIONS_8, describe, facial_behavior_features
from .captions import MAX_MOVEMENTS, caption_of, caption_rng
from .generator import (
    ACTIVITIES,
    AU_NUMBERS,
    INTENSITY_THRESHOLD,
    encode_png,
    render_frame,
    sample_frame,
    sample_identity,
)

AU_IDS: tuple[str, ...] = tuple(f"AU{n}" for n in AU_NUMBERS)

DESCRIPTION = (
    "Synthetic faces drawn procedurally by clef-hf (dataset_builders/synthfaces). Each subject has its own face "
    "shape, skin tone, feature placement, hair, and sometimes glasses or a beard; frames vary in rotation, scale, "
    "position, lighting and noise. Subjects are recorded during the 8 BP4D tasks (T1-T8), which shape the displays "
    "shown. Action units are drawn as geometric changes whose size scales with their intensity (0-5); an AU is "
    f"present (au = 1) when its intensity is at least {INTENSITY_THRESHOLD:g}, absent (0) otherwise, never unknown. "
    "Expressions are AU combinations: happiness 6+12, sadness 1+4+15, surprise 1+2+5+26, fear 1+2+4+5+20+26, "
    "disgust 9+10 or 9+15+17 (pain, 4+6+7+9+10, counts as disgust), anger 4+5+7+23, contempt 12 and/or 14 on one "
    "side only, neutral no AU; extra AUs never change the expression. Splits are subject-exclusive. Each frame has a "
    "caption in lay words (hair, glasses, beard, skin, and the visible movements of the face), never naming AUs or "
    "expression classes."
)


@dataclass
class SynthFacesConfig(FacialBehaviorConfig):
    """Options of the synthetic faces (pass them to `build_dataset` as keywords).

    Attributes:
        num_subjects: subjects in all, train, validation and test together.
        num_test_subjects: subjects in the `test` split (the last ones).
        num_validation_subjects: subjects in the `validation` split (those just before the test subjects); 0 makes
            no validation split. The others are in `train`.
        first_subject: the index of the first subject: subjects `first_subject .. first_subject + num_subjects - 1`
            (ids S{index + 1}), so that sets built with disjoint ranges share no subject.
        frames_per_activity: frames per subject and task.
        image_size: side of the square images, in pixels.
        seed: the data set's seed; the same seed gives byte-identical images, labels and captions.
        caption_movements: at most this many movements of the face are named in a caption, the most conspicuous
            first (`captions.MAX_MOVEMENTS`, every movement, by default); a frame shows up to 7.
    """

    num_subjects: int = 16
    num_test_subjects: int = 4
    num_validation_subjects: int = 0
    first_subject: int = 0
    frames_per_activity: int = 24
    image_size: int = 64
    seed: int = 0
    caption_movements: int = MAX_MOVEMENTS

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self) -> None:
        """Raise a ValueError naming the first option out of range. `build_dataset`'s keywords are set on the config
        after `__post_init__`, so the builder calls this again before generating."""
        if self.num_subjects < 1:
            raise ValueError(f"num_subjects must be at least 1, got {self.num_subjects}.")
        if not 0 <= self.num_test_subjects <= self.num_subjects:
            raise ValueError(
                f"num_test_subjects must lie in [0, num_subjects={self.num_subjects}], got {self.num_test_subjects}."
            )
        if not 0 <= self.num_validation_subjects <= self.num_subjects - self.num_test_subjects:
            raise ValueError(
                f"num_validation_subjects must lie in [0, num_subjects - num_test_subjects = "
                f"{self.num_subjects - self.num_test_subjects}], got {self.num_validation_subjects}."
            )
        if self.first_subject < 0:
            raise ValueError(f"first_subject must be a non-negative subject index, got {self.first_subject}.")
        if self.frames_per_activity < 1:
            raise ValueError(f"frames_per_activity must be at least 1, got {self.frames_per_activity}.")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}.")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}.")
        if self.caption_movements < 0:
            raise ValueError(f"caption_movements must be a non-negative count, got {self.caption_movements}.")
        if self.crop_faces:
            raise ValueError("crop_faces does not apply to synthfaces: its images are face crops already.")


def subject_id(subject_index: int) -> str:
    return f"S{subject_index + 1:03d}"


def split_subject_indices(config: SynthFacesConfig) -> dict[str, range]:
    """The subject indices of each split: train | validation | test, consecutive from `config.first_subject`."""
    first, end = config.first_subject, config.first_subject + config.num_subjects
    test_start = end - config.num_test_subjects
    validation_start = test_start - config.num_validation_subjects
    return {"train": range(first, validation_start), "validation": range(validation_start, test_start),
            "test": range(test_start, end)}


class SynthFaces(FacialBehaviorBuilder):
    """Synthetic faces with AU occurrence and intensity, 8-class expressions and BP4D's tasks; needs no data_dir."""

    BUILDER_CONFIG_CLASS = SynthFacesConfig
    BUILDER_CONFIGS = [SynthFacesConfig(name="default", version=VERSION, description="Synthetic faces.")]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=describe(DESCRIPTION, AU_IDS),
            features=facial_behavior_features(
                subject=True, activity=True, au=True, au_intensity=True, expressions=EXPRESSIONS_8, caption=True
            ),
        )

    def _scan(self, data_dir, report: DataReport) -> dict[str, list]:
        self.config.check()
        return {
            split: [(subject, activity) for subject in subjects for activity in ACTIVITIES]
            for split, subjects in split_subject_indices(self.config).items()
            if len(subjects)
        }

    def _examples(self, shard: tuple[int, str], report: DataReport):
        subject_index, activity = shard
        config = self.config
        identity = sample_identity(config.seed, subject_index)
        description = BP4D_ACTIVITIES[activity].description
        for frame_index in range(config.frames_per_activity):
            frame = sample_frame(config.seed, identity, activity, frame_index)
            image = render_frame(identity, frame, config.image_size)
            key = f"{subject_id(subject_index)}_{activity}_{frame_index:05d}"
            yield key, {
                "image": {"bytes": encode_png(image), "path": None},
                "subject": subject_id(subject_index),
                "activity": activity,
                "activity_description": description,
                "au": frame.au.tolist(),
                "au_intensity": [round(float(i), 3) for i in frame.au_intensity],
                "expression": frame.expression,
                "caption": caption_of(identity, frame, caption_rng(config.seed, subject_index, activity, frame_index),
                                      config.caption_movements),
            }
