"""Every test the documentation names as proof exists: a renamed or deleted test must not
leave a failure scenario 'proved by' nothing."""

from __future__ import annotations

import re

from tests import ROOT

REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")
DEFINED = r"^(?:(?:async )?def {name}\(|class {name}\b|{name} = )"


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in REFERENCE.finditer(doc.read_text()):
            found.append((doc.name, match.group(1), match.group(2)))
    return found


def test_the_docs_name_tests() -> None:
    assert len(references()) > 50


def test_every_test_the_docs_name_exists() -> None:
    missing = []
    for doc, path, name in references():
        file = ROOT / path
        if not file.is_file():
            missing.append(f"{doc}: {path}")
        elif name and not re.search(DEFINED.format(name=name), file.read_text(), re.M):
            missing.append(f"{doc}: {path}::{name}")
    assert missing == []
