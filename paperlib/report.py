"""Numbers a chapter measures, recorded next to what the paper reports.

Each chapter calls :func:`record` for every number it compares with the paper, and ends with
:func:`table`. Records are JSON files under ``cache_dir()/scoreboard/<profile>/<chapter>.json``,
rewritten each time the chapter runs, so the scoreboard page is built from executed chapters only.
The page can put next to them the records of an archived run at another profile (the GPU runs in
``book/gpu_records/``, written by ``benchmarks/time_chapters.py`` with the device, run time and
commit they came from): :func:`scoreboard` with ``archive=``.
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


def load_all(profile: str | None = None, folder: str | Path | None = None) -> list[dict]:
    """Every chapter's record document at a profile (or in ``folder``), sorted by chapter."""
    folder = Path(folder) if folder is not None else config.cache_dir() / "scoreboard" / (profile or config.profile())
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _fmt(v) -> str:
    """A table cell: numbers to 4 significant digits, ``|`` escaped so it cannot split the row."""
    if v is None:
        return "–"
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows_: list[dict], note: bool = True, other: dict | None = None, other_name: str = "") -> list[str]:
    """Markdown table; ``other`` (quantity -> row of another run) adds a column of its values."""
    extra = f" {other_name} |" if other is not None else ""
    head = "| quantity | paper says | we measure |" + extra + " verdict |" + (" note |" if note else "")
    lines = [head, "|---|---|---|" + ("---|" if other is not None else "") + "---|" + ("---|" if note else "")]
    for r in rows_:
        cells = [_fmt(r["quantity"]), _fmt(r["paper"]), _fmt(r["ours"])]
        verdict = f"**{r['verdict']}**"
        if other is not None:
            o = other.get(r["quantity"])
            cells.append(_fmt(o["ours"]) if o else "–")
            if o and o["verdict"] != r["verdict"]:
                verdict += f" ({other_name}: **{o['verdict']}**)"
        lines.append("| " + " | ".join(cells + [verdict] + ([_fmt(r["note"])] if note else [])) + " |")
    return lines


def markdown(chapter: str, profile: str | None = None) -> str:
    """The chapter's "paper says / we measure" table as Markdown."""
    return "\n".join(_table(rows(chapter, profile)))


def _provenance(doc: dict) -> str:
    run = doc.get("run", {})
    return (f"{doc['profile']} profile on {run.get('device', 'an unrecorded device')}, commit "
            f"`{run.get('commit', 'unknown')}`, {doc['started'][:10]}, chapter run time {run.get('seconds', '?')} s")


def scoreboard(profile: str | None = None, exclude=("99_scoreboard",), archive: str | Path | None = None,
               archive_name: str = "GPU (archived)") -> str:
    """Every chapter's rows at a profile as Markdown: a verdict count, then one table per chapter.

    ``archive``: a folder of record documents from another run (e.g. ``book/gpu_records``); a chapter
    found there gets a column ``archive_name`` matched by quantity, rows only the archive has are
    appended, and a line says where and when the archived run was made.
    """
    docs = [d for d in load_all(profile) if d["chapter"] not in exclude]
    archived = {d["chapter"]: d for d in load_all(folder=archive)} if archive is not None and Path(archive).is_dir() else {}
    counts: dict[str, int] = {}
    for d in docs:
        for r in d["rows"]:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts) or "no chapter has run yet"
    out = [f"**Profile `{profile or config.profile()}`**: {summary}.", ""]
    for d in docs:
        title = f"[{d['title']}](../{d['url']}.ipynb)" if d.get("url") else d["title"]
        a = archived.get(d["chapter"])
        if a is None:
            out += [f"### {title}", "", *_table(d["rows"], note=False), ""]
            continue
        ours = {r["quantity"] for r in d["rows"]}
        only = [dict(r, ours=None) for r in a["rows"] if r["quantity"] not in ours]
        other = {r["quantity"]: r for r in a["rows"]}
        out += [f"### {title}", "", f"*{archive_name}: {_provenance(a)}.*", "",
                *_table(d["rows"] + only, note=False, other=other, other_name=archive_name), ""]
    return "\n".join(out)


def table(chapter: str):
    """Display the chapter's table in a notebook (returns an IPython Markdown object)."""
    from IPython.display import Markdown
    return Markdown(markdown(chapter))
