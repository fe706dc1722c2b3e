"""keep_freed_memory: freed blocks are reused (no fresh page faults), bad input is named."""

import json
import subprocess
import sys

import pytest

from iha.backends import keep_freed_memory

# Allocates and fills a 64 MiB tensor (above glibc's largest dynamic mmap threshold, 32 MiB, so
# by default every allocation is a fresh mmap) nine times and prints the minor page faults of
# the last seven rounds.
CHILD = """
import json, resource, sys, torch
from iha.backends import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # warm-up: the heap grows to its size once
    torch.empty(16 * 2**20).fill_(1.0)
start = faults()
for _ in range(7):
    torch.empty(16 * 2**20).fill_(1.0)
print(json.dumps({"kept": kept, "faults": faults() - start}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults():
    kept = _faults("keep")
    if not kept["kept"]:
        pytest.skip("no glibc mallopt on this platform")
    default = _faults("default")
    pages = 7 * 64 * 2**20 // 4096  # every page of every round, had each been fresh
    assert default["faults"] > pages * 5 // 7, default  # the baseline really faults
    # kept: reused; occasionally one round faults anew (seen: 0 or 1 of 7 rounds)
    assert kept["faults"] <= pages * 2 // 7, (kept, default)


@pytest.mark.parametrize("bad", [0, -5, 2**31, 1.5, True, "1G"])
def test_keep_freed_memory_rejects_bad_thresholds_by_name(bad):
    with pytest.raises(ValueError, match=r"threshold=.*must be an int"):
        keep_freed_memory(bad)
