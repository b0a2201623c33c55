"""Which torch device a command runs on: checked once, before any data is read or a model is built.

A requested device that cannot be used is an error that says why (no GPU, a CPU-only torch build, an index past
the last GPU), never a silent fallback to the CPU.
"""

from __future__ import annotations

import re

from lpn_edge.errors import LpnEdgeError

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def resolve_device(name: str | None, option: str = "--device"):
    """The torch.device for ``name`` ('cpu', 'cuda', 'cuda:N'; None picks cuda when present, else cpu)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE.match(name.strip().lower())
    if match is None:
        raise LpnEdgeError(f"{option} must be cpu, cuda or cuda:N, got {name!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise LpnEdgeError(f"{option} {name!r}: the CPU has no index; use cpu")
        return torch.device("cpu")
    if torch.version.cuda is None:
        raise LpnEdgeError(f"{option} {name}: this torch ({torch.__version__}) is a CPU-only build; "
                           "install a CUDA build of torch or use --device cpu")
    count = torch.cuda.device_count()
    if count == 0:
        raise LpnEdgeError(f"{option} {name}: no CUDA GPU is visible on this machine; use --device cpu")
    if index is not None and int(index) >= count:
        raise LpnEdgeError(f"{option} {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return torch.device(name.strip().lower())
