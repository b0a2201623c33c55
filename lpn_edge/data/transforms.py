"""Image transforms: the paper's training augmentation, evaluation preprocessing and robustness perturbations.

Training and evaluation mirror the authors' train.py / test.py (wtyhub/LPN c4f521a): bicubic resize to (H, W),
edge padding and a random crop back to (H, W), horizontal flip, and for satellite images a random rotation of up to
90 degrees (``RandomAffine(90)``) applied to the padded image before the crop; ImageNet normalisation. Every
transform maps an RGB ``PIL.Image`` to a float tensor of shape (3, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode, functional as F

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.preprocessing import IMAGENET_MEAN, IMAGENET_STD

SHIFT_FILLS = ("reflect", "constant", "edge", "symmetric")


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise LpnEdgeError(f"image_size must be an int or (H, W) of positive ints, got {image_size!r}")
    return size  # type: ignore[return-value]


def _to_normalised_tensor() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transforms(
    image_size: int | Sequence[int] = (256, 256),
    pad: int = 10,
    color_jitter: bool = False,
    satellite_rotation: bool = True,
) -> dict[str, T.Compose]:
    """The paper's training augmentation, one transform per view folder name.

    Returns ``{"satellite", "drone", "street", "google"}``; the satellite one adds ``RandomAffine(90)`` when
    ``satellite_rotation``; ``color_jitter`` prepends ColorJitter(0.1, 0.1, 0.1, 0) to all (authors'
    ``--color_jitter``). Output: (3, H, W) float tensors, ImageNet-normalised.
    """
    height, width = _size(image_size)
    if pad < 0:
        raise LpnEdgeError(f"pad must be >= 0, got {pad}")

    def build(rotate: bool) -> T.Compose:
        steps: list = [T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0)] if color_jitter else []
        steps += [T.Resize((height, width), interpolation=InterpolationMode.BICUBIC)]
        if pad:
            steps.append(T.Pad(pad, padding_mode="edge"))
        if rotate:
            steps.append(T.RandomAffine(90))  # rotation only, nearest interpolation, black corners (as authors)
        steps += [T.RandomCrop((height, width)), T.RandomHorizontalFlip()]
        return T.Compose(steps + _to_normalised_tensor())

    ground = build(rotate=False)
    return {"satellite": build(rotate=satellite_rotation), "drone": ground, "street": ground, "google": ground}


class Rotate:
    """Rotate a PIL image counter-clockwise by ``degrees`` about its centre, same size, black corners.

    Nearest-neighbour like ``torchvision.transforms.functional.rotate``'s default, which the authors' robustness
    test (paper Table V) applies to the query image before resizing.
    """

    def __init__(self, degrees: float) -> None:
        self.degrees = float(degrees)

    def __call__(self, image: Image.Image) -> Image.Image:
        return F.rotate(image, self.degrees) if self.degrees else image

    def __repr__(self) -> str:
        return f"Rotate(degrees={self.degrees})"


class Shift:
    """Move image content by ``(dx, dy)`` pixels (positive: right / down) at the image's own size.

    The image is padded by ``max(|dx|, |dy|)`` on every side (``fill``: "reflect" by default; "constant" pads
    black) and the original-size window is cropped so that the content moves by exactly (dx, dy). The authors'
    shifted-query test (paper Table VII) is ``Shift(P, 0, fill="constant")`` after resizing to the model size:
    they pad P black columns on the left and keep the top-left window.
    """

    def __init__(self, dx: int, dy: int = 0, fill: str = "reflect") -> None:
        if fill not in SHIFT_FILLS:
            raise LpnEdgeError(f"shift fill must be one of {', '.join(SHIFT_FILLS)}, got {fill!r}")
        self.dx, self.dy, self.fill = int(dx), int(dy), fill

    def __call__(self, image: Image.Image) -> Image.Image:
        pad = max(abs(self.dx), abs(self.dy))
        if pad == 0:
            return image
        width, height = image.size
        if self.fill in ("reflect", "symmetric") and pad >= min(width, height):
            raise LpnEdgeError(
                f"a {self.fill} shift of {pad} px needs an image larger than {pad} px, got {width}x{height}"
            )
        padded = F.pad(image, pad, padding_mode=self.fill)
        return F.crop(padded, pad - self.dy, pad - self.dx, height, width)

    def __repr__(self) -> str:
        return f"Shift(dx={self.dx}, dy={self.dy}, fill={self.fill!r})"


def eval_transform(
    image_size: int | Sequence[int] = (256, 256),
    rotate_degrees: float = 0.0,
    shift: tuple[int, int] = (0, 0),
    shift_fill: str = "reflect",
) -> T.Compose:
    """Evaluation preprocessing: bicubic resize to (H, W), ToTensor, ImageNet normalisation -> (3, H, W).

    Robustness perturbations (off by default): ``rotate_degrees`` rotates the original image first (paper
    Table V); ``shift=(dx, dy)`` moves the content of the resized image by that many pixels (paper Table VII), see
    `Shift`.
    """
    height, width = _size(image_size)
    steps: list = [Rotate(rotate_degrees)] if rotate_degrees else []
    steps.append(T.Resize((height, width), interpolation=InterpolationMode.BICUBIC))
    if any(shift):
        steps.append(Shift(shift[0], shift[1], fill=shift_fill))
    return T.Compose(steps + _to_normalised_tensor())
