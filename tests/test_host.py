"""The entry points re-execute themselves once with the huge-page malloc tunable."""

import pathlib
import subprocess
import sys

from sedjax.system import host

PROBE = ("import os, sys; from sedjax.system import host; "
         "print('RUN', os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:], flush=True); "
         "host.reexec_with_huge_pages('probe')")
REPO = pathlib.Path(host.__file__).parents[1]
LINUX = sys.platform.startswith("linux")


def _run(tmp_path, *args, **env) -> list[str]:
    (tmp_path / "probe.py").write_text(PROBE)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{REPO}", **env}
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True).stdout.splitlines()


def test_reexec_sets_the_tunable_once_and_keeps_arguments(tmp_path):
    out = _run(tmp_path, "--x=1")
    if LINUX:
        assert out == ["RUN  ['--x=1']", f"RUN {host.TUNABLE} ['--x=1']"]  # two runs, no loop
    else:
        assert out == ["RUN  ['--x=1']"]


def test_existing_tunables_are_kept_and_opt_out_is_respected(tmp_path):
    out = _run(tmp_path, GLIBC_TUNABLES="glibc.malloc.check=0")
    if LINUX:
        assert out[-1] == f"RUN glibc.malloc.check=0:{host.TUNABLE} []"
    assert _run(tmp_path, SEDJAX_NO_REEXEC="1") == ["RUN  []"]
