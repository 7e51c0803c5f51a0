"""Test only: every file that sedjax.system.files.atomic_path completes is recorded as a line
"<SEDJAX_PROCESS_ID><TAB><resolved path>" appended to the file $SEDJAX_WRITE_LOG names.

tests/test_multiprocess.py puts this folder (and the repository) first on the PYTHONPATH of
the job it launches: Python's `site` imports a `sitecustomize` module found on the path at
startup, before sedjax.main runs, so every process of the job writes through the wrapper below
while the library itself carries no test hook.
"""

import contextlib
import os
import pathlib

_LOG = os.environ.get("SEDJAX_WRITE_LOG")

if _LOG:
    from sedjax.system import files

    _atomic_path = files.atomic_path

    @contextlib.contextmanager
    def _recorded(path):
        """atomic_path, and a line in the log once the file is under its final name."""
        with _atomic_path(path) as tmp:
            yield tmp
        with open(_LOG, "a") as f:
            f.write(f"{os.environ.get('SEDJAX_PROCESS_ID', '0')}\t"
                    f"{pathlib.Path(path).resolve()}\n")

    files.atomic_path = _recorded  # files' own writers look it up here at each call
