"""Converting an OpenAI-CLIP-format checkpoint (FaRL's layout) into CLEF: features equal a plain-torch reimplementation
of OpenAI's CLIP, the architecture is read off shapes, unsafe or foreign files are refused, and the script runs."""

import json
import logging
import math
import os
import runpy
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPModel

from clef_hf import CLEFModel, CLEFProcessor
from clef_hf.convert_openai_clip import (
    clip_config_from_state_dict,
    convert_openai_clip,
    convert_state_dict,
    load_openai_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "convert_farl.py"


# ---------------------------------------------------------------------------------------------------- OpenAI's CLIP
# Written after openai/CLIP's clip/model.py (ViT image encoder), in sequence-first layout as there.


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model)
        self.attn_mask = attn_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class OpenAICLIP(nn.Module):
    def __init__(self, embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                 context_length=16, vocab_size=100, transformer_width=64, transformer_layers=2):
        super().__init__()
        self.context_length = context_length
        self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                        vision_width // 64, embed_dim)
        mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_width // 64, mask)
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = nn.LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        # The end-of-text token has the largest id, so argmax finds it.
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def random_openai_clip(seed: int = 0, **kwargs) -> OpenAICLIP:
    """A reference CLIP whose every tensor is random, layer norms and biases included, so a mis-mapped tensor shows."""
    torch.manual_seed(seed)
    model = OpenAICLIP(**kwargs)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("logit_scale"):
                parameter.fill_(3.2)
            elif ".ln" in name or name.startswith("ln"):
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, 0.08)
    return model.eval()


def text_ids(vocab_size: int, context_length: int, lengths: list[int], seed: int = 2) -> torch.Tensor:
    """(len(lengths), context_length) sequences as OpenAI's tokenizer makes them: start token (vocab_size - 2),
    ordinary tokens, end-of-text (vocab_size - 1), then padding with 0."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), context_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0] = vocab_size - 2
        ids[row, 1 : length - 1] = torch.randint(1, vocab_size - 2, (length - 2,), generator=generator)
        ids[row, length - 1] = vocab_size - 1
    return ids


def save_farl_style(model: OpenAICLIP, path: Path, prefix: str = "clip.") -> None:
    """FaRL's layout: the CLIP state dict under "state_dict", here also prefixed and with non-CLIP entries."""
    state = {prefix + key: value for key, value in model.state_dict().items()}
    state[prefix + "mim_head.weight"] = torch.zeros(3, 3)  # an extra head under the CLIP prefix
    state["task_head.bias"] = torch.zeros(3)  # an entry outside the CLIP prefix
    torch.save({"state_dict": state, "extra": 1, "epoch": 64}, path)


@pytest.fixture(scope="module")
def reference():
    return random_openai_clip()


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("farl") / "farl.pth"
    save_farl_style(reference, path)
    return convert_openai_clip(path)


# ---------------------------------------------------------------------------------------------------- equivalence


def test_converted_features_equal_openai_clip(reference, converted):
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = text_ids(100, 16, [16, 5, 9])
    attention_mask = (torch.arange(16) < torch.tensor([16, 5, 9])[:, None]).long()
    with torch.no_grad():
        torch.testing.assert_close(converted.get_image_features(images), reference.encode_image(images),
                                   atol=1e-5, rtol=1e-5)
        expected_text = reference.encode_text(ids)
        torch.testing.assert_close(converted.get_text_features(ids), expected_text, atol=1e-5, rtol=1e-5)
        # Padding masked out changes nothing: the causal end-of-text position never sees it.
        torch.testing.assert_close(converted.get_text_features(ids, attention_mask=attention_mask), expected_text,
                                   atol=1e-5, rtol=1e-5)
    assert float(converted.logit_scale.detach()) == pytest.approx(3.2)
    assert converted.config.temperature_init == pytest.approx(math.exp(-3.2))


def test_converted_config_is_openai_clips(converted):
    vision, text = converted.config.vision_config, converted.config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (128, 2, 2)
    assert (vision.image_size, vision.patch_size, vision.intermediate_size) == (32, 8, 512)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (64, 2, 1)
    assert (text.vocab_size, text.max_position_embeddings, text.intermediate_size) == (100, 16, 256)
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (98, 99, 99)
    assert vision.hidden_act == text.hidden_act == "quick_gelu"
    assert vision.layer_norm_eps == text.layer_norm_eps == 1e-5
    assert converted.config.projection_dim == 32


def test_prefix_and_extra_keys_are_stripped_and_reported(reference, tmp_path, caplog):
    path = tmp_path / "farl.pth"
    save_farl_style(reference, path, prefix="module.clip.")
    with caplog.at_level(logging.INFO, logger="clef_hf.convert_openai_clip"):
        state = load_openai_state_dict(path)
        convert_state_dict(state, clip_config_from_state_dict(state))
    assert "visual.conv1.weight" in state and "mim_head.weight" in state and "task_head.bias" not in state
    assert "task_head.bias" in caplog.text and "mim_head.weight" in caplog.text and "'module.clip.'" in caplog.text


def test_safetensors_input(reference, tmp_path):
    path = tmp_path / "clip.safetensors"
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, str(path))
    model = convert_openai_clip(path)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.get_image_features(images), reference.encode_image(images),
                                   atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- architecture


def openai_shapes_on_meta(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                          context_length, vocab_size, transformer_width, transformer_layers) -> dict:
    """The state dict of an OpenAI CLIP ViT of this architecture, as shapes only (meta tensors, no memory)."""
    shapes = {
        "positional_embedding": (context_length, transformer_width),
        "text_projection": (transformer_width, embed_dim),
        "logit_scale": (),
        "token_embedding.weight": (vocab_size, transformer_width),
        "ln_final.weight": (transformer_width,),
        "ln_final.bias": (transformer_width,),
        "visual.class_embedding": (vision_width,),
        "visual.positional_embedding": ((image_resolution // vision_patch_size) ** 2 + 1, vision_width),
        "visual.proj": (vision_width, embed_dim),
        "visual.conv1.weight": (vision_width, 3, vision_patch_size, vision_patch_size),
        "visual.ln_pre.weight": (vision_width,),
        "visual.ln_pre.bias": (vision_width,),
        "visual.ln_post.weight": (vision_width,),
        "visual.ln_post.bias": (vision_width,),
    }
    for prefix, width, layers in (("visual.", vision_width, vision_layers), ("", transformer_width,
                                                                             transformer_layers)):
        for index in range(layers):
            block = f"{prefix}transformer.resblocks.{index}."
            shapes.update({
                block + "attn.in_proj_weight": (3 * width, width),
                block + "attn.in_proj_bias": (3 * width,),
                block + "attn.out_proj.weight": (width, width),
                block + "attn.out_proj.bias": (width,),
                block + "ln_1.weight": (width,),
                block + "ln_1.bias": (width,),
                block + "mlp.c_fc.weight": (4 * width, width),
                block + "mlp.c_fc.bias": (4 * width,),
                block + "mlp.c_proj.weight": (width, 4 * width),
                block + "mlp.c_proj.bias": (width,),
                block + "ln_2.weight": (width,),
                block + "ln_2.bias": (width,),
            })
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


# (embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length, vocab_size,
#  transformer_width, transformer_layers), from openai/CLIP's released models.
VIT_B_32 = (512, 224, 12, 768, 32, 77, 49408, 512, 12)
VIT_L_14 = (768, 224, 24, 1024, 14, 77, 49408, 768, 12)


@pytest.mark.parametrize(
    "architecture, vision, text",
    [
        # (hidden, layers, heads, patch, image, mlp), (hidden, layers, heads, context, vocab, mlp)
        (VIT_B_32, (768, 12, 12, 32, 224, 3072), (512, 12, 8, 77, 49408, 2048)),
        (VIT_L_14, (1024, 24, 16, 14, 224, 4096), (768, 12, 12, 77, 49408, 3072)),
    ],
    ids=["ViT-B/32", "ViT-L/14"],
)
def test_architecture_is_read_off_shapes(architecture, vision, text):
    state = openai_shapes_on_meta(*architecture)
    config = clip_config_from_state_dict(state)
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size,
            v.intermediate_size) == vision
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.max_position_embeddings, t.vocab_size,
            t.intermediate_size) == text
    assert config.projection_dim == architecture[0]
    assert (t.bos_token_id, t.eos_token_id) == (49406, 49407)
    # The renamed tensors have exactly the shapes of a transformers CLIPModel of that architecture.
    with torch.device("meta"):
        expected = {key: value.shape for key, value in CLIPModel(config).state_dict().items()
                    if not key.endswith("position_ids")}
    assert {key: value.shape for key, value in convert_state_dict(state, config).items()} == expected


def test_head_count_can_be_given():
    state = openai_shapes_on_meta(*VIT_B_32)
    assert clip_config_from_state_dict(state, vision_num_heads=6).vision_config.num_attention_heads == 6


# ---------------------------------------------------------------------------------------------------- errors


def test_a_file_that_is_not_clip_is_named(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"backbone.fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match=r"resnet\.pth.*backbone\.fc\.weight"):
        load_openai_state_dict(path)


def test_resnet_clip_is_refused():
    state = {"visual.conv1.weight": torch.empty(32, 3, 3, 3, device="meta"),
             "visual.layer1.0.conv1.weight": torch.empty(32, 32, 1, 1, device="meta")}
    with pytest.raises(ValueError, match="ResNet"):
        clip_config_from_state_dict(state)


def test_missing_tensors_are_named():
    state = openai_shapes_on_meta(*VIT_B_32)
    config = clip_config_from_state_dict(state)
    del state["visual.ln_post.bias"], state["transformer.resblocks.11.attn.in_proj_weight"]
    with pytest.raises(ValueError, match=r"lacks 2 .*transformer\.resblocks\.11\.attn\.in_proj_weight.*"
                                         r"visual\.ln_post\.bias|lacks 2 .*visual\.ln_post\.bias"):
        convert_state_dict(state, config)
    del state["visual.positional_embedding"]
    with pytest.raises(ValueError, match=r"'visual\.positional_embedding'"):
        clip_config_from_state_dict(state)


class Payload:
    """Unpickling it would create the file `marker`: a stand-in for code hidden in a checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_objects_are_refused(reference, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": reference.state_dict(), "evil": Payload(str(marker))}, path)
    with pytest.raises(ValueError, match=r"evil\.pth.*weights_only"):
        load_openai_state_dict(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- the script


def write_vocab_and_merges(tokenizer, directory: Path) -> None:
    """CLIP's tokenizer files as OpenAI and FaRL distribute them: vocab.json and merges.txt."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(model["vocab"]))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in model["merges"]))


def test_script_converts_with_tokenizer(tokenizer, tmp_path):
    reference = random_openai_clip(seed=3, vocab_size=len(tokenizer), context_length=77)
    checkpoint = tmp_path / "farl.pth"
    save_farl_style(reference, checkpoint)
    write_vocab_and_merges(tokenizer, tmp_path / "tokenizer")
    output = tmp_path / "farl-clef"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(checkpoint), "--output", str(output),
         "--tokenizer", str(tmp_path / "tokenizer")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Detected architecture" in result.stdout and "128 wide, 2 layers, 2 heads" in result.stdout
    assert "task_head.bias" in result.stderr  # the ignored entry is reported

    model = CLEFModel.from_pretrained(output).eval()
    processor = CLEFProcessor.from_pretrained(output)
    processor.check_fits(model.config.text_config)
    assert processor.image_processor.crop_size["height"] == 32
    inputs = processor(text=["a photo of a person with lip corner puller."], return_tensors="pt", padding="max_length",
                       max_length=77)
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(**inputs), reference.encode_text(inputs["input_ids"]),
                                   atol=1e-5, rtol=1e-5)


def test_script_without_tokenizer_says_so(reference, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "farl.pth"
    save_farl_style(reference, checkpoint)
    output = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["convert_farl.py", "--checkpoint", str(checkpoint), "--output", str(output)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out
    assert "no processor was written" in printed and "--tokenizer" in printed
    assert (output / "model.safetensors").exists() and not (output / "processor_config.json").exists()
    assert isinstance(CLEFModel.from_pretrained(output), CLEFModel)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_archives_and_garbage_are_explained(tmp_path):
    archive = tmp_path / "ViT-B-32.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(archive))
    with pytest.raises(ValueError, match=r"ViT-B-32\.pt is a TorchScript archive.*torch\.jit\.load"):
        load_openai_state_dict(archive)
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pth is not a PyTorch checkpoint"):
        load_openai_state_dict(garbage)
