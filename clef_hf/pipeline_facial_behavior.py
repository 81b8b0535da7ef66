"""The `facial-behavior` pipeline: finds the faces in images, crops them, and scores each face with a CLEF model —
action units (multi-label: a sigmoid per AU) or expressions (multi-class: a softmax) — or, zero-shot, against any
label texts.

```python
>>> import clef_hf  # registers the task
>>> from transformers import pipeline
>>> detector = pipeline("facial-behavior", model="path/to/clef-au-model")
>>> detector("photo.jpg")  # one entry per face found
[{'box': {'xmin': 175, 'ymin': 76, 'xmax': 265, 'ymax': 166},
  'landmarks': [[255.0, 104.0], [237.0, 105.0], [195.0, 101.0], [212.0, 103.0], [224.0, 135.0]],
  'predictions': [{'label': 'AU1', 'name': 'inner brow raiser', 'score': 0.08, 'present': False}, ...]}]
```

Faces are found by dlib's HOG detector (`face_detector="hog"`, the default), each with dlib's five landmarks, and
aligned on them (`face_alignment.align_face`) before the image processor sees them, as the data set builders crop.

The pipeline is a `ChunkPipeline`: `preprocess` yields one model input per face, so `batch_size` batches face crops
across images, and `postprocess` regroups the faces of each image (an image without a face gives `[]`).

This file and `faces.py` / `face_alignment.py` / `image_inputs.py` import nothing from the rest of the package, so that
[`add_remote_pipeline`] can copy them into a checkpoint for users who load it with `trust_remote_code=True`.
"""

import contextlib
import copy
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.pipelines.base import ChunkPipeline

from .face_alignment import align_face
from .faces import FACE_DETECTORS, Box, DetectedFace, FaceFinder, checked_boxes, expand_box
from .image_inputs import ImageInput, as_pil_image_processor, describe_input, load_rgb_image

#: The task name `import clef_hf` registers with `transformers.pipeline`.
TASK = "facial-behavior"

#: Zero-shot label-text embeddings kept per pipeline, keyed by (template, labels); the oldest is dropped beyond this.
MAX_CACHED_LABEL_SETS = 64

#: The default margin around a detected face box, as a fraction of its size: the data set builders' `face_margin`.
DEFAULT_FACE_MARGIN = 0.2

#: Face settings a checkpoint carries in its image processor's config (`preprocessor_config.json`, written by
#: `CLEFProcessor.save_pretrained`), and their values for a config without them (checkpoints of clef-hf before face
#: alignment): the current defaults, dlib's HOG detector with aligned crops. `face_crop_size` `None` means the image
#: processor's crop size; `face_threshold` `None` the detector's own default.
DEFAULT_FACE_SETTINGS: dict[str, Any] = {
    "face_detector": "hog",
    "align_faces": True,
    "face_margin": DEFAULT_FACE_MARGIN,
    "face_crop_size": None,
    "face_threshold": None,
}


def face_settings(image_processor: Any) -> dict[str, Any]:
    """The face settings stored on an image processor (see `DEFAULT_FACE_SETTINGS`), missing ones at their default;
    `face_crop_size` resolved to the processor's crop size."""
    settings = {key: getattr(image_processor, key, default) for key, default in DEFAULT_FACE_SETTINGS.items()}
    if settings["face_crop_size"] is None:
        settings["face_crop_size"] = _processor_crop_size(image_processor)
    return settings


def _processor_crop_size(image_processor: Any) -> int:
    """The side of the square the image processor feeds the model (CLIP's `crop_size`), 224 if it says none."""
    for name in ("crop_size", "size"):
        size = getattr(image_processor, name, None)
        if isinstance(size, int):
            return size
        # a dict, or transformers' SizeDict (attributes, and `.get` where it has it)
        for key in ("height", "shortest_edge"):
            side = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
            if side:
                return int(side)
    return 224


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of a CLEF model whose image path (`vision_model` and `visual_projection`) runs its `nn.Linear` layers in
    int8 with dynamic activation quantization (`torch.ao.quantization.quantize_dynamic`), for faster CPU inference.

    The text tower stays in float32, so label embeddings (and zero-shot label texts) are exactly those of the
    original model. Only CPU supports dynamically quantized layers. `torch.ao.quantization` is deprecated in favour
    of `torchao` but still works in torch 2.13; its deprecation warnings are silenced here.

    Args:
        model: a float32 [`CLEFModel`] (or any model with `vision_model` and `visual_projection`).

    Returns:
        The quantized copy, in eval mode; `model` itself is left unchanged.
    """
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"int8 dynamic quantization needs a float32 model, got one in {dtype}.")
    for name in ("vision_model", "visual_projection"):
        if not isinstance(getattr(model, name, None), nn.Module):
            raise ValueError(f"Cannot quantize {type(model).__name__}: it has no `{name}` module.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        # Packed int8 weights are CPU objects: a model on a GPU is copied to the CPU first.
        quantized = quantize_dynamic(
            copy.deepcopy(model).to("cpu"),
            qconfig_spec={"vision_model": default_dynamic_qconfig, "visual_projection": default_dynamic_qconfig},
            dtype=torch.qint8,
            mapping={nn.Linear: DynamicQuantizedLinear},  # the Linear layers only, not the position embeddings
        )
    return quantized.eval()


class FacialBehaviorPipeline(ChunkPipeline):
    r"""
    Facial action unit detection and facial expression recognition with a CLEF model, for every face in an image.

    Inputs (one, or a list, or a `datasets` `Dataset` / `Image` column):
        a file path, an `http(s)` URL, a PIL image of any mode, a numpy array or torch tensor of shape (H, W),
        (H, W, C) or (C, H, W) with C in 1-4 (uint8, uint16, other integers or float). See [`load_rgb_image`] for how
        transparency, 16-bit and float data are turned into 8-bit RGB. An unreadable input raises a `ValueError` that
        names it.

    An input may also be `{"image": ..., "faces": [{"box": (x0, y0, x1, y1), "landmarks": [[x, y]] * 5, ...}]}`:
    faces found elsewhere (e.g. by video tracking, `clef_hf.video`); they are not detected again, and any other keys
    of a face (such as "face_id") are copied into its entry.

    Output, per image: a list with one entry per face, `{"box": {"xmin", "ymin", "xmax", "ymax"}, "landmarks": [[x,
    y], ...], "predictions": [...]}`: the detected face box before the margin and its five landmarks (dlib's order:
    outer and inner corner of the eye on the image's right, then of the eye on the left, then the bottom of the nose),
    in the input image's pixels; "landmarks" is `None` where none were fitted (`detect_faces=False`, or Haar without
    dlib). A single input returns its list; a list or a `Dataset` returns a list of lists; a generator or a
    `datasets.IterableDataset` returns a lazy iterator of lists.

    - AU models (`config.task == "au"`): one prediction per AU, in label order: `{"label": "AU12", "name": "lip corner
      puller", "score": sigmoid(logit), "present": score > config.au_threshold}`.
      A model trained with intensity (`config.au_intensity`) adds `"intensity"`, a float from 0 to 5: the expected
      level of the softmax over the AU's intensity phrases ("no", "slight", ... lip corner puller).
    - Expression models: `{"label", "score"}` with `score = softmax(logits)`, sorted by score, the `top_k` best
      (default all).
    - Zero-shot, `candidate_labels=[...]`: each text is filled into `hypothesis_template` (default
      `config.name_template`, "a photo of a person with {}.") and compared with the faces. The scores follow the
      model's task: with an AU model each candidate is an independent yes/no (`sigmoid`, `present`, in the given
      order), otherwise the candidates compete (`softmax` over them, sorted, `top_k`), as CLIP's zero-shot
      classification. `multi_label=True/False` overrides this. The text embeddings are computed once per
      (template, labels) and cached on the pipeline; the model's own labels use the checkpoint's `label_embeddings`
      buffer and are never re-encoded.

    Parameters (at construction or per call):
        detect_faces (`bool`, defaults to `True`): find faces with `face_detector`; `False` treats each whole image as
            one face (pre-cropped faces), with the full image as its box.
        face_detector (`str` or callable): "hog" (dlib's HOG detector, the default), "cnn" (dlib's MMOD CNN: more
            accurate, much slower), "haar" (OpenCV's cascade, needs no dlib) or a callable mapping an (H, W, 3) uint8
            RGB array to `(x0, y0, x1, y1)` boxes. Named detectors drop boxes whose landmarks are implausible
            ([`FaceFinder`]); a callable's boxes are kept as given. Default: the checkpoint's
            `image_processor.face_detector`, else "hog".
        face_threshold (`float`): the detection score threshold of "hog" / "cnn" (dlib's; default 0.0).
        align_faces (`bool`): warp each face so that its five landmarks fall on a canonical template
            ([`align_face`]) before the image processor; `False` crops the square box with `face_margin`, as clef-hf
            did before. Default: the checkpoint's `image_processor.align_faces`, else `True`.
        face_margin (`float`, defaults to 0.2): margin added on each side of the face before cropping, as a fraction
            of its size (the data set builders' `face_margin`). Default: the checkpoint's, else 0.2.
        face_crop_size (`int`): side of the aligned crop; default the checkpoint's, else the image processor's crop
            size.
        candidate_labels (`list[str]`), hypothesis_template (`str`), multi_label (`bool`): zero-shot scoring, above.
        top_k (`int`): how many single-label predictions to return (multi-label outputs always list every label).
        autocast_bf16 (`bool`, defaults to `False`): run the image encoder under `torch.autocast` in bfloat16 (about
            2x faster than float32 for ViT-B/16 on a 2-core CPU, `benchmarks/pipeline_speed.py`; decisions agree
            with float32 on most faces).
        timeout (`float`): seconds to wait for URL inputs.
        batch_size (`int`): face crops per forward pass, across images.

    Construction only:
        quantize (`"int8"`): run the image encoder's linear layers in int8 ([`quantize_dynamic_int8`]; CPU only;
            about 3x faster than float32 in the same benchmark).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = None  # only zero-shot `candidate_labels` need it

    def __init__(self, *args, quantize: str | None = None, **kwargs):
        if quantize is not None:
            if quantize != "int8":
                raise ValueError(f"quantize={quantize!r} is not supported; the only option is 'int8'.")
            device = kwargs.get("device")
            if not (device is None or device == -1 or str(device) == "cpu"):
                raise ValueError(f"quantize='int8' runs on CPU only; got device={device!r}.")
            kwargs["device"] = "cpu"  # dynamically quantized layers only run on CPU
            if args:
                args = (quantize_dynamic_int8(args[0]), *args[1:])
            else:
                kwargs["model"] = quantize_dynamic_int8(kwargs["model"])
        super().__init__(*args, **kwargs)
        # The training-time (Pillow) resizing, also where transformers picked torchvision for the saved processor.
        self.image_processor = as_pil_image_processor(self.image_processor)
        if self.tokenizer is not None and callable(getattr(self.model, "encode_texts", None)):
            # A tokenizer that does not fit the text encoder (another vocabulary, another end-of-text id) is refused
            # now with CLEF's TokenizerMismatchError, rather than at the first zero-shot call; encoding no text only
            # runs that check.
            self.model.encode_texts(self.tokenizer, [])
        self._label_embedding_cache: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}
        self._face_finders: dict[Any, tuple[Any, FaceFinder]] = {}
        self._placeholder_pixels: torch.Tensor | None = None
        # The checkpoint's face settings; construction keywords (face_detector=..., align_faces=...) override them
        # through `_sanitize_parameters`, like any call keyword.
        self.face_settings = face_settings(self.image_processor)

    # ------------------------------------------------------------------ parameters

    def _sanitize_parameters(
        self,
        detect_faces: bool | None = None,
        face_detector: str | Callable[[np.ndarray], list[Box]] | None = None,
        face_margin: float | None = None,
        align_faces: bool | None = None,
        face_crop_size: int | None = None,
        face_threshold: float | None = None,
        candidate_labels: Iterable[str] | str | None = None,
        hypothesis_template: str | None = None,
        multi_label: bool | None = None,
        top_k: int | None = None,
        autocast_bf16: bool | None = None,
        timeout: float | None = None,
    ) -> tuple[dict, dict, dict]:
        preprocess, forward, postprocess = {}, {}, {}
        if detect_faces is not None:
            preprocess["detect_faces"] = bool(detect_faces)
        if face_detector is not None:
            if not callable(face_detector) and face_detector not in FACE_DETECTORS:
                raise ValueError(f"face_detector must be one of {FACE_DETECTORS} or a callable (RGB array -> boxes), "
                                 f"got {face_detector!r}.")
            preprocess["face_detector"] = face_detector
        if face_margin is not None:
            if not face_margin >= 0:
                raise ValueError(f"face_margin is a fraction of the face size and must be >= 0, got {face_margin}.")
            preprocess["face_margin"] = float(face_margin)
        if align_faces is not None:
            preprocess["align_faces"] = bool(align_faces)
        if face_crop_size is not None:
            if isinstance(face_crop_size, bool) or not isinstance(face_crop_size, int) or face_crop_size < 8:
                raise ValueError(f"face_crop_size must be an integer number of pixels >= 8, got {face_crop_size!r}.")
            preprocess["face_crop_size"] = face_crop_size
        if face_threshold is not None:
            preprocess["face_threshold"] = float(face_threshold)
        if timeout is not None:
            preprocess["timeout"] = timeout
        if candidate_labels is not None:
            labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels)
            if not labels or not all(isinstance(label, str) and label for label in labels):
                raise ValueError(f"candidate_labels must be non-empty texts, got {candidate_labels!r}.")
            if len(set(labels)) != len(labels):
                raise ValueError(f"candidate_labels holds duplicates: {labels}.")
            forward["candidate_labels"] = postprocess["candidate_labels"] = labels
        if hypothesis_template is not None:
            if hypothesis_template.count("{}") != 1:
                raise ValueError(f"hypothesis_template needs exactly one '{{}}' slot, got {hypothesis_template!r}.")
            forward["hypothesis_template"] = hypothesis_template
        if multi_label is not None:
            postprocess["multi_label"] = bool(multi_label)
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
            postprocess["top_k"] = top_k
        if autocast_bf16 is not None:
            forward["autocast_bf16"] = bool(autocast_bf16)
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------ calling

    def __call__(self, inputs: ImageInput | list[ImageInput] | Any, **kwargs) -> list | Iterator[list]:
        """Score the faces in `inputs` (see the class docstring for the accepted inputs and the output)."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        images = _datasets_images(inputs)
        if images is not None:
            iterator, sized = images
            results = super().__call__(iterator, **kwargs)
            return list(results) if sized else results
        return super().__call__(inputs, **kwargs)

    # ------------------------------------------------------------------ preprocess: one chunk per face

    def face_finder(
        self, face_detector: str | Callable | None = None, face_threshold: float | None = None
    ) -> FaceFinder:
        """The [`FaceFinder`] for a detector name or callable (default: the pipeline's), built once and kept; every
        finder shares one landmark predictor."""
        detector = self.face_settings["face_detector"] if face_detector is None else face_detector
        threshold = self.face_settings["face_threshold"] if face_threshold is None else face_threshold
        key = (detector if isinstance(detector, str) else id(detector), threshold)
        if key not in self._face_finders:
            shared = next((f.landmarker for _, f in self._face_finders.values() if f.landmarker is not None), None)
            self._face_finders[key] = (detector, FaceFinder(detector, threshold=threshold, landmarker=shared))
        return self._face_finders[key][1]

    def _pixel_values(self, crop) -> torch.Tensor:
        if self.image_processor is None:
            raise ValueError(
                "This pipeline has no image processor: pass `image_processor=` or `processor=` (a CLEFProcessor), or "
                "load it from a checkpoint folder that holds the processor's files."
            )
        return self.image_processor(images=crop, return_tensors="pt")["pixel_values"]

    def _placeholder(self) -> torch.Tensor:
        # An image without a face still sends one chunk through the model step (the chunk protocol needs one); it
        # carries `has_face=False` and pixels of the right shape, and the model never sees it.
        if self._placeholder_pixels is None:
            from PIL import Image

            self._placeholder_pixels = torch.zeros_like(self._pixel_values(Image.new("RGB", (32, 32))))
        return self._placeholder_pixels

    def preprocess(
        self,
        image: ImageInput | dict[str, Any],
        detect_faces: bool = True,
        face_detector: str | Callable[[np.ndarray], list[Box]] | None = None,
        face_margin: float | None = None,
        align_faces: bool | None = None,
        face_crop_size: int | None = None,
        face_threshold: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yields one chunk per face: `pixel_values` (1, 3, size, size), `has_face` (1,), `face` (the entry without
        predictions: box, landmarks and any given keys) and `is_last`."""
        settings = self.face_settings
        margin = settings["face_margin"] if face_margin is None else face_margin
        align = settings["align_faces"] if align_faces is None else align_faces
        crop_size = settings["face_crop_size"] if face_crop_size is None else face_crop_size
        given_faces = None
        if isinstance(image, dict) and "faces" in image:
            image, given_faces = image.get("image"), image["faces"]
        rgb = load_rgb_image(image, timeout=timeout)
        width, height = rgb.size
        if given_faces is not None:
            faces, extras = _given_faces(given_faces, width, height, image)
        elif detect_faces:
            finder = self.face_finder(face_detector, face_threshold)
            faces = finder(np.asarray(rgb))
            extras = [{} for _ in faces]
        else:
            faces, extras = [DetectedFace(box=(0, 0, width, height))], [{}]
        if not faces:
            yield {"pixel_values": self._placeholder(), "has_face": torch.tensor([False]), "face": None,
                   "is_last": True}
            return
        for index, (face, extra) in enumerate(zip(faces, extras)):
            if not detect_faces and given_faces is None:
                crop = rgb
            elif align and face.landmarks is not None:
                crop = align_face(rgb, face.landmarks, crop_size, margin)
            else:
                crop = rgb.crop(expand_box(face.box, width, height, margin))
            entry = {
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (int(v) for v in face.box))),
                "landmarks": None if face.landmarks is None else np.round(face.landmarks, 1).tolist(),
                **extra,
            }
            yield {
                "pixel_values": self._pixel_values(crop),
                "has_face": torch.tensor([True]),
                "face": entry,
                "is_last": index == len(faces) - 1,
            }

    # ------------------------------------------------------------------ forward: a batch of face crops

    def label_embeddings(
        self, candidate_labels: list[str] | None = None, hypothesis_template: str | None = None
    ) -> torch.Tensor:
        """The normalised label embeddings the faces are compared with.

        Args:
            candidate_labels: zero-shot label texts; `None` for the model's own labels (its `label_embeddings`
                buffer, computed when the checkpoint was saved).
            hypothesis_template: the prompt with one `{}` slot for each candidate; defaults to `config.name_template`.

        Returns:
            (num_labels, projection_dim) L2-normalised embeddings. Candidate embeddings are cached per (template,
            labels), so a later call with the same texts does not run the text encoder.
        """
        config = self.model.config
        if candidate_labels is None:
            if not config.label_names:
                raise ValueError(
                    f"The model {config.name_or_path or type(self.model).__name__!r} has no label set "
                    f"(config.task={config.task!r}); pass candidate_labels=[...] for zero-shot scores."
                )
            return self.model._stored_label_embeddings()
        template = hypothesis_template or config.name_template
        key = (template, tuple(candidate_labels))
        if key not in self._label_embedding_cache:
            if self.tokenizer is None:
                raise ValueError(
                    "candidate_labels need a tokenizer to encode the label texts: pass `tokenizer=` or `processor=`, or "
                    "load the pipeline from a checkpoint folder that holds the tokenizer files."
                )
            if len(self._label_embedding_cache) >= MAX_CACHED_LABEL_SETS:
                self._label_embedding_cache.pop(next(iter(self._label_embedding_cache)))
            prompts = [template.format(label) for label in candidate_labels]
            self._label_embedding_cache[key] = self.model.encode_texts(self.tokenizer, prompts)
        return self._label_embedding_cache[key]

    def _forward(
        self,
        model_inputs: dict[str, Any],
        candidate_labels: list[str] | None = None,
        hypothesis_template: str | None = None,
        autocast_bf16: bool = False,
    ) -> dict[str, Any]:
        has_face = model_inputs["has_face"].bool()  # (batch,)
        label_embeds = self.label_embeddings(candidate_labels, hypothesis_template)
        logits = torch.zeros(has_face.shape[0], label_embeds.shape[0], device=has_face.device)
        # Old remote-code configs have no au_intensity attribute; zero-shot candidates have no intensity phrases.
        with_intensity = candidate_labels is None and getattr(self.model.config, "au_intensity", False)
        intensity = torch.zeros_like(logits) if with_intensity else None
        if has_face.any():
            pixel_values = model_inputs["pixel_values"][has_face]
            if autocast_bf16:
                context = torch.autocast(self.device.type, dtype=torch.bfloat16)
            else:
                context = contextlib.nullcontext()
                pixel_values = pixel_values.to(self.model.dtype)
            with context:  # with config.test_time_flip, the mean of the face's and its mirror image's embeddings
                image_embeds = self.model.get_image_embeddings(pixel_values)
            # As CLEFModel.forward: cosine similarity over the learned temperature.
            logits[has_face] = image_embeds @ label_embeds.float().T / self.model.temperature.float()
            if with_intensity:
                intensity[has_face] = self.model.predict_intensity(image_embeds)
        outputs = {"logits": logits, "has_face": has_face, "face": model_inputs["face"],
                   "is_last": model_inputs["is_last"]}
        if with_intensity:
            outputs["intensity"] = intensity
        return outputs

    # ------------------------------------------------------------------ postprocess: the faces of one image

    def postprocess(
        self,
        model_outputs: list[dict[str, Any]],
        candidate_labels: list[str] | None = None,
        multi_label: bool | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, Any]]:
        config = self.model.config
        if multi_label is None:
            multi_label = config.task == "au"
        if multi_label and top_k is not None:
            raise ValueError(
                f"top_k={top_k} applies to single-label (softmax) predictions; multi-label predictions (AUs) list "
                "every label in label order. Leave top_k unset, or pass multi_label=False."
            )
        if candidate_labels is not None:
            label_ids, label_names = candidate_labels, None
        else:
            label_ids, label_names = config.label_ids or config.label_names, config.label_names
        faces = []
        for output in model_outputs:
            if not bool(output["has_face"].reshape(-1)[0]):
                continue
            logits = output["logits"].reshape(-1).float()
            intensity = output.get("intensity")
            intensity = None if intensity is None else intensity.reshape(-1).float().tolist()
            if multi_label:
                scores = torch.sigmoid(logits).tolist()
                predictions = []
                for index, score in enumerate(scores):
                    prediction = {"label": label_ids[index]}
                    if label_names is not None:
                        prediction["name"] = label_names[index]
                    prediction.update(score=score, present=score > config.au_threshold)
                    if intensity is not None:
                        prediction["intensity"] = intensity[index]
                    predictions.append(prediction)
            else:
                scores = torch.softmax(logits, dim=-1)
                order = torch.argsort(scores, descending=True, stable=True)[:top_k].tolist()
                predictions = [{"label": label_ids[index], "score": float(scores[index])} for index in order]
            faces.append({**output["face"], "predictions": predictions})
        return faces


def _given_faces(faces: Any, width: int, height: int, image: Any) -> tuple[list[DetectedFace], list[dict]]:
    """The faces of a `{"image", "faces"}` input as [`DetectedFace`]s, and each one's other keys (e.g. "face_id")."""
    if not isinstance(faces, (list, tuple)):
        raise ValueError(f"'faces' of {describe_input(image)} must be a list of {{'box', 'landmarks'}} dicts, got "
                         f"{type(faces).__name__}.")
    detected, extras = [], []
    for face in faces:
        if isinstance(face, DetectedFace):
            face = {"box": face.box, "landmarks": face.landmarks}
        if not isinstance(face, dict) or "box" not in face:
            raise ValueError(f"A face of {describe_input(image)} is {face!r}; expected a dict with a 'box'.")
        box = face["box"]
        if isinstance(box, dict):
            box = [box.get(key) for key in ("xmin", "ymin", "xmax", "ymax")]
        boxes = checked_boxes([box], width, height, "faces[...]['box']", describe_input(image))
        if not boxes:
            continue
        landmarks = face.get("landmarks")
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float64)
            if landmarks.shape != (5, 2):
                raise ValueError(f"A face's landmarks must be five [x, y] points, got shape {landmarks.shape}.")
        detected.append(DetectedFace(box=boxes[0], score=face.get("score"), landmarks=landmarks))
        extras.append({key: value for key, value in face.items() if key not in ("box", "landmarks", "score")})
    return detected, extras


def _datasets_images(inputs: Any) -> tuple[Iterator[Any], bool] | None:
    """For a `datasets` `Dataset`, `IterableDataset` or column: an iterator over its images and whether the input is
    sized (so that the results are returned as a list); `None` for anything else."""
    datasets = sys.modules.get("datasets")  # a datasets object implies the library is already imported
    if datasets is None or not type(inputs).__module__.startswith("datasets"):
        return None
    if isinstance(inputs, (datasets.Dataset, datasets.IterableDataset)):
        features = inputs.features or {}
        image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        if len(image_columns) != 1:
            found = "no Image column" if not image_columns else f"Image columns {image_columns}"
            raise ValueError(
                f"Cannot tell which column of the data set (columns {list(features)}) holds the images: it has "
                f"{found}. Pass the column itself, e.g. pipe(dataset['image'])."
            )
        column = image_columns[0]
        sized = isinstance(inputs, datasets.Dataset)
        return (row[column] for row in inputs), sized
    if isinstance(inputs, Iterable):  # a column (datasets.arrow_dataset.Column and the like)
        # a generator, which transformers' Pipeline.__call__ streams item by item
        return (image for image in inputs), hasattr(inputs, "__len__")
    return None


def add_remote_pipeline(save_directory: str | os.PathLike) -> list[str]:
    """Make a saved CLEF checkpoint carry this pipeline for users without the package.

    Copies this file and the files it imports (`faces.py`, `face_alignment.py`, `image_inputs.py`) into
    `save_directory` and adds `custom_pipelines["facial-behavior"]` to its `config.json`. Users without the package
    then run `pipeline("facial-behavior", model=..., trust_remote_code=True)` (or `pipeline(model=...,
    trust_remote_code=True)`).
    With the package installed, `import clef_hf` keeps `pipeline("facial-behavior", model=...)` on the installed
    pipeline, without `trust_remote_code` (`CLEFConfig` drops a `custom_pipelines` entry for a task the package has
    registered).

    Args:
        save_directory: a folder written by `CLEFModel.save_pretrained` (its `config.json` has the `auto_map` that
            lets remote-code users load the model).

    Returns:
        The paths of the copied files.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    config_path = os.path.join(save_directory, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{save_directory!r} holds no config.json: save the model there first.")
    with open(config_path, encoding="utf-8") as file:
        config = json.load(file)
    if "AutoModel" not in config.get("auto_map", {}):
        raise ValueError(
            f"{config_path} has no auto_map['AutoModel']: users without the package could not load the model, so a "
            "remote pipeline would not help. Save the model with CLEFModel.save_pretrained."
        )
    source = os.path.abspath(__file__)
    copied = []
    for path in [source, *get_relative_import_files(source)]:
        target = os.path.join(save_directory, os.path.basename(path))
        if os.path.abspath(path) != os.path.abspath(target):
            shutil.copy(path, target)
        copied.append(target)
    config.setdefault("custom_pipelines", {})[TASK] = {
        "impl": f"{os.path.splitext(os.path.basename(source))[0]}.{FacialBehaviorPipeline.__name__}",
        "pt": ["AutoModel"],
        "type": "image",
    }
    with open(config_path, "w", encoding="utf-8") as file:
        file.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return copied


__all__ = [
    "DEFAULT_FACE_MARGIN", "DEFAULT_FACE_SETTINGS", "TASK", "FacialBehaviorPipeline", "add_remote_pipeline",
    "face_settings", "quantize_dynamic_int8",
]
