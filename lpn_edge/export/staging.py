"""Write artifacts under temporary names and give them their real names only once they passed their checks.

A failed parity check (or any error, or Ctrl-C) must not leave a file that looks like a valid export, nor replace a
good one from an earlier run: every staged file is deleted instead.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


class Staging:
    """Context manager: `tmp = stage.path(final)`; on a clean exit every tmp is renamed to its final name.

    Temporary names keep the final suffix (AOTInductor insists on ".pt2") and start with a dot.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: Path) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> list[Path]:
        finals = []
        for tmp, final in self._pending:
            if not tmp.exists():
                raise FileNotFoundError(f"staged artifact {tmp} was never written (meant for {final})")
        for tmp, final in self._pending:
            os.replace(tmp, final)
            finals.append(final)
        self._pending.clear()
        return finals

    def discard(self) -> None:
        for tmp, _final in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
