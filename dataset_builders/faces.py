"""Face detection and cropping for the data set builders; the code lives in `clef_hf.faces` (the pipeline uses it too)
and is re-exported here so that `from dataset_builders.faces import ...` keeps working."""

from clef_hf.faces import (FACE_DETECTORS, Box, DetectedFace, FaceDetector, FaceFinder, HaarFaceDetector, crop_face,
                           expand_box)

__all__ = ["FACE_DETECTORS", "Box", "DetectedFace", "FaceDetector", "FaceFinder", "HaarFaceDetector", "crop_face",
           "expand_box"]
