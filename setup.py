"""Build script for the Cython core of rserpool.

All static metadata lives in pyproject.toml; this file only declares the
extension modules.  Every ``_ext/rserpool/_c/<stem>.pyx`` is compiled as the
extension module ``rserpool._c.<stem>`` (the ``_ext`` tree mirrors the import
path, and ``_ext`` is on Cython's include path so ``.pxd`` files there can be
cimported as ``rserpool._c.<name>``).  Cython writes the generated ``.c``
next to its ``.pyx``; ``build_ext --inplace`` (and editable installs) put the
``.so`` into ``rserpool/_c/``.

Environment:
  RSERPOOL_DEBUG=1   annotate (HTML next to the .pyx), linetrace, and compile
                     with CYTHON_TRACE=1 so coverage/profilers see Cython lines.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.sdist import sdist as _sdist

ROOT = Path(__file__).resolve().parent
EXT_ROOT = "_ext"
EXT_PACKAGE = "rserpool._c"
EXT_DIR = Path(EXT_ROOT, *EXT_PACKAGE.split("."))

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def discover_sources(root: Path = ROOT) -> dict[str, str]:
    """Map extension module name -> .pyx path (relative to *root*)."""
    found = {}
    for pyx in sorted((root / EXT_DIR).glob("*.pyx")):
        found[f"{EXT_PACKAGE}.{pyx.stem}"] = str(pyx.relative_to(root).as_posix())
    return found


def _build_mode_changed(mode: str) -> bool:
    """Remember the last build mode; True if it differs or is unknown.

    Cython does not notice that compiler directives changed, so switching
    RSERPOOL_DEBUG on or off must regenerate the C files.
    """
    marker = ROOT / "build" / "rserpool-cython-mode"
    previous = marker.read_text().strip() if marker.exists() else None
    if previous == mode:
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(mode + "\n")
    return True


def extensions() -> list:
    sources = discover_sources()
    if not sources:
        return []

    from Cython.Build import cythonize  # build requirement (pyproject.toml)

    debug = _truthy(os.environ.get("RSERPOOL_DEBUG"))
    directives = dict(COMPILER_DIRECTIVES)
    macros: list[tuple[str, str]] = []
    compile_args: list[str] = []
    if sys.platform != "win32":
        compile_args.append("-O2")
    if debug:
        directives.update(linetrace=True, binding=True)
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
        if sys.platform != "win32":
            compile_args.append("-g")

    exts = [
        Extension(
            name,
            [path],
            define_macros=list(macros),
            extra_compile_args=list(compile_args),
        )
        for name, path in sources.items()
    ]
    return cythonize(
        exts,
        include_path=[EXT_ROOT],
        compiler_directives=directives,
        annotate=debug,
        force=_build_mode_changed("debug" if debug else "release"),
        quiet=True,
    )


class sdist(_sdist):
    """Ship the Cython sources (not the generated C) in the sdist.

    setuptools only adds an extension's (cythonized) .c sources by itself;
    without the .pyx an sdist would build no extension at all.
    """

    def make_release_tree(self, base_dir, files):
        generated = re.compile(r"^_ext/.*\.(c|cpp|html)$")
        files = [f for f in files if not generated.match(Path(f).as_posix())]
        for pattern in ("*.pyx", "*.pxd", "*.pxi"):
            files += [p.as_posix() for p in sorted(Path(EXT_ROOT).rglob(pattern))]
        super().make_release_tree(base_dir, sorted(set(files)))


def _readme() -> dict:
    # pyproject.toml declares readme dynamic so a missing README.md (it is
    # written separately) never breaks the build.
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "rserpool\n"
    return {"long_description": text, "long_description_content_type": "text/markdown"}


if __name__ == "__main__":
    setup(ext_modules=extensions(), cmdclass={"sdist": sdist}, **_readme())
