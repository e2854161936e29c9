"""Build the Cloud Functions deploy units: ``dist/functions/<name>.zip``.

Each archive holds what Cloud Functions (gen2, Python) builds a function from: ``main.py`` (from
``functions/<name>/``) at the top, the ``batchcast`` modules that ``main.py`` can import beside it,
with the package data they read (schemas, profiles), and a ``requirements.txt`` that Cloud Build
installs with pip: the pinned, hashed lines of ``requirements/deploy.txt`` (``make lock``) for the
distributions those modules import and what those need, nothing else.

Which modules go in is computed, never listed: the imports of ``main.py``, followed through the
package (lazy imports inside functions count, ``if TYPE_CHECKING:`` blocks do not), plus the step
module ``batchcast.entrypoints.wiring.step_for(name)`` imports by name. So a developer tool
(``batchcast.tools``) or another function's step is not in the archive, and editing one leaves the
archive alone. Archives are byte-for-byte reproducible (sorted entries, fixed timestamps, fixed
modes): Terraform names the uploaded object after the archive's MD5, so it redeploys only functions
whose own code or pins changed.

    python scripts/build_functions.py                  # all five into dist/functions/
    python scripts/build_functions.py partition --out /tmp/fns
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "dist" / "functions"
PACKAGE = "batchcast"
LOCK = Path("requirements") / "deploy.txt"  # relative to the tree's root
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


@dataclass(frozen=True)
class Tree:
    """A source tree to build from: the repository, or a copy of it (tests edit copies)."""

    root: Path = ROOT

    @property
    def functions(self) -> Path:
        return self.root / "functions"

    @property
    def package(self) -> Path:
        return self.root / "shared" / PACKAGE

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    def package_data_globs(self) -> list[str]:
        """pyproject's package-data patterns for the package, relative to its folder."""
        config = tomllib.loads((self.root / "pyproject.toml").read_text())
        return config["tool"]["setuptools"]["package-data"][PACKAGE]


def function_names(tree: Tree = Tree()) -> list[str]:
    """Every function: a folder under ``functions/`` with a ``main.py``."""
    return sorted(p.parent.name for p in tree.functions.glob("*/main.py"))


# -- which modules -------------------------------------------------------------------------------


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every dotted name ``source`` may import (for ``from a import b``: ``a`` and ``a.b``).

    ``module`` is the source's own dotted name, to resolve relative imports.
    """
    names: set[str] = set()
    pending: list[ast.AST] = [ast.parse(source)]
    while pending:
        node = pending.pop()
        if _is_type_checking_block(node):
            continue  # only type checkers run these imports
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        pending.extend(ast.iter_child_nodes(node))
    return names


def _module_file(tree: Tree, name: str) -> Path | None:
    """The source file of the package module ``name`` (``batchcast.x.y``), if there is one."""
    if name == PACKAGE:
        return tree.package / "__init__.py"
    relative = Path(*name.split(".")[1:])
    for candidate in (tree.package / relative / "__init__.py", tree.package / relative.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def package_modules(tree: Tree, function: str) -> tuple[dict[str, Path], set[str]]:
    """The package modules ``functions/<function>/main.py`` can import, and every outside name seen.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so parents come along.
    """
    main = tree.functions / function / "main.py"
    roots = imported_names(main.read_text(), "main", is_package=False)
    # wiring.step_for(name) imports batchcast.steps.<name> by name: no import statement shows it.
    if (tree.package / "steps" / f"{function}.py").is_file():
        roots.add(f"{PACKAGE}.steps.{function}")
    modules: dict[str, Path] = {}
    outside: set[str] = set()
    pending = sorted(roots)
    while pending:
        name = pending.pop()
        if name.split(".")[0] != PACKAGE:
            outside.add(name)
            continue
        path = _module_file(tree, name)
        if path is None or name in modules:
            continue  # ``from batchcast.x import some_function``: not a module
        modules[name] = path
        is_package = path.name == "__init__.py"
        pending.extend(_parents(name))
        pending.extend(imported_names(path.read_text(), name, is_package))
    return modules, outside


def package_data(tree: Tree, modules: dict[str, Path]) -> list[Path]:
    """The package's data files (pyproject's package-data) whose nearest package is among ``modules``."""
    folders = {path.parent for path in modules.values() if path.name == "__init__.py"}
    found = []
    for pattern in tree.package_data_globs():
        for path in tree.package.glob(pattern):
            owner = path.parent
            while not (owner / "__init__.py").is_file():
                owner = owner.parent
            if owner in folders:
                found.append(path)
    return sorted(set(found))


# -- which distributions ---------------------------------------------------------------------------


def normalize(distribution: str) -> str:
    """A distribution's name as PEP 503 compares them (``scikit_learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


@cache
def _modules_to_distribution() -> dict[str, str]:
    """Installed modules (``google/cloud/storage``) -> the distribution that ships them."""
    index: dict[str, str] = {}
    for distribution in metadata.distributions():
        name = normalize(distribution.metadata["Name"])
        for file in distribution.files or ():
            path = file.as_posix()
            if path.endswith("/__init__.py"):
                stem = path.removesuffix("/__init__.py")
            elif path.endswith((".py", ".so", ".pyd")):
                stem = path.split(".")[0]  # a/b.py, a/b.cpython-311-x86_64-linux-gnu.so: a/b
            else:
                continue
            index.setdefault(stem, name)
    return index


def _is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top == "__future__"


def distribution_of(name: str) -> str | None:
    """The installed distribution that provides the module ``name``; None for the standard library.

    The longest match wins, so ``google.cloud.storage`` is google-cloud-storage, not whoever else
    ships the ``google`` namespace.
    """
    if _is_stdlib(name):
        return None
    parts = name.split(".")
    index = _modules_to_distribution()
    for end in range(len(parts), 0, -1):
        if (stem := "/".join(parts[:end])) in index:
            return index[stem]
    return None


@dataclass(frozen=True)
class Pin:
    """One entry of the lock file: its text as pip reads it, and who requires it."""

    name: str
    text: str
    required_by: frozenset[str]


def read_lock(path: Path) -> dict[str, Pin]:
    """Parse a ``uv pip compile`` / ``pip-compile`` output (with ``# via`` annotations)."""
    pins: dict[str, Pin] = {}
    name, lines, via = None, [], set()

    def flush() -> None:
        if name:
            pins[name] = Pin(name, "\n".join(lines), frozenset(via))

    in_via = False
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==", line)
        if match:
            flush()
            name, lines, via, in_via = normalize(match.group(1)), [line], set(), False
        elif line.startswith("    --hash") or (
            lines and lines[-1].endswith("\\") and not line.strip().startswith("#")
        ):
            lines.append(line)
        elif re.match(r"^\s+# via\s*$", line):
            in_via = True
        elif m := re.match(r"^\s+# via (.+)$", line):
            via.add(normalize(m.group(1).split(" (")[0].strip()))
            in_via = False
        elif in_via and (m := re.match(r"^\s+#\s+(\S+)", line)):
            via.add(normalize(m.group(1)))
        else:
            in_via = False
    flush()
    return pins


def pinned_requirements(lock: dict[str, Pin], roots: set[str]) -> list[str]:
    """The lock's entries for ``roots`` and everything they require, in the lock's order."""
    missing = sorted(roots - lock.keys())
    if missing:
        raise SystemExit(f"{', '.join(missing)} imported but not in the lock: run `make lock`")
    chosen = set(roots)
    grew = True
    while grew:  # a pin belongs if anything chosen requires it
        extra = {name for name, pin in lock.items() if name not in chosen and pin.required_by & chosen}
        chosen |= extra
        grew = bool(extra)
    return [pin.text for name, pin in lock.items() if name in chosen]


# -- the archive -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployUnit:
    """What goes into one function's archive."""

    function: str
    main: Path
    modules: dict[str, Path]
    data: list[Path]
    distributions: set[str]
    requirements: list[str]


def deploy_unit(name: str, tree: Tree = Tree()) -> DeployUnit:
    """Compute the function ``name``'s deploy unit from the sources in ``tree``."""
    main = tree.functions / name / "main.py"
    if not main.is_file():
        known = ", ".join(function_names(tree))
        raise SystemExit(f"no function {name!r}: {main} does not exist (known: {known})")
    modules, outside = package_modules(tree, name)
    found = {module: distribution_of(module) for module in sorted(outside) if not _is_stdlib(module)}
    distributions = {d for d in found.values() if d}
    # ``from google.cloud import storage`` names google.cloud too: a namespace nobody ships alone.
    unprovided = [
        m
        for m, d in found.items()
        if not d and not any(k.startswith(f"{m}.") and v for k, v in found.items())
    ]
    if unprovided:
        raise SystemExit(
            f"{name}: no installed distribution provides {', '.join(unprovided)}, so no pin can be"
            f" chosen for it: install {LOCK} first (pip install --require-hashes -r {LOCK})"
        )
    requirements = pinned_requirements(read_lock(tree.lock), distributions)
    return DeployUnit(name, main, modules, package_data(tree, modules), distributions, requirements)


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever the builder's platform
    archive.writestr(info, data)


def build(name: str, out_dir: Path = DEFAULT_OUT, tree: Tree = Tree()) -> Path:
    """Write ``<out_dir>/<name>.zip`` for the function ``name``; return its path."""
    unit = deploy_unit(name, tree)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    files = sorted({*unit.modules.values(), *unit.data})
    with zipfile.ZipFile(target, "w") as archive:
        _add(archive, "main.py", unit.main.read_bytes())
        _add(archive, "requirements.txt", ("\n".join(unit.requirements) + "\n").encode())
        for path in files:
            _add(archive, f"{PACKAGE}/{path.relative_to(tree.package).as_posix()}", path.read_bytes())
    return target


def main(argv: list[str] | None = None) -> None:
    """Build the named functions' archives (all of them by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="functions to build (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    for name in args.names or function_names():
        path = build(name, args.out)
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
