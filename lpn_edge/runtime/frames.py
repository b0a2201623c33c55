"""The frames of `lpn-edge locate`: image files, folders of images and video files, one decoded frame at a time.

    iter_frames(inputs, every=1) -> Frame, Frame, ...

Inputs in the order given: a video file (by suffix, `VIDEO_SUFFIXES`; decoded with PyAV, the optional extra
``[video]``), a folder (every image under it, recursively, sorted by path: `preprocessing.find_images`), or an image
file (any other suffix). `every` keeps every N-th frame of each input (frame numbers 0, N, 2N, ...; a video is still
decoded frame by frame, and the time spent on the frames in between counts to the decode time of the kept one).

A frame that cannot be decoded comes as a Frame with `error` set (its name says which file, or which video and
frame number) and the iteration goes on with the next; a video that breaks off ends there, after its error frame.
A missing input, an empty folder or a video without PyAV is a bad input: LpnEdgeError before the first frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.preprocessing import UnreadableImage, find_images, load_rgb

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".h264",
                  ".h265", ".hevc")
VIDEO_EXTRA = 'pip install "lpn-edge[video]"'


@dataclass(frozen=True)
class Frame:
    """One frame: `pixels` (H, W, 3) uint8 RGB, or None with `error` (why it could not be decoded).

    name: the file, or "<video>#<number>" for a video frame. number: the frame's position in its input (a folder's
    sorted listing, a video's decoded frames), before `every`. key: what a truth table matches (the file name's
    stem, or the video frame number). time_s: the video frame's presentation time, None for image files.
    decode_s: seconds spent decoding it."""

    name: str
    number: int
    key: str | int
    pixels: np.ndarray | None
    error: str | None = None
    time_s: float | None = None
    decode_s: float = 0.0


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def require_av():
    """PyAV, or the one-line error naming the extra."""
    try:
        import av
    except ImportError:
        raise LpnEdgeError(f"reading video needs PyAV, which is not installed: {VIDEO_EXTRA}") from None
    return av


def check_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str, list[Path]]]:
    """(path, kind "video" / "folder" / "image", the folder's images) per input; LpnEdgeError for a bad input."""
    if not inputs:
        raise LpnEdgeError("give at least one INPUT: an image, a folder of images or a video file")
    checked = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = find_images(item)
            if not images:
                raise LpnEdgeError(f"no images ({', '.join(('.jpg', '.png', '.tif', '...'))}) under {item}")
            checked.append((item, "folder", images))
        elif item.is_file():
            checked.append((item, "video" if is_video(item) else "image", []))
        else:
            raise LpnEdgeError(f"input {item} does not exist")
    if any(kind == "video" for _, kind, _ in checked):
        require_av()
    return checked


def iter_frames(inputs: Sequence[str | Path], every: int = 1) -> Iterator[Frame]:
    """The frames of `inputs` (see the module docstring); inputs are checked before the first frame."""
    if every < 1:
        raise LpnEdgeError(f"--every must be at least 1, got {every}")
    checked = check_inputs(inputs)
    return _frames(checked, every)


def _frames(checked: list[tuple[Path, str, list[Path]]], every: int) -> Iterator[Frame]:
    for path, kind, images in checked:
        if kind == "video":
            yield from _video_frames(path, every)
            continue
        for number, image in enumerate(images if kind == "folder" else [path]):
            if number % every:
                continue
            begin = time.perf_counter()
            try:
                pixels, error = np.asarray(load_rgb(image), np.uint8), None
            except UnreadableImage as exc:
                pixels, error = None, exc.reason
            yield Frame(str(image), number, image.stem, pixels, error, None, time.perf_counter() - begin)


def _video_frames(path: Path, every: int) -> Iterator[Frame]:
    av = require_av()
    begin = time.perf_counter()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        yield Frame(str(path), 0, 0, None, f"cannot open the video: {exc}", None, time.perf_counter() - begin)
        return
    with container:
        if not container.streams.video:
            yield Frame(str(path), 0, 0, None, "the file holds no video stream", None, time.perf_counter() - begin)
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        number = -1
        decoded = iter(container.decode(stream))
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                yield Frame(f"{path}#{number + 1}", number + 1, number + 1, None, f"video decoding failed: {exc}",
                            None, time.perf_counter() - begin)
                return
            number += 1
            if number % every:
                continue
            pixels = frame.to_ndarray(format="rgb24")
            stamp = float(frame.time) if frame.time is not None else (number / rate if rate else None)
            yield Frame(f"{path}#{number}", number, number, pixels, None, stamp, time.perf_counter() - begin)
            begin = time.perf_counter()
