"""The Colab path: one repository URL (pyproject's ``[project.urls] Repository``), used by the book
config's repository / launch buttons and by every chapter's install cell, which is the same cell
everywhere and hidden from the page (tag ``remove-cell``)."""
import json
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def repository() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def install_cell() -> str:
    """The first code cell of every chapter, built from the one URL."""
    return ("# On Colab, install the companion library first (elsewhere it is already installed).\n"
            "try:\n"
            "    import paperlib\n"
            "except ImportError:\n"
            f'    %pip install -q "paperlib @ git+{repository()}"')


def test_book_config_uses_the_repository_url():
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["repository"]["url"] == repository()
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


def test_contributing_shows_the_same_cell():
    assert install_cell() in (ROOT / "CONTRIBUTING.md").read_text().replace("\n   ", "\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_install_cell(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    first = cells[0]
    source = "".join(first["source"]) if isinstance(first["source"], list) else first["source"]
    assert source.strip() == install_cell(), f"{path.name}: the first code cell is not the Colab install cell"
    assert "remove-cell" in first.get("metadata", {}).get("tags", []), f"{path.name}: install cell not tagged remove-cell"
    others = ["".join(c["source"]) for c in cells[1:]]
    assert not any("pip install" in s for s in others), f"{path.name}: a second install line"
