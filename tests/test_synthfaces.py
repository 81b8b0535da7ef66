"""The synthetic faces: a deterministic generator whose labels agree with what it draws, captions in lay words of what
it draws, and a builder that fills the shared schema with subject-exclusive splits, the same for any seed-preserving
rebuild and any num_proc."""

import re
from collections import Counter

import datasets
import numpy as np
import pytest

from clef_hf.vocabulary import ACTION_UNITS, BP4D_ACTIVITIES, EXPRESSIONS
from dataset_builders import au_ids_of, build_dataset
from dataset_builders.schema import EXPRESSIONS_8, facial_behavior_features
from dataset_builders.synthfaces import AU_IDS, SynthFacesConfig
from dataset_builders.synthfaces.captions import caption_of, caption_rng
from dataset_builders.synthfaces.generator import (
    ACTIVITIES,
    AU_INDEX,
    AU_NUMBERS,
    DISPLAYS,
    INTENSITY_THRESHOLD,
    LEFT,
    RIGHT,
    Frame,
    Pose,
    display_intensities,
    expression_of,
    project,
    render_face,
    render_frame,
    sample_frame,
    sample_identity,
)

SMALL = {"num_subjects": 3, "num_test_subjects": 1, "frames_per_activity": 2, "image_size": 32}
ROWS_PER_SUBJECT = len(ACTIVITIES) * SMALL["frames_per_activity"]


def build(cache_dir, **options):
    splits, report = build_dataset("synthfaces", cache_dir=str(cache_dir), return_report=True, **{**SMALL, **options})
    assert not report, report.summary()
    return splits


def raw_rows(split: datasets.Dataset) -> list[dict]:
    """Every row with the image as its encoded bytes, to compare files byte for byte."""
    return list(split.cast_column("image", datasets.Image(decode=False)))


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    return build(tmp_path_factory.mktemp("seed0"), seed=0)


# ---------------------------------------------------------------------------------------------- the builder


def test_same_seed_gives_identical_data_and_another_seed_differs(seed0, tmp_path):
    again = build(tmp_path / "again", seed=0)
    other = build(tmp_path / "other", seed=1)
    for split in ("train", "test"):
        assert raw_rows(again[split]) == raw_rows(seed0[split])
        first, second = raw_rows(seed0[split]), raw_rows(other[split])
        assert len(first) == len(second)
        assert sum(a["image"]["bytes"] != b["image"]["bytes"] for a, b in zip(first, second)) == len(first)
        assert [a["au"] for a in first] != [b["au"] for b in second]


def test_num_proc_does_not_change_the_data(seed0, tmp_path):
    parallel = build(tmp_path / "parallel", seed=0, num_proc=2)
    for split in ("train", "test"):
        assert raw_rows(parallel[split]) == raw_rows(seed0[split])


def test_splits_are_subject_exclusive(seed0):
    train, test = set(seed0["train"]["subject"]), set(seed0["test"]["subject"])
    assert train == {"S001", "S002"} and test == {"S003"}
    assert len(seed0["train"]) == 2 * ROWS_PER_SUBJECT and len(seed0["test"]) == ROWS_PER_SUBJECT


def test_schema_columns_and_au_order(seed0):
    expected = facial_behavior_features(subject=True, activity=True, au=True, au_intensity=True,
                                        expressions=EXPRESSIONS_8, caption=True)
    for split in seed0.values():
        assert split.features == expected
        assert split.column_names == ["image", "subject", "activity", "activity_description", "au", "au_intensity",
                                      "expression", "caption"]
        assert au_ids_of(split) == list(AU_IDS) == [f"AU{n}" for n in AU_NUMBERS]
        assert split.features["expression"].names == list(EXPRESSIONS_8)
        for row in split:
            assert len(row["au"]) == len(row["au_intensity"]) == len(AU_NUMBERS)
            assert row["au"] == [int(i >= INTENSITY_THRESHOLD) for i in row["au_intensity"]]
            assert all(0.0 <= i <= 5.0 for i in row["au_intensity"])
            assert row["image"].mode == "RGB" and row["image"].size == (32, 32)


def test_activities_are_the_bp4d_tasks_with_their_texts(seed0):
    rows = list(seed0["train"].remove_columns("image")) + list(seed0["test"].remove_columns("image"))
    assert Counter(row["activity"] for row in rows) == {task: 3 * SMALL["frames_per_activity"] for task in ACTIVITIES}
    assert list(ACTIVITIES) == list(BP4D_ACTIVITIES)
    for row in rows:
        assert row["activity_description"] == BP4D_ACTIVITIES[row["activity"]].description


def test_rows_are_the_generator_frames(seed0):
    """Each row holds, in order, the image and labels the generator draws for its (subject, task, frame)."""
    names = seed0["test"].features["expression"].names
    identity = sample_identity(0, 2)  # S003, the test subject
    frames = SMALL["frames_per_activity"]
    for position, row in enumerate(seed0["test"]):
        activity = ACTIVITIES[position // frames]
        frame = sample_frame(0, identity, activity, position % frames)
        assert row["activity"] == activity
        assert np.array_equal(np.asarray(row["image"]), np.asarray(render_frame(identity, frame, 32)))
        assert row["au"] == frame.au.tolist()
        np.testing.assert_allclose(row["au_intensity"], frame.au_intensity, atol=1e-3)
        assert names[row["expression"]] == frame.expression
        assert row["caption"] == caption_of(identity, frame, caption_rng(0, 2, activity, position % frames))


def test_image_size_option(tmp_path):
    splits = build(tmp_path, num_subjects=1, num_test_subjects=0, frames_per_activity=1, image_size=48)
    assert list(splits) == ["train"]
    assert {image.size for image in splits["train"]["image"]} == {(48, 48)}


def test_first_subject_gives_subjects_disjoint_from_the_default_ones(seed0, tmp_path):
    more = build(tmp_path, first_subject=1000, num_subjects=2, num_test_subjects=0, frames_per_activity=1)
    assert list(more) == ["train"]
    assert set(more["train"]["subject"]) == {"S1001", "S1002"}
    default_subjects = set(seed0["train"]["subject"]) | set(seed0["test"]["subject"])
    assert default_subjects.isdisjoint(more["train"]["subject"])
    # Other subjects are other faces: no image of the new set is one of the default set's.
    default_images = {row["image"]["bytes"] for split in seed0.values() for row in raw_rows(split)}
    assert not default_images & {row["image"]["bytes"] for row in raw_rows(more["train"])}


def test_validation_split_lies_between_train_and_test_subjects(seed0, tmp_path):
    assert list(seed0) == ["train", "test"]  # no validation split unless asked for
    splits = build(tmp_path, num_subjects=4, num_test_subjects=1, num_validation_subjects=1, frames_per_activity=1)
    assert list(splits) == ["train", "validation", "test"]
    subjects = {name: set(split["subject"]) for name, split in splits.items()}
    assert subjects == {"train": {"S001", "S002"}, "validation": {"S003"}, "test": {"S004"}}
    assert len(splits["validation"]) == len(ACTIVITIES)
    # The validation subject is the same face whether or not it is split off: only the split assignment changes.
    merged = build(tmp_path / "merged", num_subjects=4, num_test_subjects=1, frames_per_activity=1)
    assert raw_rows(merged["train"])[-len(ACTIVITIES):] == raw_rows(splits["validation"])


@pytest.mark.parametrize(
    "options, message",
    [({"num_test_subjects": 5}, "num_test_subjects"), ({"frames_per_activity": 0}, "frames_per_activity"),
     ({"image_size": 8}, "image_size"), ({"crop_faces": True}, "crop_faces"),
     ({"num_validation_subjects": 3}, "num_validation_subjects"), ({"first_subject": -1}, "first_subject")],
)
def test_invalid_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        SynthFacesConfig(name="bad", **{**SMALL, **options})


def test_invalid_options_passed_to_build_dataset_are_named(tmp_path):
    """`build_dataset`'s keywords reach the config after its __post_init__; the builder checks them again."""
    with pytest.raises(ValueError, match="num_validation_subjects"):
        build(tmp_path, num_validation_subjects=3)


# ---------------------------------------------------------------------------------------------- the captions


#: Words a caption must never hold: FACS names, AU codes, and the expression classes and their label names.
FORBIDDEN = sorted({au.name for au in ACTION_UNITS.values()} | set(EXPRESSIONS)
                   | {expression.name for expression in EXPRESSIONS.values()})


def forbidden_words(caption: str) -> list[str]:
    found = [word for word in FORBIDDEN if word in caption.lower()]
    return found + re.findall(r"\bau ?\d+", caption.lower())


def test_captions_read_like_web_captions_without_label_words(seed0):
    captions = list(seed0["train"]["caption"]) + list(seed0["test"]["caption"])
    assert all(isinstance(caption, str) and caption.strip() for caption in captions)
    for caption in captions:
        assert not forbidden_words(caption), caption
        assert re.match(r"^(close-up of |portrait of |photo of |headshot of )?an? ", caption), caption
    assert len(set(captions)) > 0.8 * len(captions)  # worded with variety, not one caption per display


def test_captions_are_deterministic_and_worded_with_variety():
    identity = sample_identity(0, 4)
    frame = sample_frame(0, identity, "T1", 3)
    first = caption_of(identity, frame, caption_rng(0, 4, "T1", 3))
    assert first == caption_of(identity, frame, caption_rng(0, 4, "T1", 3))
    # The same frame with other random wording: several phrasings of the same content.
    wordings = {caption_of(identity, frame, np.random.default_rng(k)) for k in range(30)}
    assert len(wordings) > 5


def frame_with(intensities: dict[int, float | tuple[float, float]], identity_subject: int = 1) -> tuple:
    """A neutral-pose frame of subject `identity_subject` with the given AU intensities (a value, or (left, right))."""
    values = np.zeros((2, len(AU_NUMBERS)))
    for au, value in intensities.items():
        values[:, AU_INDEX[au]] = value
    identity = sample_identity(0, identity_subject)
    frame = Frame("custom", expression_of(*(
        {au for au in AU_NUMBERS if values[side, AU_INDEX[au]] >= INTENSITY_THRESHOLD} for side in (LEFT, RIGHT))),
        values, Pose())
    return identity, frame


def captions_of(identity, frame, count: int = 40) -> list[str]:
    return [caption_of(identity, frame, np.random.default_rng(k)) for k in range(count)]


@pytest.mark.parametrize("au, pattern", [
    (9, r"nose"), (12, r"smil|grin"), (4, r"frown|\bbrows?\b"), (5, r"wide|glar|star"),
    (15, r"down"), (24, r"pressed"), (26, r"open"), (17, r"chin|pout"),
])
def test_captions_name_present_movements_and_leave_faint_traces_out(au, pattern):
    identity, present = frame_with({au: 3.5})
    for caption in captions_of(identity, present):
        assert re.search(pattern, caption), caption
    identity, trace = frame_with({au: 1.2})  # drawn, below the presence threshold
    for caption in captions_of(identity, trace):
        assert not re.search(pattern, caption), caption


def test_one_sided_smile_is_a_smirk_and_a_neutral_face_has_no_movement():
    identity, one_sided = frame_with({12: (4.0, 0.0)})
    for caption in captions_of(identity, one_sided):
        assert re.search(r"smirk|half smile|one corner", caption), caption
    identity, neutral = frame_with({})
    movement = r"smil|smirk|frown|\bbrows?\b|eyes|nose|lip|mouth|chin|pout|sneer|squint|glar"
    for caption in captions_of(identity, neutral):
        assert not re.search(movement, caption), caption


def test_captions_describe_the_identity_as_drawn():
    """Glasses and beards are named only on faces that have them, and the hair as drawn (bald heads have none)."""
    for subject in range(12):
        identity = sample_identity(0, subject)
        captions = [caption_of(identity, sample_frame(0, identity, activity, index),
                               caption_rng(0, subject, activity, index))
                    for activity in ACTIVITIES for index in range(10)]
        glasses = sum(any(word in c for word in ("glasses", "spectacles")) for c in captions)
        beard = sum(any(word in c for word in ("beard", "stubble")) for c in captions)
        hair = sum(" hair" in c or "curls" in c or "fringe" in c for c in captions)
        assert (glasses > len(captions) / 2) if identity.glasses is not None else glasses == 0
        assert (beard > len(captions) / 2) if identity.beard != "none" else beard == 0
        assert all(" man" not in c and "guy" not in c for c in captions) or identity.beard != "none"
        if identity.hair_style == "bald":
            assert hair == 0
        else:
            assert hair > len(captions) / 3


# ---------------------------------------------------------------------------------------------- the generator


def sample_frames(seed: int = 0, subjects: int = 6, frames: int = 40):
    for subject in range(subjects):
        identity = sample_identity(seed, subject)
        for activity in ACTIVITIES:
            for index in range(frames):
                yield activity, sample_frame(seed, identity, activity, index)


def test_generator_is_deterministic_per_seed():
    assert sample_identity(3, 1) == sample_identity(3, 1)
    assert sample_identity(3, 1) != sample_identity(4, 1)
    identity = sample_identity(3, 1)
    first, second = sample_frame(3, identity, "T6", 5), sample_frame(3, identity, "T6", 5)
    assert first.display == second.display and first.pose == second.pose
    np.testing.assert_array_equal(first.intensities, second.intensities)
    assert np.array_equal(np.asarray(render_frame(identity, first, 40)), np.asarray(render_frame(identity, second, 40)))
    assert render_frame(identity, first, 40).size == (40, 40)
    assert sample_frame(3, identity, "T6", 6).pose != first.pose


def test_labels_agree_with_the_drawn_aus():
    seen = Counter()
    for _, frame in sample_frames():
        present = frame.au_intensity >= INTENSITY_THRESHOLD
        assert frame.au.tolist() == present.astype(int).tolist()
        # An AU is labelled present when it is drawn at or above the threshold on either side of the face.
        assert {n for n, a in zip(AU_NUMBERS, frame.au) if a} == frame.present(LEFT) | frame.present(RIGHT)
        np.testing.assert_array_equal(frame.au_intensity, frame.intensities.max(axis=0))
        assert frame.expression == expression_of(frame.present(LEFT), frame.present(RIGHT))
        assert frame.expression == DISPLAYS[frame.display].expression
        if frame.expression == "neutral":
            assert not frame.intensities.any()  # neutral frames draw nothing, not even faint traces
        else:
            display = DISPLAYS[frame.display]
            assert display.aus <= frame.present(LEFT) & frame.present(RIGHT)
            one_sided = (frame.present(LEFT) ^ frame.present(RIGHT)) & display.one_sided
            assert bool(one_sided) == bool(display.one_sided)  # contempt is drawn on one side only
        seen[frame.expression] += 1
    assert set(seen) == set(EXPRESSIONS_8)


def test_each_display_makes_its_expression():
    for display in DISPLAYS.values():
        left = display.aus
        right = display.aus | display.one_sided
        assert expression_of(left, right) == display.expression, display.name
        assert expression_of(right, left) == display.expression, display.name
    assert expression_of({6, 12}, {6}) == "contempt"  # a one-sided smile is not happiness
    assert expression_of({1, 2, 4, 5, 20, 26}, {1, 2, 4, 5, 20, 26}) == "fear"  # surprise's AUs within fear
    assert expression_of({6, 12, 1, 4, 15}, {6, 12, 1, 4, 15}) is None  # two expressions at once


def test_activities_shape_the_expressions():
    by_activity = {activity: Counter() for activity in ACTIVITIES}
    au_rate = {activity: np.zeros(len(AU_NUMBERS)) for activity in ACTIVITIES}
    for activity, frame in sample_frames(subjects=8, frames=30):
        by_activity[activity][frame.expression] += 1
        au_rate[activity] += frame.au
    expected = {"T1": "happiness", "T2": "sadness", "T3": "surprise", "T4": "happiness", "T5": "fear",
                "T6": "disgust", "T7": "anger", "T8": "disgust"}
    assert {activity: counts.most_common(1)[0][0] for activity, counts in by_activity.items()} == expected
    for activity in ACTIVITIES:
        assert 0.05 < by_activity[activity]["neutral"] / sum(by_activity[activity].values()) < 0.4
    pain = au_rate["T6"] / sum(by_activity["T6"].values())
    assert all(pain[AU_INDEX[au]] > 0.4 for au in (4, 6, 7, 9, 10))
    assert by_activity["T4"]["contempt"] > by_activity["T3"]["contempt"]


#: Where each AU's drawing may change pixels: a band of canonical y from one landmark to another, with margins.
def au_band(identity, au: int) -> tuple[float, float]:
    forehead = identity.brow_y - 0.12
    bands = {
        1: (forehead, identity.eye_y + 0.02), 2: (forehead, identity.eye_y + 0.02),
        4: (forehead, identity.eye_y + 0.02), 5: (identity.eye_y - 0.05, identity.eye_y + 0.04),
        7: (identity.eye_y - 0.05, identity.eye_y + 0.04), 6: (identity.eye_y - 0.03, identity.mouth_y + 0.04),
        9: (identity.brow_y - 0.03, identity.mouth_y + 0.04), 10: (identity.nose_tip_y - 0.04, identity.mouth_y + 0.05),
        17: (identity.mouth_y - 0.03, identity.chin_y + 0.02), 26: (identity.mouth_y - 0.03, identity.chin_y + 0.08),
    }
    return bands.get(au, (identity.nose_tip_y - 0.03, identity.chin_y))


def pixel_rows(band: tuple[float, float], size: int) -> slice:
    (_, top), (_, bottom) = project([(0.5, band[0]), (0.5, band[1])], Pose())
    return slice(max(0, int(np.floor(top * size))), int(np.ceil(bottom * size)))


@pytest.mark.parametrize("subject", [0, 1, 2, 5])
def test_each_au_changes_the_face_where_it_acts(subject):
    size = 96
    identity = sample_identity(0, subject)
    rest = np.asarray(render_face(identity, np.zeros((2, len(AU_NUMBERS))), Pose(), size), dtype=float)
    for au in AU_NUMBERS:
        changes = []
        for intensity in (2.0, 5.0):
            intensities = np.zeros((2, len(AU_NUMBERS)))
            intensities[:, AU_INDEX[au]] = intensity
            moved = np.asarray(render_face(identity, intensities, Pose(), size), dtype=float)
            changes.append(np.abs(moved - rest).sum(axis=2))
        weak, strong = changes
        assert 0 < weak.sum() < strong.sum(), f"AU{au}: the change must grow with the intensity"
        inside = strong[pixel_rows(au_band(identity, au), size)].sum()
        assert inside / strong.sum() > 0.9, f"AU{au} changed pixels outside its region ({inside / strong.sum():.2f})"


def test_one_sided_aus_change_one_side_only():
    identity = sample_identity(0, 0)
    rest = np.asarray(render_face(identity, np.zeros((2, len(AU_NUMBERS))), Pose(), 96), dtype=float)
    contempt = display_intensities(DISPLAYS["contempt"], side=RIGHT)
    change = np.abs(np.asarray(render_face(identity, contempt, Pose(), 96), dtype=float) - rest).sum(axis=2)
    assert change[:, 48:].sum() > 0
    assert change[:, :48].sum() < 0.05 * change[:, 48:].sum()


def test_subjects_look_different():
    faces = [np.asarray(render_face(sample_identity(0, s), np.zeros((2, len(AU_NUMBERS))), Pose(), 48), dtype=float)
             for s in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(faces[a] - faces[b]).mean() > 10


def test_captions_name_the_mouth_of_a_full_display_unless_capped():
    """Fear's six AUs make four movements, the brows' and the eyes' first and then two of the mouth; with the extra
    AUs frames add, the old cap of 4 dropped the mouth's. The default caption names every one (stage 0 learns the
    lower face from them); a cap of 2 keeps brows and eyes only."""
    identity, fear = frame_with({au: 3.5 for au in (1, 2, 4, 5, 20, 26)})
    mouth = r"lips pulled wide|stretched mouth|lips drawn back"
    assert all(re.search(mouth, caption) for caption in captions_of(identity, fear))
    capped = [caption_of(identity, fear, np.random.default_rng(k), max_movements=2) for k in range(40)]
    assert not any(re.search(mouth, caption) for caption in capped)


def test_caption_movements_is_checked_and_reaches_the_captions(tmp_path):
    with pytest.raises(ValueError, match="caption_movements"):
        build_dataset("synthfaces", cache_dir=str(tmp_path), num_subjects=2, num_test_subjects=1,
                      frames_per_activity=1, caption_movements=-1)
    few = build_dataset("synthfaces", cache_dir=str(tmp_path), num_subjects=2, num_test_subjects=1,
                        frames_per_activity=2, image_size=32, caption_movements=0)
    movement = r"smil|smirk|frown|\bbrows?\b|eyes|nose|lip|mouth|chin|pout|sneer|squint|glar|dimple|cheek"
    assert not any(re.search(movement, caption) for caption in few["train"]["caption"])
