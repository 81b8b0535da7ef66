"""CLEFConfig: the paper's defaults, round trips, and clear errors for bad settings."""

import json
import math

import pytest
from transformers import AutoConfig

from clef_hf import CLEFConfig
from clef_hf.vocabulary import NAME_TEMPLATE, au_labels, expression_labels


def test_defaults_are_the_papers():
    config = CLEFConfig()
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (224, 16, 768, 12)
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads) == (12, 512, 8)
    assert config.projection_dim == 512
    assert config.pretraining_temperature == 0.25  # ε
    assert config.image_name_loss_weight == 2.0  # λ
    assert config.au_threshold == 0.5
    assert config.name_template == NAME_TEMPLATE == "a photo of a person with {}."
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / config.temperature_init))
    assert config.task is None and config.label_names == []


def test_partial_vision_config_keeps_patch_16():
    config = CLEFConfig(vision_config={"hidden_size": 64, "num_attention_heads": 4})
    assert config.vision_config.patch_size == 16 and config.vision_config.hidden_size == 64


def without_path(config_dict: dict) -> dict:
    return {key: value for key, value in config_dict.items() if key != "_name_or_path"}


def test_round_trip_and_auto_config(tmp_path):
    config = CLEFConfig(task="au", **au_labels([1, 2, 4]), class_weights=[1.0, 2.0, 0.5], temperature_init=0.05)
    config.save_pretrained(tmp_path)
    for loaded in (CLEFConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert isinstance(loaded, CLEFConfig)
        assert without_path(loaded.to_dict()) == without_path(config.to_dict())
    assert loaded.id2label == {0: "AU1", 1: "AU2", 2: "AU4"}
    assert loaded.label2id["AU4"] == 2


def test_label_ids_default_to_names():
    config = CLEFConfig(task="expression", label_names=["joy", "anger"], label_descriptions=["x.", "y."])
    assert config.label_ids == ["joy", "anger"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "emotion", **expression_labels()}, r"task must be one of \('au', 'expression'\)"),
        ({"task": "au"}, "needs `label_names`"),
        ({"task": "au", "label_names": ["a", "b"], "label_descriptions": ["x."]}, "label_descriptions has 1"),
        ({"task": "au", "label_names": ["a", "b"], "label_ids": ["A"]}, "label_ids has 1"),
        ({"task": "au", "label_names": ["a", "b"], "label_ids": ["A", "A"]}, r"duplicates \['A'\]"),
        ({"task": "au", **au_labels([1, 2]), "class_weights": [1.0]}, "class_weights has 1"),
        ({"task": "au", **au_labels([1, 2]), "class_weights": [1.0, -1.0]}, "finite and >= 0"),
        ({"name_template": "a photo of a person"}, "name_template needs exactly one"),
        ({"description_templates": ["{}", "no slot"]}, "these do not: \\['no slot'\\]"),
        ({"activity_templates": []}, "at least one template"),
        ({"pretraining_temperature": 0.0}, "pretraining_temperature is a temperature"),
        ({"temperature_init": 0.001}, "above max_logit_scale"),
        ({"au_threshold": 1.5}, r"au_threshold is a probability in \(0, 1\), got 1.5"),
        ({"image_name_loss_weight": -1.0}, "λ"),
        ({"projection_dim": 0}, "projection_dim must be positive"),
        ({"au_intensity": True, **expression_labels(), "task": "expression"}, "au_intensity=True.*needs task='au'"),
        ({"au_intensity": True, **au_labels([1]), "task": "au", "label_text": "descriptions"}, "label_text='names'"),
        ({"intensity_levels": [0.0, 1.0]}, r"intensity_levels \(2\) and intensity_phrases \(6\)"),
        ({"intensity_levels": [0.0, 2.0, 1.0], "intensity_phrases": ["no {}", "some {}", "much {}"]}, "increasing"),
        ({"intensity_levels": [0.0, 1.0], "intensity_phrases": ["no {}", "slight"]}, r"these do not: \['slight'\]"),
        ({"intensity_loss_weight": -1.0}, "intensity_loss_weight must be >= 0"),
    ],
)
def test_bad_configuration_raises_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CLEFConfig(**kwargs)


def test_intensity_defaults_and_configs_saved_before_intensity_load(tmp_path):
    config = CLEFConfig(task="au", **au_labels([1, 12]))
    assert config.au_intensity is False and config.intensity_levels == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert config.intensity_phrases[2] == "slight {}" and config.intensity_loss_weight == 1.0
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("au_intensity", "intensity_levels", "intensity_phrases", "intensity_loss_weight"):
        del saved[key]  # a config.json written before intensity existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = CLEFConfig.from_pretrained(tmp_path)
    assert loaded.au_intensity is False and loaded.intensity_levels == config.intensity_levels
