"""Every example in docs/*.md runs as a test, as README.md's do (pytest collects README.md
itself, through ``--doctest-glob``): a page that shows code shows code that works."""

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(page for page in DOCS.glob("*.md") if ">>>" in page.read_text(encoding="utf-8"))


def test_the_docs_have_examples():
    assert {page.name for page in PAGES} >= {"linalg.md", "training.md"}


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_the_examples_of_a_docs_page_run(page):
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
    )
    assert result.attempted > 0 and result.failed == 0
