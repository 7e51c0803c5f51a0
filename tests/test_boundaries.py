"""Import boundaries of the library, checked on the source (ast), not by importing it.

(a) No module under sedjax/ imports the top-level `configs` package: settings reach the library
    through a config object or arguments (tools load config files with sedjax.config.config_files).
(b) Nothing under sedjax/data imports sedjax.train or sedjax.recipes: data comes before training.
"""

from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sedjax"


def _module_name(path: pathlib.Path) -> str:
    """Dotted name of a file under the repository, e.g. sedjax.data.features."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False
                     ) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of everything `source` (module `module`) imports.

    `from a.b import c` yields both a.b and a.b.c (c may be a submodule); relative imports are
    resolved against `module`; importlib.import_module / __import__ with a constant name count.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name:
                found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}" if name else alias.name)
                      for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func, arg = node.func, node.args[0]
            called = (func.attr if isinstance(func, ast.Attribute)
                      else func.id if isinstance(func, ast.Name) else None)
            if (called in ("import_module", "__import__") and isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)):
                found.append((node.lineno, arg.value))
    return found


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(files, prefixes: tuple[str, ...]) -> list[str]:
    """'file:line imports name' for every import of a module in `prefixes` (or below)."""
    out = []
    for path in files:
        module = _module_name(path)
        hits: dict[int, set[str]] = {}
        for line, name in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if _is_under(name, prefixes):
                hits.setdefault(line, set()).add(name)
        for line, names in sorted(hits.items()):
            # `from configs import baseline` is reported as configs.baseline, not twice
            shown = sorted(n for n in names if not any(m.startswith(n + ".") for m in names))
            out.append(f"{path.relative_to(REPO)}:{line} imports {', '.join(shown)}")
    return out


def test_the_checks_catch_every_import_form():
    def names(source, module="sedjax.data.x"):
        return [n for _, n in imported_modules(source, module)]

    for source in ("import configs", "import configs.baseline as b",
                   "from configs import baseline", "from configs.baseline import CLASSES",
                   "def f():\n    from configs import tiny",
                   "importlib.import_module('configs.baseline')"):
        assert any(_is_under(n, ("configs",)) for n in names(source)), source
    for source in ("import sedjax.train.parallel", "from sedjax.train import parallel",
                   "from sedjax import train", "from sedjax import recipes",
                   "from ..train import parallel", "from .. import recipes",
                   "from ..recipes.x import y"):
        assert any(_is_under(n, ("sedjax.train", "sedjax.recipes")) for n in names(source)), \
            source
    for source in ("import configsx", "from sedjax import training_free",
                   "from . import features", "from sedjax.data import train_split",
                   "x = 'configs'"):
        assert not any(_is_under(n, ("configs", "sedjax.train", "sedjax.recipes"))
                       for n in names(source)), source


def test_library_never_imports_configs():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    bad = offenders(files, ("configs",))
    assert not bad, ("sedjax/ must not import the top-level `configs` package (pass the config "
                     "or its values in; tools use sedjax.config.config_files.load):\n  " + "\n  ".join(bad))


def test_data_does_not_import_train_or_recipes():
    files = sorted((PACKAGE / "data").rglob("*.py"))
    assert files
    bad = offenders(files, ("sedjax.train", "sedjax.recipes"))
    assert not bad, ("sedjax/data must not import sedjax.train or sedjax.recipes:\n  "
                     + "\n  ".join(bad))
