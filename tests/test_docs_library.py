"""docs/library.md is the map of the whole library: every module of hiva_lib/ has a row, and
every module a row names exists (a module added, moved or removed shows up here)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hiva_lib"
LIBRARY_MD = ROOT / "docs" / "library.md"


def package_modules() -> set[str]:
    """Every .py file of hiva_lib/, relative to it (``model/hiva.py``)."""
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
            if "__pycache__" not in p.parts}


def documented_modules() -> set[str]:
    """Every ``module.py`` named in the first cell of a table row of docs/library.md."""
    names = set()
    for line in LIBRARY_MD.read_text().splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([\w/]+\.py)`", line.split("|")[1]))
    return names


def test_the_scan_reads_rows():
    assert {"model/hiva.py", "variants.py", "study/summary.py"} <= documented_modules()


def test_every_module_has_a_row_in_library_md():
    missing = sorted(package_modules() - documented_modules())
    assert not missing, ("docs/library.md has no row for these modules of hiva_lib/ "
                         f"(add one to its subpackage's table): {missing}")


def test_every_row_names_a_module_that_exists():
    stale = sorted(documented_modules() - package_modules())
    assert not stale, f"docs/library.md names modules that hiva_lib/ does not have: {stale}"
