"""The repository explains itself: no comment, docstring or doc cites a document it does not hold (a plan, a
spec, an issue tracker, a person). A reader who has only this checkout must be able to follow every "why"."""
import os
import re
from pathlib import Path

from orthonoise import REPO_ROOT

OUTSIDE = {
    "a spec file": re.compile(r"\bSPEC(\.md)?\b"),
    "a plan file": re.compile(r"PROJECT_PLAN"),
    "a results file": re.compile(r"1B_RESULTS"),
    "an issue number": re.compile(r"\bissues? #?\d+", re.IGNORECASE),
    "a person": re.compile(r"\bthe user('s)?\b", re.IGNORECASE),
    "a design card": re.compile(r"\bdesign card", re.IGNORECASE),
}
TEXT = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg"}
NAMED = {"Makefile", "run"}  # .ci/run
SKIP_DIRS = {".git", ".venv", "outputs", "__pycache__", ".cache", ".pytest_cache", "multirun", "wandb"}


def text_files():
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if os.path.splitext(name)[1] in TEXT or name in NAMED:
                yield os.path.join(folder, name)


def outside_references(text: str) -> list[tuple[int, str]]:
    return [(number, what) for number, line in enumerate(text.splitlines(), 1)
            for what, pattern in OUTSIDE.items() if pattern.search(line)]


def test_nothing_cites_a_document_the_repository_does_not_hold():
    found = [f"{os.path.relpath(path, REPO_ROOT)}:{number}: cites {what}"
             for path in text_files() if os.path.abspath(path) != os.path.abspath(__file__)
             for number, what in outside_references(Path(path).read_text(encoding="utf-8", errors="replace"))]
    assert not found, "say why in this repository's terms (state the figure where it is used):\n" + "\n".join(found)


def test_the_patterns_catch_what_they_name_and_leave_lookalikes():
    assert [what for _, what in outside_references("as SPEC.md says\nsee issue 16\nthe user's 9.5 s")] == [
        "a spec file", "an issue number", "a person"]
    assert outside_references('TORCH_SPEC ?= torch\nspec_from_file_location\nuser_batch = 2\n"who": "user"') == []
