"""Build the Cloud Functions source archives: ``dist/functions/<name>.zip``.

Each archive holds what Cloud Functions (gen2, Python) builds a function from: ``main.py`` (from
``functions/<name>/``) at the top, the ``batchcast`` package source beside it, and a
``requirements.txt`` that Cloud Build installs with pip (pyproject's dependencies plus the ``gcp``
extra). Archives are byte-for-byte reproducible (sorted entries, fixed timestamps), so Terraform,
which names the uploaded object after the archive's MD5, redeploys only functions that changed.

    python scripts/build_functions.py                  # all five into dist/functions/
    python scripts/build_functions.py partition --out /tmp/fns
"""

from __future__ import annotations

import argparse
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
PACKAGE_DIR = ROOT / "shared" / "batchcast"
PYPROJECT = ROOT / "pyproject.toml"
DEFAULT_OUT = ROOT / "dist" / "functions"
EXTRAS = ("gcp",)  # what a deployed function needs beyond the base dependencies
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


def function_names() -> list[str]:
    """Every function: a folder under ``functions/`` with a ``main.py``."""
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/main.py"))


def requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """pyproject's dependencies plus the :data:`EXTRAS`, one requirement a line, as pip reads them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += [r for r in extras.get(extra, []) if not r.startswith(f"{project['name']}[")]
    return sorted(dict.fromkeys(lines), key=str.lower)


def _package_files() -> list[Path]:
    """The batchcast package's source and data files, without caches."""
    return sorted(
        p
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build(name: str, out_dir: Path = DEFAULT_OUT) -> Path:
    """Write ``<out_dir>/<name>.zip`` for the function ``name``; return its path."""
    main = FUNCTIONS_DIR / name / "main.py"
    if not main.is_file():
        raise SystemExit(
            f"no function {name!r}: {main} does not exist (known: {', '.join(function_names())})"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    with zipfile.ZipFile(target, "w") as archive:
        _add(archive, "main.py", main.read_bytes())
        _add(archive, "requirements.txt", ("\n".join(requirements()) + "\n").encode())
        for path in _package_files():
            _add(archive, f"batchcast/{path.relative_to(PACKAGE_DIR).as_posix()}", path.read_bytes())
    return target


def main(argv: list[str] | None = None) -> None:
    """Build the named functions' archives (all of them by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="functions to build (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    for name in args.names or function_names():
        path = build(name, args.out)
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
