"""Procedural synthetic faces whose facial action units are drawn as geometric changes (numpy and PIL only).

A face is drawn from three parts, each reproducible from integers:
  - an `Identity` (one per subject, from `(seed, subject_index)`): face shape, skin tone, where the features sit,
    hair, glasses, beard, background, lighting, and how readily the subject shows each display;
  - a `Frame` (from `(seed, subject_index, activity, frame_index)`): the display shown (an AU combination and the
    expression it makes), extra and faint AUs, their intensities per side of the face, and the `Pose`;
  - the `Pose`: in-plane rotation, scale, translation, brightness, a lighting gradient, a colour cast and noise.

Intensities run from 0 to 5 (FACS A-E as 1-5) and scale each geometric change linearly. An AU counts as present
when its intensity is at least `INTENSITY_THRESHOLD` (2, as DISFA's labels are usually read); faint traces below
the threshold are drawn but labelled absent.

Geometry is in canonical units: a unit square, y growing downwards, the face centred on x = 0.5. The image shows
that square magnified by `FACE_ZOOM` about `FACE_ANCHOR` (so that the face fills it, as in an aligned face crop),
then moved by the pose (`project`). "Left" (side 0) is the image's left. Images are drawn at
`supersample_factor(image_size)` times their size and reduced, which anti-aliases the polygons.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: The AUs the generator draws, in the order of the data set's `au` column: the 12 BP4D AUs plus 5, 9, 20, 25, 26.
AU_NUMBERS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)
AU_INDEX: dict[int, int] = {number: index for index, number in enumerate(AU_NUMBERS)}
#: An AU is labelled present when its intensity (0-5) is at least this.
INTENSITY_THRESHOLD: float = 2.0
MAX_INTENSITY: float = 5.0
#: Intensities of the AUs that make up a display, of extra AUs, and of faint (unlabelled) traces.
DISPLAY_INTENSITY = (2.0, 5.0)
EXTRA_INTENSITY = (2.0, 4.5)
TRACE_INTENSITY = (0.4, 1.5)
#: Probability of 0, 1, 2 extra AUs on a non-neutral frame; of a faint trace; of each optional AU of a display.
EXTRA_COUNT_PROBABILITIES = (0.45, 0.35, 0.20)
TRACE_PROBABILITY = 0.35
OPTIONAL_PROBABILITY = 0.4
#: Pairs of AUs that pull the same feature in opposite directions; an extra AU or a trace never joins its antagonist.
ANTAGONISTS: frozenset[frozenset[int]] = frozenset(frozenset(pair) for pair in ((12, 15), (24, 25), (24, 26)))
LEFT, RIGHT = 0, 1
#: Width of the creases and wrinkles AUs draw, in canonical units: wide enough to survive the downsampling to 64 px.
WRINKLE = 0.007


# ---------------------------------------------------------------------------------------------- expressions


#: Each expression's AU combinations (any one suffices), present on both sides of the face.
EXPRESSION_AUS: dict[str, tuple[frozenset[int], ...]] = {
    "happiness": (frozenset({6, 12}),),
    "sadness": (frozenset({1, 4, 15}),),
    "surprise": (frozenset({1, 2, 5, 26}),),
    "fear": (frozenset({1, 2, 4, 5, 20, 26}),),
    "disgust": (frozenset({9, 15, 17}), frozenset({9, 10})),
    "anger": (frozenset({4, 5, 7, 23}),),
}
#: Contempt: any of these AUs on one side of the face only.
CONTEMPT_AUS: frozenset[int] = frozenset({12, 14})


def expression_of(left: set[int] | frozenset[int], right: set[int] | frozenset[int]) -> str | None:
    """The expression that the present AUs of each side of the face make, or `None` if they make several.

    No AU is neutral. A combination of `EXPRESSION_AUS` counts when all its AUs are present on both sides; one that
    is part of another present combination does not count on its own (surprise within fear). Contempt is an AU of
    `CONTEMPT_AUS` on one side only.
    """
    left, right = frozenset(left), frozenset(right)
    both, either = left & right, left | right
    if not either:
        return "neutral"
    matched = [(name, aus) for name, variants in EXPRESSION_AUS.items() for aus in variants if aus <= both]
    names = {name for name, aus in matched if not any(aus < other for _, other in matched)}
    if CONTEMPT_AUS & (either - both):
        names.add("contempt")
    return names.pop() if len(names) == 1 else None


@dataclass(frozen=True)
class Display:
    """A facial display a frame can show: the AUs drawn and the expression they make.

    Attributes:
        name: what the display is called, e.g. "pain".
        expression: the expression id that `expression_of` gives its AUs (checked by the tests).
        aus: AUs drawn on both sides.
        one_sided: AUs drawn on one (random) side only, a random non-empty subset of them.
        optional: AUs added on both sides, each with probability `OPTIONAL_PROBABILITY`.
    """

    name: str
    expression: str
    aus: frozenset[int] = frozenset()
    one_sided: frozenset[int] = frozenset()
    optional: frozenset[int] = frozenset()


DISPLAYS: dict[str, Display] = {
    d.name: d
    for d in (
        Display("neutral", "neutral"),
        Display("smile", "happiness", frozenset({6, 12}), optional=frozenset({25})),
        Display("embarrassed smile", "happiness", frozenset({6, 12, 14, 24})),
        Display("sadness", "sadness", frozenset({1, 4, 15}), optional=frozenset({17})),
        Display("surprise", "surprise", frozenset({1, 2, 5, 26}), optional=frozenset({25})),
        Display("fear", "fear", frozenset({1, 2, 4, 5, 20, 26}), optional=frozenset({25})),
        Display("disgust", "disgust", frozenset({9, 10}), optional=frozenset({25})),
        Display("disgust, lip corners down", "disgust", frozenset({9, 15, 17})),
        # Pain (BP4D's cold pressor task) holds disgust's 9 + 10, so `expression_of` labels it disgust.
        Display("pain", "disgust", frozenset({4, 6, 7, 9, 10}), optional=frozenset({25})),
        Display("anger", "anger", frozenset({4, 5, 7, 23}), optional=frozenset({17, 24})),
        Display("contempt", "contempt", one_sided=CONTEMPT_AUS),
    )
}

#: How often each BP4D task (`clef_hf.vocabulary.BP4D_ACTIVITIES`) shows each display, before the subject's own
#: leanings (`Identity.display_leaning`) reweight them.
ACTIVITY_DISPLAYS: dict[str, dict[str, float]] = {
    "T1": {"neutral": 0.15, "smile": 0.60, "surprise": 0.10, "contempt": 0.10, "embarrassed smile": 0.05},
    "T2": {"neutral": 0.25, "sadness": 0.55, "disgust, lip corners down": 0.10, "contempt": 0.05, "smile": 0.05},
    "T3": {"neutral": 0.20, "surprise": 0.50, "fear": 0.20, "smile": 0.10},
    "T4": {"neutral": 0.15, "embarrassed smile": 0.45, "smile": 0.15, "contempt": 0.20, "sadness": 0.05},
    "T5": {"neutral": 0.20, "fear": 0.50, "surprise": 0.15, "sadness": 0.15},
    "T6": {"neutral": 0.15, "pain": 0.60, "anger": 0.10, "sadness": 0.15},
    "T7": {"neutral": 0.15, "anger": 0.55, "contempt": 0.15, "disgust": 0.15},
    "T8": {"neutral": 0.15, "disgust": 0.40, "disgust, lip corners down": 0.30, "anger": 0.05, "surprise": 0.10},
}
ACTIVITIES: tuple[str, ...] = tuple(ACTIVITY_DISPLAYS)


# ---------------------------------------------------------------------------------------------- identity and pose


@dataclass(frozen=True)
class Identity:
    """One subject's look and habits. Lengths are in canonical units (see the module docstring)."""

    subject_index: int
    skin: tuple[int, int, int]
    face_half_width: float
    face_top: float  # eye line to the top of the skull
    face_bottom: float  # eye line to the chin
    chin_taper: float  # 0 round, larger pointier
    eye_y: float
    eye_spacing: float  # half the distance between the eye centres
    eye_half_width: float
    eye_height: float  # eye line to the upper lid at rest
    iris: tuple[int, int, int]
    brow_gap: float  # eye line to the brow at rest
    brow_thickness: float
    brow_arch: float
    brow_colour: tuple[int, int, int]
    nose_length: float  # eye line to the nose tip
    nose_width: float
    mouth_gap: float  # nose tip to the mouth line
    mouth_half_width: float
    upper_lip: float
    lower_lip: float
    mouth_curve: float  # corners' rest position, positive down
    lip_colour: tuple[int, int, int]
    blush: int  # alpha of the cheeks' colour
    fold_depth: int  # alpha of the nasolabial folds at rest
    hair_style: str
    hair_colour: tuple[int, int, int]
    hairline: float  # eye line to the hairline
    glasses: tuple[int, int, int] | None  # frame colour
    beard: str  # "none", "stubble" or "full"
    mole: tuple[float, float] | None
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # top and bottom colours
    shirt: tuple[int, int, int]
    brightness: float
    display_leaning: dict[str, float]  # multiplies ACTIVITY_DISPLAYS' weights

    @property
    def face_centre_y(self) -> float:
        return self.eye_y + 0.02

    @property
    def nose_tip_y(self) -> float:
        return self.eye_y + self.nose_length

    @property
    def mouth_y(self) -> float:
        return self.nose_tip_y + self.mouth_gap

    @property
    def chin_y(self) -> float:
        return self.eye_y + self.face_bottom

    @property
    def brow_y(self) -> float:
        return self.eye_y - self.brow_gap


HAIR_STYLES = ("short", "fringe", "side part", "long", "bald", "curly")
HAIR_COLOURS = ((28, 24, 24), (62, 40, 28), (110, 72, 42), (196, 160, 100), (150, 66, 34), (165, 162, 158))
IRIS_COLOURS = ((70, 45, 30), (40, 28, 22), (70, 110, 150), (80, 110, 70), (110, 115, 120))
SKIN_TONES = np.array([(244, 214, 190), (222, 180, 150), (190, 140, 105), (140, 95, 65), (96, 64, 46)], float)


def _colour(rgb) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(round(float(c))))) for c in rgb)


def _mix(a, b, weight: float) -> tuple[int, int, int]:
    """`a` moved toward `b` by `weight` (0 keeps `a`)."""
    return _colour(np.asarray(a, float) * (1 - weight) + np.asarray(b, float) * weight)


def _random_colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    return _colour(rng.uniform(low, high, 3))


def sample_identity(seed: int, subject_index: int) -> Identity:
    """The look of subject `subject_index` for `seed`: the same integers always give the same identity."""
    rng = np.random.default_rng([seed, 0, subject_index])
    position = rng.uniform(0, len(SKIN_TONES) - 1)
    low = int(position)
    skin = SKIN_TONES[low] + (SKIN_TONES[min(low + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[low]) * (position - low)
    skin = _colour(skin + rng.normal(0, 6, 3))
    hair_colour = _colour(np.asarray(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]) + rng.normal(0, 8, 3))
    hair_style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
    brow_colour = _mix(hair_colour, (25, 20, 18), 0.45 if sum(hair_colour) > 350 else 0.15)
    lip_colour = _mix(skin, (185, 70, 80), 0.45)
    eye_y = rng.uniform(0.40, 0.44)
    beard = ("none", "stubble", "full")[rng.choice(3, p=(0.8, 0.1, 0.1))]
    mole = (rng.uniform(0.36, 0.64), eye_y + rng.uniform(0.06, 0.28)) if rng.random() < 0.3 else None
    background = (_random_colour(rng, 30, 230), _random_colour(rng, 30, 230))
    leaning = {name: float(rng.lognormal(0.0, 0.5)) for name in DISPLAYS}
    return Identity(
        subject_index=subject_index,
        skin=skin,
        face_half_width=rng.uniform(0.27, 0.33),
        face_top=rng.uniform(0.27, 0.31),
        face_bottom=rng.uniform(0.34, 0.39),
        chin_taper=rng.uniform(0.05, 0.35),
        eye_y=eye_y,
        eye_spacing=rng.uniform(0.105, 0.13),
        eye_half_width=rng.uniform(0.052, 0.062),
        eye_height=rng.uniform(0.022, 0.028),
        iris=_colour(np.asarray(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]) + rng.normal(0, 6, 3)),
        brow_gap=rng.uniform(0.05, 0.064),
        brow_thickness=rng.uniform(0.012, 0.022),
        brow_arch=rng.uniform(0.004, 0.018),
        brow_colour=brow_colour,
        nose_length=rng.uniform(0.12, 0.15),
        nose_width=rng.uniform(0.03, 0.044),
        mouth_gap=rng.uniform(0.06, 0.075),
        mouth_half_width=rng.uniform(0.075, 0.098),
        upper_lip=rng.uniform(0.012, 0.019),
        lower_lip=rng.uniform(0.016, 0.025),
        mouth_curve=rng.uniform(-0.005, 0.005),
        lip_colour=lip_colour,
        blush=int(rng.integers(10, 45)),
        fold_depth=int(rng.integers(10, 50)),
        hair_style=hair_style,
        hair_colour=hair_colour,
        hairline=rng.uniform(0.18, 0.22),
        glasses=_random_colour(rng, 10, 200) if rng.random() < 0.3 else None,
        beard=beard,
        mole=mole,
        background=background,
        shirt=_random_colour(rng, 20, 235),
        brightness=rng.uniform(0.85, 1.1),
        display_leaning=leaning,
    )


@dataclass(frozen=True)
class Pose:
    """Where and how a face is seen in one frame.

    Attributes:
        angle: in-plane rotation, degrees, counter-clockwise.
        scale: size relative to the canonical face.
        shift: translation (x, y), in fractions of the image side.
        brightness: overall gain.
        gradient: change of the lighting gain across the image (from its centre to an edge: half of it), along x
            and y.
        cast: per-channel gain (colour of the light).
        noise: standard deviation of the pixel noise, in 0-255 units.
        noise_seed: seed of the noise.
    """

    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    gradient: tuple[float, float] = (0.0, 0.0)
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.0
    noise_seed: int = 0


def sample_pose(rng: np.random.Generator, identity: Identity) -> Pose:
    direction = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.5)
    return Pose(
        angle=float(rng.uniform(-5, 5)),
        scale=float(rng.uniform(0.94, 1.06)),
        shift=(float(rng.uniform(-0.025, 0.025)), float(rng.uniform(-0.025, 0.025))),
        brightness=float(identity.brightness * rng.uniform(0.8, 1.15)),
        gradient=(strength * math.cos(direction), strength * math.sin(direction)),
        cast=tuple(float(c) for c in rng.uniform(0.94, 1.06, 3)),
        noise=float(rng.uniform(1.0, 7.0)),
        noise_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One frame's labels and pose.

    Attributes:
        display: the name of the `Display` shown.
        expression: its expression id (`expression_of` of the present AUs).
        intensities: (2, len(AU_NUMBERS)) intensities 0-5 per side (0 the image's left, 1 its right).
        pose: the `Pose`.
    """

    display: str
    expression: str
    intensities: np.ndarray
    pose: Pose

    @property
    def au_intensity(self) -> np.ndarray:
        """(len(AU_NUMBERS),) intensity of each AU, the stronger side's."""
        return self.intensities.max(axis=0)

    @property
    def au(self) -> np.ndarray:
        """(len(AU_NUMBERS),) int8, 1 where the AU is present (intensity >= `INTENSITY_THRESHOLD`), else 0."""
        return (self.au_intensity >= INTENSITY_THRESHOLD).astype(np.int8)

    def present(self, side: int) -> frozenset[int]:
        """The present AUs on one side of the face."""
        return frozenset(n for n, i in zip(AU_NUMBERS, self.intensities[side]) if i >= INTENSITY_THRESHOLD)


def frame_rng(seed: int, subject_index: int, activity: str, frame_index: int) -> np.random.Generator:
    """The random stream of one frame, independent of every other frame (so generation order does not matter)."""
    return np.random.default_rng([seed, 1, subject_index, ACTIVITIES.index(activity), frame_index])


def _compatible(au: int, aus: set[int]) -> bool:
    return all(frozenset({au, other}) not in ANTAGONISTS for other in aus)


def sample_frame(seed: int, identity: Identity, activity: str, frame_index: int) -> Frame:
    """Frame `frame_index` of `identity` recorded during `activity` ("T1".."T8")."""
    if activity not in ACTIVITY_DISPLAYS:
        raise ValueError(f"Unknown activity {activity!r}; expected one of {ACTIVITIES}.")
    rng = frame_rng(seed, identity.subject_index, activity, frame_index)
    names = list(ACTIVITY_DISPLAYS[activity])
    weights = np.array([ACTIVITY_DISPLAYS[activity][n] * identity.display_leaning[n] for n in names])
    display = DISPLAYS[names[rng.choice(len(names), p=weights / weights.sum())]]
    intensities = np.zeros((2, len(AU_NUMBERS)))

    def draw(au: int, low_high: tuple[float, float], sides=(LEFT, RIGHT)) -> None:
        value = rng.uniform(*low_high)
        for side in sides:
            # The two sides differ a little, as real faces do, within the range (so a trace stays below threshold).
            intensities[side, AU_INDEX[au]] = float(np.clip(value + rng.normal(0, 0.15), *low_high))

    for au in sorted(display.aus):
        draw(au, DISPLAY_INTENSITY)
    for au in sorted(display.optional):
        if rng.random() < OPTIONAL_PROBABILITY:
            draw(au, DISPLAY_INTENSITY)
    if display.one_sided:
        choices = sorted(display.one_sided)
        subset = [au for au in choices if rng.random() < 0.6] or [choices[rng.integers(len(choices))]]
        side = int(rng.integers(2))
        for au in subset:
            draw(au, DISPLAY_INTENSITY, sides=(side,))

    if display.name != "neutral":
        drawn = {n for n in AU_NUMBERS if intensities[:, AU_INDEX[n]].max() > 0}
        candidates = [au for au in AU_NUMBERS if au not in drawn]
        for _ in range(rng.choice(len(EXTRA_COUNT_PROBABILITIES), p=EXTRA_COUNT_PROBABILITIES)):
            au = candidates[rng.integers(len(candidates))]
            left = {n for n in drawn if intensities[LEFT, AU_INDEX[n]] > 0} | {au}
            right = {n for n in drawn if intensities[RIGHT, AU_INDEX[n]] > 0} | {au}
            if _compatible(au, drawn) and expression_of(left, right) == display.expression:
                draw(au, EXTRA_INTENSITY)
                drawn.add(au)
                candidates.remove(au)
        if rng.random() < TRACE_PROBABILITY:
            au = candidates[rng.integers(len(candidates))]
            if _compatible(au, drawn):
                draw(au, TRACE_INTENSITY)

    pose = sample_pose(rng, identity)
    frame = Frame(display.name, display.expression, intensities, pose)
    expression = expression_of(frame.present(LEFT), frame.present(RIGHT))
    if expression != display.expression:  # a bug in DISPLAYS or the rules above, never expected
        raise AssertionError(f"{display.name} drew {frame.present(LEFT)}/{frame.present(RIGHT)}: {expression}.")
    return frame


# ---------------------------------------------------------------------------------------------- drawing


def supersample_factor(image_size: int) -> int:
    return 4 if image_size <= 128 else 2


#: Canonical face coordinates are magnified by FACE_ZOOM about FACE_ANCHOR (which lands on the image centre), so
#: the face fills the image as in an aligned face crop.
FACE_ZOOM = 1.5
FACE_ANCHOR = (0.5, 0.5)


def _affine(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) taking canonical points to image coordinates: `xy @ matrix.T + offset`."""
    angle = math.radians(pose.angle)
    # y grows downwards, so a counter-clockwise turn on screen is a clockwise one in these coordinates.
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    matrix = FACE_ZOOM * pose.scale * rotation
    offset = 0.5 + np.asarray(pose.shift, float) - matrix @ np.asarray(FACE_ANCHOR)
    return matrix, offset


def project(xy, pose: Pose) -> np.ndarray:
    """Image coordinates (fractions of the image side, y down) of canonical points `xy` ((n, 2)) seen in `pose`."""
    matrix, offset = _affine(pose)
    return np.asarray(xy, float).reshape(-1, 2) @ matrix.T + offset


class _Canvas:
    """Draws canonical-unit shapes, moved by the pose, on a supersampled RGB image with alpha blending."""

    def __init__(self, image_size: int, pose: Pose, background):
        self.size = image_size * supersample_factor(image_size)
        top, bottom = (np.asarray(c, float) for c in background)
        ramp = np.linspace(0.0, 1.0, self.size)[:, None, None]
        pixels = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (self.size, self.size, 3))
        self.image = Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")
        self.draw = ImageDraw.Draw(self.image, "RGBA")
        matrix, offset = _affine(pose)
        self.matrix, self.offset = (matrix * self.size).T, offset * self.size
        self.unit = self.size * pose.scale * FACE_ZOOM

    def points(self, xy) -> list[float]:
        return (np.asarray(xy, float).reshape(-1, 2) @ self.matrix + self.offset).ravel().tolist()

    def width(self, canonical: float) -> int:
        return max(1, int(round(canonical * self.unit)))

    @staticmethod
    def _rgba(colour, alpha: float) -> tuple[int, int, int, int]:
        return (*colour, min(255, max(0, int(round(alpha)))))

    def polygon(self, xy, colour, alpha: float = 255) -> None:
        if alpha >= 1:
            self.draw.polygon(self.points(xy), fill=self._rgba(colour, alpha))

    def line(self, xy, colour, width: float, alpha: float = 255) -> None:
        if alpha >= 1:
            self.draw.line(self.points(xy), fill=self._rgba(colour, alpha), width=self.width(width), joint="curve")

    def ellipse(self, centre, rx: float, ry: float, colour, alpha: float = 255, points: int = 40) -> None:
        if alpha >= 1:
            self.polygon(ellipse_points(centre, rx, ry, points), colour, alpha)


def ellipse_points(centre, rx: float, ry: float, points: int = 40, start: float = 0.0, end: float = 2 * math.pi):
    angles = np.linspace(start, end, points, endpoint=end - start < 2 * math.pi - 1e-9)
    return np.stack([centre[0] + rx * np.cos(angles), centre[1] + ry * np.sin(angles)], axis=1)


def bezier(p0, p1, p2, points: int = 16) -> np.ndarray:
    """Points on the quadratic Bezier curve from `p0` to `p2` with control point `p1`."""
    s = np.linspace(0.0, 1.0, points)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2


class _Action:
    """Intensities as fractions of the maximum (0-1), per side."""

    def __init__(self, intensities: np.ndarray):
        self.values = np.clip(np.asarray(intensities, float) / MAX_INTENSITY, 0.0, 1.0)

    def __call__(self, au: int, side: int | None = None) -> float:
        column = self.values[:, AU_INDEX[au]]
        return float(column.mean() if side is None else column[side])


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return _colour(np.asarray(colour, float) * factor)


def render_face(identity: Identity, intensities: np.ndarray, pose: Pose, image_size: int) -> Image.Image:
    """Draw `identity` with AU `intensities` ((2, len(AU_NUMBERS)), 0-5 per side) in `pose`, `image_size` pixels.

    Returns:
        An RGB image of `image_size` x `image_size` pixels.
    """
    intensities = np.asarray(intensities, float)
    if intensities.shape != (2, len(AU_NUMBERS)):
        raise ValueError(f"intensities must have shape (2, {len(AU_NUMBERS)}), got {intensities.shape}.")
    t = _Action(intensities)
    canvas = _Canvas(image_size, pose, identity.background)
    face = _FaceLayout(identity, t)
    _draw_hair_back(canvas, identity, face)
    _draw_neck(canvas, identity, face)
    _draw_face_shape(canvas, identity, face)
    _draw_hair_front(canvas, identity, face)
    _draw_eyes(canvas, identity, t)
    _draw_cheeks(canvas, identity, t)
    if identity.beard != "none":
        _draw_beard(canvas, identity, face)
    _draw_nose(canvas, identity, t, face)
    _draw_mouth(canvas, identity, t, face)
    _draw_brows_and_forehead(canvas, identity, t)
    if identity.mole is not None:
        canvas.ellipse(identity.mole, 0.006, 0.006, _shade(identity.skin, 0.45), alpha=220)
    if identity.glasses is not None:
        _draw_glasses(canvas, identity, face)
    image = canvas.image.reduce(supersample_factor(image_size))
    return _light(image, pose)


def _light(image: Image.Image, pose: Pose) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    size = pixels.shape[0]
    coordinates = (np.arange(size) + 0.5) / size - 0.5  # image centre at 0
    gain = pose.brightness * (1 + pose.gradient[0] * coordinates[None, :] + pose.gradient[1] * coordinates[:, None])
    pixels = pixels * (gain[:, :, None] * np.asarray(pose.cast)[None, None, :]).astype(np.float32)
    if pose.noise > 0:
        noise = np.random.default_rng(pose.noise_seed).standard_normal(pixels.shape, dtype=np.float32)
        pixels = pixels + noise * np.float32(pose.noise)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")


class _FaceLayout:
    """Positions that several parts share: the face outline (moved by the jaw drop) and the mouth."""

    def __init__(self, identity: Identity, t: _Action):
        self.jaw_drop = 0.055 * t(26)
        cy = identity.face_centre_y
        upper = cy - (identity.eye_y - identity.face_top)
        lower = identity.chin_y - cy + self.jaw_drop
        angles = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        sin, cos = np.sin(angles), np.cos(angles)
        below = sin > 0
        taper = np.where(below, 1 - identity.chin_taper * sin**4, 1.0)
        self.outline = np.stack(
            [0.5 + identity.face_half_width * cos * taper, cy + np.where(below, lower, upper) * sin], axis=1
        )
        self.top = cy - upper
        self.chin_y = cy + lower
        self.mouth = _MouthShape(identity, t, self.jaw_drop)


def _draw_hair_back(canvas: _Canvas, identity: Identity, face: _FaceLayout) -> None:
    cy = identity.face_centre_y
    rx = identity.face_half_width * (1.14 if identity.hair_style == "curly" else 1.07)
    ry = (cy - face.top) * (1.16 if identity.hair_style == "curly" else 1.08)
    if identity.hair_style == "long":
        cap = ellipse_points((0.5, cy), rx * 1.04, ry, 40, math.pi, 2 * math.pi)
        curtain = [(0.5 + rx * 1.12, face.chin_y + 0.03), (0.5 - rx * 1.12, face.chin_y + 0.03)]
        canvas.polygon(np.vstack([cap, curtain]), identity.hair_colour)
        return
    ear_y = identity.eye_y + 0.04
    for side in (-1, 1):
        x = 0.5 + side * (identity.face_half_width - 0.004)
        canvas.ellipse((x, ear_y), 0.028, 0.05, _shade(identity.skin, 0.93))
        canvas.ellipse((x + side * 0.006, ear_y), 0.013, 0.03, _shade(identity.skin, 0.75), alpha=120)
    if identity.hair_style == "bald":
        return
    if identity.hair_style == "curly":
        for angle in np.linspace(math.pi * 0.95, math.pi * 2.05, 14):
            centre = (0.5 + rx * math.cos(angle), cy + ry * math.sin(angle) * 0.97)
            canvas.ellipse(centre, 0.05, 0.05, identity.hair_colour, points=20)
    canvas.polygon(ellipse_points((0.5, cy), rx, ry, 40, math.pi, 2 * math.pi), identity.hair_colour)


def _draw_neck(canvas: _Canvas, identity: Identity, face: _FaceLayout) -> None:
    half = identity.face_half_width
    base = identity.chin_y
    canvas.polygon([(0.5 - 0.55 * half, base - 0.12), (0.5 + 0.55 * half, base - 0.12),
                    (0.5 + 0.6 * half, 1.3), (0.5 - 0.6 * half, 1.3)], _shade(identity.skin, 0.82))
    shoulder = base + 0.09
    canvas.polygon([(0.5 - 0.6 * half, shoulder), (0.5, shoulder + 0.08), (0.5 + 0.6 * half, shoulder),
                    (1.3, shoulder + 0.12), (1.3, 1.3), (-0.3, 1.3), (-0.3, shoulder + 0.12)], identity.shirt)


def _draw_face_shape(canvas: _Canvas, identity: Identity, face: _FaceLayout) -> None:
    canvas.polygon(face.outline, identity.skin)
    # A soft shadow under the jaw line side, so the face reads as rounded.
    canvas.line(face.outline[5:32], _shade(identity.skin, 0.8), 0.01, alpha=50)


def _hairline(identity: Identity, x: np.ndarray) -> np.ndarray:
    """The lower edge of the front hair at each x (canonical units)."""
    u = (x - 0.5) / identity.face_half_width
    line = identity.eye_y - identity.hairline
    style = identity.hair_style
    if style == "fringe":
        teeth = 0.012 * np.abs(np.sin(u * 9 * math.pi))
        return np.maximum(line, identity.eye_y - 0.17) + 0.02 + teeth * (np.abs(u) < 0.85) + 0.08 * u**6
    if style == "side part":
        return line + 0.03 * (1 - u) / 2 + 0.06 * u**4
    if style == "long":
        return line + 0.05 * np.abs(u) + 0.05 * u**4
    if style == "curly":
        return line + 0.01 * np.cos(u * 8 * math.pi) + 0.06 * u**4
    return line + 0.07 * u**4


def _draw_hair_front(canvas: _Canvas, identity: Identity, face: _FaceLayout) -> None:
    if identity.hair_style == "bald":
        for side in (-1, 1):
            x = 0.5 + side * identity.face_half_width * 0.97
            canvas.ellipse((x, identity.eye_y - 0.03), 0.026, 0.06, identity.hair_colour, alpha=230)
        return
    cy = identity.face_centre_y
    rx = identity.face_half_width * 1.07
    ry = (cy - face.top) * 1.08
    side_y = identity.eye_y - 0.07
    start = math.pi + math.asin(min(1.0, (cy - side_y) / ry))
    cap = ellipse_points((0.5, cy), rx, ry, 40, 3 * math.pi - start, start)  # left temple, over the top, right
    cap = cap[::-1] if cap[0, 0] > cap[-1, 0] else cap
    x = np.linspace(cap[-1, 0], cap[0, 0], 40)
    edge = np.stack([x, np.minimum(_hairline(identity, x), side_y)], axis=1)
    canvas.polygon(np.vstack([cap, edge]), identity.hair_colour)


def _draw_eyes(canvas: _Canvas, identity: Identity, t: _Action) -> None:
    skin = identity.skin
    radius = 1.08 * identity.eye_height
    u = np.linspace(-1, 1, 21)
    for side, s in ((LEFT, -1), (RIGHT, 1)):
        ex, ey = 0.5 + s * identity.eye_spacing, identity.eye_y
        upper_height = identity.eye_height * (1 + 1.2 * t(5, side) - 0.35 * t(7, side) - 0.2 * t(6, side)
                                              - 0.15 * t(4, side) - 0.1 * t(9, side))
        lower_depth = 0.7 * identity.eye_height * (1 - 0.8 * t(7, side) - 0.45 * t(6, side) + 0.15 * t(5, side))
        flat = 0.9 - 0.6 * t(7, side)  # a tightened lower lid runs straighter
        x = ex + identity.eye_half_width * u
        upper = np.stack([x, ey - upper_height * (1 - u**2) ** 0.8], axis=1)
        lower = np.stack([x, ey + lower_depth * (1 - u**2) ** flat], axis=1)
        canvas.polygon(np.vstack([upper, lower[::-1]]), (240, 238, 232))
        iris_centre = (ex, ey + 0.1 * radius)
        canvas.ellipse(iris_centre, radius, radius, identity.iris, points=28)
        canvas.ellipse(iris_centre, 0.45 * radius, 0.45 * radius, (15, 12, 12), points=20)
        canvas.ellipse((ex + 0.35 * radius, ey - 0.25 * radius), 0.22 * radius, 0.22 * radius, (250, 250, 250),
                       alpha=200, points=12)
        # Lid skin over whatever of the iris lies outside the opening.
        band = 1.6 * radius
        canvas.polygon(np.vstack([upper, (upper - [0, band])[::-1]]), skin)
        canvas.polygon(np.vstack([lower, (lower + [0, band])[::-1]]), skin)
        crease_y = ey - 1.9 * identity.eye_height
        crease = np.stack([x[3:-3], crease_y - 0.35 * identity.eye_height * (1 - u[3:-3] ** 2)], axis=1)
        canvas.line(crease, _shade(skin, 0.7), 0.004, alpha=110)
        # The lash line, with a short flick at the outer corner.
        if s < 0:
            lashes = np.vstack([[upper[0] + [-0.008, -0.004]], upper])
        else:
            lashes = np.vstack([upper, [upper[-1] + [0.008, -0.004]]])
        canvas.line(lashes, (35, 25, 25), 0.007)
        canvas.line(lower, _shade(skin, 0.55), 0.003 + 0.006 * t(7, side), alpha=140 + 110 * t(7, side))


def _draw_cheeks(canvas: _Canvas, identity: Identity, t: _Action) -> None:
    skin = identity.skin
    for side, s in ((LEFT, -1), (RIGHT, 1)):
        ex, ey = 0.5 + s * identity.eye_spacing, identity.eye_y
        raise_ = t(6, side)
        blush_centre = (ex + s * 0.02, ey + 0.09 - 0.03 * raise_)
        canvas.ellipse(blush_centre, 0.052, 0.036, (214, 104, 100), alpha=identity.blush + 55 * raise_)
        canvas.ellipse((blush_centre[0], blush_centre[1] - 0.012), 0.03, 0.014, _mix(skin, (255, 255, 255), 0.5),
                       alpha=70 * raise_)
        if raise_ == 0:
            continue
        # The furrow below the lower lid and crow's-feet at the outer corner.
        furrow_y = ey + 0.7 * identity.eye_height + 0.016 - 0.01 * raise_
        furrow = bezier((ex - 0.8 * identity.eye_half_width, furrow_y - 0.004), (ex, furrow_y + 0.008),
                        (ex + 0.8 * identity.eye_half_width, furrow_y - 0.004))
        canvas.line(furrow, _shade(skin, 0.6), WRINKLE, alpha=200 * raise_)
        corner = np.array([ex + s * (identity.eye_half_width + 0.01), ey])
        for angle in (-0.45, 0.0, 0.45):
            direction = np.array([s * math.cos(angle), math.sin(angle)])
            canvas.line([corner, corner + direction * (0.015 + 0.025 * raise_)], _shade(skin, 0.55), WRINKLE,
                        alpha=210 * raise_)


def _draw_nose(canvas: _Canvas, identity: Identity, t: _Action, face: _FaceLayout) -> None:
    skin, tip_y, width = identity.skin, identity.nose_tip_y, identity.nose_width
    shadow = _shade(skin, 0.62)
    lift = 0.014 * t(9) + 0.006 * t(10)
    canvas.line(bezier((0.5 + 0.016, identity.eye_y + 0.01), (0.5 + 0.026, tip_y - 0.05), (0.5 + 0.02, tip_y - 0.02)),
                shadow, 0.005, alpha=70)
    for side, s in ((LEFT, -1), (RIGHT, 1)):
        wing = (0.5 + s * 0.8 * width, tip_y - 0.004 - lift)
        arc = ellipse_points(wing, 0.016 * (1 + 0.3 * t(9, side)), 0.016, 12, -math.pi / 2, math.pi / 2)
        arc[:, 0] = wing[0] + s * (arc[:, 0] - wing[0])
        canvas.line(arc, shadow, 0.004, alpha=150)
        canvas.ellipse((0.5 + s * 0.45 * width, tip_y + 0.004 - lift), 0.011 * (1 + 0.3 * t(9, side)), 0.006,
                       _shade(skin, 0.35), alpha=220, points=16)
        # The nasolabial fold runs from the nose wing to beyond the lip corner; AU10, AU6 and AU9 deepen it.
        corner = face.mouth.corner(side)
        depth = max(t(10, side), 0.6 * t(6, side), 0.6 * t(9, side), 0.4 * t(12, side))
        fold = bezier((0.5 + s * (width + 0.01), tip_y - 0.006 - lift),
                      (0.5 + s * (identity.mouth_half_width + 0.03), corner[1] - 0.035),
                      (corner[0] + s * 0.02, corner[1] + 0.02))
        canvas.line(fold, _shade(skin, 0.6), 0.004 + 0.005 * depth, alpha=identity.fold_depth + 190 * depth)
    canvas.line(bezier((0.5 - 0.014, tip_y + 0.006 - lift), (0.5, tip_y + 0.014 - lift),
                       (0.5 + 0.014, tip_y + 0.006 - lift), 8), shadow, 0.003, alpha=120)
    # AU9: horizontal wrinkles across the bridge of the nose.
    for k in range(3 if t(9) > 0 else 0):
        y = identity.eye_y + 0.012 + 0.013 * k
        canvas.line(bezier((0.5 - 0.026, y), (0.5, y + 0.006), (0.5 + 0.026, y), 8), _shade(skin, 0.5), WRINKLE,
                    alpha=230 * t(9))


def _draw_beard(canvas: _Canvas, identity: Identity, face: _FaceLayout) -> None:
    """A beard from the sideburns around the jaw, with a moustache under the nose; the lips are drawn over it."""
    outline = face.outline
    sideburn_y = identity.eye_y + 0.05
    # The outline runs from the right side (angle 0) down around the chin to the left: keep the part below the
    # sideburns, right to left.
    lower = outline[(outline[:, 1] > sideburn_y) & (np.arange(len(outline)) < len(outline) // 2 + 2)]
    half, mouth_half = identity.face_half_width, identity.mouth_half_width
    tip_y = identity.nose_tip_y
    upper = [(0.5 - 0.75 * half, tip_y + 0.03), (0.5 - mouth_half - 0.015, tip_y + 0.02), (0.5, tip_y + 0.022),
             (0.5 + mouth_half + 0.015, tip_y + 0.02), (0.5 + 0.75 * half, tip_y + 0.03)]
    alpha = 235 if identity.beard == "full" else 85
    canvas.polygon(np.vstack([lower, upper]), _shade(identity.hair_colour, 0.75), alpha=alpha)


class _MouthShape:
    """The lips' curves: the lip line (upper and lower, apart when the mouth opens) and the outer edges."""

    def __init__(self, identity: Identity, t: _Action, jaw_drop: float):
        mx, my = 0.5, identity.mouth_y
        corners = []
        for side, s in ((LEFT, -1), (RIGHT, 1)):
            half = identity.mouth_half_width * (1 + 0.3 * t(20, side) + 0.15 * t(12, side) - 0.18 * t(14, side)
                                                - 0.28 * t(23, side))
            rise = (-0.035 * t(12, side) + 0.03 * t(15, side) + 0.008 * t(20, side) - 0.004 * t(14, side)
                    + 0.016 * t(17, side))
            corners.append((mx + s * half, my + identity.mouth_curve + rise))
        self.corners = corners
        self.centre_y = my
        gap = 0.03 * t(25) + 0.6 * jaw_drop  # AU25 parts the lips, AU26 opens the jaw
        lift10 = 0.02 * t(10)
        lift17 = 0.016 * t(17)
        thin = max(0.15, 1 - 0.55 * t(23) - 0.75 * t(24)) * (1 - 0.3 * t(20))
        upper_lip = identity.upper_lip * thin
        lower_lip = identity.lower_lip * thin * (1 + 0.3 * t(17))
        s = np.linspace(0, 1, 25)
        x = corners[0][0] + (corners[1][0] - corners[0][0]) * s
        u = 2 * s - 1  # -1 at the left corner, 1 at the right
        corner_y = np.where(u < 0, corners[0][1], corners[1][1])
        curve = my + (corner_y - my) * u**2  # the lip line bends from the centre to each corner
        bell = 1 - u**2
        self.upper_line = np.stack([x, curve - 0.55 * lift10 * bell**0.5], axis=1)
        self.lower_line = np.stack([x, curve + gap * bell ** 0.7 - lift17 * bell], axis=1)
        bow = 1 - 0.35 * np.exp(-((u / 0.18) ** 2))  # Cupid's bow: the upper lip dips at the middle
        self.upper_edge = np.stack([x, self.upper_line[:, 1] - upper_lip * bell**0.6 * bow - 0.45 * lift10 * bell], 1)
        self.lower_edge = np.stack([x, self.lower_line[:, 1] + lower_lip * bell**0.6], axis=1)
        self.height = float(self.lower_edge[:, 1].max() - self.upper_edge[:, 1].min())
        self.open = float((self.lower_line[:, 1] - self.upper_line[:, 1]).max())

    def corner(self, side: int) -> tuple[float, float]:
        return self.corners[side]


def _draw_mouth(canvas: _Canvas, identity: Identity, t: _Action, face: _FaceLayout) -> None:
    skin, mouth = identity.skin, face.mouth
    dark = _shade(skin, 0.5)
    # Below the lower lip: the chin boss (AU17 wrinkles it) and the crease above it.
    below = mouth.lower_edge[:, 1].max()
    crease = bezier((0.5 - 0.035, below + 0.022 - 0.008 * t(17)), (0.5, below + 0.032 - 0.008 * t(17)),
                    (0.5 + 0.035, below + 0.022 - 0.008 * t(17)), 10)
    canvas.line(crease, dark, 0.004 + 0.004 * t(17), alpha=50 + 180 * t(17))
    chin_y = (below + face.chin_y) / 2 + 0.01
    for dx, dy in ((-0.024, 0.0), (0.0, -0.008), (0.024, 0.0), (-0.012, 0.014), (0.012, 0.014), (0.0, 0.026))[
        : 6 if t(17) > 0 else 0
    ]:
        canvas.ellipse((0.5 + dx, chin_y + dy), 0.01, 0.01, dark, alpha=220 * t(17), points=10)
    if mouth.open > 0.002:
        canvas.polygon(np.vstack([mouth.upper_line, mouth.lower_line[::-1]]), (70, 22, 28))
        teeth_bottom = np.minimum(mouth.upper_line[:, 1] + 0.016, mouth.lower_line[:, 1])
        teeth = np.stack([mouth.upper_line[:, 0], teeth_bottom], axis=1)
        canvas.polygon(np.vstack([mouth.upper_line[3:-3], teeth[3:-3][::-1]]), (236, 232, 220))
    canvas.polygon(np.vstack([mouth.upper_edge, mouth.upper_line[::-1]]), identity.lip_colour)
    canvas.polygon(np.vstack([mouth.lower_line, mouth.lower_edge[::-1]]), _shade(identity.lip_colour, 1.06))
    canvas.line(mouth.upper_line, _shade(identity.lip_colour, 0.5), 0.004, alpha=220)
    # AU24: the skin bulges above and below the pressed lips.
    middle = slice(5, -5)
    for edge, offset in ((mouth.upper_edge, -0.009), (mouth.lower_edge, 0.009)):
        canvas.line(edge[middle] + [0, offset], dark, WRINKLE, alpha=200 * t(24))
    for side, s in ((LEFT, -1), (RIGHT, 1)):
        cx, cy = mouth.corner(side)
        # AU14: a dimple beside the lip corner.
        dimple = ellipse_points((cx + s * 0.004, cy), 0.016, 0.019, 10, -1.2, 1.2)
        dimple[:, 0] = cx + s * 0.004 + s * (dimple[:, 0] - cx - s * 0.004)
        canvas.line(dimple, dark, WRINKLE + 0.002, alpha=230 * t(14, side))
        # AU20: creases stretching out from the corner; AU23: the tightened corner's short vertical crease.
        canvas.line([(cx + s * 0.008, cy), (cx + s * 0.038, cy + 0.012)], dark, WRINKLE, alpha=200 * t(20, side))
        canvas.line([(cx + s * 0.007, cy - 0.014), (cx + s * 0.007, cy + 0.014)], dark, WRINKLE,
                    alpha=200 * t(23, side))


def _draw_brows_and_forehead(canvas: _Canvas, identity: Identity, t: _Action) -> None:
    dark = _shade(identity.skin, 0.55)
    base_y = identity.brow_y
    for side, s in ((LEFT, -1), (RIGHT, 1)):
        ex = 0.5 + s * identity.eye_spacing
        inner = np.array([ex - s * 0.6 * identity.eye_half_width, base_y])
        outer = np.array([ex + s * 1.2 * identity.eye_half_width, base_y + 0.008])
        peak = inner + 0.65 * (outer - inner) - [0, 2 * identity.brow_arch]
        inner += [s * -0.018 * t(4, side), -0.05 * t(1, side) + 0.035 * t(4, side) + 0.012 * t(9, side)]
        peak += [0, -0.035 * t(2, side) - 0.02 * t(1, side) + 0.02 * t(4, side)]
        outer += [0, -0.045 * t(2, side) + 0.012 * t(4, side)]
        centre = bezier(inner, peak, outer, 14)
        thickness = identity.brow_thickness * np.linspace(1.0, 0.55, len(centre))[:, None]
        top = centre - np.hstack([np.zeros_like(thickness), thickness / 2])
        bottom = centre + np.hstack([np.zeros_like(thickness), thickness / 2])
        canvas.polygon(np.vstack([top, bottom[::-1]]), identity.brow_colour, alpha=240)
        # AU2: wrinkles above the outer brow.
        for k in range(3 if t(2, side) > 0 else 0):
            y = base_y - 0.05 - 0.017 * k
            wx = ex + s * 0.02
            canvas.line(bezier((wx - 0.035, y + 0.004), (wx, y - 0.006), (wx + 0.035, y + 0.004), 8), dark, WRINKLE,
                        alpha=170 * t(2, side))
    # AU1: wrinkles across the middle of the forehead; AU4: vertical creases between the brows.
    for k in range(3 if t(1) > 0 else 0):
        y = base_y - 0.045 - 0.017 * k
        canvas.line(bezier((0.5 - 0.05, y + 0.003), (0.5, y - 0.006), (0.5 + 0.05, y + 0.003), 10), dark, WRINKLE,
                    alpha=170 * t(1))
    for s in (-1, 1):
        canvas.line([(0.5 + s * 0.012, base_y + 0.016), (0.5 + s * 0.009, base_y - 0.02)], dark, WRINKLE,
                    alpha=200 * t(4))


def _draw_glasses(canvas: _Canvas, identity: Identity, face: _FaceLayout) -> None:
    colour = identity.glasses
    rx, ry = identity.eye_half_width * 1.55, 0.04
    for s in (-1, 1):
        centre = (0.5 + s * identity.eye_spacing, identity.eye_y + 0.004)
        canvas.ellipse(centre, rx, ry, (200, 220, 235), alpha=30)
        rim = ellipse_points(centre, rx, ry, 36)
        canvas.line(np.vstack([rim, rim[:1]]), colour, 0.007)
        canvas.line([(centre[0] + s * rx, identity.eye_y - 0.005),
                     (0.5 + s * identity.face_half_width, identity.eye_y + 0.01)], colour, 0.006)
    inner = identity.eye_spacing - rx
    canvas.line(bezier((0.5 - inner, identity.eye_y - 0.004), (0.5, identity.eye_y - 0.016),
                       (0.5 + inner, identity.eye_y - 0.004), 8), colour, 0.006)


# ---------------------------------------------------------------------------------------------- conveniences


#: Where on the face each AU is drawn: "upper" (brows and eyelids), "middle" (cheeks and nose, drawn across the
#: boundary of the two halves) or "lower" (mouth, lips and chin). See the `_draw_*` functions.
AU_REGIONS: dict[int, str] = {
    1: "upper", 2: "upper", 4: "upper", 5: "upper", 7: "upper", 6: "middle", 9: "middle",
    10: "lower", 12: "lower", 14: "lower", 15: "lower", 17: "lower", 20: "lower", 23: "lower", 24: "lower",
    25: "lower", 26: "lower",
}


def face_halves_boundary(identity: Identity, pose: Pose) -> float:
    """Image row, as a fraction of the image side (y down), between the upper face (brows, eyes) and the lower face
    (mouth, chin): the point on the face's midline halfway between the eye line and the mouth line, seen in `pose`.
    """
    return float(project((0.5, (identity.eye_y + identity.mouth_y) / 2), pose)[0, 1])


def labelled_faces(seed: int, subject_indices, frames_per_activity: int, image_size: int):
    """Yield `(image, frame, boundary)` for every frame of the subjects, in the builder's order (subject, task,
    frame): the rendered face, its `Frame` (labels and pose) and `face_halves_boundary` in its pose."""
    for subject_index in subject_indices:
        identity = sample_identity(seed, subject_index)
        for activity in ACTIVITIES:
            for frame_index in range(frames_per_activity):
                frame = sample_frame(seed, identity, activity, frame_index)
                yield render_frame(identity, frame, image_size), frame, face_halves_boundary(identity, frame.pose)


def render_frame(identity: Identity, frame: Frame, image_size: int) -> Image.Image:
    return render_face(identity, frame.intensities, frame.pose, image_size)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of `image`: lossless, so equal seeds give byte-identical files."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def display_intensities(display: Display, intensity: float = 4.0, side: int = RIGHT) -> np.ndarray:
    """(2, len(AU_NUMBERS)) intensities of `display` alone, every AU at `intensity` (one-sided AUs on `side`)."""
    intensities = np.zeros((2, len(AU_NUMBERS)))
    for au in display.aus:
        intensities[:, AU_INDEX[au]] = intensity
    for au in display.one_sided:
        intensities[side, AU_INDEX[au]] = intensity
    return intensities


def contact_sheet(seed: int = 0, subjects: int = 6, image_size: int = 96,
                  displays: tuple[str, ...] = tuple(DISPLAYS)) -> Image.Image:
    """A grid of faces: one row per subject, one column per display (AUs at intensity 4, a mild random pose)."""
    sheet = Image.new("RGB", (image_size * len(displays), image_size * subjects), (255, 255, 255))
    for row in range(subjects):
        identity = sample_identity(seed, row)
        rng = np.random.default_rng([seed, 2, row])
        for column, name in enumerate(displays):
            pose = sample_pose(rng, identity)
            image = render_face(identity, display_intensities(DISPLAYS[name]), pose, image_size)
            sheet.paste(image, (column * image_size, row * image_size))
    return sheet
