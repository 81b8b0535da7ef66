"""CLEFModel: CLIP parity, the label-embedding buffer, forward losses, save/load round trips and remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import PROJECTION_DIM
from transformers import AutoConfig, AutoModel

from clef_hf import CLEFConfig, CLEFModel, TokenizerMismatchError, au_loss, expression_loss
from clef_hf.losses import fine_tuning_loss, name_description_loss
from clef_hf.vocabulary import au_labels, expression_labels, fill_template


def prompt_inputs(tokenizer, texts):
    return tokenizer(texts, padding=True, return_tensors="pt")


# ---------------------------------------------------------------- from_clip


def test_from_clip_has_feature_parity(tiny_clip, tokenizer, pixel_values):
    model = CLEFModel.from_clip(tiny_clip, tokenizer=tokenizer, task="au", **au_labels([1, 12])).eval()
    text = prompt_inputs(tokenizer, ["a photo of a person with lip corner puller.", "a smiling face"])
    with torch.no_grad():
        expected_image = tiny_clip.get_image_features(pixel_values=pixel_values).pooler_output
        expected_text = tiny_clip.get_text_features(**text).pooler_output
        ours_image = model.get_image_features(pixel_values)
        ours_text = model.get_text_features(text["input_ids"], text["attention_mask"])
    assert ours_image.shape == (4, 16) and ours_text.shape == (2, 16)
    torch.testing.assert_close(ours_image, expected_image, rtol=0, atol=0)
    torch.testing.assert_close(ours_text, expected_text, rtol=0, atol=0)
    # The learnable temperature starts at CLIP's, and the config records it.
    assert model.logit_scale.item() == pytest.approx(tiny_clip.logit_scale.item())
    assert model.config.temperature_init == pytest.approx(torch.exp(-tiny_clip.logit_scale).item())
    # Label embeddings were computed from the name prompts.
    prompts = fill_template(model.config.name_template, model.config.label_names)
    expected_labels = torch.nn.functional.normalize(
        tiny_clip.get_text_features(**prompt_inputs(tokenizer, prompts)).pooler_output, dim=-1
    )
    torch.testing.assert_close(model.label_embeddings, expected_labels, rtol=1e-5, atol=1e-6)


def test_from_clip_directory_and_explicit_temperature(tiny_clip, tmp_path, pixel_values):
    tiny_clip.save_pretrained(tmp_path / "clip")
    model = CLEFModel.from_clip(str(tmp_path / "clip"), temperature_init=0.05).eval()
    assert model.logit_scale.item() == pytest.approx(float(torch.log(torch.tensor(1 / 0.05))))
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_image_features(pixel_values),
            tiny_clip.get_image_features(pixel_values=pixel_values).pooler_output,
        )


def test_from_clip_rejects_other_projection_dim(tiny_clip):
    with pytest.raises(ValueError, match="projection_dim=32 does not match"):
        CLEFModel.from_clip(tiny_clip, projection_dim=32)


# ---------------------------------------------------------------- label embeddings and forward


def test_forward_without_label_embeddings_raises(make_config, pixel_values):
    model = CLEFModel(make_config("au"))
    with pytest.raises(ValueError, match="update_label_embeddings"):
        model(pixel_values=pixel_values)


def test_label_embeddings_are_normalised_and_follow_config(au_model, tokenizer):
    assert au_model.label_embeddings.shape == (5, 16)
    torch.testing.assert_close(au_model.label_embeddings.norm(dim=-1), torch.ones(5))
    au_model.config.label_names = au_model.config.label_names[:3]
    au_model.update_label_embeddings(tokenizer)
    assert au_model.label_embeddings.shape == (3, 16)
    assert "label_embeddings" in dict(au_model.named_buffers())


def test_update_label_embeddings_rejects_a_tokenizer_that_does_not_fit(make_config):
    from transformers import CLIPTokenizer

    model = CLEFModel(make_config("au"))
    with pytest.raises(TokenizerMismatchError, match="unknown token"):
        model.update_label_embeddings(CLIPTokenizer())  # the broken tokenizer transformers returns offline


def test_forward_logits_are_scaled_cosine_similarities(au_model, pixel_values):
    with torch.no_grad():
        output = au_model(pixel_values=pixel_values)
        image = torch.nn.functional.normalize(au_model.get_image_features(pixel_values), dim=-1)
    expected = au_model.logit_scale.exp() * image @ au_model.label_embeddings.T
    assert output.logits.shape == (4, 5)
    torch.testing.assert_close(output.logits, expected, rtol=1e-5, atol=1e-5)
    assert output.loss is None


def test_forward_au_loss_uses_labels_and_class_weights(au_model, pixel_values):
    labels = torch.tensor([[1, 0, -1, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 0, -1], [-1, -1, -1, -1, -1]])
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    output = au_model(pixel_values=pixel_values, labels=labels, class_weights=weights)
    expected = au_loss(output.image_embeds, output.label_embeds, labels, au_model.temperature, weights)
    torch.testing.assert_close(output.loss, expected)
    unweighted = au_model(pixel_values=pixel_values, labels=labels).loss
    assert not torch.allclose(unweighted, output.loss)
    # config.class_weights is the default for class_weights.
    au_model.config.class_weights = weights.tolist()
    torch.testing.assert_close(au_model(pixel_values=pixel_values, labels=labels).loss, output.loss)


def test_forward_expression_loss(make_config, tokenizer, pixel_values):
    torch.manual_seed(0)
    model = CLEFModel(make_config("expression"))
    model.update_label_embeddings(tokenizer)
    labels = torch.tensor([0, 3, 7, 1])
    output = model(pixel_values=pixel_values, labels=labels)
    assert output.logits.shape == (4, 8)
    torch.testing.assert_close(
        output.loss, expression_loss(output.image_embeds, output.label_embeds, labels, model.temperature)
    )


def test_forward_full_fine_tuning_loss_trains_both_towers(au_model, tokenizer, pixel_values):
    au_model.train()
    config = au_model.config
    names = prompt_inputs(tokenizer, fill_template(config.name_template, config.label_names))
    descriptions = prompt_inputs(tokenizer, fill_template(config.description_templates[1], config.label_descriptions))
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 0, 0], [0, 1, -1, 0, 0]])
    output = au_model(
        pixel_values=pixel_values,
        labels=labels,
        name_input_ids=names["input_ids"],
        name_attention_mask=names["attention_mask"],
        description_input_ids=descriptions["input_ids"],
        description_attention_mask=descriptions["attention_mask"],
    )
    temperature = au_model.temperature
    expected_in = au_loss(output.image_embeds, output.label_embeds, labels, temperature)
    expected_dn = name_description_loss(output.description_embeds, output.label_embeds, temperature)
    torch.testing.assert_close(output.image_name_loss, expected_in)
    torch.testing.assert_close(output.name_description_loss, expected_dn)
    torch.testing.assert_close(output.loss, fine_tuning_loss(expected_in, expected_dn, 2.0))
    output.loss.backward()
    for name in ("logit_scale", "visual_projection.weight", "text_projection.weight",
                 "text_model.embeddings.token_embedding.weight", "vision_model.embeddings.patch_embedding.weight"):
        grad = au_model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_labels_without_task_raise(make_config, tokenizer, pixel_values):
    model = CLEFModel(make_config(None, label_names=["a", "b"]))
    model.update_label_embeddings(tokenizer)
    with pytest.raises(ValueError, match="config.task is None"):
        model(pixel_values=pixel_values, labels=torch.zeros(4, 2))


def test_text_features_reject_ids_outside_the_vocabulary(au_model):
    with pytest.raises(ValueError, match="vocabulary of"):
        au_model.get_text_features(torch.tensor([[0, 10_000]]))


def test_temperature_is_bounded(au_model):
    with torch.no_grad():
        au_model.logit_scale.fill_(10.0)
    assert au_model.temperature.item() == pytest.approx(1 / au_model.config.max_logit_scale)


# ---------------------------------------------------------------- save / load


def test_save_and_load_round_trip(au_model, tmp_path, pixel_values):
    au_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    with torch.no_grad():
        expected = au_model(pixel_values=pixel_values).logits
    for loader in (CLEFModel.from_pretrained, AutoModel.from_pretrained):
        loaded = loader(tmp_path).eval()
        assert type(loaded) is CLEFModel
        torch.testing.assert_close(loaded.label_embeddings, au_model.label_embeddings, rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, expected, rtol=0, atol=0)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CLEFConfig)


def test_loading_with_another_projection_dim_names_the_mismatch(au_model, tmp_path):
    au_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"projection_dim=8 does not match .* 16 wide"):
        CLEFModel.from_pretrained(tmp_path, projection_dim=8)
    with pytest.raises(ValueError, match="projection_dim=8"):
        CLEFModel.from_pretrained(tmp_path, config=CLEFConfig.from_pretrained(tmp_path, projection_dim=8))


def test_checkpoint_loads_through_remote_code_without_the_package(au_model, processor, tmp_path, pixel_values):
    au_model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_clef.CLEFConfig", "AutoModel": "modeling_clef.CLEFModel"}
    torch.save(pixel_values, tmp_path / "pixels.pt")
    with torch.no_grad():
        torch.save(au_model(pixel_values=pixel_values).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["clef_hf"] = None  # as for a user who does not have the package
        import torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoProcessor.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        assert type(processor).__name__ == "CLEFProcessor"
        with torch.no_grad():
            logits = model(pixel_values=torch.load({str(tmp_path / "pixels.pt")!r})).logits
        torch.testing.assert_close(logits, torch.load({str(tmp_path / "expected.pt")!r}))
        print("REMOTE-OK")
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            cwd=tmp_path)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_installed_package_never_needs_trust_remote_code(au_model, tmp_path):
    au_model.save_pretrained(tmp_path)
    # With the package imported, the local registration wins over the checkpoint's auto_map without a prompt.
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is CLEFModel


def test_gradient_checkpointing_gives_the_same_gradients(make_config, tokenizer, pixel_values):
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 0, 0], [0, 1, -1, 0, 0]])
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = CLEFModel(make_config("au"))
        model.update_label_embeddings(tokenizer)
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.vision_model.encoder.gradient_checkpointing
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        gradients.append(model.vision_model.embeddings.patch_embedding.weight.grad.clone())
    torch.testing.assert_close(gradients[0], gradients[1])


def test_tuple_output(au_model, pixel_values):
    with torch.no_grad():
        as_tuple = au_model(pixel_values=pixel_values, return_dict=False)
        as_output = au_model(pixel_values=pixel_values)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_output.logits)


# ---------------------------------------------------------------- AU intensity


@pytest.fixture
def intensity_model(make_config, tokenizer):
    torch.manual_seed(0)
    model = CLEFModel(make_config("au", au_intensity=True))
    model.update_label_embeddings(tokenizer)
    return model.eval()


def test_intensity_embeddings_are_the_phrase_prompts_and_give_the_expected_level(intensity_model, tokenizer,
                                                                                 pixel_values):
    config = intensity_model.config
    assert intensity_model.intensity_embeddings.shape == (5, 6, PROJECTION_DIM)
    prompts = intensity_model.intensity_prompts()
    assert prompts[6 * 4 + 2] == "a photo of a person with slight lip corner puller."  # AU12 is the 5th label
    torch.testing.assert_close(intensity_model.intensity_embeddings.reshape(30, -1),
                               intensity_model.encode_texts(tokenizer, prompts))
    with torch.no_grad():
        output = intensity_model(pixel_values=pixel_values)
        image_embeds = output.image_embeds
    logits = torch.einsum("bd,cld->bcl", image_embeds, intensity_model.intensity_embeddings) / intensity_model.temperature
    expected = logits.softmax(-1) @ torch.tensor(config.intensity_levels)
    torch.testing.assert_close(output.intensity, expected)
    assert output.intensity.shape == (4, 5) and ((output.intensity >= 0) & (output.intensity <= 5)).all()


def test_intensity_model_round_trip_and_models_without_intensity_have_no_buffer(intensity_model, au_model, tmp_path,
                                                                                pixel_values):
    assert "intensity_embeddings" not in dict(au_model.named_buffers())
    with torch.no_grad():
        assert au_model(pixel_values=pixel_values).intensity is None
    intensity_model.save_pretrained(tmp_path / "intensity")
    loaded = CLEFModel.from_pretrained(tmp_path / "intensity").eval()
    torch.testing.assert_close(loaded.intensity_embeddings, intensity_model.intensity_embeddings, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).intensity,
                                   intensity_model(pixel_values=pixel_values).intensity)
    au_model.save_pretrained(tmp_path / "plain")  # a checkpoint without intensity loads strictly, as before
    assert "intensity_embeddings" not in dict(CLEFModel.from_pretrained(tmp_path / "plain").named_buffers())


def test_intensity_labels_add_eq_i_to_the_loss_with_gradient_to_the_text_side(intensity_model, tokenizer,
                                                                               pixel_values):
    model = intensity_model.train()
    model.config.intensity_loss_weight = 0.5
    names = model._tokenize(tokenizer, fill_template(model.config.name_template, model.config.label_names))
    phrases = model._tokenize(tokenizer, model.intensity_prompts())
    labels = torch.tensor([[1, 0, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, -1, 0, 1]])
    intensities = torch.tensor([[2.5, 0, 0, 3, 4], [0, 0, 0, 0, 0], [5, 2, 2, 4.2, 3], [0, 2, -1, 0, 2]])
    output = model(pixel_values=pixel_values, labels=labels, name_input_ids=names["input_ids"],
                   name_attention_mask=names["attention_mask"], intensity_input_ids=phrases["input_ids"],
                   intensity_attention_mask=phrases["attention_mask"], intensity_labels=intensities)
    assert output.loss.item() == pytest.approx(output.image_name_loss.item() + 0.5 * output.intensity_loss.item(),
                                               rel=1e-6)
    output.intensity_loss.backward()
    assert model.text_projection.weight.grad.abs().sum() > 0 and model.visual_projection.weight.grad.abs().sum() > 0


def test_intensity_inputs_on_a_model_without_intensity_are_refused(au_model, pixel_values):
    with pytest.raises(ValueError, match="config.au_intensity is False"):
        au_model(pixel_values=pixel_values, intensity_labels=torch.zeros(4, 5))


def test_set_labels_adds_and_drops_the_intensity_buffer(au_model, tokenizer):
    au_model.set_labels("au", **au_labels([4, 6, 12]), au_intensity=True)
    assert au_model.intensity_embeddings.shape == (3, 6, PROJECTION_DIM)
    with pytest.raises(ValueError, match="not been computed"):
        au_model.predict_intensity(torch.randn(1, PROJECTION_DIM))
    au_model.update_label_embeddings(tokenizer)
    assert au_model.predict_intensity(torch.randn(2, PROJECTION_DIM)).shape == (2, 3)
    au_model.set_labels("expression", **expression_labels())
    assert "intensity_embeddings" not in dict(au_model.named_buffers()) and not au_model.config.au_intensity
