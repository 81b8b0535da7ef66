"""Random image augmentations for CLEF training, in plain torch ops on batches of normalised pixel tensors.

The paper augments with random cropping, horizontal flipping and random rotation; those three are folded
into one affine transform per image and applied with a single `grid_sample`, on whatever device the pixels live.
An optional colour jitter (off by default, not listed in the paper) follows. Random numbers are drawn on the CPU from
a caller-supplied `torch.Generator`, so a seed gives the same augmentation on any device.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentationConfig:
    """Ranges of the random augmentations.

    Args:
        crop_scale: (min, max) area of the random resized crop, as a fraction of the image area.
        crop_ratio: (min, max) aspect ratio (width / height) of the crop relative to the image's own aspect ratio,
            sampled log-uniformly; 1 keeps the image's shape. For square images this is torchvision's `ratio`.
        flip_probability: probability of a horizontal flip.
        max_rotation_degrees: rotation angle drawn uniformly in [-max, +max] degrees.
        color_jitter: j; each channel of each image is mapped to `x * gain + offset` with gain uniform in
            [1 - j, 1 + j] and offset uniform in [-j, +j], in normalised units. 0 turns it off.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    max_rotation_degrees: float = 10.0
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        self.crop_scale = _float_pair("crop_scale", self.crop_scale)
        self.crop_ratio = _float_pair("crop_ratio", self.crop_ratio)
        low, high = self.crop_scale
        # Written as `not (...)` so that NaN fails too.
        if not (0.0 < low <= high <= 1.0):
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}.")
        low, high = self.crop_ratio
        if not (0.0 < low <= high < math.inf):
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max < inf, got {self.crop_ratio}.")
        if not (0.0 <= self.flip_probability <= 1.0):
            raise ValueError(f"flip_probability must lie in [0, 1], got {self.flip_probability}.")
        if not (0.0 <= self.max_rotation_degrees <= 180.0):
            raise ValueError(f"max_rotation_degrees must lie in [0, 180], got {self.max_rotation_degrees}.")
        # A gain of 1 - j must stay non-negative, or the jitter would invert a channel.
        if not (0.0 <= self.color_jitter <= 1.0):
            raise ValueError(f"color_jitter must lie in [0, 1], got {self.color_jitter}.")

    @classmethod
    def none(cls) -> "AugmentationConfig":
        """A configuration under which `augment_images` returns its input unchanged."""
        return cls(
            crop_scale=(1.0, 1.0),
            crop_ratio=(1.0, 1.0),
            flip_probability=0.0,
            max_rotation_degrees=0.0,
            color_jitter=0.0,
        )

    @property
    def is_geometric_identity(self) -> bool:
        """True when crop, flip and rotation can only produce the identity transform."""
        return (
            self.crop_scale == (1.0, 1.0)
            and self.crop_ratio == (1.0, 1.0)
            and self.flip_probability == 0.0
            and self.max_rotation_degrees == 0.0
        )

    @property
    def is_identity(self) -> bool:
        """True when `augment_images` returns its input unchanged."""
        return self.is_geometric_identity and self.color_jitter == 0.0


def _float_pair(name: str, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (min, max), got {value!r}.") from None
    return low, high


def _affine_matrices(
    uniforms: torch.Tensor, height: int, width: int, config: AugmentationConfig
) -> torch.Tensor:
    """The (B, 2, 3) `affine_grid` matrices of crop, flip and rotation, from (B, 6) uniforms in [0, 1), in float64.

    `affine_grid` maps each output position x_out (normalised to [-1, 1]) to the input position
    `x_in = A x_out + t` it samples. Here `A = S · R · F` and `t` is the crop centre: F flips the output horizontally,
    R rotates about the output centre, and S shrinks the whole output onto the crop, so the crop is magnified to the
    full image. R is a rotation in pixel space, `D⁻¹ R_θ D` with D = diag(W, H) in normalised coordinates, so
    non-square images rotate without shearing.
    """
    scale_u, ratio_u, centre_x_u, centre_y_u, flip_u, angle_u = uniforms.unbind(dim=1)

    low, high = config.crop_scale
    area = low + (high - low) * scale_u
    log_low, log_high = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    ratio = torch.exp(log_low + (log_high - log_low) * ratio_u)
    # Crop width and height as fractions of the image's. A crop that would overflow a side is replaced by the whole
    # image, as in torchvision's fallback (without its 10 rejection-sampling retries, so the number of random draws
    # stays fixed). Clamping it to the side instead would stretch the face along the other axis: on faces whose
    # action units are small geometric cues, that distortion alone stalled AU learning (AU F1 0.19 against 0.34).
    crop_w = torch.sqrt(area * ratio)
    crop_h = torch.sqrt(area / ratio)
    fits = (crop_w <= 1.0 + 1e-9) & (crop_h <= 1.0 + 1e-9)
    crop_w = torch.where(fits, crop_w, torch.ones_like(crop_w)).clamp(max=1.0)
    crop_h = torch.where(fits, crop_h, torch.ones_like(crop_h)).clamp(max=1.0)
    # The crop centre is uniform over the positions that keep the crop inside the image.
    centre_x = (1.0 - crop_w) * (2.0 * centre_x_u - 1.0)
    centre_y = (1.0 - crop_h) * (2.0 * centre_y_u - 1.0)

    flip = torch.where(flip_u < config.flip_probability, -1.0, 1.0).to(uniforms.dtype)
    angle = torch.deg2rad(config.max_rotation_degrees * (2.0 * angle_u - 1.0))
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width

    theta = torch.zeros(uniforms.shape[0], 2, 3, dtype=uniforms.dtype)
    theta[:, 0, 0] = crop_w * cos * flip
    theta[:, 0, 1] = crop_w * -sin * aspect
    theta[:, 1, 0] = crop_h * sin / aspect * flip
    theta[:, 1, 1] = crop_h * cos
    theta[:, 0, 2] = centre_x
    theta[:, 1, 2] = centre_y
    return theta


def augment_images(
    pixel_values: torch.Tensor, generator: torch.Generator, config: AugmentationConfig
) -> torch.Tensor:
    """Randomly crop, flip, rotate (and optionally colour-jitter) each image of a batch.

    Per image, one affine transform combines the random resized crop (area and aspect ratio set the zoom; the crop is
    translated at random within the image), the horizontal flip and the rotation; it is applied with bilinear
    `grid_sample` (`align_corners=False`, so a flip maps pixel centres exactly onto pixel centres).

    Padding is `"border"`: the crop always lies inside the image, so samples fall outside it only within half a pixel
    of the edge and in the corners a rotation brings in. Border padding gives those the image's own edge values;
    `"zeros"` would pull them towards 0, which for normalised pixels is the dataset mean colour, darkening or greying
    the rim of every edge-touching crop.

    Every call draws the same number of random values for a given batch shape (6 per image plus 2 per channel per
    image), whatever the configuration, so changing one range does not shift the draws of the others.

    Args:
        pixel_values: (batch, channels, height, width) floating-point images, normalised by the processor, on any
            device; float16 and bfloat16 are resampled in float32 and cast back.
        generator: a CPU `torch.Generator`; all random numbers come from it, so results are the same on any device.
        config: the augmentation ranges; `AugmentationConfig.none()` returns `pixel_values` itself.

    Returns:
        (batch, channels, height, width) augmented images, with the dtype and device of `pixel_values`.
    """
    if pixel_values.dim() != 4 or not pixel_values.is_floating_point():
        raise ValueError(
            f"augment_images needs floating-point pixel_values of shape (batch, channels, height, width), got "
            f"{pixel_values.dtype} of shape {tuple(pixel_values.shape)}."
        )
    if generator.device.type != "cpu":
        raise ValueError(
            f"augment_images draws its random numbers on the CPU so that they do not depend on the device; pass a "
            f"CPU generator, got one on {generator.device}."
        )
    batch, channels, height, width = pixel_values.shape
    uniforms = torch.rand(batch, 6, generator=generator, dtype=torch.float64)
    jitter_uniforms = torch.rand(batch, 2, channels, generator=generator, dtype=torch.float64)
    if config.is_identity or batch == 0:
        return pixel_values

    output = pixel_values
    compute_dtype = torch.promote_types(pixel_values.dtype, torch.float32)
    if not config.is_geometric_identity:
        theta = _affine_matrices(uniforms, height, width, config).to(device=pixel_values.device, dtype=compute_dtype)
        grid = F.affine_grid(theta, [batch, channels, height, width], align_corners=False)
        output = F.grid_sample(
            output.to(compute_dtype), grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    if config.color_jitter > 0.0:
        jitter = config.color_jitter
        gain = 1.0 + jitter * (2.0 * jitter_uniforms[:, 0] - 1.0)  # (batch, channels)
        offset = jitter * (2.0 * jitter_uniforms[:, 1] - 1.0)
        gain = gain.to(device=pixel_values.device, dtype=compute_dtype)[:, :, None, None]
        offset = offset.to(device=pixel_values.device, dtype=compute_dtype)[:, :, None, None]
        output = output.to(compute_dtype) * gain + offset

    return output.to(pixel_values.dtype)


__all__ = ["AugmentationConfig", "augment_images"]
