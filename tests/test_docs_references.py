"""The repository speaks for itself: no reference to an outside tracker ("issue" and a number)
and no private names for packages (a "room" for a subpackage, a "floor" for a layer) in any
tracked text file, so a reader can follow every sentence without anything the repository does
not contain."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".sh", ".toml", ".txt", ".csv", ".json", ".cfg",
                 ".yaml", ".yml", ".ini", ""}
# folders of a checkout without git (an unpacked archive): the tracked text lives here
FOLDERS = ("hiva_lib", "docs", "notebooks", "scripts", "tests", "results", ".ci")
# built from parts so that this file does not match itself
TRACKER = re.compile(r"\b" + "issue" + r"s? #?[0-9]+", re.IGNORECASE)
PRIVATE_WORDS = re.compile(r"\b" + "ground" + r" floor\b|\b" + "room" + r"s\b|"
                           r"\b(?:data|model|engine|study) " + "room" + r"\b", re.IGNORECASE)


def tracked_files() -> list[Path]:
    """Every tracked file (git ls-files), or every file of the project's folders without git."""
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode()
        return [ROOT / name for name in out.split("\0") if name]
    files = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*") if p.is_file()]
    return files + [p for p in ROOT.iterdir() if p.is_file()]


def text_files() -> list[Path]:
    files = [p for p in tracked_files() if p.suffix in TEXT_SUFFIXES and p.is_file()]
    return [p for p in files if p.stat().st_size < 5_000_000]


def offending_lines(pattern: re.Pattern[str]) -> list[str]:
    hits = []
    for path in text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary content under a text-like name
        hits += [f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}"
                 for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    return hits


def test_the_scan_sees_the_project_text():
    names = {p.relative_to(ROOT).as_posix() for p in text_files()}
    assert {"README.md", "docs/library.md", "hiva_lib/__init__.py"} <= names


def test_the_patterns_catch_what_they_forbid():
    """Planted lines: each pattern finds what it forbids and passes ordinary English."""
    word = "issue"  # planted lines built from parts, so that this file does not match itself
    for line in (f"see {word.title()} 16", f"{word}s #3 and 4", f"({word} 25; ambiguity 7)"):
        assert TRACKER.search(line), line
    for line in ("the issue is noise", "issued 3 times", "tissue 4"):
        assert not TRACKER.search(line), line
    room, floor = "room", "ground" + " floor"
    for line in (f"four {room}s", f"the data {room}", f"the {floor}"):
        assert PRIVATE_WORDS.search(line), line
    assert not PRIVATE_WORDS.search("a 720 min limit leaves room for it")


def test_no_reference_to_an_outside_tracker():
    hits = offending_lines(TRACKER)
    assert not hits, ("tracked files refer to tracker entries the repository does not contain; "
                      "say what is meant (the control, the behaviour, the test):\n"
                      + "\n".join(hits))


def test_plain_package_words():
    hits = offending_lines(PRIVATE_WORDS)
    assert not hits, ("say package, subpackage, module or layer:\n" + "\n".join(hits))
