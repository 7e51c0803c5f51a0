"""XLA flags sedjax sets for itself, in XLA_FLAGS, before JAX starts a backend.

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: jaxlib 0.10's CPU backend
hands each convolution to YNNPACK, which ran the CRNN's convolutions and their gradients
slower than XLA's own (Eigen) kernels (docs/speed.md). The flag only exists in some
jaxlib releases, and XLA aborts on a flag it does not know, so it is set for the releases it
was measured on (TESTED_JAXLIB) and left out elsewhere. Set in os.environ, so processes that
sedjax starts compile with the same flags as their parent (the same numbers).
SEDJAX_KEEP_XLA_FLAGS=1 leaves XLA_FLAGS as it is.
"""

from __future__ import annotations

import importlib.metadata
import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
TESTED_JAXLIB = ("0.10.",)  # release prefixes that have the flags (a newer one: add after a check)
OPT_OUT = "SEDJAX_KEEP_XLA_FLAGS"


def _jaxlib_version() -> str:
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return ""


def with_sedjax_flags(flags: str, jaxlib_version: str) -> str:
    """`flags` (an XLA_FLAGS value) plus each of CPU_FLAGS whose name it lacks, for a jaxlib
    release of TESTED_JAXLIB; unchanged otherwise."""
    if not jaxlib_version.startswith(TESTED_JAXLIB):
        return flags
    names = {f.split("=")[0] for f in flags.split()}
    extra = [f for f in CPU_FLAGS if f.split("=")[0] not in names]
    return " ".join(filter(None, [flags.strip(), *extra]))


def apply() -> None:
    """Adds sedjax's flags to os.environ['XLA_FLAGS'] (see the module docstring)."""
    if os.environ.get(OPT_OUT):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    new = with_sedjax_flags(flags, _jaxlib_version())
    if new != flags:
        os.environ["XLA_FLAGS"] = new
