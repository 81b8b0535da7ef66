"""Video face tracking: detect every k frames and follow the faces by their landmarks in between
(`clef_hf.face_tracking.FaceTracker`), against detecting on every frame, measured side by side in one run.

The clip is synthetic, from a real photograph: two astronaut heads (`tests/face_scenes.two_faces_clip`) crossing a
640 x 400 frame in opposite directions over `--frames` frames (about 1.5 px a frame at 300 frames), one growing, the
other tilting between -10 and +10 degrees. For each k:

- frames/s of face finding and tracking alone (no CLEF model: the model's cost per face is the same for every k);
- detector runs;
- face recall: the fraction of (frame, person) pairs with a face reported;
- agreement with detect-every-frame: the mean IoU of the boxes of the same person in the same frame, and the
  fraction of frames with the same number of faces;
- id switches: frames where a person's face_id differs from her first one;
- landmark error: the mean distance to the reference landmarks (dlib's fit on the original photograph carried through
  the paste), as a fraction of the eye distance.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/face_tracking.py --output benchmarks/results/face_tracking.json
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the scenes the tests use

from benchmark_report import write_report  # noqa: E402
from face_scenes import two_faces_clip  # noqa: E402

from clef_hf.face_tracking import FaceTracker, box_iou  # noqa: E402
from clef_hf.faces import FaceFinder  # noqa: E402


def person_of(face, placed) -> int:
    return int(np.argmin([np.linalg.norm(p.centre - face.landmarks.mean(axis=0)) for p in placed]))


def run_tracker(finder: FaceFinder, frames, placements, detect_every: int) -> tuple[dict, list[dict]]:
    """The measurements of one k, and per frame {person: box}."""
    tracker = FaceTracker(finder, detect_every=detect_every)
    start = time.perf_counter()
    found = [tracker(frame) for frame in frames]
    seconds = time.perf_counter() - start
    boxes, first_id, switches, errors, reported = [], {}, 0, [], 0
    for faces, placed in zip(found, placements):
        frame_boxes = {}
        for face in faces:
            person = person_of(face, placed)
            frame_boxes[person] = face.box
            reported += 1
            if first_id.setdefault(person, face.face_id) != face.face_id:
                switches += 1
            reference = placed[person].landmarks
            eye_distance = np.linalg.norm(reference[0:2].mean(axis=0) - reference[2:4].mean(axis=0))
            errors.append(np.linalg.norm(face.landmarks - reference, axis=1).mean() / eye_distance)
        boxes.append(frame_boxes)
    row = {
        "detect_every": detect_every,
        "frames_per_second": len(frames) / seconds,
        "detector_runs": tracker.detections_run,
        "face_recall": reported / (2 * len(frames)),
        "id_switches": switches,
        "distinct_ids": len({face.face_id for faces in found for face in faces}),
        "landmark_error": float(np.mean(errors)),
    }
    return row, boxes


def run_benchmark(options) -> dict:
    frames, placements = two_faces_clip(options.frames)
    finder = FaceFinder(options.detector)
    finder(frames[0])  # warm-up
    rows, every_frame = [], None
    for k in options.detect_every:
        row, boxes = run_tracker(finder, frames, placements, k)
        if every_frame is None:
            every_frame = boxes  # the first k is 1: the reference
        ious = [box_iou(frame[p], reference[p]) for frame, reference in zip(boxes, every_frame)
                for p in frame if p in reference]
        row["mean_iou_with_every_frame"] = float(np.mean(ious)) if ious else None
        row["same_face_count_as_every_frame"] = float(np.mean([len(a) == len(b) for a, b in zip(boxes, every_frame)]))
        rows.append(row)
        print(f"k={k}: {row['frames_per_second']:.1f} frames/s, {row['detector_runs']} detector runs, recall "
              f"{row['face_recall']:.3f}, IoU with k=1 {row['mean_iou_with_every_frame']:.3f}, same count "
              f"{row['same_face_count_as_every_frame']:.3f}, id switches {row['id_switches']}, ids "
              f"{row['distinct_ids']}, landmark error {row['landmark_error']:.3f}", flush=True)
    base = rows[0]["frames_per_second"]
    for row in rows:
        row["speed_up"] = row["frames_per_second"] / base
    return {"benchmark": "face_tracking", "detector": options.detector, "frames": options.frames,
            "frame_size": list(frames[0].shape[1::-1]), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--detect_every", "--detect-every", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--detector", default="hog")
    parser.add_argument("--output", help="write the measurements to this JSON file")
    options = parser.parse_args()
    if options.detect_every[0] != 1:
        options.detect_every = [1, *options.detect_every]
    report = run_benchmark(options)
    print("\nk | frames/s | speed-up | detector runs | face recall | IoU with k=1 | same count | id switches")
    for row in report["rows"]:
        print(f"{row['detect_every']} | {row['frames_per_second']:.1f} | {row['speed_up']:.2f}x | "
              f"{row['detector_runs']} | {row['face_recall']:.3f} | {row['mean_iou_with_every_frame']:.3f} | "
              f"{row['same_face_count_as_every_frame']:.3f} | {row['id_switches']}")
    write_report(report, options.output)


if __name__ == "__main__":
    main()
