"""The repository explains itself: every cited section of docs/METHODS.md exists, and nothing refers
to a file outside the repository (issue: a repository that explains itself)."""
from __future__ import annotations

import re
import subprocess

from conftest import REPO

CITATION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    texts = {}
    for name in names:
        path = REPO / name
        if path.suffix in (".png", ".pth", ".npy", ".pt") or not path.is_file():
            continue
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def test_every_cited_section_is_a_heading_of_methods_md():
    headings = set(HEADING.findall((REPO / "docs" / "METHODS.md").read_text(encoding="utf-8")))
    assert {"1", "5.3", "7", "10.4", "11.3", "12.9", "13"} <= headings
    missing = {f"{name}: §{section}" for name, text in tracked_text_files().items()
               for section in CITATION.findall(text) if section not in headings}
    assert not missing, sorted(missing)[:20]


def test_nothing_refers_to_a_file_outside_the_repository():
    """Code, docs, launchers and tests; not the verbatim logs under results/ (records of commands), nor
    this file, which spells the patterns."""
    outside = re.compile(r"\.\./shared|/work/|METHODS-EXTRA")
    offenders = [name for name, text in tracked_text_files().items()
                 if outside.search(text) and not (name.startswith("results/") and name.endswith(".log"))
                 and name != "tests/test_docs.py"]
    assert offenders == []


def test_the_readme_tables_hold_every_published_number_with_its_kind():
    from datafree.published import PUBLISHED

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    marks = {"reproduction": "R", "re-run": "r", "config not published": "n", "reconstruction": "rc"}
    for (method, variant, dataset, teacher, student), number in PUBLISHED.items():
        value = f"{number.value:.2f}" if number.kind != "read off a figure" else f"{number.value:.1f}"
        assert value in readme, (method, variant, dataset, teacher, student)
        if method not in ("fast", "nayer") and not variant:
            expected = f"{value} ≠ {number.expectation:.2f}" if number.expectation else f"{value} {marks[number.kind]}"
            assert f" {expected} |" in readme, (method, dataset, teacher, student, expected)
