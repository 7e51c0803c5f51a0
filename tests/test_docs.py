"""The user docs stay true: every `python -m sedjax.X` command in README.md and docs/*.md names
flags that command has, every `sedjax.main` command's config (with its overrides) validates, and
every config field the pages name exists; docs/configs.md names every field of the seed's, the
mean teacher's and the DESED configs."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from sedjax.config import config_files, validate

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = ("data", "features", "model", "pass1", "pass2", "mean_teacher", "postprocess",
            "evaluation", "runtime")
DOCUMENTED_CONFIGS = ("baseline.py", "mean_teacher.py", "desed_baseline.py")
FILE_SUFFIXES = (".json", ".py", ".npy", ".npz", ".md", ".csv", ".tsv", ".txt", ".png",
                 ".hdf5", ".msgpack", ".pt", ".ckpt")


def _fenced_lines(text: str):
    """(line number, line) of the shell blocks' lines, backslash continuations joined."""
    in_block, shell, pending, start = False, False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block, shell = not in_block, line.strip("`").strip() in ("bash", "sh")
            continue
        if not (in_block and shell):
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def commands() -> list[tuple[str, str, list[str]]]:
    """(where, module, arguments) of each documented `python -m sedjax.X ...` command."""
    found = []
    for page in PAGES:
        for number, line in _fenced_lines(page.read_text()):
            line = line.split("  #")[0]  # a trailing comment
            lexer = shlex.shlex(line.replace("[", " ").replace("]", " "), posix=True,
                                punctuation_chars=True)
            lexer.whitespace_split = True
            tokens, parts = list(lexer), [[]]
            for token in tokens:  # commands joined by &&, ;, |
                if set(token) <= set("&;|()<>"):
                    parts.append([])
                else:
                    parts[-1].append(token)
            for words in parts:
                for i, word in enumerate(words[:-2]):
                    if word.endswith("python") or word.endswith("python3"):
                        if words[i + 1] == "-m" and words[i + 2].startswith("sedjax."):
                            found.append((f"{page.relative_to(ROOT)}:{number}", words[i + 2],
                                          words[i + 3:]))
    return found


@functools.lru_cache(maxsize=None)
def flag_names(module: str) -> frozenset[str]:
    """The flags `python -m module --help` lists (what a user reads; some commands define their
    flags only when run as __main__)."""
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                         capture_output=True, text=True,
                         env={**os.environ, "SEDJAX_NO_REEXEC": "1", "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, f"{module} --help: {out.stderr[-2000:]}"
    return frozenset(re.findall(r"^\s+--(?:\[no\])?([\w.]+):", out.stdout, re.MULTILINE))


def _config_fields(config, prefix: str = "") -> set[str]:
    """Every field of a config, its sections included (`model.embeddings` and its leaves)."""
    names = set()
    for key, value in config.items():
        names.add(prefix + key)
        if hasattr(value, "items"):
            names |= _config_fields(value, f"{prefix}{key}.")
    return names


@functools.lru_cache(maxsize=None)
def all_config_fields() -> frozenset[str]:
    names: set[str] = set()
    for path in sorted((ROOT / "configs").glob("*.py")):
        if path.name != "__init__.py":
            names |= _config_fields(config_files.load(path))
    return frozenset(names)


def named_fields(text: str) -> set[str]:
    """The config fields a page names: `section.field` in backticks and --config.X flags."""
    sections = "|".join(SECTIONS)
    found = set(re.findall(rf"`((?:{sections})(?:\.\w+)+)(?:\.\*)?(?=[`\s=,])", text))
    found |= set(re.findall(r"--config\.([\w.]+)", text))
    return {f for f in found if not f.endswith(FILE_SUFFIXES)}


COMMANDS = commands()


def test_the_pages_document_commands():
    """The parser finds the commands (a broken parser would pass everything below)."""
    modules = {module for _, module, _ in COMMANDS}
    assert {"sedjax.main", "sedjax.detect", "sedjax.evaluate", "sedjax.compare",
            "sedjax.convert", "sedjax.bench"} <= modules
    assert sum(module == "sedjax.main" for _, module, _ in COMMANDS) >= 8


@pytest.mark.parametrize("module", sorted({m for _, m, _ in COMMANDS}))
def test_documented_flags_exist(module):
    names = flag_names(module)
    missing = []
    for where, command_module, args in COMMANDS:
        if command_module != module:
            continue
        for arg in args:
            if not arg.startswith("--") or arg == "--":
                continue
            name = arg[2:].split("=")[0]
            if name.startswith("config.") and "config" in names:
                continue  # a config field: checked by test_documented_main_commands_validate
            if name not in names and not (name.startswith("no") and name[2:] in names):
                missing.append(f"{where}: {module} has no flag --{name}")
    assert not missing, "\n".join(missing)


def _config_of(args: list[str]):
    """The config `sedjax.main`'s flags give (--config and its overrides), parsed as main
    parses them."""
    argv = ["main", *[a for a in args if a.startswith("--config")]]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


@pytest.mark.parametrize("where,args", [(w, a) for w, m, a in COMMANDS if m == "sedjax.main"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_documented_main_commands_validate(where, args, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    config_file = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
    written = {a.split("=", 1)[1] for _, _, command in COMMANDS for a in command
               if a.startswith("--out=")}
    if not (ROOT / config_file.split(":")[0]).exists() and config_file in written:
        pytest.skip(f"{config_file} is written by a documented command (--out)")
    args = [_stand_in_beats_checkpoint(a, tmp_path) for a in args]
    validate.validate(_config_of(args), num_devices=1)


def _stand_in_beats_checkpoint(arg: str, folder: pathlib.Path) -> str:
    """A BEATs checkpoint the pages convert first (`sedjax.convert beats CKPT OUT`) does not
    exist here: the override names a stand-in with the AS2M architecture's config beside it
    (validation reads only that), so the rest of the config is still checked."""
    prefix = "--config.model.beats.checkpoint="
    converted = {command[2] for _, module, command in COMMANDS
                 if module == "sedjax.convert" and command[:1] == ["beats"] and len(command) > 2}
    if not arg.startswith(prefix) or arg[len(prefix):] not in converted:
        return arg
    from sedjax.interop import beats_checkpoint
    from sedjax.models import beats

    out = folder / pathlib.Path(arg[len(prefix):]).name
    out.write_bytes(b"")
    beats_checkpoint.config_path(out).write_text(
        json.dumps(beats_checkpoint.config_dict(beats.BeatsConfig())))
    return prefix + str(out)


def test_documented_config_fields_exist():
    known = all_config_fields()
    unknown = [f"{page.relative_to(ROOT)}: {name}" for page in PAGES
               for name in sorted(named_fields(page.read_text())) if name not in known]
    assert not unknown, "config fields named in the docs that no config has:\n" + "\n".join(
        unknown)


def test_configs_page_names_every_field():
    text = (ROOT / "docs" / "configs.md").read_text()
    named = named_fields(text)
    prefixes = tuple(p + "." for p in re.findall(r"`([\w.]+)\.\*`", text))
    missing = sorted(
        leaf for name in DOCUMENTED_CONFIGS
        for leaf, _ in validate.leaf_fields(config_files.load(ROOT / "configs" / name))
        if leaf not in named and not leaf.startswith(prefixes) and "." in leaf)
    top = {"seed", "recipe", "num_runs"} - set(re.findall(r"\| `(\w+)` \|", text))
    assert not missing and not top, f"fields missing from docs/configs.md: {missing + sorted(top)}"


def test_a_renamed_flag_or_field_is_caught(monkeypatch):
    """The checks above, on a made-up page: a flag main does not have and a field no config
    has are reported."""
    monkeypatch.chdir(ROOT)
    names = flag_names("sedjax.main")
    assert "workdir" in names and "work_dir" not in names
    assert "mean_teacher.ema_decay" in all_config_fields()
    assert named_fields("`mean_teacher.ema_decay_rate` and --config.model.gru_cells=2") == {
        "mean_teacher.ema_decay_rate", "model.gru_cells"}
    assert not {"mean_teacher.ema_decay_rate", "model.gru_cells"} & all_config_fields()
    with pytest.raises(Exception):
        validate.validate(_config_of(["--config=configs/demo.py",
                                      "--config.model.pooling=median"]), num_devices=1)


def test_relative_links_point_at_files():
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in PAGES
              for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
              if not (page.parent / target).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
