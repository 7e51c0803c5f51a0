"""Host process settings that must be in place before the interpreter starts.

XLA's CPU runtime allocates each large buffer with glibc malloc, which serves it by mmap and
returns it on free: every train step then page-faults its activations back in, 4 KiB at a
time. glibc >= 2.35 can back those mappings with transparent huge pages
(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`; measurements: docs/speed.md). Tunables are read at
process start, so the entry points re-execute themselves once with the setting; older glibc
and other libcs ignore it.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
_OPT_OUT = "SEDJAX_NO_REEXEC"  # set to 1 to run with the environment as it is


def reexec_with_huge_pages(module: str) -> None:
    """Re-executes `python -m module <same args>` with the malloc tunable, once, on Linux."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (not sys.platform.startswith("linux") or "glibc.malloc.hugetlb" in tunables
            or os.environ.get(_OPT_OUT)):
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, TUNABLE])))
    env[_OPT_OUT] = "1"  # never loop, whatever the libc does with the tunable
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
