"""docs/python.md runs: each ```python block as a script (its ```text block
after it, if any, is the output it must print), each ```python test block
under pytest, all against the installed package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "python.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str, str]]:
    """(info, code, the text block right after it or "") of every python block."""
    fences = [(m.group(1).split(), m.group(2), m.start(), m.end()) for m in FENCE.finditer(PAGE.read_text())]
    found = []
    for i, (words, code, _, end) in enumerate(fences):
        if words[:1] != ["python"]:
            continue
        output = ""
        if i + 1 < len(fences) and fences[i + 1][0][:1] == ["text"]:
            between = PAGE.read_text()[end : fences[i + 1][2]]
            if between.strip() in ("", "It prints:"):
                output = fences[i + 1][1]
        found.append((" ".join(words), code, output))
    return found


SCRIPTS = [(code, output) for info, code, output in blocks() if info == "python"]
TESTS = [code for info, code, _ in blocks() if info == "python test"]


def test_the_page_has_its_examples() -> None:
    assert len(SCRIPTS) >= 3 and len(TESTS) >= 2


@pytest.mark.parametrize("code, output", SCRIPTS)
def test_a_script_block_runs_and_prints_what_it_says(code: str, output: str, tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == output.splitlines()


@pytest.mark.parametrize("code", TESTS)
def test_a_test_block_passes_under_pytest(code: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_from_the_docs=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=code.count("\ndef test_") + code.startswith("def test_"))
