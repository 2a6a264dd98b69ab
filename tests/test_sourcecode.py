"""Source-level rules: the sans-I/O parts of the package do no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "rserpool"
SANS_IO = [ROOT / "constants.py", ROOT / "errors.py", ROOT / "config.py",
           *sorted((ROOT / "wire").glob("*.py")),
           *sorted((ROOT / "handlespace").glob("*.py")),
           *sorted((ROOT / "protocol").glob("*.py"))]
FORBIDDEN = {"asyncio", "socket", "time", "selectors", "subprocess", "threading"}


@pytest.mark.parametrize("path", SANS_IO, ids=lambda p: str(p.relative_to(ROOT)))
def test_sans_io_modules_import_no_io(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"


def test_compiled_source_imports_no_io():
    pyx = Path(__file__).resolve().parent.parent / "_ext" / "rserpool" / "_c" / "tlv.pyx"
    text = pyx.read_text()
    for name in FORBIDDEN:
        assert f"import {name}\n" not in text and f"from {name} import" not in text
