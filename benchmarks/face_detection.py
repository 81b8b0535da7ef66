"""Face detection on real photographs that ship with scikit-image, and composites of them, for each detector of
`clef_hf.faces` ("hog", "cnn", "haar") as the pipeline runs them (`FaceFinder`: detector, 5 landmarks, rejection of
implausible landmarks): faces found / expected, false positives, landmark error where a reference exists, ms/image.

Sets (`tests/face_scenes.py` builds the composites):

- `astronaut`: `skimage.data.astronaut()`, one frontal face;
- `cameraman`: `skimage.data.camera()`, one face turned three-quarters away, one eye behind a camcorder (hard);
- `scales`: the astronaut's head alone on a 400 x 400 canvas at 0.15x-1.5x (eye distance 7-66 px, face width
  about 14-135 px);
- `tilts`: the head at 1.2x, tilted by -45 to +45 degrees;
- `several`: four heads of three sizes and tilts 0, +15, -15 on one 800 x 480 canvas;
- `crowd`: 30 heads (0.7x) in a 6 x 5 grid on 900 x 750;
- `lfw`: the first `--lfw` faces of `skimage.data.lfw_subset()` (25 x 25 grey crops), upscaled to 100 px and padded
  to 200 x 200 (blurry: small photographs blown up);
- `face-free`: photos without a face (cat, coffee, rocket, coins, horse, page, hubble deep field,
  immunohistochemistry, retina): every detection there is a false positive.

A detection is matched to an expected face when the face's reference centre (the mean of its 5 reference landmarks;
for the cameraman and lfw a centre set by looking at the photo) lies inside the box; each face matches at most one
detection; an unmatched detection is a false positive. The landmark error is the mean distance between found and
reference landmarks, as a fraction of the reference eye distance (composites only: their reference is dlib's fit on
the upright original, carried through the paste transform, so this is the error that resizing and tilting add).
ms/image is the median of `--repeats` runs per image, on this machine (2 shared CPU cores for the README numbers).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/face_detection.py --output benchmarks/results/face_detection.json
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the scenes the tests use

from benchmark_report import write_report  # noqa: E402
from face_scenes import ASTRONAUT_LANDMARKS, blank_canvas, paste_head, several_faces_scene  # noqa: E402

from clef_hf.faces import FaceFinder, FivePointLandmarker  # noqa: E402

FACE_FREE = ("chelsea", "coffee", "rocket", "coins", "horse", "page", "hubble_deep_field", "immunohistochemistry",
             "retina")
SCALES = (0.15, 0.2, 0.25, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5)
TILTS = (-45, -30, -15, 0, 15, 30, 45)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8) if image.max() <= 1 else image.astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def build_sets(num_lfw: int) -> dict[str, list[tuple[str, np.ndarray, list[dict]]]]:
    """{set: [(label, image, expected faces)]}, each expected face {"centre": (x, y), "landmarks": (5, 2) or None}."""
    def placed(face):
        return {"centre": face.centre, "landmarks": face.landmarks}

    sets = {
        "astronaut": [("astronaut", data.astronaut(),
                       [{"centre": ASTRONAUT_LANDMARKS.mean(axis=0), "landmarks": None}])],
        "cameraman": [("camera", _rgb(data.camera()), [{"centre": np.array([220.0, 155.0]), "landmarks": None}])],
    }
    sets["scales"] = []
    for scale in SCALES:
        canvas = blank_canvas(400, 400)
        sets["scales"].append((f"{scale}x", canvas, [placed(paste_head(canvas, (200, 200), scale, 0.0))]))
    sets["tilts"] = []
    for angle in TILTS:
        canvas = blank_canvas(400, 400)
        sets["tilts"].append((f"{angle} deg", canvas, [placed(paste_head(canvas, (200, 200), 1.2, angle))]))
    canvas, faces = several_faces_scene()
    sets["several"] = [("several", canvas, [placed(face) for face in faces])]
    canvas = blank_canvas(900, 750)
    crowd = [paste_head(canvas, (75 + 150 * c, 75 + 150 * r), 0.7, 0.0) for r in range(5) for c in range(6)]
    sets["crowd"] = [("crowd", canvas, [placed(face) for face in crowd])]
    sets["lfw"] = []
    for index, face in enumerate(data.lfw_subset()[:num_lfw]):
        canvas = np.full((200, 200), 128, np.uint8)
        canvas[50:150, 50:150] = np.asarray(Image.fromarray((face * 255).round().astype(np.uint8)).resize(
            (100, 100), Image.BICUBIC))
        sets["lfw"].append((f"lfw {index}", _rgb(canvas), [{"centre": np.array([100.0, 100.0]), "landmarks": None}]))
    sets["face-free"] = [(name, _rgb(getattr(data, name)()), []) for name in FACE_FREE]
    return sets


def match(found, expected) -> tuple[int, int, list[float]]:
    """(faces found, false positives, landmark errors as fractions of the eye distance) for one image."""
    taken, errors, hits = set(), [], 0
    for face in found:
        x0, y0, x1, y1 = face.box
        candidates = [i for i, e in enumerate(expected) if i not in taken
                      and x0 <= e["centre"][0] <= x1 and y0 <= e["centre"][1] <= y1]
        if not candidates:
            continue
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        best = min(candidates, key=lambda i: np.linalg.norm(expected[i]["centre"] - centre))
        taken.add(best)
        hits += 1
        reference = expected[best]["landmarks"]
        if reference is not None and face.landmarks is not None:
            eye_distance = np.linalg.norm(reference[0:2].mean(axis=0) - reference[2:4].mean(axis=0))
            errors.append(float(np.linalg.norm(face.landmarks - reference, axis=1).mean() / eye_distance))
    return hits, len(found) - hits, errors


def run_detector(finder: FaceFinder, sets: dict, repeats: int) -> dict:
    rows = {}
    for name, items in sets.items():
        hits = expected = false_positives = 0
        errors, milliseconds, missed = [], [], []
        for label, image, faces in items:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                found = finder(image)
                times.append(1000 * (time.perf_counter() - start))
            milliseconds.append(float(np.median(times)))
            h, fp, e = match(found, faces)
            if h < len(faces) or fp:
                missed.append(f"{label}: {h}/{len(faces)}" + (f", {fp} false" if fp else ""))
            hits, expected, false_positives = hits + h, expected + len(faces), false_positives + fp
            errors += e
        rows[name] = {"found": hits, "expected": expected, "false_positives": false_positives,
                      "images": len(items), "ms_per_image": float(np.mean(milliseconds)),
                      "landmark_error": float(np.mean(errors)) if errors else None,
                      "failures": missed}
        print(f"{finder.detector_name:8s} {name:10s} found {hits}/{expected}  false positives {false_positives}  "
              f"landmark error {rows[name]['landmark_error'] if errors else '-'}  "
              f"{rows[name]['ms_per_image']:.1f} ms/image  {'; '.join(missed[:12])}", flush=True)
    return rows


def run_benchmark(options) -> dict:
    sets = build_sets(options.lfw)
    landmarker = FivePointLandmarker()
    report = {"benchmark": "face_detection", "cpu_count": os.cpu_count(),
              "processor": platform.processor() or platform.machine(), "repeats": options.repeats,
              "sets": {name: len(items) for name, items in sets.items()}, "detectors": {}}
    for variant in options.detectors:
        # "NAME-raw": the detector's own boxes, without the landmark rejection ("haar-raw" is clef-hf before it)
        detector, raw = variant.removesuffix("-raw"), variant.endswith("-raw")
        finder = FaceFinder(detector, landmarker=landmarker, reject_implausible=not raw)
        finder.detector_name = variant
        chosen = sets
        if detector == "cnn" and options.cnn_lfw is not None:  # the CNN takes seconds per image on a CPU
            chosen = {**sets, "lfw": sets["lfw"][: options.cnn_lfw]}
        report["detectors"][variant] = run_detector(finder, chosen, options.repeats if detector != "cnn" else 1)
    return report


def print_table(report: dict) -> None:
    print("\nset | " + " | ".join(f"{d} found | {d} FP | {d} ms" for d in report["detectors"]))
    for name in report["sets"]:
        cells = []
        for rows in report["detectors"].values():
            row = rows[name]
            cells += [f"{row['found']}/{row['expected']}", str(row["false_positives"]), f"{row['ms_per_image']:.0f}"]
        print(f"{name} | " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectors", nargs="+", default=["hog", "hog-raw", "cnn", "haar", "haar-raw"])
    parser.add_argument("--lfw", type=int, default=100, help="lfw_subset faces (the first 100 are faces)")
    parser.add_argument("--cnn_lfw", "--cnn-lfw", type=int, default=20, help="of those, how many the CNN runs on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="write the measurements to this JSON file")
    options = parser.parse_args()
    report = run_benchmark(options)
    print_table(report)
    write_report(report, options.output)


if __name__ == "__main__":
    main()
