"""Every sedjax command's command line: absl flags, and a user's mistake as one line.

A command (`python -m sedjax.main`, `.detect`, `.evaluate`, `.compare`, `.onsets`, `.bench`,
`sedjax.data.synthetic`) defines its flags with absl.flags and hands its main function to
`run` (under `if __name__ == "__main__"`: absl's app.run) or to `call` (the same in this
process, returning the exit status: what tests use). Either way:

- absl parses the flags, GNU style: flags and positional arguments in any order, `--` ends the
  flags; main(argv) gets the program name and the positional arguments, as app.run gives them.
- `--help` (also -h, --helpfull) prints the command's module docstring and its flags; status 0.
- A mistake in the user's input is one line `error: <message>` on stderr and exit status 2,
  without a traceback: a flag absl cannot parse, or an exception of `user_errors()` out of main
  (`UserError` and its subclasses, such as the dataset's and the event files' errors, and the
  config package's ConfigFileError and ConfigError).
- A full disk (or quota) is one line `error: no space left on device writing <path>: free space
  and rerun the same command...` and exit status 75 (EXIT_DISK_FULL, sysexits' EX_TEMPFAIL:
  worth retrying), without a traceback: an OSError of errno ENOSPC or EDQUOT out of main, or an
  error caused by one or whose message is its text (tensorstore's, under orbax checkpoints,
  are ValueErrors). Outputs are written atomically (sedjax.system.files), so the rerun
  redoes the unfinished one; under `run`, library log records that report the same full disk
  (orbax's background threads log tracebacks) are dropped.

Commands with flags of their own (detect, evaluate, compare, onsets) define them on a
`flags.FlagValues()` of their own, so that importing several commands never clashes (evaluate's
--config is not sedjax.main's); sedjax.main, bench and synthetic use absl's global flags.FLAGS.
"""

from __future__ import annotations

import logging as pylogging
import os
import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from sedjax.system import files

EXIT_USER_ERROR = 2
EXIT_DISK_FULL = 75  # sysexits.h EX_TEMPFAIL: the same command may succeed later
# how a full disk reads in an error's message: tensorstore (orbax's array writer) raises
# ValueError('RESOURCE_EXHAUSTED: ... "<path>" ... No space left on device [os_error_code=28]')
_DISK_FULL_TEXTS = tuple(os.strerror(e) for e in sorted(files.DISK_FULL))
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')
_HELP = frozenset({"-h", "-?", "-help", "--help", "--helpshort", "--helpfull"})
# The config package's user-facing errors, found by name among the imported modules: importing
# sedjax.config here would import its dependencies into every command, and an error of a module
# that is not imported cannot have been raised (ConfigError lives below, in this module).
_CONFIG_ERRORS = (("sedjax.config.config_files", "ConfigFileError"),)

Main = Callable[[list[str]], "int | None"]


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field (sedjax.config.validate and
    each recipe's checks raise it)."""


class UserError(Exception):
    """A mistake in what the user gave (a flag, an argument, a file): the message names it."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean the user's input is wrong (one `error:` line, status 2)."""
    found: list[type[BaseException]] = [UserError, ConfigError, app.UsageError, flags.Error]
    for module, name in _CONFIG_ERRORS:
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def expect_no_arguments(argv: Sequence[str]) -> None:
    """UserError when a command that takes only flags got positional arguments (argv[1:])."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")


def report(error: BaseException) -> int:
    """Prints `error: <message>` on stderr; returns the error's `exit_code` (a run stopped on a
    signal: 143, a diverged one: 3; sedjax.train.loop), else EXIT_USER_ERROR."""
    print(f"error: {error}", file=sys.stderr)
    return getattr(error, "exit_code", EXIT_USER_ERROR)


def _disk_full_cause(error: BaseException) -> BaseException | None:
    """The exception in error's chain (itself, its cause or context) that a full disk raised."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in files.DISK_FULL:
            return error
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_full_message(error: BaseException) -> str | None:
    """The one-line message for an error that a full disk caused, or None for any other."""
    cause = _disk_full_cause(error)
    if cause is None:
        return None
    if isinstance(cause, OSError) and cause.errno in files.DISK_FULL:
        what, path = os.strerror(cause.errno), cause.filename
    else:
        what = next(t for t in _DISK_FULL_TEXTS if t in str(cause))
        found = _QUOTED_PATH.search(str(cause))
        path = found and found.group(1)
    where = f" writing {path}" if path else ""
    # only files.atomic_path guarantees that no partial file is left under the final name
    kept = ("; nothing half-written was kept" if isinstance(cause, files.DiskFullError)
            else "")
    return f"{what.lower()}{where}: free space and rerun the same command{kept}"


def help_text(flag_values: flags.FlagValues, module: str, full: bool = False) -> str:
    """The docstring of `module` (the command's), then the flags it defines (full: every flag
    but absl's own, the libraries' included)."""
    # absl files a module's flags under its name, and those of __main__ under the script's path
    key = sys.argv[0] if module == "__main__" else module
    modules = ([m for m in flag_values.flags_by_module_dict() if not m.startswith("absl.")]
               if full else [key])
    listing = "\n".join(flag_values.module_help(m) for m in modules).strip("\n")
    return f"{(sys.modules[module].__doc__ or '').strip()}\n\nflags:\n{listing}\n"


def _parse(flag_values: flags.FlagValues, argv: Sequence[str], module: str
           ) -> list[str] | int:
    """argv (program name first) parsed into flag_values: [program, positional arguments...];
    or the exit status when the command stops here (help printed: 0; a bad flag: 2)."""
    argv = list(argv)
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if _HELP.intersection(options):
        sys.stdout.write(help_text(flag_values, module, full="--helpfull" in options))
        return 0
    if flag_values.is_parsed():  # an earlier call in this process: start from the defaults
        flag_values.unparse_flags()
    try:
        return flag_values(argv)
    except flags.Error as e:
        return report(e)
    except (KeyError, AttributeError) as e:  # ml_collections: an override of no config field
        while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(..))
            e = e.args[0]
        field, _, hint = str(e.args[0] if e.args else e).partition("\n")
        return report(UserError(f"a --config override names no field of the config: "
                                f"{field.strip(chr(39))}" + (f" ({hint.strip()})" if hint else "")))


def _guarded(main: Main, argv: list[str]) -> int:
    """main(argv)'s exit status (None: 0), report()'s for a user's mistake, EXIT_DISK_FULL
    (after one line) for a full disk."""
    try:
        return int(main(argv) or 0)
    except user_errors() as e:
        return report(e)
    except Exception as e:
        message = disk_full_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_DISK_FULL


def call(main: Main, flag_values: flags.FlagValues = flags.FLAGS,
         argv: Sequence[str] | None = None) -> int:
    """Runs a command in this process and returns its exit status.

    argv: the arguments after the program name (default: sys.argv[1:]); the help text is the
    docstring of main's module.
    """
    program = f"python -m {main.__module__}"
    args = _parse(flag_values, [program, *(sys.argv[1:] if argv is None else argv)],
                  main.__module__)
    return args if isinstance(args, int) else _guarded(main, args)


def _quiet_libraries(record) -> bool:
    """Drops INFO chatter of orbax/jax internals (a dozen lines per checkpoint), and their
    reports of a full disk (the command's own error line says it)."""
    if not any(name in record.pathname for name in ("orbax", "jax/_src", "absl/")):
        return True
    # Python's level numbers: absl's own logging.WARNING constant is -1.
    return record.levelno >= pylogging.WARNING and not _reports_disk_full(record)


def _reports_disk_full(record) -> bool:
    """Whether a log record is about a full disk (its message or its exception)."""
    if record.exc_info and record.exc_info[1] is not None:
        if _disk_full_cause(record.exc_info[1]) is not None:
            return True
    return any(text in record.getMessage() for text in _DISK_FULL_TEXTS)


def run(main: Main, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The `python -m` entry point: absl's app.run(main) with `call`'s flags, help and errors.

    app.run also sets up absl logging (INFO and up on stderr, library chatter filtered out).
    """
    def parse(argv: list[str]) -> list[str]:
        if flag_values is not flags.FLAGS:
            flags.FLAGS.mark_as_parsed()  # app.run insists that absl's global flags are parsed
        args = _parse(flag_values, argv, main.__module__)
        if isinstance(args, int):
            sys.exit(args)
        return args

    def quiet_main(argv: list[str]) -> int:
        logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
        return _guarded(main, argv)

    app.run(quiet_main, flags_parser=parse)  # exits with main's status
