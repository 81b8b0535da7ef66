"""Label vocabularies of facial behaviour: FACS action units, expressions, recorded activities, AU intensity phrases
and prompt templates.

CLEF predicts by comparing an image with text embeddings, so the words here are part of the model. The label names
follow FACS (Ekman & Friesen); the descriptions are written for this package, in plain words, after the psychology
of facial expression the paper draws on (what each muscle movement does to the face, and which movements make up
each expression). The activity descriptions paraphrase the elicitation tasks of BP4D and BP4D+.

This module has no dependencies beyond the standard library: it is copied next to saved checkpoints for users who
load them through remote code.
"""

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class ActionUnit:
    """One FACS action unit: its number, its FACS name and a one-sentence description of what it does to the face."""

    number: int
    name: str
    description: str

    @property
    def label_id(self) -> str:
        return f"AU{self.number}"


@dataclass(frozen=True)
class Expression:
    """One expression category: its id, the label name used in the name template, and a description."""

    label_id: str
    name: str
    description: str


@dataclass(frozen=True)
class Activity:
    """One recorded elicitation task: its task id, the emotion it targets, and what the participant does.

    `description` is a participle phrase that completes "a photo of a person ...".
    """

    task_id: str
    target_emotion: str
    description: str


ACTION_UNITS: dict[int, ActionUnit] = {
    au.number: au
    for au in (
        ActionUnit(1, "inner brow raiser",
                   "The inner ends of the eyebrows are pulled upward, wrinkling the middle of the forehead "
                   "and giving the face a worried look."),
        ActionUnit(2, "outer brow raiser",
                   "The outer parts of the eyebrows lift and arch, stretching the skin at the sides of the forehead."),
        ActionUnit(4, "brow lowerer",
                   "The eyebrows are drawn down and together, creasing the skin between them into a frown."),
        ActionUnit(5, "upper lid raiser",
                   "The upper eyelids lift so that more of the white of the eye shows and the eyes look wide open."),
        ActionUnit(6, "cheek raiser",
                   "The cheeks are pushed up toward the eyes, bunching the skin below them and making crow's-feet "
                   "at their outer corners, as in a genuine smile."),
        ActionUnit(7, "lid tightener",
                   "The eyelids tense and the lower lids rise, narrowing the eyes into a squint."),
        ActionUnit(9, "nose wrinkler",
                   "The skin along the sides of the nose is pulled up into wrinkles and the brows come down, as in "
                   "disgust."),
        ActionUnit(10, "upper lip raiser",
                   "The upper lip is lifted straight up, deepening the fold that runs from the nose to the mouth."),
        ActionUnit(12, "lip corner puller",
                   "The corners of the lips are pulled back and up at an angle, shaping the mouth into a smile."),
        ActionUnit(14, "dimpler",
                   "The lip corners tighten and draw inward, pressing small dimples into the cheeks beside the mouth."),
        ActionUnit(15, "lip corner depressor",
                   "The corners of the lips are pulled down, turning the mouth downward as in sadness."),
        ActionUnit(16, "lower lip depressor",
                   "The lower lip is pulled down and slightly outward, uncovering the lower teeth."),
        ActionUnit(17, "chin raiser",
                   "The chin is pushed up, wrinkling its skin and pushing the lower lip upward into a pout."),
        ActionUnit(20, "lip stretcher",
                   "The lips are pulled sideways toward the ears, flattening and widening the mouth, as in fear."),
        ActionUnit(23, "lip tightener",
                   "The lips tighten and narrow so that their red parts look thinner and the mouth looks firm."),
        ActionUnit(24, "lip pressor",
                   "The lips are pressed firmly against each other, as when holding back a reaction."),
        ActionUnit(25, "lips part",
                   "The lips come apart so that the mouth is slightly open and the teeth may show."),
        ActionUnit(26, "jaw drop",
                   "The jaw relaxes and falls so that the mouth hangs open."),
        ActionUnit(27, "mouth stretch",
                   "The jaw is pulled far down and the mouth is stretched wide open."),
    )
}

#: The 12 AUs evaluated on BP4D and BP4D+.
BP4D_AU_NUMBERS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
#: The 8 AUs evaluated on DISFA.
DISFA_AU_NUMBERS: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)

EXPRESSIONS: dict[str, Expression] = {
    e.label_id: e
    for e in (
        Expression("neutral", "a neutral expression",
                   "The face is relaxed and still, with no muscle raising, lowering or tightening the brows, eyes "
                   "or mouth."),
        Expression("happiness", "happiness",
                   "The cheeks rise and the lip corners pull up into a smile, often with crow's-feet around the eyes."),
        Expression("sadness", "sadness",
                   "The inner brows lift, the lip corners turn down and the gaze tends to drop, giving a downcast look."),
        Expression("surprise", "surprise",
                   "The brows shoot up, the eyes open wide and the jaw drops so that the mouth falls open."),
        Expression("fear", "fear",
                   "The brows rise and draw together, the upper lids lift and the lips stretch back toward the ears."),
        Expression("disgust", "disgust",
                   "The nose wrinkles and the upper lip curls up, as if recoiling from something offensive."),
        Expression("anger", "anger",
                   "The brows lower and pull together, the eyes glare and the lips press tightly together."),
        Expression("contempt", "contempt",
                   "One lip corner tightens and rises on one side of the face only, in a half smile or sneer."),
    )
}

#: The 8 expressions, in the order used by the package (AffectNet's class set).
EXPRESSION_ORDER: tuple[str, ...] = tuple(EXPRESSIONS)

BP4D_ACTIVITIES: dict[str, Activity] = {
    a.task_id: a
    for a in (
        Activity("T1", "happiness or amusement", "chatting with an interviewer and laughing at a funny joke"),
        Activity("T2", "sadness", "watching a sad documentary and talking about how it felt"),
        Activity("T3", "surprise or startle", "startled by a sudden, loud burst of sound"),
        Activity("T4", "embarrassment", "making up and singing a silly song on the spot"),
        Activity("T5", "fear or nervousness", "nervously waiting for a physical threat"),
        Activity("T6", "physical pain", "holding a hand in ice-cold water"),
        Activity("T7", "anger", "being insulted and spoken to harshly by the experimenter"),
        Activity("T8", "disgust", "smelling an unpleasant, foul odor"),
    )
}

BP4D_PLUS_ACTIVITIES: dict[str, Activity] = {
    a.task_id: a
    for a in (
        Activity("T1", "happiness or amusement", "chatting with the experimenter and laughing at a funny joke"),
        Activity("T2", "surprise", "reacting to something unexpected appearing in front of them"),
        Activity("T3", "sadness", "listening to a distressing and sad recording"),
        Activity("T4", "startle", "startled by a sudden, loud burst of sound"),
        Activity("T5", "skepticism", "answering a puzzling question with doubt"),
        Activity("T6", "embarrassment", "making up and singing a silly song on the spot"),
        Activity("T7", "fear", "nervously waiting for a physical threat"),
        Activity("T8", "physical pain", "holding a hand in ice-cold water"),
        Activity("T9", "anger", "listening to harsh, insulting complaints about their performance"),
        Activity("T10", "disgust", "smelling an unpleasant, foul odor"),
    )
}

#: The paper's single label-name template (Sec. 3.3).
NAME_TEMPLATE: str = "a photo of a person with {}."
#: Description templates; one is drawn at random per mini-batch (Sec. 3.3). Descriptions are full sentences.
DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of a face. {}",
    "a close-up of a person's face. {}",
    "facial behavior: {}",
)
#: Activity templates; one is drawn at random per mini-batch (Sec. 3.3). Activities complete "a person ...".
ACTIVITY_TEMPLATES: tuple[str, ...] = (
    "a photo of a person {}.",
    "a close-up photo of someone {}.",
    "a video frame of a person {}.",
    "the face of a participant {}.",
)


#: AU intensity levels (0 absent, then FACS A-E as 1-5, DISFA's 0-5 scale) and the phrase that puts each around an AU
#: name (the CLEF poster's extension: "intensity details can be integrated into label names"). The phrase fills the
#: name's slot of `NAME_TEMPLATE`: "a photo of a person with slight lip corner puller." FACS calls its levels trace,
#: slight, marked or pronounced, severe or extreme, and maximum.
INTENSITY_LEVELS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
INTENSITY_PHRASES: tuple[str, ...] = (
    "no {}",
    "a trace of {}",
    "slight {}",
    "pronounced {}",
    "extreme {}",
    "maximum {}",
)


def _label_fields(entries: Sequence[ActionUnit | Expression]) -> dict[str, list[str]]:
    return {
        "label_ids": [entry.label_id for entry in entries],
        "label_names": [entry.name for entry in entries],
        "label_descriptions": [entry.description for entry in entries],
    }


def au_labels(au_numbers: Iterable[int] = BP4D_AU_NUMBERS) -> dict[str, list[str]]:
    """Label ids ("AU12"), names and descriptions for `au_numbers`, ready to pass to `CLEFConfig(task="au", ...)`."""
    numbers = list(au_numbers)
    unknown = [n for n in numbers if n not in ACTION_UNITS]
    if unknown:
        raise ValueError(f"No vocabulary entry for AU numbers {unknown}; known AUs are {sorted(ACTION_UNITS)}.")
    return _label_fields([ACTION_UNITS[n] for n in numbers])


def expression_labels(expressions: Iterable[str] = EXPRESSION_ORDER) -> dict[str, list[str]]:
    """Label ids, names and descriptions for `expressions`, ready for `CLEFConfig(task="expression", ...)`."""
    ids = list(expressions)
    unknown = [e for e in ids if e not in EXPRESSIONS]
    if unknown:
        raise ValueError(f"No vocabulary entry for expressions {unknown}; known expressions are {list(EXPRESSIONS)}.")
    return _label_fields([EXPRESSIONS[e] for e in ids])


def fill_template(template: str, texts: Sequence[str]) -> list[str]:
    """Put each text into `template`'s `{}` slot: `fill_template("a photo of a person with {}.", ["dimpler"])`."""
    if template.count("{}") != 1:
        raise ValueError(f"A prompt template needs exactly one '{{}}' slot, got {template!r}.")
    return [template.format(text) for text in texts]


def intensity_prompts(
    label_names: Sequence[str],
    name_template: str = NAME_TEMPLATE,
    intensity_phrases: Sequence[str] = INTENSITY_PHRASES,
) -> list[str]:
    """The prompt of every (AU, intensity level): each name in each phrase, in `name_template`, AU-major.

    `intensity_prompts(["dimpler"], intensity_phrases=["no {}", "slight {}"])` is
    `["a photo of a person with no dimpler.", "a photo of a person with slight dimpler."]`; with C names and L phrases
    the prompt of AU c at level l is at index `c * L + l`.
    """
    phrases = [fill_template(phrase, [name])[0] for name in label_names for phrase in intensity_phrases]
    return fill_template(name_template, phrases)


def all_vocabulary_texts() -> list[str]:
    """Every prompt this vocabulary can produce: a corpus for training a small tokenizer offline."""
    names = [au.name for au in ACTION_UNITS.values()] + [e.name for e in EXPRESSIONS.values()]
    descriptions = [au.description for au in ACTION_UNITS.values()] + [e.description for e in EXPRESSIONS.values()]
    activities = [a.description for a in (*BP4D_ACTIVITIES.values(), *BP4D_PLUS_ACTIVITIES.values())]
    texts = fill_template(NAME_TEMPLATE, names)
    for template in DESCRIPTION_TEMPLATES:
        texts += fill_template(template, descriptions)
    for template in ACTIVITY_TEMPLATES:
        texts += fill_template(template, activities)
    return texts
