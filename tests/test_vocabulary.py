"""The label vocabularies: FACS AUs, expressions, activities and templates."""

import pytest

from clef_hf.vocabulary import (
    ACTION_UNITS,
    ACTIVITY_TEMPLATES,
    BP4D_ACTIVITIES,
    BP4D_AU_NUMBERS,
    BP4D_PLUS_ACTIVITIES,
    DESCRIPTION_TEMPLATES,
    DISFA_AU_NUMBERS,
    EXPRESSION_ORDER,
    EXPRESSIONS,
    NAME_TEMPLATE,
    all_vocabulary_texts,
    au_labels,
    expression_labels,
    fill_template,
)

FACS_NAMES = {
    1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser", 6: "cheek raiser",
    7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser", 12: "lip corner puller", 14: "dimpler",
    15: "lip corner depressor", 16: "lower lip depressor", 17: "chin raiser", 20: "lip stretcher",
    23: "lip tightener", 24: "lip pressor", 25: "lips part", 26: "jaw drop", 27: "mouth stretch",
}


def test_action_units_cover_facs_names_with_sentences():
    for number, name in FACS_NAMES.items():
        unit = ACTION_UNITS[number]
        assert unit.name == name and unit.label_id == f"AU{number}"
        assert unit.description.endswith(".") and len(unit.description.split()) >= 8
    assert len({u.description for u in ACTION_UNITS.values()}) == len(ACTION_UNITS)
    assert set(BP4D_AU_NUMBERS) <= set(ACTION_UNITS) and set(DISFA_AU_NUMBERS) <= set(ACTION_UNITS)


def test_expressions_and_activities():
    assert EXPRESSION_ORDER == ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
    assert all(e.description.endswith(".") for e in EXPRESSIONS.values())
    assert list(BP4D_ACTIVITIES) == [f"T{i}" for i in range(1, 9)]
    assert list(BP4D_PLUS_ACTIVITIES) == [f"T{i}" for i in range(1, 11)]
    assert BP4D_ACTIVITIES["T6"].target_emotion == "physical pain"
    assert BP4D_ACTIVITIES["T8"].target_emotion == "disgust"


def test_templates_have_one_slot_and_the_papers_name_template():
    assert NAME_TEMPLATE.format("lip corner puller") == "a photo of a person with lip corner puller."
    for template in (*DESCRIPTION_TEMPLATES, *ACTIVITY_TEMPLATES):
        assert template.count("{}") == 1
    assert len(DESCRIPTION_TEMPLATES) > 1 and len(ACTIVITY_TEMPLATES) > 1
    with pytest.raises(ValueError, match="exactly one"):
        fill_template("no slot", ["x"])


def test_label_helpers():
    au = au_labels([1, 12])
    assert au == {
        "label_ids": ["AU1", "AU12"],
        "label_names": ["inner brow raiser", "lip corner puller"],
        "label_descriptions": [ACTION_UNITS[1].description, ACTION_UNITS[12].description],
    }
    assert expression_labels(["anger"])["label_names"] == ["anger"]
    with pytest.raises(ValueError, match=r"AU numbers \[3\]"):
        au_labels([1, 3])
    with pytest.raises(ValueError, match="joy"):
        expression_labels(["joy"])
    texts = all_vocabulary_texts()
    assert "a photo of a person with dimpler." in texts and len(texts) > 100
