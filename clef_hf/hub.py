"""Publishing a trained CLEF model on the Hugging Face Hub, with its model card.

- [`validate_model_dir`]: the folder loads with `CLEFModel.from_pretrained`, has computed label embeddings and a
  processor whose tokenizer fits the text encoder; errors name the missing or faulty file.
- [`prepare_upload_folder`]: writes the exact folder that would be uploaded: `config.json`, `model.safetensors`
  (the label embeddings are a buffer inside it), the processor and tokenizer files, the remote-code modules that
  `save_pretrained` writes plus the `facial-behavior` pipeline's code (`add_remote_pipeline`), so that the repository
  loads with `trust_remote_code=True` without the package, `training_args.json` and `eval_results.json` when present,
  and `README.md`, the rendered model card.
- [`push_to_hub`]: prepares that folder in a temporary directory, creates the repository and uploads the model files
  in one commit and `README.md` in a second one, after them, so that nothing replaces the card (transformers'
  `push_to_hub` writes its own README.md).

`scripts/push_to_hub.py` is the command-line front end; `--dry-run OUTDIR` runs `prepare_upload_folder` only and
needs no network.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from .model_card import read_json_object, render_model_card
from .pipeline_facial_behavior import add_remote_pipeline

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"
#: Files copied from the model folder when present (besides the remote-code modules, found from the auto_map).
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "generation_config.json")
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
RESULT_FILES = ("training_args.json", "eval_results.json")
#: The configuration files whose `auto_map` (and, for config.json, `custom_pipelines`) name remote-code modules.
AUTO_MAP_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


class ModelFolderError(ValueError):
    """A model folder that cannot be published as it is."""


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub could not be reached (no network, or offline mode)."""


# ---------------------------------------------------------------------------------------------------- validation


def _require_file(model_dir: Path, *names: str, hint: str) -> Path:
    """The first of `names` present in `model_dir`; a `FileNotFoundError` naming them all if none is."""
    for name in names:
        if (model_dir / name).is_file():
            return model_dir / name
    listed = " or ".join(str(model_dir / name) for name in names)
    raise FileNotFoundError(f"{listed} is missing: {hint}")


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except ValueError as error:
        raise ModelFolderError(str(error)) from None


def validate_model_dir(model_dir: str | os.PathLike):
    """Check that `model_dir` holds a trained CLEF model ready for the Hub, and load it.

    Checked, with errors that name the file: `config.json` (a CLEF config with a task and labels), the safetensors
    weights (every tensor present, the `label_embeddings` buffer computed: no zero or non-finite row), the processor
    (`processor_config.json` and the tokenizer files; the tokenizer fits the text encoder), and that
    `training_args.json` / `eval_results.json`, when present, are JSON objects.

    Returns:
        `(model, processor)`: the loaded `CLEFModel` (in eval mode) and `CLEFProcessor`.
    """
    from . import CLEFModel, CLEFProcessor  # registers CLEF with the Auto classes

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} is not a folder: pass the folder a trained model was saved to.")
    save_hint = "save the model with `model.save_pretrained(folder)`."
    config_path = _require_file(model_dir, "config.json", hint=save_hint)
    config = _read_json(config_path)
    if config.get("model_type") != "clef":
        raise ModelFolderError(f"{config_path} has model_type={config.get('model_type')!r}, not 'clef'.")
    if config.get("task") not in ("au", "expression") or not config.get("label_names"):
        raise ModelFolderError(
            f"{config_path} has task={config.get('task')!r} and {len(config.get('label_names') or [])} label names: "
            "only fine-tuned models (task 'au' or 'expression', with labels) are published."
        )
    if not (model_dir / "model.safetensors").is_file() and not (model_dir / "model.safetensors.index.json").is_file():
        found = [name for name in ("pytorch_model.bin", "model.bin") if (model_dir / name).is_file()]
        extra = f" (found {found[0]}: re-save with `save_pretrained`, which writes safetensors)" if found else ""
        raise FileNotFoundError(f"{model_dir / 'model.safetensors'} is missing{extra}: {save_hint}")
    processor_hint = "save the processor next to the model with `processor.save_pretrained(folder)`."
    _require_file(model_dir, "processor_config.json", "preprocessor_config.json", hint=processor_hint)
    _require_file(model_dir, "tokenizer.json", "vocab.json", hint=processor_hint)
    _require_file(model_dir, "tokenizer_config.json", hint=processor_hint)
    if (model_dir / "vocab.json").is_file() and not (model_dir / "tokenizer.json").is_file():
        _require_file(model_dir, "merges.txt", hint=processor_hint)
    for name in RESULT_FILES:
        if (model_dir / name).is_file():
            _read_json(model_dir / name)

    try:
        model, loading_info = CLEFModel.from_pretrained(model_dir, output_loading_info=True)
    except Exception as error:
        raise ModelFolderError(f"CLEFModel.from_pretrained({str(model_dir)!r}) failed: {error}") from error
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise ModelFolderError(
            f"{model_dir / 'model.safetensors'} lacks {len(missing)} tensor(s) of the model, e.g. {missing[:3]}."
        )
    model.eval()
    _check_label_embeddings(model, model_dir)

    try:
        processor = CLEFProcessor.from_pretrained(model_dir)
    except Exception as error:
        raise ModelFolderError(f"CLEFProcessor.from_pretrained({str(model_dir)!r}) failed: {error}") from error
    try:
        processor.check_fits(model.config.text_config)
    except ValueError as error:
        raise ModelFolderError(f"The tokenizer in {model_dir} does not fit the model: {error}") from error
    return model, processor


def _check_label_embeddings(model, model_dir: Path) -> None:
    embeddings = model.label_embeddings.detach()
    labels = list(model.config.label_ids)
    if embeddings.shape[0] != len(labels):
        raise ModelFolderError(
            f"{model_dir / 'model.safetensors'} holds label_embeddings for {embeddings.shape[0]} labels but "
            f"{model_dir / 'config.json'} has {len(labels)}; recompute them with "
            "`model.update_label_embeddings(processor.tokenizer)` and save the model again."
        )
    bad = [
        label for label, row in zip(labels, embeddings)
        if not bool(torch.isfinite(row).all()) or not bool(row.abs().sum() > 0)
    ]
    if bad:
        raise ModelFolderError(
            f"{model_dir / 'model.safetensors'} holds label_embeddings that were not computed (zero or non-finite rows "
            f"for {bad}); run `model.update_label_embeddings(processor.tokenizer)` and save the model again."
        )


# ---------------------------------------------------------------------------------------------------- the folder


def _remote_code_modules(folder: Path) -> set[str]:
    """Module names (without .py) that the folder's auto_map and custom_pipelines refer to."""
    modules = set()

    def add(reference) -> None:
        if isinstance(reference, (list, tuple)):
            for item in reference:
                add(item)
        elif isinstance(reference, str) and "." in reference:
            reference = reference.split("--")[-1]  # "repo--module.Class" refers to another repository's code
            modules.add(reference.rsplit(".", 1)[0])

    for name in AUTO_MAP_FILES:
        path = folder / name
        if not path.is_file():
            continue
        data = _read_json(path)
        for section in (data, data.get("image_processor") or {}):
            for reference in (section.get("auto_map") or {}).values():
                add(reference)
        for task in (data.get("custom_pipelines") or {}).values():
            add(task.get("impl"))
    return modules


def required_code_files(folder: str | os.PathLike) -> tuple[set[str], set[str]]:
    """The remote-code files `folder` needs: `(present, missing)` file names.

    Starts from the modules named in the auto_map entries (and `custom_pipelines`) and follows their relative imports
    (`from .losses import ...`), as transformers does when it loads remote code.
    """
    from transformers.dynamic_module_utils import get_relative_imports

    folder = Path(folder)
    present, missing = set(), set()
    pending = [f"{module}.py" for module in _remote_code_modules(folder)]
    while pending:
        name = pending.pop()
        if name in present or name in missing:
            continue
        path = folder / name
        if not path.is_file():
            missing.add(name)
            continue
        present.add(name)
        pending.extend(f"{module}.py" for module in get_relative_imports(str(path)))
    return present, missing


def prepare_upload_folder(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    base_model: str | None = None,
    license: str = "apache-2.0",
    extra_tags: Iterable[str] = (),
) -> Path:
    """Write to `out_dir` the exact folder [`push_to_hub`] would upload for the model in `model_dir`.

    The model folder is validated first ([`validate_model_dir`]). The model, processor and result files are copied;
    if a remote-code module is missing, the model and processor are saved again with `save_pretrained`, which writes
    the package's code. The `facial-behavior` pipeline's code is added (`add_remote_pipeline`: its files and
    `custom_pipelines` in `config.json`), so that users without the package can run
    `pipeline("facial-behavior", model=repo_id, trust_remote_code=True)`. Finally the model card is rendered into
    `README.md`.

    Args:
        model_dir: the trained model, e.g. `outputs/run/best` from `scripts/finetune.py`.
        out_dir: a folder that does not exist yet or is empty.
        repo_id: the Hub repository the card is written for, `"user/name"`.
        base_model, license, extra_tags: passed to `clef_hf.model_card.render_model_card`.

    Returns:
        `out_dir` as a `Path`.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_repo_id(repo_id)
    model, processor = validate_model_dir(model_dir)
    if out_dir.resolve() == model_dir.resolve() or model_dir.resolve() in out_dir.resolve().parents:
        raise ValueError(f"The upload folder {out_dir} must be outside the model folder {model_dir}.")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder; choose a new folder for the upload.")
    out_dir.mkdir(parents=True, exist_ok=True)

    copied = []
    for name in (*MODEL_FILES, *PROCESSOR_FILES, *RESULT_FILES):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
            copied.append(name)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        for shard in sorted(set(_read_json(index).get("weight_map", {}).values())):
            shutil.copy2(_require_file(model_dir, shard, hint="a shard of the index is gone."), out_dir / shard)
    present, missing = required_code_files(model_dir)
    for name in sorted(present):
        shutil.copy2(model_dir / name, out_dir / name)
    if missing or not present:
        reason = f"lacks {sorted(missing)}" if missing else "names no remote code in its auto_map"
        logger.warning("%s %s; saving the model and processor again with save_pretrained.", model_dir, reason)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    add_remote_pipeline(out_dir)  # the facial-behavior pipeline's code, for users without the package
    present, missing = required_code_files(out_dir)
    if missing or not present:
        raise ModelFolderError(
            f"{out_dir} lacks the remote-code files {sorted(missing)} even after save_pretrained: import clef_hf "
            "before loading the model, so that save_pretrained writes its code."
        )

    card = render_model_card(out_dir, repo_id, base_model=base_model, license=license, extra_tags=extra_tags)
    card.save(str(out_dir / MODEL_CARD))
    return out_dir


def upload_files(folder: str | os.PathLike) -> list[str]:
    """The files of a prepared upload folder, sorted, as paths relative to it."""
    folder = Path(folder)
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------------------- the Hub


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except Exception as error:
        raise ValueError(f"{repo_id!r} is not a valid Hub repository id ('user/name'): {error}") from None


def _is_connection_error(error: BaseException) -> bool:
    """Connection failures of huggingface_hub's HTTP clients (httpx or requests) or of the socket layer."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectError", "ConnectTimeout", "NetworkError", "TimeoutException",
                         "ProxyError", "SSLError"})


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    extra_tags: Iterable[str] = (),
) -> str:
    """Publish the trained CLEF model in `model_dir` as the Hub model repository `repo_id`, with its model card.

    The upload folder is prepared (and the model validated) first, in a temporary directory. Then the repository is
    created if needed, the model files are uploaded in one commit, and `README.md` in a second commit after them.

    Args:
        model_dir: the trained model folder.
        repo_id: `"user/name"` or `"organisation/name"`.
        private: create the repository as private (an existing repository keeps its visibility).
        commit_message: message of the model-files commit.
        token: a Hub token; by default the one saved by `hf auth login` or `HF_TOKEN`.
        base_model, license, extra_tags: for the model card.

    Returns:
        The repository's URL.

    Raises:
        HubUnreachableError: offline mode is on, or the Hub could not be reached; the message points to `--dry-run`.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    with tempfile.TemporaryDirectory(prefix="clef-upload-") as temporary:
        folder = prepare_upload_folder(model_dir, Path(temporary) / "upload", repo_id, base_model=base_model,
                                       license=license, extra_tags=extra_tags)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                repo_type="model",
                ignore_patterns=[MODEL_CARD],
                commit_message=commit_message or "Upload CLEF model",
            )
            api.upload_file(
                path_or_fileobj=str(folder / MODEL_CARD),
                path_in_repo=MODEL_CARD,
                repo_id=repo_id,
                repo_type="model",
                commit_message="Add the model card",
            )
        except OfflineModeIsEnabled as error:
            raise HubUnreachableError(
                f"Could not reach the Hugging Face Hub to push {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). "
                "Unset HF_HUB_OFFLINE to push, or use --dry-run OUTDIR (scripts/push_to_hub.py) to write the folder "
                "that would be uploaded without network."
            ) from error
        except HfHubHTTPError as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            if status in (401, 403):
                raise PermissionError(
                    f"The Hugging Face Hub refused to create or write {repo_id} (HTTP {status}): log in with "
                    "`hf auth login` or pass a token with write access (--token), and check that you may write to "
                    f"{repo_id.split('/')[0]}. Original error: {error}"
                ) from error
            raise
        except Exception as error:
            if not _is_connection_error(error):
                raise
            raise HubUnreachableError(
                f"Could not reach the Hugging Face Hub at {constants.ENDPOINT} to push {repo_id} "
                f"({type(error).__name__}: {error}). Check the network connection, or use --dry-run OUTDIR "
                "(scripts/push_to_hub.py) to write the folder that would be uploaded without network."
            ) from error
    return str(url)


__all__ = [
    "HubUnreachableError",
    "ModelFolderError",
    "prepare_upload_folder",
    "push_to_hub",
    "required_code_files",
    "upload_files",
    "validate_model_dir",
]
