"""Markdown report (tables + matplotlib plots) from the benchmark JSON files.

``python -m bench report`` (also run at the end of ``python -m bench all``) reads every
``bench/results/{grid,quality,realdata,speed,pipeline}-<device>[-quick].json`` (files whose
``suite`` field names that suite; the full grid only, where one ran) and writes
``bench/results/report.md`` with a headline table (for the README), the yardstick grid's
best engine per cell, the per-suite tables, and the plots ``quality-vs-data-*.png`` and
``time-vs-error-*.png``.

This module loads the result files, checks that they come from one code state, and
assembles the report (headline table first); the per-suite tables and plots are
:mod:`bench.report_sections`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.report_sections import SECTIONS, _ci, _engine_order, _overhead
from bench.suite_common import OURS, RESULTS, SUBJECT

SUITES = ("grid", "quality", "speed", "realdata", "pipeline")


def _load(out: Path) -> dict[str, list[tuple[str, dict]]]:
    found: dict[str, list[tuple[str, dict]]] = {s: [] for s in SUITES}
    for f in sorted(out.glob("*.json")):
        suite = f.stem.split("-", 1)[0]
        if suite not in found:
            continue
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        # other records share the prefix (pipeline-rnf-star.json: one timed run, quoted
        # in docs/rnf.md); only the suite's own files hold its tables
        if isinstance(doc, dict) and doc.get("suite") == suite:
            found[suite].append((f.name, doc))
    # the yardstick: grid-<device>[-quick].json only (a --tag run is a cell subset or an
    # off-grid cell, never the yardstick), the full grid where one ran (quick: a smoke run)
    found["grid"] = [x for x in found["grid"] if not (x[1].get("args") or {}).get("tag")]
    found["grid"] = [x for x in found["grid"] if not x[1].get("quick")] or found["grid"]
    return found


# ----------------------------------------------------------------------------- headline
def headline_rows(found: dict) -> list[str]:
    """The table for the README: one line per claim, from the newest full (else quick)."""

    def pick(suite):
        items = found.get(suite, [])
        full = [x for x in items if not x[1].get("quick")]
        return (full or items or [(None, None)])[0]

    L = ["| claim | result | source |", "|---|---|---|"]
    name, g = pick("grid")
    if g and g.get("summary"):
        L += _grid_headline(name, g["summary"])
    for name, q in found.get("quality", []):
        h = q.get("headline") or {}
        for dose, v in (h.get("per_dose") or {}).items():
            errs, failed = v["errors"], v.get("failed") or []
            others = ", ".join(f"{k} {errs[k]:.3f}" for k in _engine_order(errs) if k != SUBJECT)
            others += "".join(f", {k} failed" for k in failed)
            if v.get("rnf") is None:
                L.append(f"| RNF at {h['fraction']:.0%} of positions, dose {float(dose):g} | "
                         f"**RNF failed**; {others.lstrip(', ')} | `{name}` |")
                continue
            peers = {k: e for k, e in errs.items() if k not in OURS}
            best_peer = min(peers, key=peers.get) if peers else None
            vs_peers = (
                "not known (a peer failed)"
                if v.get("rnf_ahead_of_all_peers") is None and peers
                else "no peer run"
                if not peers
                else "**yes**"
                if v.get("rnf_ahead_of_all_peers")
                else f"**no** (best peer: {best_peer} {peers[best_peer]:.3f})"
            )
            vs_all = (
                "not known (an engine failed)"
                if v["rnf_ahead_of_all"] is None
                else "yes"
                if v["rnf_ahead_of_all"]
                else f"no (best: {v['best_other']} {v['best_other_error']:.3f})"
            )
            L.append(
                f"| RNF ahead of every peer engine in complex error at {h['fraction']:.0%} "
                f"of positions, dose {float(dose):g}, {q.get('grid', {}).get('epochs')} "
                f"epochs each | {vs_peers}; lowest of all engines incl. ptyflow's: {vs_all}. "
                f"RNF {v['rnf']:.3f}; {others} | `{name}` |"
            )
    name, s = pick("speed")
    if s and s.get("headline"):
        h = s["headline"]
        if "rnf_x_fft_floor" in h:
            L.append(
                f"| RNF epoch time vs the FFT floor | {h['rnf_x_fft_floor']:.0f}× "
                f"({h['epoch_s']['rnf']:.3f} s vs {h['fft_floor_s'] * 1e3:.2f} ms) | "
                f"`{name}` |"
            )
        if "rnf_x_ptychi_fastest" in h:
            L.append(
                f"| RNF epoch time vs pty-chi's fastest engine ({h['ptychi_fastest']}) | "
                f"{h['rnf_x_ptychi_fastest']:.2f}× | `{name}` |"
            )
        for k in ("rpie", "epie"):
            if k in h.get("epoch_s", {}):
                L.append(
                    f"| {k} epoch time vs the FFT floor | "
                    f"{h['epoch_s'][k] / h['fft_floor_s']:.0f}× | `{name}` |"
                )
    name, r = pick("realdata")
    if r:
        for row in r.get("rows", []):
            if row.get("ok"):
                L.append(
                    f"| half-data FRC (standard first half-bit crossing), {row['dataset']}, "
                    f"{row['engine']} | "
                    f"{row['frc_halfbit_cyc_px']:.3f} cyc/px | `{name}` |"
                )
    name, p = pick("pipeline")
    if p and "overhead_fraction" in p:
        L.append(
            f"| Prefect + Dask overhead per tile ({p['compute_per_tile_s']:.1f} s tiles) | "
            f"{_overhead(p['overhead_per_tile_s'], p['overhead_fraction'])}"
            f"{_ci(p.get('overhead_per_tile_ci95_s'), '{:.3f}')}; fixed cost per flow "
            f"{p['flows'].get('1', {}).get('fixed_s', float('nan')):.0f} s | `{name}` |"
        )
        L.append(f"| speed-up 1 → 2 workers | {p['scaling_1_to_2']:.2f}× | `{name}` |")
        pr = p.get("projection_1gpx", {})
        if pr:
            L.append(
                f"| projected 1-gigapixel coded field (2 workers, this machine) | "
                f"{pr['hours_2_workers']:.0f} h{_ci(pr.get('hours_2_workers_ci95'), '{:.0f}')}"
                f" | `{name}` |"
            )
    return L


def _grid_headline(name: str, summary: dict) -> list[str]:
    """The yardstick's verdict (held-out cases, frozen settings): RNF's median over the best
    other engine's, per cell, at equal epochs and at equal time. Every cell counts: a cell
    where RNF failed (no finite median; ``inf`` at equal time: nothing within the budget)
    is one where it is not lowest, and an engine that failed is named, never dropped."""
    rows = []
    for col, label in (("equal_epochs", "equal epochs"), ("equal_time", "equal time")):
        ratios, lowest = [], 0
        for cell, c in summary.items():
            med = {k: (v.get(col) or {}).get("median") for k, v in c["engines"].items()}
            rnf = med.pop(SUBJECT, None)
            failed = sorted(k for k, v in med.items() if v is None or math.isnan(v))
            others = {k: v for k, v in med.items() if k not in failed}
            note = f" [{', '.join(failed)} failed]" if failed else ""
            if rnf is None or math.isnan(rnf):
                ratios.append(f"{cell} RNF failed{note}")
                continue
            if not others:
                ratios.append(f"{cell} no other engine finished{note}")
                continue
            best = min(others, key=others.get)
            ratio = rnf / others[best] if math.isfinite(others[best]) else math.inf
            ratios.append(f"{cell} {ratio:.2f} ({best}){note}")
            lowest += rnf < others[best]
        if ratios:
            rows.append(
                f"| RNF's median complex error over the best other engine's, yardstick grid "
                f"(held-out cases, frozen settings), {label} | lowest in **{lowest} of "
                f"{len(ratios)}** cells; {'; '.join(ratios)} | `{name}` |"
            )
    return rows


class MixedCommits(ValueError):
    """The result files were written by different commits (or from uncommitted code)."""


def provenance(d: dict) -> str:
    """``"<commit[:10]>"``, ``"<commit[:10]>+dirty"`` or ``"unknown"`` (files from before
    results recorded their commit)."""
    g = d.get("git") or (d.get("machine") or {}).get("git") or {}
    if not g.get("commit"):
        return "unknown"
    return g["commit"][:10] + ("+dirty" if g.get("dirty") else "")


def check_commits(found: dict, allow_mixed: bool = False) -> set[str]:
    """The set of code states behind ``found``; :class:`MixedCommits` when there is more
    than one and ``allow_mixed`` is not set, naming each file's. (A single dirty state is
    rendered, and flagged at the top of the report.)"""
    by_file = {name: provenance(d) for items in found.values() for name, d in items}
    commits = set(by_file.values())
    if not allow_mixed and len(commits) > 1:
        listing = ", ".join(f"{n}: {c}" for n, c in sorted(by_file.items()))
        raise MixedCommits(
            f"the results come from {len(commits)} code states ({listing}); rerun them at one "
            "commit, or pass --allow-mixed to label every table with its commit"
        )
    return commits


def write_report(out: Path | None = None, allow_mixed: bool = False) -> Path:
    """Write ``report.md`` from the JSON results in ``out``.

    Raises
    ------
    MixedCommits
        The results were written by different code states (commits, or uncommitted code),
        unless ``allow_mixed``: then the report says so at the top and under every table.
    """
    out = Path(out) if out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    found = _load(out)
    commits = check_commits(found, allow_mixed)
    L = [
        "# ptyflow benchmarks",
        "",
        "Generated by `python -m bench report` from the JSON files in this folder "
        "(docs/benchmarks.md explains the suites and how to run them). Every number "
        "below comes from one of those files, named beside it.",
        "",
    ]
    if len(commits) > 1:
        L += [f"**Mixed code states** ({', '.join(sorted(commits))}): results from different "
              "commits are not comparable; each table names its own.", ""]  # fmt: skip
    elif any(c.endswith("+dirty") for c in commits):
        L += [f"**Uncommitted code** ({next(iter(commits))}): not reproducible from git.", ""]
    peers = next(
        (d.get("peers") for items in found.values() for _, d in items if d.get("peers")), None
    )
    if peers and not peers.get("disabled"):
        pk = peers.get("packages", {})
        L.append(
            "Peers: "
            + ", ".join(
                f"{k} {v.get('version')} ({'ok' if v.get('ok') else 'unavailable'})"
                for k, v in pk.items()
            )
            + f"; import shim: {peers.get('shim')}; interpreter "
            f"`{peers.get('interpreter')}`."
        )
        L.append("")
    L += ["## Headline", ""] + headline_rows(found) + [""]
    for suite in SUITES:
        items = found.get(suite, [])
        if not items:
            continue
        title, render = SECTIONS[suite]
        L += [f"## {title}", ""]
        for name, d in items:
            try:
                L += render(name, d, out) + [f"(code: {provenance(d)})", ""]
            except Exception as exc:  # noqa: BLE001 - a malformed file must not stop the rest
                L += [f"(could not render `{name}`: {type(exc).__name__}: {exc})", ""]
    path = out / "report.md"
    path.write_text("\n".join(L) + "\n")
    return path
