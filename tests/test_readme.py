"""Every ```python block of README.md (and of the site's home page) runs as pasted.

Each block runs on its own, in a fresh namespace, so a block that needs an
import or an object only another block defines fails here. A block whose fence
names Python some other way (``py``, ``python3``, ``pycon``, ...) would not be
collected, so it fails instead of being skipped silently.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*$", re.MULTILINE)
OTHER_PYTHON_TAGS = {"py", "python3", "py3", "pycon", "ipython", "ipython3", "pytb"}


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number of the opening fence, info word, body) of each fenced block."""
    blocks = []
    opening = None
    for match in FENCE.finditer(text):
        fence, info = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if opening is None:
            opening = (fence, info.lower(), line, match.end() + 1)
        elif fence[0] == opening[0][0] and len(fence) >= len(opening[0]) and not info:
            body = text[opening[3] : match.start()]
            blocks.append((opening[2], opening[1], body))
            opening = None
    if opening is not None:
        raise AssertionError(f"line {opening[2]}: unclosed code fence")
    return blocks


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [(line, body) for line, info, body in BLOCKS if info == "python"]
# The home page of the documentation site shows an example too; it is plain
# Markdown (not executed by the docs build), so it is run here.
HOME_PAGE = README.parent / "docs" / "index.md"
HOME_BLOCKS = [
    (line, body)
    for line, info, body in fenced_blocks(HOME_PAGE.read_text(encoding="utf-8"))
    if info == "python"
]


def test_fence_parser_on_a_known_text():
    text = "a\n```python\nx = 1\n```\n\n~~~bash\nls\n~~~\n````\n```\n````\n"
    assert fenced_blocks(text) == [
        (2, "python", "x = 1\n"),
        (6, "bash", "ls\n"),
        (9, "", "```\n"),
    ]


def test_readme_has_python_blocks_and_no_other_python_fences():
    assert len(PYTHON_BLOCKS) >= 3, "README.md lost its ```python examples"
    others = [(line, info) for line, info, _ in BLOCKS if info in OTHER_PYTHON_TAGS]
    assert not others, f"tag these fences ```python so they are run: {others}"


def test_home_page_has_its_example():
    assert len(HOME_BLOCKS) == 1, "docs/index.md should show one ```python example"


@pytest.mark.parametrize(
    "source, line, code",
    [("README.md", line, code) for line, code in PYTHON_BLOCKS]
    + [("docs/index.md", line, code) for line, code in HOME_BLOCKS],
    ids=[f"README-line{line}" for line, _ in PYTHON_BLOCKS]
    + [f"index-line{line}" for line, _ in HOME_BLOCKS],
)
def test_block_runs_as_pasted(source, line, code):
    too_long = [
        n for n, text in enumerate(code.splitlines(), line + 1) if len(text) > 88
    ]
    assert not too_long, f"{source} lines {too_long}: longer than 88 characters"
    compiled = compile(code, f"{source}, block at line {line}", "exec")
    namespace = {"__name__": "__main__"}
    output = io.StringIO()
    # The blocks seed torch's generator; give it back to the other tests as found.
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(output):
        exec(compiled, namespace)
    printed = output.getvalue()
    assert printed.strip(), f"the example of {source} should print its result"
    assert "nan" not in printed.lower(), f"{source}: example printed NaN:\n{printed}"
