"""Peak resident memory of a command, from the kernel's own accounting."""

from __future__ import annotations

import os
import subprocess
import sys

# Started by a fresh, small Python: a child forked straight from pytest would count pytest's own pages
# (hundreds of MB, shared at the fork) in its peak.
MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of a command, from the kernel's own accounting (getrusage of a small parent)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024
