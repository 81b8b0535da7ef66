"""CLEF processor: CLIP's image processor and a CLIP tokenizer saved and loaded together, plus the check that a
tokenizer fits a model's text encoder."""

from transformers import CLIPImageProcessorPil, CLIPTextConfig, ProcessorMixin

from .faces import FACE_DETECTORS
from .hub_access import explain_hub_failure
from .image_inputs import as_pil_image_processor

#: Encoded to detect tokenizers that map ordinary words to the unknown token (see `check_tokenizer_fits`).
PROBE_TEXT = "a photo of a person with lip corner puller."


class TokenizerMismatchError(ValueError):
    """A tokenizer that cannot drive a model's text encoder."""


def check_tokenizer_fits(tokenizer, text_config: CLIPTextConfig | None = None) -> None:
    """Raise [`TokenizerMismatchError`] if `tokenizer` cannot feed a CLIP text encoder configured by `text_config`.

    Caught here:
      - the broken 2-token tokenizer that `CLIPTokenizer.from_pretrained(hub_id)` returns offline with an empty cache
        (every word becomes the unknown token);
      - a vocabulary whose size differs from the text encoder's embedding table;
      - an end-of-text token whose id differs from the one the text encoder pools at.

    Args:
        tokenizer: a CLIP tokenizer.
        text_config: the text encoder's configuration; without it only the tokenizer itself is checked.
    """
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    probe = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    unk_id = tokenizer.unk_token_id
    if not probe or (unk_id is not None and all(token == unk_id for token in probe)):
        raise TokenizerMismatchError(
            f"Tokenizer {name!r} encodes ordinary words as the unknown token (vocabulary of {len(tokenizer)}): it is "
            "not a real CLIP tokenizer. transformers returns such a tokenizer when it cannot download one; load the "
            "tokenizer from a local directory that holds its vocabulary files."
        )
    if text_config is None:
        return
    if len(tokenizer) != text_config.vocab_size:
        raise TokenizerMismatchError(
            f"Tokenizer {name!r} has a vocabulary of {len(tokenizer)} tokens but the text encoder has "
            f"text_config.vocab_size={text_config.vocab_size}: they were not made for each other."
        )
    if tokenizer.eos_token_id != text_config.eos_token_id:
        raise TokenizerMismatchError(
            f"Tokenizer {name!r} ends texts with token id {tokenizer.eos_token_id} ({tokenizer.eos_token!r}) but the "
            f"text encoder pools at text_config.eos_token_id={text_config.eos_token_id}."
        )


class CLEFProcessor(ProcessorMixin):
    r"""
    Wraps a CLIP image processor (224 px by default; [`CLIPImageProcessorPil`], which needs no torchvision) and a
    CLIP tokenizer into one processor, saved and loaded beside a [`CLEFModel`].

    `processor(images=..., text=...)` returns `pixel_values` and/or `input_ids` and `attention_mask`.

    Args:
        image_processor ([`CLIPImageProcessorPil`] or [`CLIPImageProcessor`]): resizes, crops and normalises face images.
        tokenizer ([`CLIPTokenizer`]): tokenizes prompts for the text encoder.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        image_size: int = 224,
        face_detector: str = "hog",
        align_faces: bool = True,
        face_margin: float = 0.2,
        face_crop_size: int | None = None,
        face_threshold: float | None = None,
    ) -> "CLEFProcessor":
        """A processor made of `tokenizer` and CLIP's image processing at `image_size` pixels (resize the short side,
        centre-crop a square, normalise with CLIP's mean and standard deviation).

        The face settings are stored on the image processor (`preprocessor_config.json`), so a saved checkpoint tells
        `pipeline("facial-behavior")` how its training faces were found and cropped: `face_detector` ("hog", "cnn"
        or "haar"), `align_faces` (landmark alignment, else box crops), `face_margin` (fraction of the face added on
        each side), `face_crop_size` (aligned crop side; `None`: `image_size`) and `face_threshold` (detector score
        threshold; `None`: the detector's default). A config saved without them loads with these defaults
        (`pipeline_facial_behavior.DEFAULT_FACE_SETTINGS`).
        """
        if face_detector not in FACE_DETECTORS:
            raise ValueError(f"face_detector={face_detector!r}: a checkpoint stores a detector name, one of "
                             f"{FACE_DETECTORS} (pass a callable to the pipeline instead).")
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
            face_detector=face_detector, align_faces=bool(align_faces), face_margin=float(face_margin),
            face_crop_size=face_crop_size, face_threshold=face_threshold,
        )
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "CLEFProcessor":
        try:
            processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError as error:
            raise explain_hub_failure(pretrained_model_name_or_path, error) from error
        check_tokenizer_fits(processor.tokenizer)
        # transformers picks torchvision whenever it is installed; CLEF keeps the Pillow resizing it trained with.
        processor.image_processor = as_pil_image_processor(processor.image_processor)
        return processor

    def check_fits(self, text_config: CLIPTextConfig) -> None:
        """Raise [`TokenizerMismatchError`] if this processor's tokenizer does not fit `text_config`."""
        check_tokenizer_fits(self.tokenizer, text_config)


__all__ = ["CLEFProcessor", "TokenizerMismatchError", "check_tokenizer_fits"]
