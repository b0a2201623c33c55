"""Parity of an exported artifact against the PyTorch model: named thresholds per precision, figures, the check.

Two figures per image set: the per-row cosine between the artifact's embedding and PyTorch's (both unit norm),
and whether each query finds the same top-1 gallery item when every backend embeds query and gallery itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpn_edge.errors import LpnEdgeError


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
