"""`clef_hf.video`: lazy frame decoding (order, stride, timestamps, limits, errors, flat memory) and `analyze_video`
with a stand-in pipeline and, where the "facial-behavior" task is registered, the real one."""

import gc
import itertools
import os
import tracemalloc
import weakref

import cv2
import numpy as np
import pytest
from face_scenes import two_faces_clip
from facial_behavior_fixture import build_facial_behavior_pipeline, facial_behavior_task_registered
from PIL import Image

import clef_hf.video as video
from clef_hf.video import (
    VideoFileNotFoundError,
    analyze_video,
    available_video_backends,
    iter_video_frames,
    video_results_to_dataframe,
)

FPS = 10.0
NUM_FRAMES = 24
SIZE = 64
#: Frame i is filled with gray level i * BRIGHTNESS_STEP, so its index can be read back from the decoded pixels.
BRIGHTNESS_STEP = 10
LONG_FRAMES, LONG_SIZE = 600, (320, 240)

BACKENDS = [
    pytest.param(backend, marks=pytest.mark.skipif(backend not in available_video_backends(),
                                                    reason=f"{backend} is not installed"))
    for backend in video.VIDEO_BACKENDS
]


def write_video(path, frames, fps=FPS):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def short_frame(index: int) -> np.ndarray:
    """A BGR frame of gray level index * BRIGHTNESS_STEP with a pure red (BGR 0, 0, 255) square in the top left."""
    frame = np.full((SIZE, SIZE, 3), index * BRIGHTNESS_STEP, dtype=np.uint8)
    frame[:16, :16] = (0, 0, 255)
    return frame


def decoded_index(image: Image.Image) -> int:
    """The frame index encoded in the gray level of the frame's bottom half (MJPG shifts it by a level or two)."""
    return round(float(np.asarray(image)[SIZE // 2:].mean()) / BRIGHTNESS_STEP)


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "short.avi"
    return write_video(path, [short_frame(i) for i in range(NUM_FRAMES)])


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "long.avi"
    width, height = LONG_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    for i in range(LONG_FRAMES):
        frame = np.full((height, width, 3), i % 256, dtype=np.uint8)
        frame[:20, : i % width] = 255
        writer.write(frame)
    writer.release()
    return path


# ------------------------------------------------------------------------------------------------- iter_video_frames


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_frame_in_order_with_its_timestamp_as_rgb(short_video, backend):
    frames = list(iter_video_frames(short_video, backend=backend))
    assert [index for index, _, _ in frames] == list(range(NUM_FRAMES))
    assert [timestamp for _, timestamp, _ in frames] == pytest.approx([i / FPS for i in range(NUM_FRAMES)])
    for index, _, image in frames:
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (SIZE, SIZE)
        assert decoded_index(image) == index
        red, green, blue = np.asarray(image)[4:12, 4:12].reshape(-1, 3).mean(axis=0)
        assert red > 200 and green < 60 and blue < 60, "BGR frames were not converted to RGB"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride", [2, 5, 7, NUM_FRAMES, NUM_FRAMES + 3])
def test_frame_stride_keeps_every_nth_frame(short_video, stride, backend):
    frames = list(iter_video_frames(short_video, frame_stride=stride, backend=backend))
    expected = list(range(0, NUM_FRAMES, stride))
    assert [index for index, _, _ in frames] == expected
    assert [decoded_index(image) for _, _, image in frames] == expected
    assert [timestamp for _, timestamp, _ in frames] == pytest.approx([i / FPS for i in expected])


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_frames_counts_kept_frames(short_video, backend):
    frames = list(iter_video_frames(short_video, frame_stride=3, max_frames=4, backend=backend))
    assert [index for index, _, _ in frames] == [0, 3, 6, 9]
    assert [decoded_index(image) for _, _, image in frames] == [0, 3, 6, 9]
    assert len(list(iter_video_frames(short_video, max_frames=1000, backend=backend))) == NUM_FRAMES
    assert len(list(iter_video_frames(short_video, max_frames=1, backend=backend))) == 1


class CountingCapture:
    """Wraps a `cv2.VideoCapture`, counting grabs, retrieves and releases; `report_fps=False` hides the frame rate.

    (A wrapper, not a subclass: Python subclasses of OpenCV's types crash its garbage collection.)"""

    VideoCapture = cv2.VideoCapture

    def __init__(self, source):
        self.capture = self.VideoCapture(source)
        self.grabs = self.retrieves = self.releases = 0
        self.report_fps = True

    def isOpened(self):
        return self.capture.isOpened()

    def grab(self):
        self.grabs += 1
        return self.capture.grab()

    def retrieve(self, *args):
        self.retrieves += 1
        return self.capture.retrieve(*args)

    def release(self):
        self.releases += 1
        return self.capture.release()

    def get(self, prop):
        if prop == cv2.CAP_PROP_FPS and not self.report_fps:
            return 0.0
        return self.capture.get(prop)


@pytest.fixture
def counting_capture(monkeypatch):
    """Replaces `cv2.VideoCapture`; returns the list of the `CountingCapture`s opened, and settings for new ones."""
    opened: list[CountingCapture] = []
    settings = {"report_fps": True}

    def open_capture(source):
        capture = CountingCapture(source)
        capture.report_fps = settings["report_fps"]
        opened.append(capture)
        return capture

    monkeypatch.setattr(cv2, "VideoCapture", open_capture)
    return opened, settings


def test_skipped_frames_are_grabbed_not_decoded_and_decoding_is_lazy(short_video, counting_capture):
    opened, _ = counting_capture
    frames = iter_video_frames(short_video, frame_stride=4)
    (capture,) = opened
    assert capture.retrieves == 0  # opened and frame 0 grabbed, nothing decoded yet
    index, _, _ = next(frames)
    assert index == 0 and capture.retrieves == 1 and capture.grabs == 1
    next(frames)
    assert capture.retrieves == 2 and capture.grabs == 5
    rest = list(frames)
    assert len(rest) == NUM_FRAMES // 4 - 2
    assert capture.retrieves == NUM_FRAMES // 4
    assert capture.grabs == NUM_FRAMES + 1  # every frame, plus the grab that finds the end
    assert capture.releases == 1


def test_max_frames_stops_decoding_and_closing_releases_the_video(short_video, counting_capture):
    opened, _ = counting_capture
    list(iter_video_frames(short_video, max_frames=3))
    assert opened[0].grabs == 3 and opened[0].retrieves == 3 and opened[0].releases == 1
    frames = iter_video_frames(short_video)
    next(frames)
    assert opened[1].releases == 0
    frames.close()
    assert opened[1].releases == 1


def test_timestamps_fall_back_to_the_decoder_position_without_a_frame_rate(short_video, counting_capture):
    _, settings = counting_capture
    settings["report_fps"] = False
    frames = list(iter_video_frames(short_video, frame_stride=5))
    assert [index for index, _, _ in frames] == [0, 5, 10, 15, 20]
    assert [timestamp for _, timestamp, _ in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0], abs=1e-3)


def test_missing_file_raises_at_call_time_naming_it(tmp_path):
    missing = tmp_path / "no-such-video.mp4"
    with pytest.raises(VideoFileNotFoundError, match="no-such-video.mp4") as caught:
        iter_video_frames(missing)  # not iterated: the error comes when the video is opened
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("content", ["random", "empty", "truncated", "text"])
def test_unreadable_files_raise_value_error_naming_them(tmp_path, short_video, content, backend):
    path = tmp_path / f"broken-{content}.avi"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":  # the RIFF header of a real video, no frame data
        path.write_bytes(short_video.read_bytes()[:200])
    else:
        path.write_text("not a video\n" * 100)
    with pytest.raises(ValueError, match=f"broken-{content}.avi"):
        iter_video_frames(path, backend=backend)


def test_a_directory_is_not_a_video(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        iter_video_frames(tmp_path)


@pytest.mark.parametrize("arguments", [{"frame_stride": 0}, {"frame_stride": -2}, {"frame_stride": 1.5},
                                       {"max_frames": 0}, {"max_frames": -1}, {"backend": "gstreamer"}])
def test_bad_arguments_are_rejected(short_video, arguments):
    with pytest.raises(ValueError, match=next(iter(arguments)).split("_")[0]):
        iter_video_frames(short_video, **arguments)


@pytest.mark.skipif("pyav" in available_video_backends(), reason="PyAV is installed")
def test_pyav_backend_without_pyav_says_so(short_video):
    with pytest.raises(ImportError, match="PyAV"):
        iter_video_frames(short_video, backend="pyav")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryProbe:
    """Consumes `count` items of `make_items()` (the call is measured too: an implementation could decode everything
    up front) and records the peak growth of RSS and of the memory tracemalloc traces (numpy arrays included), and,
    through `track`, the most frames alive at once (PIL keeps pixels outside tracemalloc's view)."""

    def __init__(self):
        self.alive = self.most_alive = 0

    def track(self, image: Image.Image) -> None:
        """Count `image` as alive until it is garbage (PIL images are unhashable: no WeakSet)."""
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        weakref.finalize(image, self._release)

    def _release(self) -> None:
        self.alive -= 1

    def consume(self, make_items, count: int, track_item=None) -> tuple[int, int]:
        gc.collect()
        base_rss, peak_rss = rss_bytes(), 0
        tracemalloc.start()
        try:
            for item in itertools.islice(make_items(), count):
                if track_item is not None:
                    self.track(track_item(item))
                peak_rss = max(peak_rss, rss_bytes() - base_rss)
            _, peak_traced = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak_rss, peak_traced


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_memory_stays_flat_over_a_long_video(long_video):
    frame_bytes = LONG_SIZE[0] * LONG_SIZE[1] * 3  # 230 kB; 500 retained frames would be 115 MB
    probe = MemoryProbe()

    def frames():
        return iter_video_frames(long_video)

    def image_of(frame):
        return frame[2]

    probe.consume(frames, 50)  # warm up the decoder and the allocator
    rss_100, traced_100 = probe.consume(frames, 100, image_of)
    rss_600, traced_600 = probe.consume(frames, LONG_FRAMES, image_of)
    assert probe.most_alive <= 2  # the consumer's frame, and the next one at most
    assert traced_600 < traced_100 + 20 * frame_bytes, (traced_100, traced_600)
    assert rss_600 < rss_100 + 60 * frame_bytes, (rss_100, rss_600)


# ----------------------------------------------------------------------------------------------------- analyze_video


class FakePipeline:
    """Stands in for `pipeline("facial-behavior")`: one face per frame whose AU1 score is the frame's decoded index
    / 100 (so the tests see which frame a result came from); frames darker than `min_index` have no face."""

    def __init__(self, min_index: int = 0, drop_one: bool = False):
        self.calls: list[tuple[int, dict]] = []
        self.min_index, self.drop_one = min_index, drop_one

    def __call__(self, images, **kwargs):
        assert isinstance(images, list) and all(isinstance(image, Image.Image) for image in images)
        self.calls.append((len(images), kwargs))
        outputs = []
        for image in images:
            index = decoded_index(image)
            if index < self.min_index:
                outputs.append([])
                continue
            outputs.append([{"box": {"xmin": 0, "ymin": 0, "xmax": SIZE, "ymax": SIZE},
                             "predictions": [{"label": "AU1", "name": "inner brow raiser", "score": index / 100,
                                              "present": index % 2 == 0}]}])
        return outputs[:-1] if self.drop_one else outputs


def test_analyze_video_yields_a_record_per_kept_frame_in_chunks(short_video):
    pipe = FakePipeline()
    records = analyze_video(pipe, short_video, frame_stride=2, batch_size=5, detect_faces=False, top_k=3)
    assert pipe.calls == []  # lazy: nothing decoded or analysed yet
    records = list(records)
    kept = list(range(0, NUM_FRAMES, 2))
    assert [record["frame"] for record in records] == kept
    assert [record["timestamp"] for record in records] == pytest.approx([i / FPS for i in kept])
    assert [record["faces"][0]["predictions"][0]["score"] for record in records] == pytest.approx(
        [i / 100 for i in kept])
    assert all("image" not in record for record in records)
    assert [size for size, _ in pipe.calls] == [5, 5, 2]
    assert all(kwargs == {"batch_size": 5, "detect_faces": False, "top_k": 3} for _, kwargs in pipe.calls)


def test_analyze_video_max_frames_and_return_frames(short_video):
    records = list(analyze_video(FakePipeline(), short_video, frame_stride=3, batch_size=8, max_frames=3,
                                 return_frames=True))
    assert [record["frame"] for record in records] == [0, 3, 6]
    assert [decoded_index(record["image"]) for record in records] == [0, 3, 6]


def test_analyze_video_decodes_one_chunk_ahead_at_most(short_video, monkeypatch):
    decoded = []
    original = video.iter_video_frames

    def counting_frames(*args, **kwargs):
        for frame in original(*args, **kwargs):
            decoded.append(frame[0])
            yield frame

    monkeypatch.setattr(video, "iter_video_frames", counting_frames)
    records = analyze_video(FakePipeline(), short_video, batch_size=4)
    first = next(records)
    assert first["frame"] == 0 and len(decoded) == 4
    for _ in range(4):
        next(records)
    assert len(decoded) == 8


def test_analyze_video_checks_its_arguments_and_the_pipeline(short_video, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        analyze_video(FakePipeline(), short_video, batch_size=0)
    with pytest.raises(VideoFileNotFoundError, match="gone.avi"):
        analyze_video(FakePipeline(), tmp_path / "gone.avi")  # at call time, not at the first next()
    with pytest.raises(ValueError, match=r"returned 3 results for 4 frames.*short.avi"):
        list(analyze_video(FakePipeline(drop_one=True), short_video, batch_size=4))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_analyze_video_memory_stays_flat(long_video):
    frame_bytes = LONG_SIZE[0] * LONG_SIZE[1] * 3
    batch_size = 8
    probe = MemoryProbe()

    def pipe(images, **kwargs):
        for image in images:
            probe.track(image)
        return [[{"box": {"xmin": 0, "ymin": 0, "xmax": 1, "ymax": 1}, "predictions": []}] for _ in images]

    def records():
        return analyze_video(pipe, long_video, batch_size=batch_size)

    probe.consume(records, 50)
    rss_100, traced_100 = probe.consume(records, 100)
    rss_600, traced_600 = probe.consume(records, LONG_FRAMES)
    assert probe.most_alive <= batch_size + 1  # one chunk of frames (and the next frame) at a time
    assert traced_600 < traced_100 + 20 * frame_bytes, (traced_100, traced_600)
    assert rss_600 < rss_100 + 60 * frame_bytes, (rss_100, rss_600)


def test_video_results_to_dataframe_has_a_row_per_face_per_frame(short_video):
    records = analyze_video(FakePipeline(min_index=10), short_video, frame_stride=4)
    table = video_results_to_dataframe(records)  # a generator is consumed
    assert list(table.columns) == ["frame", "timestamp", "face", "xmin", "ymin", "xmax", "ymax", "AU1",
                                   "AU1_present"]
    assert table["frame"].tolist() == [12, 16, 20]  # frames 0, 4 and 8 have no face
    assert table["timestamp"].tolist() == pytest.approx([1.2, 1.6, 2.0])
    assert table["AU1"].tolist() == pytest.approx([0.12, 0.16, 0.20])
    assert table["AU1_present"].tolist() == [True, True, True]
    kept = video_results_to_dataframe(list(analyze_video(FakePipeline(min_index=10), short_video, frame_stride=4)),
                                      keep_empty=True)
    assert kept["frame"].tolist() == [0, 4, 8, 12, 16, 20]
    assert kept["face"].isna().tolist() == [True, True, True, False, False, False]
    with pytest.raises(TypeError, match="analyze_video records"):
        video_results_to_dataframe([[{"box": {}, "predictions": []}]])


# ----------------------------------------------------------------------------------------- with the real pipeline


requires_pipeline = pytest.mark.skipif(
    not facial_behavior_task_registered(),
    reason="the 'facial-behavior' pipeline task is not registered by clef_hf (clef_hf/pipeline_facial_behavior.py)",
)


@requires_pipeline
def test_analyze_video_with_the_facial_behavior_pipeline(short_video, au_model, processor, tmp_path):
    pipe = build_facial_behavior_pipeline(au_model, processor, tmp_path / "model")
    records = list(analyze_video(pipe, short_video, frame_stride=3, batch_size=3, detect_faces=False))
    kept = list(range(0, NUM_FRAMES, 3))
    assert [record["frame"] for record in records] == kept
    assert [record["timestamp"] for record in records] == pytest.approx([i / FPS for i in kept])
    labels = list(au_model.config.label_ids)
    for record in records:
        assert len(record["faces"]) == 1  # detect_faces=False: the whole frame is the face
        face = record["faces"][0]
        assert face["box"] == {"xmin": 0, "ymin": 0, "xmax": SIZE, "ymax": SIZE}
        assert [p["label"] for p in face["predictions"]] == labels
        assert all(0.0 <= p["score"] <= 1.0 and isinstance(p["present"], bool) for p in face["predictions"])
    # each frame's scores are the pipeline's scores for that frame on its own
    index, _, image = list(iter_video_frames(short_video))[9]
    alone = pipe(image, detect_faces=False)[0]["predictions"]
    assert [p["score"] for p in records[3]["faces"][0]["predictions"]] == pytest.approx(
        [p["score"] for p in alone], abs=1e-5)
    # distinct frames give distinct scores, so the comparison above could tell frames apart
    assert records[0]["faces"][0]["predictions"][0]["score"] != pytest.approx(
        records[-1]["faces"][0]["predictions"][0]["score"], abs=1e-6)

    table = video_results_to_dataframe(records)
    assert len(table) == len(kept)  # one face per frame
    assert table["frame"].tolist() == kept
    assert list(table.columns) == ["frame", "timestamp", "face", "xmin", "ymin", "xmax", "ymax", *labels,
                                   *[f"{label}_present" for label in labels]]
    assert table.loc[3, labels].tolist() == pytest.approx([p["score"] for p in alone], abs=1e-5)


@pytest.fixture(scope="module")
def two_faces_video(tmp_path_factory):
    """60 frames (MJPG) of two astronaut heads crossing the frame in opposite directions, and their placements."""
    frames, placements = two_faces_clip(60)
    path = tmp_path_factory.mktemp("video") / "two-faces.avi"
    write_video(path, [cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) for frame in frames])
    return path, placements


@requires_pipeline
@pytest.mark.parametrize("detect_every", [1, 5])
def test_tracked_faces_keep_their_face_id_through_the_clip(two_faces_video, au_model, processor, tmp_path,
                                                           detect_every):
    path, placements = two_faces_video
    pipe = build_facial_behavior_pipeline(au_model, processor, tmp_path / "model")
    records = list(analyze_video(pipe, path, batch_size=8, detect_every=detect_every))
    assert len(records) == len(placements)
    person_of_id = {}
    for record, placed in zip(records, placements):
        assert len(record["faces"]) == 2, record["frame"]
        for face in record["faces"]:
            landmarks = np.array(face["landmarks"])
            person = int(np.argmin([np.linalg.norm(p.centre - landmarks.mean(axis=0)) for p in placed]))
            assert np.abs(landmarks - placed[person].landmarks).max() < 5
            # the first id seen for a person stays hers: no switch, no new id for a known face
            assert person_of_id.setdefault(face["face_id"], person) == person, record["frame"]
    assert sorted(person_of_id) == [0, 1]
    # the faces really moved across the frame (each id covers a long way), so stable ids are not a given
    first, last = records[0]["faces"], records[-1]["faces"]
    assert all(abs(a["box"]["xmin"] - b["box"]["xmin"]) > 300 for a, b in zip(first, last))

    table = video_results_to_dataframe(records)
    assert list(table.columns[:4]) == ["frame", "timestamp", "face", "face_id"]
    assert table.groupby("face_id")["frame"].count().tolist() == [len(records), len(records)]
    # the tracked crops are scored as the pipeline scores the same faces given to it
    given = pipe({"image": Image.fromarray(two_faces_clip(60)[0][7]), "faces": records[7]["faces"]})
    assert [face["face_id"] for face in given] == [face["face_id"] for face in records[7]["faces"]]


def test_face_tracker_detects_every_k_frames_and_redetects_on_loss():
    from clef_hf.face_tracking import FaceTracker, box_iou, match_by_iou
    from clef_hf.faces import FaceFinder

    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert match_by_iou([(0, 0, 10, 10), (50, 50, 60, 60)], [(51, 50, 61, 60), (100, 0, 110, 10)], 0.3) == {0: 1}

    frames = two_faces_clip(60)[0][:20]  # about 7.5 px a frame
    tracker = FaceTracker(FaceFinder("hog"), detect_every=5)
    found = [tracker(frame) for frame in frames]
    assert tracker.detections_run == 4  # frames 0, 5, 10, 15
    assert [[face.detected for face in faces] for faces in found[:6]] == [[True] * 2] + [[False] * 2] * 4 + [[True] * 2]
    # a frame without the faces between detections: the tracks are lost, and the next frame is a detection frame
    tracker = FaceTracker(FaceFinder("hog"), detect_every=5)
    assert len(tracker(frames[0])) == 2
    assert tracker(np.full_like(frames[0], 128)) == []
    assert len(tracker(frames[1])) == 2 and tracker.detections_run == 2
    with pytest.raises(ValueError, match="detect_every"):
        FaceTracker(FaceFinder("hog"), detect_every=0)
