"""Core lists for --cpus, and pinning the process to them (in a child process: pinning is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.cpus import parse_cpus, pin_to_cpus


def test_core_lists_parse_to_sorted_distinct_cores():
    assert parse_cpus("0") == (0,)
    assert parse_cpus("3,0-2,2") == (0, 1, 2, 3)
    for text in ("", "a", "2-1", "-1", "0,,1"):
        with pytest.raises(LpnEdgeError, match="--cpus takes core numbers and ranges"):
            parse_cpus(text)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinning_restricts_the_process_and_refuses_cores_it_may_not_use():
    before = os.sched_getaffinity(0)
    with pytest.raises(LpnEdgeError, match=r"core 100000 is not available to this process; it may use cores"):
        pin_to_cpus((min(before), 100000))
    assert os.sched_getaffinity(0) == before  # refused before anything changed
    core = max(before)
    code = ("import os; from lpn_edge.runtime.cpus import pin_to_cpus\n"
            f"pin_to_cpus(({core},)); print(sorted(os.sched_getaffinity(0)))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == f"[{core}]"
