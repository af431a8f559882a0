"""environment.yml and pyproject.toml list the same dependencies; README's commands are the Makefile's."""
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0].lower()


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(s): s.replace(" ", "") for s in project["dependencies"]}
    for extra in ("book", "test"):
        wanted.update({_name(s): s.replace(" ", "") for s in project["optional-dependencies"][extra]})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(s): s.replace(" ", "") for s in pip if not s.startswith("-e")}
    assert listed == wanted


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert commands[:2] == ["make book", "make test"]
    assert "make test" in ci.splitlines()[-1]


def test_book_build_reexecutes_every_page():
    # Every build executes every chapter of the table of contents (book/build.py, stage 1), so a chapter
    # whose results changed through paperlib, the data or book/gpu_records never keeps old outputs; the
    # site is then built from those notebooks with execution off and --all (Sphinx re-reads every page).
    import importlib.util

    out = subprocess.run(["make", "-n", "book"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert any("book/build.py" in line for line in out.splitlines())
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    notebooks = [Path(c["file"]).name for part in toc["parts"] for c in part["chapters"] if c["file"].startswith("notebooks/")]
    assert build.toc_chapters() == notebooks
    assert build.select([], build.toc_chapters()) == notebooks
    source = (ROOT / "book" / "build.py").read_text()
    assert '"--all"' in source and 'execute_notebooks"] = "off"' in source
    # a plain `jupyter-book build` (without the driver) still executes every page
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
