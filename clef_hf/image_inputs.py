"""Reading any image input of the `facial-behavior` pipeline as an 8-bit RGB PIL image: a file path, an http(s) URL,
a PIL image of any mode, a numpy array or torch tensor, or an item of a `datasets` `Image` column.

Conversion rules (one place, so that every input type gives the same pixels):

- **Transparency** (RGBA, LA, PA, P with a transparent colour, arrays with 2 or 4 channels) is composited on a white
  background. Dropping the alpha channel instead would show whatever colour the transparent pixels happen to hold
  (often black), which puts a dark halo around cut-out faces.
- **16-bit** data (PIL `I;16*` modes, `uint16` arrays) is scaled from 0-65535 to 0-255.
- **Other integer data** (PIL `I` mode, int16/int32/int64 arrays) is read as 8-bit when all values lie in 0-255 and as
  16-bit when they lie in 0-65535 (16-bit PNGs open in mode `I` in some Pillow versions); other ranges are refused.
- **Floating-point data** (PIL `F` mode, float arrays, bfloat16 tensors) is read as 0-1 when all values lie in [0, 1],
  otherwise as 0-255 (clipped). NaNs and infinities are refused.
- **Grayscale** is repeated over the three channels; CMYK, YCbCr and the other PIL colour modes go through PIL's own
  conversion. The EXIF orientation of files is applied.
- **Size**: image files and bytes larger than `PIL.Image.MAX_IMAGE_PIXELS` (Pillow's decompression-bomb limit, about
  89 megapixels, e.g. 9459 x 9459) are refused with a `ValueError` naming them, before they are decoded; set
  `PIL.Image.MAX_IMAGE_PIXELS` higher (or to `None`) to accept larger images.
"""

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: What the pipeline accepts as one image.
ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor | {"bytes", "path"} dict

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def describe_input(image: Any) -> str:
    """A short name for `image` in error messages: the path or URL itself, or the type and shape."""
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    if isinstance(image, Image.Image):
        return f"PIL image (mode {image.mode}, {image.width}x{image.height})"
    if isinstance(image, dict):
        return f"image dict with path {image.get('path')!r}"
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{type(image).__name__} of shape {tuple(shape)} and dtype {getattr(image, 'dtype', '?')}"
    return type(image).__name__


def _decode(source: Any, name: str) -> Image.Image:
    """Open and decode an image file or file object, refusing images beyond Pillow's decompression-bomb limit, and
    apply its EXIF orientation."""
    try:
        image = Image.open(source)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:
            raise Image.DecompressionBombError(
                f"{image.width}x{image.height} = {image.width * image.height} pixels exceeds "
                f"PIL.Image.MAX_IMAGE_PIXELS = {limit}; raise that limit to read larger images"
            )
        image.load()
        image = ImageOps.exif_transpose(image)  # inside: a corrupt EXIF block is a corrupt file too
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {name}: {error}") from error
    except Exception as error:  # noqa: BLE001 - Pillow's format plugins raise ValueError, SyntaxError, struct.error...
        # on malformed files; whatever the decoder raised, the file is unreadable: say which one.
        raise ValueError(f"Cannot read image {name}: {type(error).__name__}: {error}") from error
    return image


def _open_file(path: str) -> Image.Image:
    if not os.path.isfile(path):
        raise ValueError(f"Cannot read image {path!r}: no such file.")
    return _decode(path, repr(path))


def _open_url(url: str, timeout: float | None) -> Image.Image:
    # Not `transformers.image_utils.load_image`: it converts to RGB with PIL's own rules (alpha dropped, 16-bit
    # clipped), and the image is opened here so that URLs follow the conversion rules above. The standard library's
    # client follows redirects and honours the HTTP(S)_PROXY variables.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout if timeout is not None else 10.0) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ValueError(f"Cannot read image {url!r}: {error}") from error
    return _decode(io.BytesIO(data), repr(url))


def _open_bytes(data: bytes, name: str) -> Image.Image:
    return _decode(io.BytesIO(data), name)


def _to_uint8(values: np.ndarray, name: str) -> np.ndarray:
    """Scale numeric pixel values to uint8 by the rules in the module docstring."""
    kind, itemsize = values.dtype.kind, values.dtype.itemsize  # by kind: PIL's I;16B arrays are big-endian
    if kind == "u" and itemsize == 1:
        return values.astype(np.uint8)
    if kind == "b":
        return values.astype(np.uint8) * 255
    if kind == "u" and itemsize == 2:
        return np.round(values.astype(np.float32) / 257.0).astype(np.uint8)
    if kind in "iu":
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low >= 0 and high <= 255:
            return values.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return np.round(values.astype(np.float32) / 257.0).astype(np.uint8)
        raise ValueError(
            f"Cannot read {name}: integer pixel values from {low} to {high} fit neither 8-bit (0-255) nor 16-bit "
            "(0-65535) images; scale them to one of these ranges."
        )
    if kind == "f":
        values = values.astype(np.float32)
        if not np.isfinite(values).all():
            kind = "NaN" if np.isnan(values).any() else "infinite"
            raise ValueError(f"Cannot read {name}: it holds {kind} pixel values.")
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return np.round(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    raise ValueError(f"Cannot read {name}: pixel dtype {values.dtype} is not numeric.")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba.convert("RGBA")).convert("RGB")


def _array_to_rgb(array: np.ndarray, name: str) -> Image.Image:
    """(H, W), (H, W, C) or (C, H, W) with C in 1-4 (gray, gray + alpha, RGB, RGBA) to an RGB image."""
    if array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4) and array.shape[0] in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first, as torch tensors usually are
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise ValueError(
            f"Cannot read {name}: expected an array of shape (H, W), (H, W, C) or (C, H, W) with C = 1 (gray), "
            "2 (gray + alpha), 3 (RGB) or 4 (RGBA)."
        )
    if min(array.shape[:2]) == 0:
        raise ValueError(f"Cannot read {name}: the image is empty.")
    pixels = _to_uint8(np.ascontiguousarray(array), name)
    if pixels.ndim == 2:
        return Image.fromarray(pixels, mode="L").convert("RGB")
    channels = pixels.shape[-1]
    if channels == 3:
        return Image.fromarray(pixels, mode="RGB")
    if channels == 2:
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:]], axis=-1)
    return _composite_on_white(Image.fromarray(pixels, mode="RGBA"))


def pil_to_rgb(image: Image.Image, name: str | None = None) -> Image.Image:
    """Any PIL image as an 8-bit RGB image, by the rules in the module docstring.

    Args:
        image: a PIL image of any mode and size.
        name: how to call the image in errors (defaults to its mode and size).

    Returns:
        An RGB PIL image of the same size.
    """
    name = name or describe_input(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _array_to_rgb(np.asarray(image), name)
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        return _composite_on_white(image)
    if mode in ("1", "L"):
        return image.convert("L").convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"Cannot convert {name} from mode {mode} to RGB: {error}") from error


def load_rgb_image(image: ImageInput, timeout: float | None = None) -> Image.Image:
    """Read one image input as an 8-bit RGB PIL image.

    Args:
        image: a file path (`str` or `os.PathLike`), an `http://` or `https://` URL, a PIL image of any mode, a numpy
            array or torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in 1-4 (uint8, uint16, other
            integers, bool or float), or a `{"bytes": ..., "path": ...}` dict as a `datasets` `Image` column holds
            with `decode=False`.
        timeout: seconds to wait for a URL (default 10).

    Returns:
        An RGB PIL image of the input's size.

    Raises:
        ValueError: naming the input, when it cannot be read (missing or corrupt file, unreachable URL, unsupported
            shape or values).
    """
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            return pil_to_rgb(_open_url(image, timeout), repr(image))
        return pil_to_rgb(_open_file(image), repr(image))
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        if image.get("bytes") is not None:
            return pil_to_rgb(_open_bytes(image["bytes"], describe_input(image)), describe_input(image))
        if image.get("path"):
            return load_rgb_image(image["path"], timeout)
        raise ValueError(f"Cannot read {describe_input(image)}: it has neither bytes nor a path.")
    if type(image).__module__.startswith("torch") and hasattr(image, "detach"):
        image = image.detach().cpu()
        if str(image.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            image = image.float()
        image = image.numpy()
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, describe_input(image))
    raise ValueError(
        f"Cannot read an image from a {describe_input(image)}: pass a path, a URL, a PIL image, a numpy array or a "
        "torch tensor."
    )


def as_pil_image_processor(image_processor):
    """The same CLIP image processing on Pillow, CLEF's training-time backend.

    transformers 5 loads every saved image processor with its torchvision backend when torchvision is installed, even
    one saved as `CLIPImageProcessorPil`. The two resize differently (up to 0.02 in normalised pixels, seen on a
    machine with torchvision), so a model would see slightly other pixels than in training. A torchvision
    `CLIPImageProcessor` is rebuilt as a `CLIPImageProcessorPil` with the same settings; anything else is returned
    unchanged.

    Args:
        image_processor: an image processor, or None.

    Returns:
        A `CLIPImageProcessorPil`, or `image_processor` itself.
    """
    if type(image_processor).__name__ != "CLIPImageProcessor":
        return image_processor
    from transformers import CLIPImageProcessorPil

    settings = image_processor.to_dict()
    for key in ("image_processor_type", "processor_class", "auto_map", "_processor_class"):
        settings.pop(key, None)
    return CLIPImageProcessorPil.from_dict(settings)


__all__ = ["ImageInput", "as_pil_image_processor", "describe_input", "load_rgb_image", "pil_to_rgb"]
