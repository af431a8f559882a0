"""Numbers a chapter measures, recorded next to what the paper reports, with the verdict's criterion.

Each chapter calls :func:`record` for every number it compares with the paper, and ends with
:func:`table`. A verdict is computed by a :class:`Criterion` stated before the number is known::

    report.record(CH, "Table 1: EDM-small trajectory memorization (%)", rate, paper=92.2, ref="Table 1",
                  criterion=report.at_least(60, qualitatively=30))

``ref`` names the numbered result of the paper the row is about (``"Fig. 2"``, ``"Thm 4.2"``, ...); the
scoreboard uses it to show every numbered result of the paper with its status. Records are JSON files
under ``cache_dir()/scoreboard/<profile>/<chapter>.json``, rewritten when the chapter starts; each row is
added under a file lock and the file is replaced atomically, so two processes recording at once lose
nothing. The scoreboard can put next to them the records of an archived run at another profile
(``book/gpu_records/``): :func:`scoreboard` with ``archive=``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import config

#: Verdicts of a row. "companion variant": the row checks the companion's own (stated) version of a
#: result whose exact form was lost or which we replace; "n/a": a number with nothing to compare to.
VERDICTS = ("reproduced", "qualitatively", "not reproduced", "companion variant", "n/a")
#: While chapters move to criteria, a bare verdict is still accepted (set True once all have).
STRICT = True  # every "reproduced / qualitatively / not reproduced" verdict needs its criterion
_CHAPTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# ----------------------------------------------------------------------------------------------
# criteria
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """A rule that turns a measured value into a verdict, with its text (shown before the number).

    ``reproduced`` and ``qualitatively`` are predicates on the value; the first that holds decides,
    otherwise the verdict is "not reproduced".
    """

    text: str
    reproduced: Callable[[object], bool]
    qualitatively: Callable[[object], bool] | None = None

    def __call__(self, value) -> str:
        if _is_nan(value):
            return "not reproduced"
        if self.reproduced(value):
            return "reproduced"
        if self.qualitatively is not None and self.qualitatively(value):
            return "qualitatively"
        return "not reproduced"


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _num(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _fmt_num(v: float) -> str:
    return f"{v:.4g}"


def at_least(threshold, qualitatively=None) -> Criterion:
    """Reproduced if ``value >= threshold``; "qualitatively" if ``value >= qualitatively``."""
    t = _num(threshold, "threshold")
    q = None if qualitatively is None else _num(qualitatively, "qualitatively")
    text = f"reproduced if ≥ {_fmt_num(t)}" + ("" if q is None else f"; qualitatively if ≥ {_fmt_num(q)}")
    return Criterion(text, lambda v: float(v) >= t, None if q is None else (lambda v: float(v) >= q))


def at_most(threshold, qualitatively=None) -> Criterion:
    """Reproduced if ``value <= threshold``; "qualitatively" if ``value <= qualitatively``."""
    t = _num(threshold, "threshold")
    q = None if qualitatively is None else _num(qualitatively, "qualitatively")
    text = f"reproduced if ≤ {_fmt_num(t)}" + ("" if q is None else f"; qualitatively if ≤ {_fmt_num(q)}")
    return Criterion(text, lambda v: float(v) <= t, None if q is None else (lambda v: float(v) <= q))


def between(low, high, qualitatively=None) -> Criterion:
    """Reproduced if ``low <= value <= high``; ``qualitatively=(lo, hi)`` a wider interval."""
    lo, hi = _num(low, "low"), _num(high, "high")
    if lo > hi:
        raise ValueError(f"low must be <= high, got {lo} > {hi}")
    text = f"reproduced if in [{_fmt_num(lo)}, {_fmt_num(hi)}]"
    qual = None
    if qualitatively is not None:
        qlo, qhi = (_num(v, "qualitatively") for v in qualitatively)
        text += f"; qualitatively if in [{_fmt_num(qlo)}, {_fmt_num(qhi)}]"
        qual = lambda v: qlo <= float(v) <= qhi  # noqa: E731
    return Criterion(text, lambda v: lo <= float(v) <= hi, qual)


def holds(text: str, reproduced: bool, qualitatively: bool = False) -> Criterion:
    """A criterion decided by the chapter's own conditions (computed from measured values), with the
    ``text`` that states them; the recorded value is shown but not tested."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must state the criterion")
    r, q = bool(reproduced), bool(qualitatively)
    return Criterion(text, lambda v: r, lambda v: q)


def verdict(value, criterion: Criterion) -> str:
    """The verdict of ``value`` under ``criterion`` (for prose that must agree with the table)."""
    if not isinstance(criterion, Criterion):
        raise TypeError(f"criterion must be a report.Criterion, got {type(criterion).__name__}")
    return criterion(value)


# ----------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------
def _check_chapter(chapter) -> str:
    if not isinstance(chapter, str) or not _CHAPTER.match(chapter):
        raise ValueError(f"chapter must be a plain id of letters, digits, '_' and '-', got {chapter!r}")
    return chapter


def _path(chapter: str, profile: str | None = None) -> Path:
    return config.cache_dir() / "scoreboard" / (profile or config.profile()) / f"{_check_chapter(chapter)}.json"


def _jsonable(value):
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``'s records (a lock file beside it; POSIX ``flock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock (a single process is then the only writer)
            pass
        yield


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def start(chapter: str, title: str, url: str = "") -> None:
    """Begin (or restart) a chapter's records; call once at the top of the chapter."""
    path = _path(chapter)
    doc = {"chapter": chapter, "title": title, "url": url, "profile": config.profile(),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": []}
    with _locked(path):
        _write(path, doc)


def record(chapter: str, quantity: str, ours, paper=None, verdict: str | None = None, note: str = "", *,
           criterion: Criterion | None = None, ref: str | None = None, figure: str | None = None) -> str:
    """Add one row "quantity: paper says / criterion / we measure / verdict" and return the verdict.

    Give either ``criterion`` (the verdict is computed from ``ours``) or ``verdict``. A verdict of
    "reproduced", "qualitatively" or "not reproduced" needs a criterion, so that the rule is always
    stated; "companion variant" and "n/a" do not. ``ref``: the paper's numbered result (``"Fig. 2"``);
    ``figure``: the name (label) of the chapter's figure that shows it, so the scoreboard links to it.
    """
    if criterion is not None and verdict is not None:
        raise ValueError("give either criterion or verdict, not both")
    if criterion is not None:
        if not isinstance(criterion, Criterion):
            raise TypeError(f"criterion must be a report.Criterion, got {type(criterion).__name__}")
        verdict = criterion(ours)
    verdict = "n/a" if verdict is None else verdict
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if verdict in VERDICTS[:3] and criterion is None and STRICT:
        raise ValueError(f"verdict {verdict!r} needs a criterion (report.at_least, at_most, between or holds)")
    if not isinstance(quantity, str) or not quantity.strip():
        raise ValueError("quantity must be a non-empty string")
    path = _path(chapter)
    row = {"quantity": quantity, "paper": _jsonable(paper), "ours": _jsonable(ours), "verdict": verdict,
           "criterion": criterion.text if criterion is not None else "", "note": note, "ref": ref}
    if figure is not None:
        if not isinstance(figure, str) or not _CHAPTER.match(figure):
            raise ValueError(f"figure must be a figure name (letters, digits, '_', '-'), got {figure!r}")
        row["figure"] = figure
    with _locked(path):
        if not path.exists():
            raise ValueError(f"chapter {chapter!r} has no records yet: call report.start() first")
        doc = json.loads(path.read_text())
        doc["rows"] = [r for r in doc["rows"] if r["quantity"] != quantity] + [row]
        _write(path, doc)
    return verdict


def rows(chapter: str, profile: str | None = None) -> list[dict]:
    """The recorded rows of a chapter (empty if it has not run at this profile)."""
    path = _path(chapter, profile)
    return json.loads(path.read_text())["rows"] if path.exists() else []


def load_all(profile: str | None = None, folder: str | Path | None = None) -> list[dict]:
    """Every chapter's record document at a profile (or in ``folder``), sorted by chapter."""
    folder = Path(folder) if folder is not None else config.cache_dir() / "scoreboard" / (profile or config.profile())
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    """A table cell: numbers to 4 significant digits, ``|`` escaped so it cannot split the row."""
    if v is None or v == "":
        return "–"
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows_: list[dict], note: bool = True, other: dict | None = None, other_name: str = "",
           links: bool = False) -> list[str]:
    """Markdown table; ``other`` (quantity -> row of another run) adds a column of its values; with
    ``links``, a row with a figure gets a cross-reference to it (MyST ``{ref}``)."""
    extra = f" {other_name} |" if other is not None else ""
    head = "| quantity | paper says | criterion | we measure |" + extra + " verdict |" + (" note |" if note else "")
    lines = [head, "|---|---|---|---|" + ("---|" if other is not None else "") + "---|" + ("---|" if note else "")]
    for r in rows_:
        quantity = _fmt(r["quantity"])
        if links and r.get("figure"):
            quantity += f" ({{ref}}`figure <{r['figure']}>`)"
        cells = [quantity, _fmt(r["paper"]), _fmt(r.get("criterion")), _fmt(r["ours"])]
        verdict_ = f"**{r['verdict']}**"
        if other is not None:
            o = other.get(r["quantity"])
            cells.append(_fmt(o["ours"]) if o else "–")
            if o and o["verdict"] != r["verdict"]:
                verdict_ += f" ({other_name}: **{o['verdict']}**)"
        lines.append("| " + " | ".join(cells + [verdict_] + ([_fmt(r["note"])] if note else [])) + " |")
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
            out += [f"### {title}", "", *_table(d["rows"], note=False, links=True), ""]
            continue
        ours = {r["quantity"] for r in d["rows"]}
        only = [dict(r, ours=None) for r in a["rows"] if r["quantity"] not in ours]
        other = {r["quantity"]: r for r in a["rows"]}
        out += [f"### {title}", "", f"*{archive_name}: {_provenance(a)}.*", "",
                *_table(d["rows"] + only, note=False, other=other, other_name=archive_name, links=True), ""]
    return "\n".join(out)


#: Status of a paper result, from the least to the most favourable verdict of its rows.
_ORDER = ("not reproduced", "qualitatively", "reproduced")


def result_status(ref: str, docs: list[dict], illustrates: str | None = None) -> tuple[str, list[tuple[str, dict]]]:
    """Status of the paper's numbered result ``ref`` from the chapters' rows that name it:
    the least favourable of their verdicts; "companion variant" if only our variant is checked;
    "illustrated" for a figure of examples whose rows carry no verdict; "missing" with no row."""
    found = [(d["chapter"], r) for d in docs for r in d["rows"] if r.get("ref") == ref]
    verdicts = [r["verdict"] for _, r in found]
    graded = [v for v in verdicts if v in _ORDER]
    if graded:
        return min(graded, key=_ORDER.index), found
    if "companion variant" in verdicts:
        return "companion variant", found
    if found:
        return ("illustrated" if illustrates else "shown, no verdict"), found
    return "missing", found


def results_table(registry: list[dict], profile: str | None = None) -> str:
    """Every numbered result of the paper (``registry``: entries with ``ref``, ``what``, ``chapter``,
    optional ``illustrates`` and ``why``) with its status at a profile, as Markdown: a count, then a
    table linking each result to the chapter and figure that treat it."""
    docs = load_all(profile)
    titles = {d["chapter"]: d for d in docs}
    lines = ["| result | what the paper states | chapter | status | rows |", "|---|---|---|---|---|"]
    counts: dict[str, int] = {}
    for e in registry:
        for k in ("ref", "what", "chapter"):
            if not e.get(k):
                raise ValueError(f"registry entry {e!r} lacks {k!r}")
        status, found = result_status(e["ref"], docs, e.get("illustrates"))
        counts[status] = counts.get(status, 0) + 1
        d = titles.get(e["chapter"])
        chapter = f"[{d['title']}](../{d['url']}.ipynb)" if d and d.get("url") else e["chapter"]
        if status == "illustrated":
            status = f"illustrated (numbers: {e['illustrates']})"
        if status == "missing" and e.get("why"):
            status = f"missing: {e['why']}"
        figs = sorted({r["figure"] for _, r in found if r.get("figure")})
        where = f"{len(found)}" + "".join(f", {{ref}}`figure <{f}>`" for f in figs)
        lines.append("| " + " | ".join([_fmt(e["ref"]), _fmt(e["what"]), chapter, f"**{_fmt(status)}**", where]) + " |")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"**{len(registry)} numbered results of the paper**: {summary}.\n\n" + "\n".join(lines)


def table(chapter: str):
    """Display the chapter's table in a notebook (returns an IPython Markdown object)."""
    from IPython.display import Markdown
    return Markdown(markdown(chapter))
