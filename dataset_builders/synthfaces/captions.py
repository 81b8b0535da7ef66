"""Web-style captions of the synthetic faces, for stage 0 (image-text pre-training, as FaRL does on LAION-Face).

A caption says in lay words what a person would write under the picture: who is shown (hair, glasses, beard, skin,
a mole, from the `Identity`) and what the face is doing (from the `Frame`'s present AUs: smiling, frowning, raised
eyebrows, wide eyes, a wrinkled nose, an open mouth, ...), e.g. "a smiling man with glasses and short dark hair,
eyebrows raised". It never uses FACS names, AU numbers or the expression classes, and it only mentions movements at or
above the presence threshold: faint traces are drawn but, as in a real caption, not described.

Captions are deterministic: the wording is drawn from its own random stream `(seed, 3, subject, task, frame)`, apart
from the streams of the identities (0) and frames (1), so adding captions changed no image or label.
"""

import numpy as np

from .generator import (
    ACTIVITIES,
    AU_INDEX,
    HAIR_COLOURS,
    INTENSITY_THRESHOLD,
    LEFT,
    RIGHT,
    SKIN_TONES,
    Frame,
    Identity,
)

#: The random stream id of the captions (the identities use 0, the frames 1, the contact sheet 2).
CAPTION_STREAM = 3

#: Words for each colour of `generator.HAIR_COLOURS`, in its order.
HAIR_COLOUR_WORDS: tuple[tuple[str, ...], ...] = (
    ("black", "dark"),
    ("dark brown", "dark"),
    ("brown", "light brown"),
    ("blond", "fair"),
    ("red", "auburn", "ginger"),
    ("grey", "silver"),
)
#: Phrases for each of `generator.HAIR_STYLES`; `{}` is the colour.
HAIR_STYLE_PHRASES: dict[str, tuple[str, ...]] = {
    "short": ("short {} hair", "cropped {} hair"),
    "fringe": ("{} hair with bangs", "a {} fringe"),
    "side part": ("side-parted {} hair", "{} hair parted to one side"),
    "long": ("long {} hair", "long flowing {} hair"),
    "bald": ("a bald head", "a shaved head"),
    "curly": ("curly {} hair", "{} curls"),
}
#: Words for each of `generator.SKIN_TONES`, from the lightest.
SKIN_WORDS: tuple[tuple[str, ...], ...] = (
    ("pale skin", "fair skin"),
    ("light skin",),
    ("olive skin", "tan skin"),
    ("brown skin",),
    ("dark skin", "deep brown skin"),
)
BEARD_PHRASES = {"full": ("a full beard", "a thick beard", "a bushy beard"),
                 "stubble": ("stubble", "a stubbly chin", "light stubble")}
GLASSES_PHRASES = ("glasses", "eyeglasses", "spectacles")
MOLE_PHRASES = ("a small mole", "a beauty mark")
CALM_PHRASES = ("relaxed", "calm and still", "looking straight at the camera", "a blank look")
PREFIXES = ("", "", "", "close-up of ", "portrait of ", "photo of ", "headshot of ")

#: How often each identity attribute is mentioned: captions rarely list everything.
MENTION_PROBABILITY = {"glasses": 0.85, "beard": 0.9, "hair": 0.7, "skin": 0.35, "mole": 0.2}
#: At most this many attributes of the person are named (a random few of those drawn).
MAX_ATTRIBUTES = 3
#: At most this many movements are named, the most conspicuous first: by default every one (a frame shows up to 7).
#: A cap of 4 (before) left the mouth out of 30-40% of the disgust, fear and anger captions, since brows and eyes
#: come first; naming every movement raised stage 0's validation figures (docs/diagnosis.md, section 15).
MAX_MOVEMENTS = 8
#: Probability that the first movement with an adjective form becomes the noun's adjective ("a smiling man").
ADJECTIVE_PROBABILITY = 0.6


def caption_rng(seed: int, subject_index: int, activity: str, frame_index: int) -> np.random.Generator:
    """The random stream of one frame's caption wording."""
    return np.random.default_rng([seed, CAPTION_STREAM, subject_index, ACTIVITIES.index(activity), frame_index])


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _nearest(colour: tuple[int, int, int], palette) -> int:
    distances = np.linalg.norm(np.asarray(palette, float) - np.asarray(colour, float), axis=1)
    return int(distances.argmin())


def identity_phrases(identity: Identity, rng: np.random.Generator) -> tuple[str, list[str]]:
    """The noun for the person and the attributes a caption mentions, e.g. ("man", ["glasses", "a thick beard"]).

    The generator draws no gender: only a bearded face is called a man.
    """
    noun = _pick(rng, ("man", "man", "guy")) if identity.beard != "none" else _pick(rng, ("person", "person", "face"))
    attributes = []
    if identity.glasses is not None and rng.random() < MENTION_PROBABILITY["glasses"]:
        attributes.append(_pick(rng, GLASSES_PHRASES))
    if identity.beard != "none" and rng.random() < MENTION_PROBABILITY["beard"]:
        attributes.append(_pick(rng, BEARD_PHRASES[identity.beard]))
    if rng.random() < MENTION_PROBABILITY["hair"]:
        colour = _pick(rng, HAIR_COLOUR_WORDS[_nearest(identity.hair_colour, HAIR_COLOURS)])
        attributes.append(_pick(rng, HAIR_STYLE_PHRASES[identity.hair_style]).format(colour))
    if rng.random() < MENTION_PROBABILITY["skin"]:
        attributes.append(_pick(rng, SKIN_WORDS[_nearest(identity.skin, SKIN_TONES)]))
    if identity.mole is not None and rng.random() < MENTION_PROBABILITY["mole"]:
        attributes.append(_pick(rng, MOLE_PHRASES))
    if len(attributes) > MAX_ATTRIBUTES:
        keep = sorted(rng.choice(len(attributes), MAX_ATTRIBUTES, replace=False).tolist())
        attributes = [attributes[index] for index in keep]
    return noun, attributes


class _Movement:
    """One visible movement: adjective forms (for "a ___ man"), or none, and phrase forms."""

    def __init__(self, phrases: tuple[str, ...], adjectives: tuple[str, ...] = ()):
        self.phrases = phrases
        self.adjectives = adjectives


def frame_movements(frame: Frame) -> list[_Movement]:
    """The movements a caption can name for `frame`, the most conspicuous first: every AU present (intensity at or
    above `INTENSITY_THRESHOLD`) on either side of the face is covered by one of them, faint traces by none."""
    left, right = frame.present(LEFT), frame.present(RIGHT)
    present, both = left | right, left & right
    intensity = {au: float(frame.au_intensity[AU_INDEX[au]]) for au in present}
    mouth_open = bool({25, 26} & present)
    movements = []

    def strength(au: int, weak: str, strong: str, middle: str) -> str:
        return weak if intensity[au] < 3.0 else strong if intensity[au] >= 4.0 else middle

    if 12 in both:
        if mouth_open:
            movements.append(_Movement(("a big toothy smile", "smiling with teeth showing", "an open-mouthed smile"),
                                       ("grinning", "smiling")))
        else:
            movements.append(_Movement((strength(12, "a slight smile", "a broad smile", "a warm smile"), "smiling"),
                                       ("smiling",)))
        if 6 in present:
            movements.append(_Movement(("eyes crinkled", "crow's feet showing", "eyes creased at the corners")))
    elif {12, 14} & (present - both):  # one side of the mouth only
        movements.append(_Movement(("a one-sided smirk", "a lopsided half smile", "one corner of the mouth pulled up"),
                                   ("smirking",)))
    if 14 in both:
        movements.append(_Movement(("dimples beside the mouth", "mouth corners tucked in")))

    if 4 in present and {1, 2} & present:
        movements.append(_Movement(("brows knitted and raised in the middle", "a worried furrowed brow",
                                    "brows drawn up and together")))
    elif 4 in present:
        movements.append(_Movement((strength(4, "a slight frown", "a deep frown", "frowning"), "a furrowed brow",
                                    "brows drawn together"), ("frowning",)))
    elif {1, 2} <= present:
        movements.append(_Movement(("eyebrows raised", "raised eyebrows", "brows lifted high", "eyebrows up")))
    elif 1 in present:
        movements.append(_Movement(("brows tilted up in the middle", "a pleading look in the brows")))
    elif 2 in present:
        movements.append(_Movement(("arched eyebrows", "eyebrows arched up")))

    if 5 in present and 7 in present:
        movements.append(_Movement(("a hard glare", "glaring eyes", "staring hard"), ("glaring",)))
    elif 5 in present:
        movements.append(_Movement(("wide eyes", "eyes wide open", "staring wide-eyed"), ("wide-eyed",)))
    elif 7 in present and 6 in present and 12 not in both:
        movements.append(_Movement(("eyes squeezed tight", "tightly scrunched eyes"), ("squinting",)))
    elif 7 in present:
        movements.append(_Movement(("narrowed eyes", "squinting", "eyes narrowed"), ("squinting",)))
    elif 6 in present and 12 not in both:
        movements.append(_Movement(("cheeks pushed up", "raised cheeks", "crinkled eyes")))

    if 9 in present:
        movements.append(_Movement(("wrinkled nose", "nose wrinkled up", "a scrunched-up nose")))
    if 10 in present:
        movements.append(_Movement(("upper lip curled up", "a raised upper lip", "a sneer"), ("sneering",)))
    if 15 in present:
        movements.append(_Movement(("lip corners down", "a downturned mouth", "mouth turned down at the corners")))
    if 17 in present:
        movements.append(_Movement(("chin pushed up", "a pout", "pouting"), ("pouting",)))
    if 20 in present:
        movements.append(_Movement(("lips pulled wide", "a tense stretched mouth", "lips drawn back tightly")))
    if 23 in present:
        movements.append(_Movement(("tight lips", "lips tightened", "thin tense lips")))
    if 24 in present:
        movements.append(_Movement(("pressed lips", "lips pressed together", "lips pressed tight")))
    if 26 in present and 12 not in both:
        movements.append(_Movement((strength(26, "mouth open", "mouth wide open", "mouth open"), "mouth hanging open",
                                    "jaw hanging open"), ("open-mouthed",)))
    elif 25 in present and 12 not in both:
        movements.append(_Movement(("lips slightly apart", "mouth slightly open", "teeth just showing")))
    return movements


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_of(identity: Identity, frame: Frame, rng: np.random.Generator, max_movements: int = MAX_MOVEMENTS) -> str:
    """A web-style caption of `frame` of `identity`, e.g. "a frowning man with a full beard, wrinkled nose".

    Args:
        identity: the subject (`generator.sample_identity`).
        frame: the frame shown (`generator.sample_frame`).
        rng: the wording's random source (`caption_rng`); the same stream gives the same caption.
        max_movements: at most this many movements are named, the most conspicuous first (brows and eyes before
            the mouth, so a low cap drops mouth movements first).

    Returns:
        A lower-case caption.
    """
    noun, attributes = identity_phrases(identity, rng)
    movements = frame_movements(frame)[:max_movements]
    adjective = None
    described = []
    for movement in movements:
        if adjective is None and movement.adjectives and rng.random() < ADJECTIVE_PROBABILITY:
            adjective = _pick(rng, movement.adjectives)
        else:
            described.append(_pick(rng, movement.phrases))
    if not movements and rng.random() < 0.5:
        described.append(_pick(rng, CALM_PHRASES))
    head = f"{adjective} {noun}" if adjective else noun
    text = f"{_pick(rng, PREFIXES)}{_article(head)} {head}"
    if attributes:
        text += " with " + _join(attributes)
    if described:
        text += ", " + ", ".join(described)
    return text


__all__ = ["caption_of", "caption_rng", "frame_movements", "identity_phrases"]
