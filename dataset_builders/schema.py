"""The one schema every facial-behaviour builder fills: column names, types and the AU order stated in the info.

Columns, in this order, where the data set has the information:
  - `image`: `datasets.Image()`.
  - `subject`: string.
  - `activity`, `activity_description`: the recorded task id (e.g. "T1") and its text.
  - `au`: list of int8, 1 present, 0 absent, -1 unknown, in the order of the info's `au_ids`.
  - `au_intensity`: list of float32 (0-5), -1 where unknown.
  - `expression`: `ClassLabel` over the package's expression ids.
  - `caption`: string, a web-style description of the picture in lay words (stage 0's image-text pairs).
"""

import datasets

from clef_hf.vocabulary import BP4D_AU_NUMBERS, DISFA_AU_NUMBERS, EXPRESSION_ORDER

#: The 7 basic expressions (AffectNet-7, RAF-DB, FERPlus without contempt), in the package's order.
EXPRESSIONS_7: tuple[str, ...] = EXPRESSION_ORDER[:7]
#: The 8 expressions (AffectNet-8, FERPlus), in the package's order: AffectNet's own class order.
EXPRESSIONS_8: tuple[str, ...] = EXPRESSION_ORDER



def expression_classes(num_classes: int) -> tuple[str, ...]:
    """The package's expression classes for a 7- or 8-class data set (8 adds contempt)."""
    if num_classes not in (7, 8):
        raise ValueError(f"Expression data sets have 7 or 8 classes, got {num_classes}.")
    return EXPRESSIONS_8 if num_classes == 8 else EXPRESSIONS_7


BP4D_AU_IDS: tuple[str, ...] = tuple(f"AU{n}" for n in BP4D_AU_NUMBERS)
DISFA_AU_IDS: tuple[str, ...] = tuple(f"AU{n}" for n in DISFA_AU_NUMBERS)

AU_PRESENT, AU_ABSENT, AU_UNKNOWN = 1, 0, -1
INTENSITY_UNKNOWN = -1.0

_AU_IDS_PREFIX = "au_ids: "


def facial_behavior_features(
    *,
    subject: bool = True,
    activity: bool = False,
    au: bool = False,
    au_intensity: bool = False,
    expressions: tuple[str, ...] | None = None,
    caption: bool = False,
) -> datasets.Features:
    """The `datasets.Features` of a builder: `image` always, then the columns the data set has, in schema order."""
    columns = {"image": datasets.Image()}
    if subject:
        columns["subject"] = datasets.Value("string")
    if activity:
        columns["activity"] = datasets.Value("string")
        columns["activity_description"] = datasets.Value("string")
    if au:
        columns["au"] = datasets.Sequence(datasets.Value("int8"))
    if au_intensity:
        columns["au_intensity"] = datasets.Sequence(datasets.Value("float32"))
    if expressions is not None:
        columns["expression"] = datasets.ClassLabel(names=list(expressions))
    if caption:
        columns["caption"] = datasets.Value("string")
    return datasets.Features(columns)


def describe(text: str, au_ids: tuple[str, ...] | None = None) -> str:
    """A `DatasetInfo.description`: `text`, then a machine-readable `au_ids:` line when the set has AU labels."""
    if au_ids:
        return f"{text.rstrip()}\n{_AU_IDS_PREFIX}{','.join(au_ids)}"
    return text


def au_ids_of(dataset_or_info) -> list[str]:
    """The AU order of the `au` column, read from a `Dataset`'s (or `DatasetInfo`'s) description.

    Raises:
        ValueError: if the description states no `au_ids` (the data set has no AU labels).
    """
    info = getattr(dataset_or_info, "info", dataset_or_info)
    for line in (info.description or "").splitlines():
        if line.startswith(_AU_IDS_PREFIX):
            return line[len(_AU_IDS_PREFIX):].split(",")
    raise ValueError(f"The data set {info.dataset_name or info.builder_name!r} states no au_ids: it has no AU labels.")
