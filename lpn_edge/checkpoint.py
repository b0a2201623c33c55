"""Our checkpoint: a plain dict that `torch.load(weights_only=True)` reads, written atomically.

Keys: format, format_version, config (RunConfig as a dict), state_dict, epoch, metrics, and for training runs
optimizer, scheduler, scaler and rng. Anything else is refused with a one-line error naming the file.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from lpn_edge.config import RunConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write

FORMAT = "lpn-edge-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: RunConfig, epoch: int = 0,
                    metrics: dict | None = None, **training_state: Any) -> Path:
    """Write the checkpoint atomically (temporary file, then rename) and return its path."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "metrics": metrics or {},
        **training_state,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint dict; never unpickles arbitrary objects."""
    path = Path(path)
    if path.is_dir():
        raise LpnEdgeError(f"checkpoint {path} is a directory; expected an lpn-edge checkpoint file (.pt)")
    if not path.is_file():
        raise LpnEdgeError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files before refusing them: the refusal says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's safe loader refuses random bytes and pickled objects alike; its own reason is in one line
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise LpnEdgeError(f"{path} is not an lpn-edge checkpoint: the safe loader (weights_only) refused it"
                           f"{f' ({reason.group(1).strip()})' if reason else ''}; files that need the unsafe "
                           "loader are never opened, they could run code") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, random bytes and the like all land here
        raise LpnEdgeError(f"{path} is not a readable lpn-edge checkpoint ({_first_sentence(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = (
            " (an official LPN state_dict? convert it with `lpn-edge convert-official`)"
            if _looks_official(payload)
            else ""
        )
        raise LpnEdgeError(f"{path} is not an lpn-edge checkpoint{hint}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise LpnEdgeError(f"{path} has checkpoint format version {payload.get('format_version')}, "
                           f"this lpn-edge reads version {FORMAT_VERSION}")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | Path = "<checkpoint>") -> RunConfig:
    return RunConfig.from_dict(payload["config"], f"{path} (config)")


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """The LPN stored in an lpn-edge checkpoint, in eval mode on `device`."""
    return model_from_payload(read_checkpoint(path), path).to(device)


def model_from_payload(payload: dict[str, Any], path: str | Path = "<checkpoint>"):
    """The LPN of a checkpoint dict already read with `read_checkpoint` (eval mode, CPU); `path` names it in errors."""
    from lpn_edge.model import LPN

    model = LPN(checkpoint_config(payload, path).model)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise LpnEdgeError(f"{path}: weights do not match the stored config: {str(exc).splitlines()[0]}") from None
    return model.eval()


def _first_sentence(exc: Exception, limit: int = 160) -> str:
    """The exception's first line, shortened at a word boundary (torch's unpickling errors are paragraphs)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_official(payload: Any) -> bool:
    return isinstance(payload, dict) and any(str(k).startswith(("model_1.", "classifier0.")) for k in payload)
