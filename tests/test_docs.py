"""The code shown on the book's library page runs as printed."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not os.environ.get("PAPERLIB_DATA"), reason="PAPERLIB_DATA not set")
def test_api_page_example_runs(capsys):
    blocks = re.findall(r"```python\n(.+?)```", (ROOT / "book" / "api.md").read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "book/api.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "(" in printed  # the danger-zone interval and its DDPM timesteps
