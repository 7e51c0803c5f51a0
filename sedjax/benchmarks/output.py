"""What the benches print and write: each line as soon as it is measured, figures that may be
missing, and the finished result (its wall time, its JSON file)."""

from __future__ import annotations

import functools
import json
import time

from sedjax.system import files

say = functools.partial(print, flush=True)  # every line out as soon as it is measured


def fmt(x, spec: str = ".1f") -> str:
    """x formatted, or 'n/a' when it is None."""
    return "n/a" if x is None else format(x, spec)


def finish(result: dict, started: float, json_path: str | None) -> dict:
    """result with its wall time since `started` (time.monotonic()), said and written to
    json_path (when given)."""
    result["wall_s"] = round(time.monotonic() - started, 1)
    say(f"== {result['wall_s']:.0f} s in all")
    if json_path:
        files.write_text(json_path, json.dumps(result, indent=2))
        say(f"-> {json_path}")
    return result
