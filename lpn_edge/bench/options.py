"""`BenchOptions` and `run_bench`: which parts to run, on what, and the JSON document they produce."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lpn_edge.errors import LpnEdgeError

PARTS = ("encode", "pool", "match", "locate", "train")


@dataclass(frozen=True)
class BenchOptions:
    """models: runtime artifacts (.onnx, .engine, .pt2, .npz) and/or lpn-edge checkpoints (.pt); the first checkpoint
    (or `reference`, or the checkpoint an artifact was exported from, found beside it) is the reference.
    batch / threads: the sizes and CPU thread counts measured (threads apply to ONNX Runtime and to torch alike).
    gallery_size: rows of the synthetic matching gallery; dim: its width (default: the model's embedding).
    data: a University-1652-layout folder (drone/, satellite/) for the accuracy figures (default random images).
    device: "cpu", "cuda" or "auto" (cuda when torch sees one). "cuda" measures the GPU rows only (the CPU rows of
    a GPU machine would take most of a lease) and fails at once without a CUDA device; "auto" measures both."""

    models: tuple[Path, ...] = ()
    reference: Path | None = None
    batch: tuple[int, ...] = (1, 8)
    threads: tuple[int, ...] = (1, 2)
    iters: int = 10
    warmup: int = 2
    gallery_size: int = 100_000
    queries: tuple[int, ...] = (1, 64)
    dim: int | None = None
    k: int = 10
    skip: frozenset[str] = frozenset()
    data: Path | None = None
    device: str = "auto"
    view: str = "drone"

    @property
    def cpu_rows(self) -> bool:
        """Whether the CPU rows are measured (not with --device cuda)."""
        return self.device != "cuda"

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(Path(m) for m in self.models))
        object.__setattr__(self, "skip", frozenset(self.skip))
        unknown = self.skip - set(PARTS)
        if unknown:
            raise LpnEdgeError(f"--skip: unknown part {sorted(unknown)[0]!r}; expected some of {', '.join(PARTS)}")
        for name in ("iters", "gallery_size", "k"):
            if getattr(self, name) < 1:
                raise LpnEdgeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise LpnEdgeError(f"--warmup must be at least 0, got {self.warmup}")
        for name in ("batch", "threads", "queries"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise LpnEdgeError(f"--{name} needs positive integers, got {','.join(map(str, values)) or 'none'}")
        from lpn_edge.runtime.encoders import SUFFIXES

        accepted = (*SUFFIXES, ".pth")  # what the runtime opens, and the authors' checkpoint suffix
        for model in self.models:
            if not model.exists():
                raise LpnEdgeError(f"--model {model} does not exist")
            if model.suffix.lower() not in accepted:
                raise LpnEdgeError(f"--model {model}: cannot tell what {model.suffix or 'a file without suffix'} is; "
                                   f"expected one of {', '.join(accepted)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise LpnEdgeError(f"--device must be auto, cpu or cuda; got {self.device!r}")

    def to_json(self) -> dict:
        plain = asdict(self)
        plain["models"] = [str(m) for m in self.models]
        plain["reference"] = str(self.reference) if self.reference else None
        plain["data"] = str(self.data) if self.data else None
        plain["skip"] = sorted(self.skip)
        return plain


@dataclass
class Results:
    """What the parts add to: rows (figures) and skipped parts. `add` returns the row it stored."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def add(self, part: str, name: str, stats: dict, *, reference: dict | None = None, floor_ms: float | None = None,
            **details) -> dict:
        row = {"part": part, "name": name, **details, "stats": stats}
        if reference is not None:
            row["reference"] = reference["name"]
            row["reference_median_ms"] = reference["stats"]["median_ms"]
            row["ratio"] = stats["median_ms"] / reference["stats"]["median_ms"]
        if floor_ms is not None:
            row["floor_ms"] = floor_ms
            row["ratio_to_floor"] = stats["median_ms"] / floor_ms if floor_ms > 0 else None
        self.rows.append(row)
        return row

    def skip(self, part: str, what: str, reason: str) -> None:
        self.skipped.append({"part": part, "what": what, "reason": reason})


def torch_or_reason():
    """(torch, None) when importable, else (None, why)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (pip install \"lpn-edge[train]\")"
    return torch, None


def cuda_or_reason(device: str):
    """(torch, None) when the benchmark should use a CUDA device, else (None, why the GPU parts are skipped)."""
    if device == "cpu":
        return None, "--device cpu"
    torch, reason = torch_or_reason()
    if torch is None:
        return None, reason
    if not torch.cuda.is_available():
        why = "no CUDA device visible to torch" + (f" (torch {torch.__version__}, built without CUDA)"
                                                   if torch.version.cuda is None else "")
        if device == "cuda":
            raise LpnEdgeError(f"--device cuda: {why}")
        return None, why
    return torch, None


def run_bench(options: BenchOptions, progress: Callable[[str], None] = lambda text: None,
              after_part: Callable[[dict], None] | None = None) -> dict:
    """Run the parts of `options` not skipped; the JSON document (see the package docstring).

    A part that fails keeps the rows it had added, is listed under "failed" with the error, and the next part
    runs: one failure in a long run (on a lent GPU, say) does not take every figure with it. `after_part` gets
    the document as it stands after each part (`lpn-edge bench --out` writes it), so a run killed by a timeout
    still leaves the parts it finished.
    """
    from lpn_edge.bench import machine

    if options.device == "cuda":
        cuda_or_reason("cuda")  # no CUDA device: one line now, not after the CPU-free parts have run
    results = Results()
    document = {"machine": machine.describe(), "options": options.to_json(), "results": results.rows,
                "skipped": results.skipped, "failed": []}
    for part in PARTS:
        if part in options.skip:
            results.skip(part, "all", "--skip")
            continue
        progress(f"{part}: starting (load average {machine.load_average()})")
        module = __import__(f"lpn_edge.bench.{part}", fromlist=["run"])
        try:
            module.run(options, results, progress)
        except Exception as error:  # noqa: BLE001 - any error of a part is reported, and the other parts run
            reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"
            document["failed"].append({"part": part, "error": reason})
            progress(f"{part}: failed ({reason}); the other parts go on")
        document["machine"]["load_average_end"] = machine.load_average()
        if after_part is not None:
            after_part(document)
    document["machine"]["load_average_end"] = machine.load_average()
    if after_part is not None:
        after_part(document)  # the whole document, skipped parts at the end included
    return document
