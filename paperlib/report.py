"""Numbers a chapter measures, recorded next to what the paper reports.

Each chapter calls :func:`record` for every number it compares with the paper, and ends with
:func:`table`. Records are JSON files under ``cache_dir()/scoreboard/<profile>/<chapter>.json``,
rewritten each time the chapter runs, so the scoreboard page is built from executed chapters only.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from . import config

VERDICTS = ("reproduced", "qualitatively", "not reproduced", "n/a")


def _path(chapter: str, profile: str | None = None) -> Path:
    return config.cache_dir() / "scoreboard" / (profile or config.profile()) / f"{chapter}.json"


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def start(chapter: str, title: str, url: str = "") -> None:
    """Begin (or restart) a chapter's records; call once at the top of the chapter."""
    path = _path(chapter)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"chapter": chapter, "title": title, "url": url, "profile": config.profile(),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": []}
    path.write_text(json.dumps(doc, indent=1))


def record(chapter: str, quantity: str, ours, paper=None, verdict: str = "n/a", note: str = "") -> None:
    """Add one row "quantity: paper says / we measure / verdict" to the chapter's records."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    path = _path(chapter)
    if not path.exists():
        raise ValueError(f"chapter {chapter!r} has no records yet: call report.start() first")
    doc = json.loads(path.read_text())
    doc["rows"] = [r for r in doc["rows"] if r["quantity"] != quantity]
    doc["rows"].append({"quantity": quantity, "paper": _jsonable(paper), "ours": _jsonable(ours),
                        "verdict": verdict, "note": note})
    path.write_text(json.dumps(doc, indent=1))


def rows(chapter: str, profile: str | None = None) -> list[dict]:
    """The recorded rows of a chapter (empty if it has not run at this profile)."""
    path = _path(chapter, profile)
    return json.loads(path.read_text())["rows"] if path.exists() else []


def load_all(profile: str | None = None) -> list[dict]:
    """Every chapter's record document at a profile, sorted by chapter."""
    folder = config.cache_dir() / "scoreboard" / (profile or config.profile())
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(chapter: str) -> str:
    """The chapter's "paper says / we measure" table as Markdown."""
    lines = ["| quantity | paper says | we measure | verdict | note |", "|---|---|---|---|---|"]
    for r in rows(chapter):
        lines.append(f"| {r['quantity']} | {_fmt(r['paper'])} | {_fmt(r['ours'])} | {r['verdict']} | {r['note']} |")
    return "\n".join(lines)


def table(chapter: str):
    """Display the chapter's table in a notebook (returns an IPython Markdown object)."""
    from IPython.display import Markdown
    return Markdown(markdown(chapter))
