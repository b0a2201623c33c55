"""Parity of an exported artifact against the PyTorch model: the image sets, named thresholds per precision, the
figures and the check.

Image sets (`ParitySet`): random standard-normal images always, and real photos from an explicit data folder
(University-1652 layout, `parity_sets(..., data_dir)`) when it holds enough; int8 artifacts are checked on
calibration images instead of noise (`calibration_set`). Two figures per image set: the per-row cosine between the
artifact's embedding and PyTorch's (both unit norm), and whether each query finds the same top-1 gallery item when
every backend embeds query and gallery itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.preprocessing import find_images, preprocess

POSITIVE_NOISE = 0.1  # std of the noise that turns a query into its gallery match (normalised pixel units)


@dataclass(frozen=True)
class ParityThreshold:
    min_cosine: float  # every row's cosine to the fp32 PyTorch embedding must reach this (worst image)
    mean_cosine: float  # the mean over the rows must reach this
    min_top1_agreement: float  # fraction of queries whose top-1 gallery item equals PyTorch's


# The one table of tolerances. fp16 and int8 artifacts are compared against the fp32 PyTorch reference.
# int8: the 0.99 bound applies to the mean; int8 error is heavy-tailed per image, so the worst image is held to 0.97.
PARITY_THRESHOLDS: dict[str, ParityThreshold] = {
    "fp32": ParityThreshold(min_cosine=0.99999, mean_cosine=0.99999, min_top1_agreement=1.0),
    "fp16": ParityThreshold(min_cosine=0.999, mean_cosine=0.999, min_top1_agreement=1.0),
    "int8": ParityThreshold(min_cosine=0.97, mean_cosine=0.99, min_top1_agreement=0.98),
}


@dataclass(frozen=True)
class ParityFigures:
    """How one artifact compares with PyTorch on one image set."""

    artifact: str  # file name of the artifact
    backend: str  # what ran it, e.g. "onnxruntime-cpu"
    precision: str
    image_set: str  # "random" or the real data set's name
    images: int
    min_cosine: float
    mean_cosine: float
    top1_same: int  # queries whose top-1 gallery item equals PyTorch's
    queries: int
    reference: str  # where the PyTorch reference ran, e.g. "pytorch-cpu"

    @property
    def top1_agreement(self) -> float:
        return self.top1_same / self.queries

    @property
    def threshold(self) -> ParityThreshold:
        return PARITY_THRESHOLDS[self.precision]

    @property
    def passed(self) -> bool:
        return (self.min_cosine >= self.threshold.min_cosine and self.mean_cosine >= self.threshold.mean_cosine
                and self.top1_agreement >= self.threshold.min_top1_agreement)

    def line(self) -> str:
        limit = self.threshold
        return (f"{self.artifact} [{self.backend}, {self.precision}] vs {self.reference} on {self.images} "
                f"{self.image_set} images: cosine min {self.min_cosine:.8f} mean {self.mean_cosine:.8f} "
                f"(need >= {limit.min_cosine} / {limit.mean_cosine}), top-1 {self.top1_same}/{self.queries} same "
                f"(need >= {limit.min_top1_agreement:.0%}) -> {'ok' if self.passed else 'FAILED'}")


def top1(embeddings: np.ndarray, queries: int) -> np.ndarray:
    """(Q + G, D) embeddings -> (Q,) index of each query's most similar gallery row (score = dot product)."""
    scores = embeddings[:queries] @ embeddings[queries:].T
    return scores.argmax(axis=1)


def compare(reference: np.ndarray, candidate: np.ndarray, queries: int, *, artifact: str, backend: str,
            precision: str, image_set: str, reference_name: str) -> ParityFigures:
    """Figures for `candidate` vs `reference`, both (Q + G, D) embeddings of the same images, rows 0..Q-1 queries."""
    if reference.shape != candidate.shape:
        raise LpnEdgeError(f"{artifact}: output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    if not np.isfinite(candidate).all():
        raise LpnEdgeError(f"{artifact}: {backend} produced non-finite values ({precision})")
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    # Cosine, not the plain dot product: a wrong norm is a separate defect, reported by the norm check below.
    cosine = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    norms = np.linalg.norm(cand, axis=1)
    if np.abs(norms - 1.0).max() > 1e-2:
        raise LpnEdgeError(f"{artifact}: embeddings from {backend} are not unit norm (norms {norms.min():.4f} to "
                           f"{norms.max():.4f})")
    same = int((top1(ref, queries) == top1(cand, queries)).sum())
    return ParityFigures(artifact, backend, precision, image_set, len(ref), float(cosine.min()), float(cosine.mean()),
                         same, queries, reference_name)


def require(figures: list[ParityFigures]) -> None:
    """Raise one LpnEdgeError naming every failed figure; silent when all pass."""
    failed = [f for f in figures if not f.passed]
    if failed:
        raise LpnEdgeError("parity check failed, artifact not kept: " + "; ".join(f.line() for f in failed))


@dataclass(frozen=True)
class ParitySet:
    """Images every backend embeds: rows [:queries] are queries, the rest the gallery searched for their top-1.

    The first `queries` gallery rows are noisy copies of the queries (+ N(0, 0.1^2)): every query has
    a clear match, as in a real search, so top-1 agreement tests ranking rather than the order of near-ties
    (unrelated images of an untrained model embed almost alike). The other gallery rows are distractors.
    """

    name: str  # "random" or the data set's name
    images: np.ndarray  # (queries + gallery, 3, H, W) float32
    queries: int


def random_set(size: tuple[int, int], queries: int, gallery: int, seed: int = 0) -> ParitySet:
    """Standard-normal images (the range of ImageNet-normalised pixels), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    queries_images = rng.standard_normal((queries, 3, *size), dtype=np.float32)
    distractors = rng.standard_normal((max(gallery - queries, 0), 3, *size), dtype=np.float32)
    return _with_positives("random", queries_images, distractors, gallery)


def real_set(data_dir: Path, size: tuple[int, int], queries: int, gallery: int) -> ParitySet | None:
    """Drone photos as queries, their noisy copies plus satellite photos as gallery; None if too few images.

    Layout: `drone/<id>/<id>.jpg` and `satellite/<id>/<id>.jpg`. All go through the exported view's model: the
    check is that every backend ranks the same, not that the views match.
    """
    drone, satellite = find_images(Path(data_dir) / "drone"), find_images(Path(data_dir) / "satellite")
    distractors = max(gallery - queries, 0)
    if len(drone) < queries or len(satellite) < distractors:
        return None
    return _with_positives(Path(data_dir).resolve().name, preprocess(drone[:queries], size),
                           preprocess(satellite[:distractors], size), gallery)


def calibration_set(calibration: np.ndarray, queries: int, gallery: int) -> ParitySet:
    """Parity images drawn from the calibration images (N >= 3 needed): a third as queries, the rest distractors."""
    queries = min(queries, len(calibration) // 3)
    distractors = calibration[queries:queries + max(gallery - queries, 0)]
    return _with_positives("calibration", calibration[:queries], distractors, queries + len(distractors))


def _with_positives(name: str, queries: np.ndarray, distractors: np.ndarray, gallery: int) -> ParitySet:
    noise = np.random.default_rng(1).standard_normal(queries.shape, dtype=np.float32)
    positives = queries + POSITIVE_NOISE * noise
    images = np.concatenate([queries, positives, distractors])[:len(queries) + gallery]
    return ParitySet(name, np.ascontiguousarray(images, np.float32), len(queries))


def parity_sets(size: tuple[int, int], queries: int, gallery: int, data_dir: Path | None) -> list[ParitySet]:
    """The random set, plus the real set when `data_dir` holds enough images."""
    sets = [random_set(size, queries, gallery)]
    if data_dir is not None:
        real = real_set(data_dir, size, queries, gallery)
        if real is not None:
            sets.append(real)
    return sets
