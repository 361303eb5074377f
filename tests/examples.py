"""The fenced ``python`` blocks of a Markdown file: the examples its tests run as written."""

from __future__ import annotations

import re
from pathlib import Path

from tests import ROOT

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(markdown: Path) -> list[str]:
    return _BLOCK.findall(markdown.read_text(encoding="utf-8"))


def package_readme(package: str) -> Path:
    return ROOT / "packages" / package / "README.md"
