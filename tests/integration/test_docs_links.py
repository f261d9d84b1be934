"""Every relative link and image in README.md and docs/**/*.md points at a file that exists, and
every ``#anchor`` at a heading (GitHub's slugs) or an explicit ``<a id>`` of its target page."""
from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"``[^`]*``|`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup reduced to its text, lower case, everything but
    letters, marks, numbers, ``_``, spaces and hyphens dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = (ch for ch in text if ch in " -" or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc")
    return "".join(kept).replace(" ", "-")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks, code spans blanked out."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, CODE_SPAN.sub("``", line)))
    return lines


def anchors(page: Path) -> set[str]:
    """The anchors a page offers: its headings' slugs (repeats numbered -1, -2, ...) and explicit ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        found.update(EXPLICIT_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition of a page."""
    out = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        out += [(number, target) for target in INLINE_LINK.findall(line)]
        ref = REFERENCE_DEF.match(line)
        if ref:
            out.append((number, ref.group(1)))
    return out


def files_a_clone_has(root: Path) -> set[Path] | None:
    """Every file and folder that a clone of ``root``'s repository would hold once the working tree
    is committed: tracked files and untracked ones that ``.gitignore`` does not exclude. ``None``
    when ``root`` is not a git working tree (then only existence is checked)."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    present: set[Path] = {root}
    for name in filter(None, listed.split("\0")):
        path = (root / name).resolve()
        present.add(path)
        present.update(path.parents)
    return present


def broken_links(page: Path, root: Path, in_a_clone: set[Path] | None = None) -> list[str]:
    """One line per relative link of ``page`` whose file or anchor does not exist; with
    ``in_a_clone`` (see ``files_a_clone_has``), also each link to a file that exists here but that
    git ignores, so that a clone would not have it."""
    problems = []
    for number, target in links(page):
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not dest.is_relative_to(root) or not dest.exists():
            problems.append(f"{where} (no such file)")
        elif in_a_clone is not None and dest not in in_a_clone:
            problems.append(f"{where} (ignored by git: a clone does not have it)")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            problems.append(f"{where} (no anchor #{anchor} in {dest.relative_to(root)})")
    return problems


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


@pytest.mark.parametrize("heading, expected", [
    ("Stage 1: mCRF + VM training", "stage-1-mcrf--vm-training"),
    ("When to use `--compile` and `--amp`", "when-to-use---compile-and---amp"),
    ("Second held-back set (members 110–117)", "second-held-back-set-members-110117"),
    ("brats_small with the plan", "brats_small-with-the-plan"),
    ("Clicked points → 7-point annotations", "clicked-points--7-point-annotations"),
    ("[The demo](guide/demo.md), measured", "the-demo-measured"),
])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_checker_reports_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Part one\n\n## Part one\n<a id=\"here\"></a>\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#part-one) [ok2](docs/a.md#part-one-1) [ok3](docs/a.md#here) [web](https://x.org/y)\n"
        "![gone](docs/missing.png) [bad](docs/a.md#part-two) [self](#title)\n"
        "```bash\n[not a link](nowhere.md)\n```\n`[code](nowhere.md)` [out](../../etc/passwd)\n")
    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "README.md:2: docs/missing.png (no such file)",
        "README.md:2: docs/a.md#part-two (no anchor #part-two in docs/a.md)",
        "README.md:2: #title (no anchor #title in README.md)",
        "README.md:6: ../../etc/passwd (no such file)",
    ]


def test_checker_reports_links_to_files_git_ignores(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("runs/\n")
    for folder in ("kept", "runs"):
        (tmp_path / "docs" / folder).mkdir(parents=True)
        (tmp_path / "docs" / folder / "log.csv").write_text("epoch\n")
    (tmp_path / "README.md").write_text(
        "[a](docs/kept/) [b](docs/kept/log.csv) [c](docs/runs/) [d](docs/runs/log.csv)\n")
    assert broken_links(tmp_path / "README.md", tmp_path, files_a_clone_has(tmp_path)) == [
        "README.md:1: docs/runs/ (ignored by git: a clone does not have it)",
        "README.md:1: docs/runs/log.csv (ignored by git: a clone does not have it)",
    ]
    assert files_a_clone_has(tmp_path / "docs" / "kept" / "log.csv") is None  # not a folder, let alone a work tree


def test_every_relative_link_in_the_readme_and_docs_resolves():
    in_a_clone = files_a_clone_has(ROOT)
    problems = [line for page in pages(ROOT) for line in broken_links(page, ROOT, in_a_clone)]
    assert problems == [], "broken links:\n" + "\n".join(problems)


def test_the_readme_and_the_guide_link_at_least_each_docs_page():
    """The pages are reachable: README.md or docs/README.md links every guide and results page."""
    linked = {(page.parent / t.partition("#")[0]).resolve()
              for page in (ROOT / "README.md", ROOT / "docs" / "README.md") for _, t in links(page)}
    guide = [p for p in (ROOT / "docs").glob("*/*.md")]
    assert guide, "no guide pages found"
    assert sorted(str(p.relative_to(ROOT)) for p in guide if p.resolve() not in linked) == []
