"""Tests of clef_hf.training.augmentation: identity, determinism, and each augmentation against a hand computation."""

import dataclasses
import math

import pytest
import torch

from clef_hf.training.augmentation import AugmentationConfig, augment_images


def only(**kwargs) -> AugmentationConfig:
    """The identity configuration with some fields switched on."""
    return dataclasses.replace(AugmentationConfig.none(), **kwargs)


def ramps(batch: int, height: int, width: int) -> torch.Tensor:
    """(batch, 2, height, width): channel 0 is the pixel's x and channel 1 its y, in pixels from the image centre."""
    y = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    x = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([grid_x, grid_y])[None].repeat(batch, 1, 1, 1)


def random_images(batch: int = 4, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_identity_config_returns_the_input_unchanged():
    images = random_images()
    output = augment_images(images, torch.Generator().manual_seed(0), AugmentationConfig.none())
    assert torch.equal(output, images)
    assert AugmentationConfig.none().is_identity
    assert not AugmentationConfig().is_identity


def test_same_seed_gives_same_output_and_another_seed_another():
    images = random_images()
    config = AugmentationConfig(color_jitter=0.1)
    first = augment_images(images, torch.Generator().manual_seed(3), config)
    again = augment_images(images, torch.Generator().manual_seed(3), config)
    other = augment_images(images, torch.Generator().manual_seed(4), config)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-3)
    assert not torch.allclose(first, images, atol=1e-3)


def test_certain_flip_mirrors_every_image():
    images = random_images()
    output = augment_images(images, torch.Generator().manual_seed(0), only(flip_probability=1.0))
    torch.testing.assert_close(output, images.flip(-1), rtol=0, atol=1e-5)


def test_half_probability_flips_about_half_the_images():
    images = random_images(batch=200, channels=1, size=6)
    output = augment_images(images, torch.Generator().manual_seed(0), only(flip_probability=0.5))
    flipped = (output - images.flip(-1)).flatten(1).abs().amax(1) < 1e-5
    kept = (output - images).flatten(1).abs().amax(1) < 1e-5
    assert bool((flipped ^ kept).all()), "each image is either mirrored or left as it is"
    assert 60 < int(flipped.sum()) < 140


def fit_linear_maps(output: torch.Tensor) -> torch.Tensor:
    """(batch, 2, 2) matrices M with output(q) = M q for augmented `ramps`, fitted on the central disc of pixels
    whose rotation stays between pixel centres (bilinear interpolation reproduces a linear ramp exactly there)."""
    height, width = output.shape[-2:]
    q_x, q_y = ramps(1, height, width)[0]
    inside = q_x**2 + q_y**2 < ((min(height, width) - 1) / 2 - 1) ** 2
    design = torch.stack([q_x[inside], q_y[inside]], dim=1).double()
    maps = []
    for image in output:
        targets = image[:, inside].double().T  # (pixels, 2)
        solution = torch.linalg.lstsq(design, targets).solution  # (2, 2): targets = design @ solution
        assert float((design @ solution - targets).abs().max()) < 1e-4, "the augmented ramps stay linear"
        maps.append(solution.T)
    return torch.stack(maps)


@pytest.mark.parametrize("flip_probability, determinant", [(0.0, 1.0), (1.0, -1.0)])
def test_rotation_turns_coordinate_ramps_by_a_bounded_angle_without_shear(flip_probability, determinant):
    # A non-square image: a rotation built in normalised coordinates without the aspect correction would shear it.
    height, width, max_degrees = 24, 40, 10.0
    config = only(max_rotation_degrees=max_degrees, flip_probability=flip_probability)
    output = augment_images(ramps(6, height, width), torch.Generator().manual_seed(0), config)

    # The output at centred pixel position q samples the input at M q, with M a rotation (times a mirror when
    # flipped): orthogonal in pixel units, with determinant +1 or -1.
    maps = fit_linear_maps(output)
    identity = torch.eye(2, dtype=maps.dtype).expand_as(maps)
    torch.testing.assert_close(maps @ maps.transpose(1, 2), identity, rtol=0, atol=1e-5)
    determinants = torch.full((6,), determinant, dtype=maps.dtype)
    torch.testing.assert_close(torch.linalg.det(maps), determinants, atol=1e-5, rtol=0)
    angles = [math.degrees(math.atan2(float(m[1, 0]), float(m[1, 1]))) for m in maps]
    assert all(abs(angle) <= max_degrees + 1e-4 for angle in angles)
    assert max(angles) - min(angles) > 1.0, f"angles should vary between images, got {angles}"
    if flip_probability == 0.0:
        assert float(maps[:, 0, 0].min()) > 0, "no image is mirrored"


def test_geometric_augmentation_keeps_a_constant_image_constant():
    # Border padding: the half-pixel rims and the corners a rotation brings in take the image's own values.
    images = torch.full((4, 3, 24, 24), 1.5)
    output = augment_images(images, torch.Generator().manual_seed(0), AugmentationConfig(crop_scale=(0.3, 1.0)))
    torch.testing.assert_close(output, images)


@pytest.mark.parametrize("ratio, step_x, step_y", [(1.0, 0.5, 0.5), (4.0, 1.0, 0.25)])
def test_quarter_area_crop_magnifies_by_the_crop_size(ratio, step_x, step_y):
    images = ramps(8, 32, 32)
    config = only(crop_scale=(0.25, 0.25), crop_ratio=(ratio, ratio))
    output = augment_images(images, torch.Generator().manual_seed(0), config)
    # With ratio 1, half the width and half the height fill the image, so one output pixel spans half an input
    # pixel; with ratio 4, the full width and a quarter of the height. The outermost output pixels may reach the
    # border padding, within a quarter pixel of the edge.
    interior = output[:, :, 1:-1, 1:-1]
    torch.testing.assert_close(interior[:, 0].diff(dim=-1), torch.full_like(interior[:, 0].diff(dim=-1), step_x))
    torch.testing.assert_close(interior[:, 1].diff(dim=-2), torch.full_like(interior[:, 1].diff(dim=-2), step_y))
    torch.testing.assert_close(interior[:, 0].diff(dim=-2), torch.zeros_like(interior[:, 0].diff(dim=-2)))
    # The crop lies inside the image, at a random position.
    centres = output.mean(dim=(2, 3))
    assert bool((centres[:, 0].abs() <= 16 * (1 - step_x) + 1e-4).all())
    assert bool((centres[:, 1].abs() <= 16 * (1 - step_y) + 1e-4).all())
    assert float(centres[:, 1].std()) > 0.5


def test_a_crop_that_cannot_fit_falls_back_to_the_whole_image_without_stretching():
    """Area 1 with a non-square ratio cannot fit: like torchvision, take the whole image rather than squash it."""
    images = ramps(8, 16, 16)
    output = augment_images(images, torch.Generator().manual_seed(0), only(crop_scale=(1.0, 1.0)))
    assert torch.allclose(output, images, atol=1e-4)
    # A crop that fits is still applied: half the area magnifies the ramps.
    zoomed = augment_images(images, torch.Generator().manual_seed(0), only(crop_scale=(0.5, 0.5), crop_ratio=(1, 1)))
    assert not torch.allclose(zoomed, images, atol=1e-2)


def test_color_jitter_moves_each_channel_within_its_bounds():
    jitter = 0.2
    levels = torch.tensor([0.5, -1.0, 2.0])
    images = levels[None, :, None, None].expand(16, 3, 8, 8).clone()
    output = augment_images(images, torch.Generator().manual_seed(0), only(color_jitter=jitter))

    means = output.mean(dim=(2, 3))
    assert float(output.std(dim=(2, 3)).max()) < 1e-6, "gain and offset are the same over an image's pixels"
    bounds = torch.stack([levels * (1 - jitter), levels * (1 + jitter)])
    low, high = bounds.min(0).values - jitter, bounds.max(0).values + jitter
    assert bool(((means >= low - 1e-6) & (means <= high + 1e-6)).all())
    assert float((means - levels).abs().min(dim=0).values.max()) > 0
    assert float(means.std(dim=0).min()) > 0.02, "each image gets its own jitter"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_and_dtype_are_preserved(dtype):
    images = random_images(batch=3, size=20).to(dtype)
    config = AugmentationConfig(color_jitter=0.1)
    output = augment_images(images, torch.Generator().manual_seed(0), config)
    assert output.shape == images.shape
    assert output.dtype == dtype
    reference = augment_images(images.float(), torch.Generator().manual_seed(0), config)
    torch.testing.assert_close(output.float(), reference, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "field, value",
    [
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.9, 0.8)),
        ("crop_scale", (0.5, 1.5)),
        ("crop_scale", (0.5,)),
        ("crop_ratio", (0.0, 1.0)),
        ("crop_ratio", (2.0, 1.0)),
        ("flip_probability", 1.5),
        ("flip_probability", float("nan")),
        ("max_rotation_degrees", -1.0),
        ("color_jitter", 1.5),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentationConfig(**{field: value})


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        augment_images(torch.zeros(3, 8, 8), torch.Generator(), AugmentationConfig())
    with pytest.raises(ValueError, match="floating-point"):
        augment_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.Generator(), AugmentationConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu_for_the_same_seed():
    images = random_images(batch=3, size=20)
    config = AugmentationConfig(color_jitter=0.1)
    on_cpu = augment_images(images, torch.Generator().manual_seed(0), config)
    on_gpu = augment_images(images.cuda(), torch.Generator().manual_seed(0), config)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)
