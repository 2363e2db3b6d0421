"""docs/python.md and the README's Python run: each ```python block as a
script (the ```text block after it, or the "It prints `...`" sentence, is
the output it must print),
each ```python test block under pytest, all against the installed package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "python.md", ROOT / "README.md"]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str, str, str]]:
    """(page:line, info, code, the output it promises or "") of every python block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for start, info, code, output in page_blocks(text):
            line = text.count("\n", 0, start) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", info, code, output))
    return found


def page_blocks(text: str) -> list[tuple[int, str, str, str]]:
    fences = [(m.group(1).split(), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    found = []
    for i, (words, code, start, end) in enumerate(fences):
        if words[:1] != ["python"]:
            continue
        output = ""
        after = text[end:]
        if i + 1 < len(fences) and fences[i + 1][0][:1] == ["text"]:
            between = text[end : fences[i + 1][2]]
            if between.strip() in ("", "It prints:"):
                output = fences[i + 1][1]
        said = re.match(r"\s*It prints `([^`]+)`", after)
        if not output and said:  # "It prints `b'Received\n'`, ...": one line
            output = said.group(1) + "\n"
        found.append((start, " ".join(words), code, output))
    return found


SCRIPTS = [pytest.param(code, output, id=at) for at, info, code, output in blocks() if info == "python"]
TESTS = [pytest.param(code, id=at) for at, info, code, _ in blocks() if info == "python test"]


def test_the_page_has_its_examples() -> None:
    assert len(SCRIPTS) >= 4 and len(TESTS) >= 2


@pytest.mark.parametrize("code, output", SCRIPTS)
def test_a_script_block_runs_and_prints_what_it_says(code: str, output: str, tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    if output:
        assert ran.stdout.splitlines() == output.splitlines()


@pytest.mark.parametrize("code", TESTS)
def test_a_test_block_passes_under_pytest(code: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_from_the_docs=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=code.count("\ndef test_") + code.startswith("def test_"))
