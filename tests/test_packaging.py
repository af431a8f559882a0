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
    # Sphinx re-reads only pages whose source changed; without --all a chapter whose results changed
    # through paperlib, the data or book/gpu_records would keep its old executed outputs.
    out = subprocess.run(["make", "-n", "book"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    build = [line for line in out.splitlines() if "jupyter-book build" in line]
    assert build and all(" --all" in line for line in build)
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
