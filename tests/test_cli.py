"""sedjax.system.cli: absl flags for every command, `--help`, and a user's mistake as exactly one
`error:` line with exit status 2 and no traceback (in this process and as `python -m`)."""

import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from sedjax import compare, detect, evaluate, onsets
from sedjax.system import cli

ROOT = pathlib.Path(__file__).parents[1]

FLAGS = flags.FlagValues()
flags.DEFINE_integer("count", 1, "How many.", flag_values=FLAGS)
flags.DEFINE_string("name", None, "A name.", flag_values=FLAGS)
SEEN = []


def toy(argv):
    """The toy command: records (argv, --count, --name); name 'bad' is a user's mistake."""
    if FLAGS.name == "bad":
        raise cli.UserError("the name 'bad' is not allowed")
    if FLAGS.name == "bug":
        raise RuntimeError("a bug, not a user's mistake")
    SEEN.append((argv[1:], FLAGS.count, FLAGS.name))
    return 3 if FLAGS.count == 3 else None


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_flags_and_positional_arguments_in_any_order_each_call_from_the_defaults(capsys):
    SEEN.clear()
    assert cli.call(toy, FLAGS, ["a.wav", "--count", "2", "b", "--name=x", "--", "--c"]) == 0
    assert cli.call(toy, FLAGS, ["c"]) == 0  # --count and --name back to their defaults
    assert cli.call(toy, FLAGS, ["--count=3"]) == 3  # main's return value is the status
    assert SEEN == [(["a.wav", "b", "--c"], 2, "x"), (["c"], 1, None), ([], 3, None)]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, message", [
    (["--name=bad"], "error: the name 'bad' is not allowed"),
    (["--count=many"], "error: flag --count=many: invalid literal for int() with base 10: "
                       "'many'"),
    (["--colour=red"], "error: Unknown command line flag 'colour'"),
    (["--name"], "error: Missing value for flag --name"),
])
def test_a_users_mistake_is_one_error_line_and_status_2(capsys, argv, message):
    SEEN.clear()
    assert cli.call(toy, FLAGS, argv) == cli.EXIT_USER_ERROR == 2
    out = capsys.readouterr()
    assert one_error_line(out.err) == message and out.out == "" and SEEN == []


def test_a_bug_is_not_a_users_mistake():
    with pytest.raises(RuntimeError, match="a bug"):
        cli.call(toy, FLAGS, ["--name=bug"])


def test_the_config_packages_errors_are_users_mistakes(tmp_path, capsys):
    from sedjax.config import config_files, validate

    assert {config_files.ConfigFileError, validate.ConfigError} <= set(cli.user_errors())

    def load(argv):
        config_files.load(tmp_path / "missing.py")

    assert cli.call(load, FLAGS, []) == 2
    assert "missing.py" in one_error_line(capsys.readouterr().err)


def test_help_prints_the_docstring_and_the_flags(capsys):
    SEEN.clear()
    for argv in (["--help"], ["x", "-h"], ["--count=2", "--helpfull"]):
        assert cli.call(toy, FLAGS, argv) == 0
        out = capsys.readouterr().out
        assert out.startswith(__doc__.strip()) and "--count: How many." in out
        assert "--name: A name." in out
    assert SEEN == []  # help only: the command did not run


@pytest.mark.parametrize("command, documented", [
    (detect, ["--workdir", "--out", "--threshold"]),
    (evaluate, ["--json", "--config", "--classes", "--t_collar", "--percentage_of_length",
                "--segment_seconds", "--probs", "--frame_seconds", "--probs_order",
                "--durations", "--median_filter", "--curves"]),
    (compare, ["--split", "--json"]),
    (onsets, ["--split", "--reference", "--estimated", "--json"]),
])
def test_every_command_keeps_its_flags_and_help(capsys, command, documented):
    assert command.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(command.__doc__.strip().splitlines()[0])
    for flag in documented:
        assert f"  {flag}:" in out, flag


def test_missing_positional_arguments_are_one_error_line(capsys):
    for command in (detect, evaluate, compare, onsets):
        argv = ["--workdir=/nowhere"] if command is detect else []
        assert command.main(argv) == 2, command
        one_error_line(capsys.readouterr().err)


def run(*args, **kwargs):
    env = dict(os.environ, SEDJAX_NO_REEXEC="1")
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


TOY_SCRIPT = """
import sys
from absl import flags
from sedjax.system import cli
FLAGS = flags.FlagValues()
flags.DEFINE_string("name", None, "A name.", flag_values=FLAGS)
def main(argv):
    if FLAGS.name == "bug":
        raise RuntimeError("a bug")
    if FLAGS.name != "ok":
        raise cli.UserError(f"no such name: {FLAGS.name}")
    print("ran with", argv[1:])
cli.run(main, FLAGS)
"""


def test_as_a_process(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(TOY_SCRIPT)
    ok = run(script, "--name=ok", "a", "b")
    assert ok.returncode == 0 and ok.stdout == "ran with ['a', 'b']\n", ok.stderr
    for argv, message in ((["--name=x"], "error: no such name: x"),
                          (["--nam=x"], "error: Unknown command line flag 'nam'")):
        bad = run(script, *argv)
        assert bad.returncode == 2 and one_error_line(bad.stderr).startswith(message)
    bug = run(script, "--name=bug")
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "RuntimeError: a bug" in bug.stderr
    helped = run(script, "--help")
    assert helped.returncode == 0 and "--name: A name." in helped.stdout


def test_sedjax_main_user_errors_are_one_line(tmp_path):
    proc = run("-m", "sedjax.main", f"--config={tmp_path / 'nothing.py'}",
               f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nothing.py" in one_error_line(proc.stderr)
    proc = run("-m", "sedjax.main", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}",
               "stray")
    assert proc.returncode == 2 and "stray" in one_error_line(proc.stderr)
