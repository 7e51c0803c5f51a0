"""sedjax's XLA flags, the persistent compilation cache's folder and the run's timings."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from sedjax.system import compilation_cache, timings, xla_flags

FLAG = xla_flags.CPU_FLAGS[0]


def test_the_flags_are_added_once_and_only_for_tested_jaxlib_releases():
    assert xla_flags.with_sedjax_flags("", "0.10.2") == FLAG
    assert xla_flags.with_sedjax_flags("--a=1", "0.10.2") == f"--a=1 {FLAG}"
    assert xla_flags.with_sedjax_flags(f"--a=1 {FLAG}", "0.10.2") == f"--a=1 {FLAG}"
    # the user's own value of the flag wins
    mine = FLAG.split("=")[0] + "=+reduce"
    assert xla_flags.with_sedjax_flags(mine, "0.10.2") == mine
    # a release the flag was not checked on (XLA aborts on unknown flags): left as it is
    assert xla_flags.with_sedjax_flags("--a=1", "0.11.0") == "--a=1"
    assert xla_flags.with_sedjax_flags("", "") == ""


def test_importing_sedjax_sets_the_flags_for_this_process_and_its_children():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
    code = "import os, sedjax; print(os.environ.get('XLA_FLAGS', ''))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == xla_flags.with_sedjax_flags("", xla_flags._jaxlib_version())
    env[xla_flags.OPT_OUT] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == ""


def test_the_cache_folder_follows_the_setting_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEDJAX_CACHE_DIR", str(tmp_path / "c"))
    assert compilation_cache.folder("default") == tmp_path / "c" / compilation_cache.FOLDER
    assert compilation_cache.folder("") is None
    assert compilation_cache.folder(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.delenv("SEDJAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.folder("default") == (tmp_path / "xdg" / "sedjax"
                                                   / compilation_cache.FOLDER)


def test_a_cache_that_cannot_be_created_leaves_compiling_as_it_was(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    before = jax.config.jax_compilation_cache_dir
    assert compilation_cache.enable(str(blocker / "cache")) is None
    assert jax.config.jax_compilation_cache_dir == before


def test_stages_epochs_and_compilation_are_recorded():
    with timings.recording() as rec:
        with timings.stage("data"):
            pass
        with timings.stage("training"):
            jax.jit(lambda x: jnp.sin(x) * 3.0 + x.size)(jnp.ones(17)).block_until_ready()
            timings.epoch("pass1", 1, 2.0, 0.5, 0.25)
    out = rec.to_json()
    assert list(out["stages_s"]) == ["data", "training"]
    assert out["compile_s"] > 0 and out["compile_by_stage_s"].keys() == {"training"}
    assert out["compile_parts_s"]["backend"] > 0
    assert out["epochs"] == {"pass1": [{"epoch": 1, "train_s": 2.0, "validate_s": 0.5,
                                        "compile_s": 0.25}]}
    assert timings.current() is None and timings.compile_seconds() == 0.0
    json.dumps(out)
    line = timings.line(out)
    assert line.startswith("time (s): data ") and "of which compiling" in line


def test_a_second_process_loads_the_compiled_programs_from_the_cache(tmp_path):
    code = ("import jax, jax.numpy as jnp\n"
            "from sedjax.system import compilation_cache, timings\n"
            f"compilation_cache.enable({str(tmp_path / 'cache')!r})\n"
            "with timings.recording() as rec:\n"
            "    jax.jit(lambda x: jnp.cos(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()\n"
            "print(rec.cache['cache_hits'], rec.cache['cache_misses'])\n")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    # the first compiles every program (the jitted function and jnp.ones' own) and writes
    # it; the second loads each one
    hits, misses = int(runs[0][0]), int(runs[0][1])
    assert hits == 0 and misses >= 1
    assert runs[1] == [str(misses), "0"]
    assert any((tmp_path / "cache").iterdir())
