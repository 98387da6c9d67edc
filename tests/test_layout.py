"""README's Layout names every module of the package where it lives, and the top level stays small.

The Layout is a tree in README's first code block after "## Layout": a name ending in "/" opens a folder, each
level indented two spaces further; a line's first word is its entry, the rest describes it. A package's
`__init__.py` is its folder's line.
"""
import re

from orthonoise import REPO_ROOT

PACKAGE = REPO_ROOT / "orthonoise"
TOP_LEVEL_MODULES_MAX = 12


def layout_block(readme: str) -> list[str]:
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1].splitlines()[1:]  # past the fence's own line


def layout_entries(lines: list[str]) -> set[str]:
    """Paths of the tree's entries: 'orthonoise/run/atomic.py', 'orthonoise/run/' ..."""
    entries, folders = set(), []
    for line in lines:
        match = re.match(r"( *)(\S+)", line)
        if not match or match[2].startswith("`"):
            continue
        depth = len(match[1]) // 2
        if depth > len(folders):  # a description continued on the next line
            continue
        del folders[depth:]
        entries.add("".join(folders) + match[2])
        if match[2].endswith("/"):
            folders.append(match[2])
    return entries


def package_modules() -> set[str]:
    return {path.relative_to(REPO_ROOT).as_posix() for path in PACKAGE.rglob("*.py")
            if path.name != "__init__.py" and "__pycache__" not in path.parts}


def test_the_layout_names_every_module_where_it_lives_and_nothing_else():
    named = {e for e in layout_entries(layout_block((REPO_ROOT / "README.md").read_text())) if e.endswith(".py")}
    package = package_modules()
    missing = sorted(package - named)
    assert not missing, f"README.md's Layout misses {missing}: add a line under its folder"
    stale = sorted(e for e in named - package if e.startswith("orthonoise/"))
    assert not stale, f"README.md's Layout names modules that are not there: {stale}"


def test_the_layout_names_every_package():
    named = layout_entries(layout_block((REPO_ROOT / "README.md").read_text()))
    packages = {path.parent.relative_to(REPO_ROOT).as_posix() + "/" for path in PACKAGE.rglob("__init__.py")}
    missing = sorted(packages - named)
    assert not missing, f"README.md's Layout misses the folders {missing}"


def test_the_top_level_stays_small():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= TOP_LEVEL_MODULES_MAX, (
        f"orthonoise/ holds {len(modules)} modules ({', '.join(modules)}), over {TOP_LEVEL_MODULES_MAX}: "
        "put the new one in the sub-package of its stratum (lm/, optim/, run/, sweep/, perf/, report/)")


def test_the_tree_reader_places_entries_by_indentation():
    lines = ["top.py   x", "pkg/     y", "  a.py   z", "  sub/", "    b.py", "         continued b.py words",
             "  c.py", "other/"]
    assert layout_entries(lines) == {"top.py", "pkg/", "pkg/a.py", "pkg/sub/", "pkg/sub/b.py", "pkg/c.py", "other/"}
