"""Conversion of an OpenAI-CLIP-format checkpoint (FaRL's `.pth`, OpenAI's or open_clip's ViT state dicts) into a
[`CLEFModel`]: load the state dict safely, read the architecture off the tensor shapes, rename the tensors to
transformers' `CLIPModel` layout, and build (and optionally save) the CLEF model.

    from clef_hf.convert_openai_clip import convert_openai_clip
    model = convert_openai_clip("FaRL-Base-Patch16-LAIONFace20M-ep64.pth", "farl-clef", tokenizer=clip_tokenizer)
"""

import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping

import torch
from transformers import CLIPConfig, CLIPModel

from .configuration_clef import CLEFConfig
from .modeling_clef import CLEFModel
from .processing_clef import CLEFProcessor, check_tokenizer_fits

logger = logging.getLogger(__name__)

#: The key every OpenAI-CLIP ViT state dict has; found under any prefix, it tells where the CLIP weights live.
ANCHOR_KEY = "visual.conv1.weight"
#: Wrappers that training scripts put around a state dict (FaRL uses "state_dict"; others "model", "module").
WRAPPER_KEYS = ("state_dict", "model", "module")
#: OpenAI's width of one attention head: its models have `width // 64` heads in both towers.
OPENAI_HEAD_WIDTH = 64

_RESBLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.")

# Per-block renames, OpenAI name -> transformers name (the fused attention input projection is split separately).
_BLOCK_RENAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
# Whole-tower renames of tensors outside the blocks (projections are transposed, see `convert_state_dict`).
_TOP_RENAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' name
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}


# ---------------------------------------------------------------------------------------------------- loading


def _find_prefix(keys: list[str]) -> str | None:
    """The shortest prefix under which `ANCHOR_KEY` appears (`""`, `"clip."`, `"module.model."`...), or None."""
    prefixes = [
        key[: -len(ANCHOR_KEY)]
        for key in keys
        if key == ANCHOR_KEY or (key.endswith(ANCHOR_KEY) and key[-len(ANCHOR_KEY) - 1] == ".")
    ]
    return min(prefixes, key=len) if prefixes else None


def load_openai_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load an OpenAI-CLIP-format state dict from a `.pth`/`.pt`/`.bin` pickle or a `.safetensors` file.

    Pickles are read with `torch.load(..., weights_only=True)`, which refuses any object that is not a tensor or a
    plain container, so a malicious checkpoint cannot run code. The CLIP weights are found inside wrappers
    (`{"state_dict": ...}` as FaRL saves them, `{"model": ...}`) and under a common key prefix (`"clip."`,
    `"module."`), which is stripped. Entries outside that prefix, and values that are not tensors, are dropped with a
    log message; CLIP-prefixed tensors that are not CLIP's stay in and are reported by [`convert_state_dict`].

    Args:
        path: the checkpoint file.

    Returns:
        `{OpenAI CLIP key: tensor}`, e.g. `"visual.conv1.weight"` of shape (width, 3, patch, patch).

    Raises:
        ValueError: the file holds something other than tensors and containers, is a TorchScript archive, or holds
            no OpenAI CLIP ViT state dict (the message names the file and the first keys seen).
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            checkpoint = load_file(path, device="cpu")
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    else:
        try:
            with warnings.catch_warnings():
                # A TorchScript archive is explained below; torch's own warning about it would only add noise.
                warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive", category=UserWarning)
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's message is long and generic; its "WeightsUnpickler error:" line says what was found.
            detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", str(error), flags=re.DOTALL)
            detail = detail.group(1).strip() if detail else str(error)
            if "Unsupported global" in detail:
                raise ValueError(
                    f"{path} holds Python objects other than tensors, so it was refused: checkpoints are loaded with "
                    f"torch.load(weights_only=True), which cannot run code hidden in a pickle. ({detail})"
                ) from error
            raise ValueError(f"{path} is not a PyTorch checkpoint ({detail}).") from error
        except RuntimeError as error:
            if "TorchScript" not in str(error):
                raise ValueError(f"{path} could not be read as a PyTorch checkpoint: {error}") from error
            # OpenAI's own ViT-B-32.pt etc. are TorchScript archives, which weights_only cannot open.
            raise ValueError(
                f"{path} is a TorchScript archive (as OpenAI's released CLIP .pt files are), which cannot be loaded "
                "with weights_only=True. If you trust the file, extract its weights once with "
                "`safetensors.torch.save_file(torch.jit.load(path, map_location='cpu').state_dict(), "
                "'clip.safetensors')` and convert the .safetensors file."
            ) from error
        except (KeyError, EOFError) as error:  # what torch.load raises on truncated or non-pickle bytes
            raise ValueError(
                f"{path} is not a PyTorch checkpoint (torch.load failed with {type(error).__name__}: {error})."
            ) from error

    # Unwrap {"state_dict": {...}} (FaRL), {"model": {...}} and nestings of them, unless the CLIP keys are already here.
    while isinstance(checkpoint, Mapping) and _find_prefix([str(key) for key in checkpoint]) is None:
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
        if wrapper is None:
            break
        checkpoint = checkpoint[wrapper]

    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict of OpenAI CLIP weights.")
    keys = [str(key) for key in checkpoint]
    prefix = _find_prefix(keys)
    if prefix is None:
        raise ValueError(
            f"{path} is not an OpenAI-CLIP-format ViT checkpoint: no key ends with {ANCHOR_KEY!r}. Its first keys are "
            f"{keys[:10]} ({len(keys)} in all)."
        )

    state = {}
    dropped = []
    for key, value in checkpoint.items():
        if isinstance(key, str) and key.startswith(prefix) and isinstance(value, torch.Tensor):
            state[key[len(prefix):]] = value
        else:
            dropped.append(str(key))
    if prefix:
        logger.info("%s: CLIP weights found under the prefix %r.", path, prefix)
    if dropped:
        logger.warning("%s: ignored %d entries outside the CLIP weights: %s", path, len(dropped), _preview(dropped))
    return state


def _preview(keys: list[str], count: int = 10) -> str:
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys) - count} more)" if len(keys) > count else "")


# ---------------------------------------------------------------------------------------------------- architecture


def _shape(state: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in state:
        raise ValueError(f"The OpenAI CLIP state dict has no {key!r}, which is needed to read the architecture.")
    return state[key].shape


def _num_layers(state: Mapping[str, torch.Tensor], tower: str) -> int:
    """Number of residual blocks of `tower` ("visual" or "text"), from the largest block index."""
    indices = set()
    for key in state:
        match = _RESBLOCK.match(key)
        if match and (match.group(1) is not None) == (tower == "visual"):
            indices.add(int(match.group(2)))
    if not indices:
        raise ValueError(f"The OpenAI CLIP state dict has no {tower} transformer blocks ('...resblocks.N.' keys).")
    return max(indices) + 1


def clip_config_from_state_dict(
    state: Mapping[str, torch.Tensor],
    vision_num_heads: int | None = None,
    text_num_heads: int | None = None,
) -> CLIPConfig:
    """Read a ViT CLIP architecture off the tensor shapes of an OpenAI-CLIP-format state dict.

    Only shapes are read, so the tensors may live on the `meta` device. OpenAI's conventions fill in what shapes do
    not say: QuickGELU, layer-norm eps 1e-5, an MLP of the c_fc width, and `width // 64` attention heads per tower.

    The text tower's end-of-text token is the last id of the vocabulary (49407 in CLIP's), the start token the one
    before; OpenAI's model pools at the largest id of each sequence, which is that same token. transformers pools at
    the first occurrence of `eos_token_id` (for any value but the legacy 2), so that equals OpenAI's pooling whatever
    padding follows. `pad_token_id` is set to the end-of-text id, the token `CLIPTokenizer` pads with; the text
    encoder never reads it (it only matters to the tokenizer and to generation utilities).

    Args:
        state: `{OpenAI CLIP key: tensor}`, as [`load_openai_state_dict`] returns.
        vision_num_heads, text_num_heads: head counts, for checkpoints whose heads are not 64 wide (open_clip's
            ViT-H/14 has 16 heads of 80); the shapes cannot tell.

    Returns:
        A `CLIPConfig` with `projection_dim` and the text and vision sub-configurations.

    Raises:
        ValueError: a tensor the architecture is read from is missing, the image encoder is a ResNet (transformers'
            CLIP has only ViT image encoders), or shapes disagree.
    """
    if "visual.class_embedding" not in state and any(key.startswith("visual.layer1.") for key in state):
        raise ValueError(
            "This is a ResNet CLIP checkpoint (it has 'visual.layer1.*' and no 'visual.class_embedding'); "
            "transformers' CLIPModel, and so CLEF, has only ViT image encoders."
        )
    # conv1: (width, 3, patch, patch); positional_embedding: (grid**2 + 1, width), the +1 being the class token.
    vision_width, num_channels, patch_size, _ = _shape(state, "visual.conv1.weight")
    num_positions = _shape(state, "visual.positional_embedding")[0]
    grid = math.isqrt(num_positions - 1)
    if grid * grid != num_positions - 1:
        raise ValueError(
            f"visual.positional_embedding has {num_positions} rows; a square grid of patches plus the class token "
            "needs grid**2 + 1."
        )
    text_width = _shape(state, "ln_final.weight")[0]
    context_length = _shape(state, "positional_embedding")[0]
    vocab_size = _shape(state, "token_embedding.weight")[0]
    projection_dim = _shape(state, "text_projection")[1]
    visual_projection_dim = _shape(state, "visual.proj")[1]
    if visual_projection_dim != projection_dim:
        raise ValueError(
            f"visual.proj projects to {visual_projection_dim} dimensions but text_projection to {projection_dim}; "
            "CLIP's two towers share one embedding space."
        )
    vision_heads = vision_num_heads or vision_width // OPENAI_HEAD_WIDTH
    text_heads = text_num_heads or text_width // OPENAI_HEAD_WIDTH
    for name, width, heads in (("vision", vision_width, vision_heads), ("text", text_width, text_heads)):
        if heads < 1 or width % heads:
            raise ValueError(
                f"The {name} tower is {width} wide, which {heads} attention heads do not divide; pass "
                f"{name}_num_heads."
            )

    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": _shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight")[0],
        "num_hidden_layers": _num_layers(state, "visual"),
        "num_attention_heads": vision_heads,
        "num_channels": num_channels,
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "projection_dim": projection_dim,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": _shape(state, "transformer.resblocks.0.mlp.c_fc.weight")[0],
        "num_hidden_layers": _num_layers(state, "text"),
        "num_attention_heads": text_heads,
        "max_position_embeddings": context_length,
        "projection_dim": projection_dim,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }
    logit_scale = state.get("logit_scale")
    logit_scale_init = 2.6592  # CLIP's log(1 / 0.07); the converted weights overwrite it anyway
    if logit_scale is not None and logit_scale.device.type != "meta":
        logit_scale_init = float(logit_scale)
    return CLIPConfig(
        vision_config=vision_config,
        text_config=text_config,
        projection_dim=projection_dim,
        logit_scale_init_value=logit_scale_init,
    )


# ---------------------------------------------------------------------------------------------------- renaming


def _block_keys(tower_prefix: str, index: int) -> list[str]:
    block = f"{tower_prefix}transformer.resblocks.{index}."
    return [block + "attn.in_proj_weight", block + "attn.in_proj_bias"] + [
        f"{block}{name}.{kind}" for name in _BLOCK_RENAMES for kind in ("weight", "bias")
    ]


def openai_clip_keys(config: CLIPConfig) -> list[str]:
    """Every key an OpenAI-CLIP ViT state dict of architecture `config` holds (and [`convert_state_dict`] needs)."""
    keys = list(_TOP_RENAMES) + list(_TRANSPOSED)
    for index in range(config.vision_config.num_hidden_layers):
        keys += _block_keys("visual.", index)
    for index in range(config.text_config.num_hidden_layers):
        keys += _block_keys("", index)
    return keys


def convert_state_dict(state: Mapping[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    """Rename an OpenAI-CLIP state dict to transformers' `CLIPModel` keys.

    - `attn.in_proj_weight` (3 * width, width) and `attn.in_proj_bias` (3 * width,) are split along dim 0 into the
      q, k and v projections, in that order (as `nn.MultiheadAttention` packs them).
    - `text_projection` (text_width, projection_dim) and `visual.proj` (vision_width, projection_dim) are applied by
      OpenAI as `x @ P`; `nn.Linear` computes `x @ W.T`, so `W = P.T`.
    - Everything else is renamed as is (conv1 has no bias, as in transformers). Tensors keep their dtype.

    Keys that are not OpenAI CLIP's (a FaRL checkpoint's extra heads, the integer `input_resolution`,
    `context_length` and `vocab_size` entries of OpenAI's archives) are left out and logged.

    Args:
        state: `{OpenAI CLIP key: tensor}`, as [`load_openai_state_dict`] returns.
        config: the architecture, from [`clip_config_from_state_dict`].

    Returns:
        `{CLIPModel key: tensor}`, every parameter of `CLIPModel(config)` (its non-persistent `position_ids` buffers
        excepted).

    Raises:
        ValueError: naming the OpenAI keys that `config` needs and `state` lacks.
    """
    expected = openai_clip_keys(config)
    missing = [key for key in expected if key not in state]
    if missing:
        raise ValueError(
            f"The OpenAI CLIP state dict lacks {len(missing)} of the {len(expected)} tensors this architecture needs: "
            f"{_preview(missing, 20)}."
        )
    extra = sorted(set(state) - set(expected))
    if extra:
        logger.warning("Ignored %d tensors that are not OpenAI CLIP's: %s", len(extra), _preview(extra))

    converted = {target: state[source] for source, target in _TOP_RENAMES.items()}
    for source, target in _TRANSPOSED.items():
        converted[target] = state[source].T.contiguous()
    towers = (("visual.", "vision_model.", config.vision_config), ("", "text_model.", config.text_config))
    for source_prefix, target_prefix, tower_config in towers:
        for index in range(tower_config.num_hidden_layers):
            source = f"{source_prefix}transformer.resblocks.{index}."
            target = f"{target_prefix}encoder.layers.{index}."
            for kind in ("weight", "bias"):
                q, k, v = state[f"{source}attn.in_proj_{kind}"].chunk(3, dim=0)
                converted[f"{target}self_attn.q_proj.{kind}"] = q.contiguous()
                converted[f"{target}self_attn.k_proj.{kind}"] = k.contiguous()
                converted[f"{target}self_attn.v_proj.{kind}"] = v.contiguous()
                for old, new in _BLOCK_RENAMES.items():
                    converted[f"{target}{new}.{kind}"] = state[f"{source}{old}.{kind}"]
    return converted


# ---------------------------------------------------------------------------------------------------- whole model


def describe_clip_config(config: CLIPConfig | CLEFConfig) -> str:
    """One line describing the towers of a CLIP or CLEF configuration: patch and image size, widths, depths, heads,
    vocabulary and projection."""
    vision, text = config.vision_config, config.text_config
    return (
        f"ViT with {vision.patch_size}-px patches at {vision.image_size} px: vision {vision.hidden_size} wide, "
        f"{vision.num_hidden_layers} layers, {vision.num_attention_heads} heads, MLP {vision.intermediate_size}; "
        f"text {text.hidden_size} wide, {text.num_hidden_layers} layers, {text.num_attention_heads} heads, "
        f"MLP {text.intermediate_size}, context {text.max_position_embeddings}, vocabulary {text.vocab_size} "
        f"(end-of-text id {text.eos_token_id}); projection {config.projection_dim}"
    )


def convert_openai_clip(
    path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    tokenizer=None,
    vision_num_heads: int | None = None,
    text_num_heads: int | None = None,
    **clef_config_kwargs,
) -> CLEFModel:
    """Convert an OpenAI-CLIP-format checkpoint (e.g. FaRL's) into a [`CLEFModel`], and optionally save it.

    The weights are loaded into a float32 `transformers.CLIPModel` with `strict=True` (every tensor placed, none
    left over), then handed to [`CLEFModel.from_clip`], which keeps the checkpoint's logit scale as the initial
    temperature unless `temperature_init` is passed.

    Args:
        path: a `.pth`/`.pt`/`.bin` pickle or a `.safetensors` file; see [`load_openai_state_dict`].
        output_dir: if given, the model is saved there (`config.json`, `model.safetensors`), with a
            [`CLEFProcessor`] at the checkpoint's image size when `tokenizer` is given.
        tokenizer: the CLIP tokenizer the checkpoint was trained with (FaRL uses CLIP's). It is checked against the
            text encoder (vocabulary size, end-of-text id) and, with label names, used to compute label embeddings.
        vision_num_heads, text_num_heads: head counts when heads are not 64 wide; see [`clip_config_from_state_dict`].
        clef_config_kwargs: [`CLEFConfig`] arguments, e.g. `task="au", **au_labels()`.

    Returns:
        The CLEF model, in eval mode, whose image and text features equal the checkpoint's `encode_image` /
        `encode_text`.
    """
    state = load_openai_state_dict(path)
    config = clip_config_from_state_dict(state, vision_num_heads=vision_num_heads, text_num_heads=text_num_heads)
    logger.info("%s: %s", os.fspath(path), describe_clip_config(config))
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, config.text_config)
    converted = convert_state_dict(state, config)

    clip = CLIPModel(config)
    clip.load_state_dict(converted, strict=True)
    model = CLEFModel.from_clip(clip, tokenizer=tokenizer, **clef_config_kwargs).eval()

    if output_dir is not None:
        model.save_pretrained(output_dir)
        if tokenizer is not None:
            CLEFProcessor.from_tokenizer(tokenizer, image_size=config.vision_config.image_size).save_pretrained(
                output_dir
            )
    return model


__all__ = [
    "clip_config_from_state_dict",
    "convert_openai_clip",
    "convert_state_dict",
    "describe_clip_config",
    "load_openai_state_dict",
    "openai_clip_keys",
]
