"""The per-suite sections of the benchmark report: Markdown tables, the plots beside them,
and the cell formatting they share with the headline (:mod:`bench.report`).

Each ``_<suite>(name, d, out)`` renders one result file ``d`` (named ``name``) of its suite
as Markdown lines, writing its plot (``quality-vs-data-*.png``, ``time-vs-error-*.png``)
into ``out``; :data:`SECTIONS` maps each suite to its title and renderer.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.suite_common import OURS, SUBJECT


def _f(v, fmt="{:.3f}", none="–") -> str:
    if v is None:
        return none
    try:
        if isinstance(v, float) and not math.isfinite(v):
            return "nan"
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def _label(d: dict) -> str:
    tag = (d.get("args") or {}).get("tag")
    kind = "quick" if d.get("quick") else ("off-grid run " + tag if tag else "full")
    return f"{d.get('device', '?')}, {kind}"


def _overhead(seconds: float, fraction: float) -> str:
    if seconds <= 0:
        return f"≤ 0 s (below the run-to-run noise: {seconds:+.2f} s, {100 * fraction:+.0f} %)"
    return f"{seconds:.2f} s ({100 * fraction:.0f} % of compute)"


def _ci(interval, fmt="{:.2f}") -> str:
    """`` (95 % CI a–b)`` or nothing when the result has no interval (older files)."""
    if not interval or len(interval) != 2:
        return ""
    return f" (95 % CI {fmt.format(interval[0])} – {fmt.format(interval[1])})"


def _engine_order(names) -> list[str]:
    ours = [n for n in OURS if n in names]
    return ours + sorted(n for n in names if n not in OURS)


def _machine_line(d: dict) -> str:
    m = d.get("machine", {})
    la = d.get("load_average_start")
    return (
        f"{m.get('cpu') or '?'}; {m.get('cores_available')} cores available; "
        f"torch {m.get('versions', {}).get('torch')}; threads per engine "
        f"{d.get('threads')}; load average at start {la} / end "
        f"{d.get('load_average_end')}; {m.get('timestamp')}"
    )


# ----------------------------------------------------------------------------- plots
def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plot_quality(d: dict, out: Path, stem: str) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    rows = [r for r in d.get("rows", []) if r.get("ok")]
    doses = sorted({r["dose"] for r in rows}, reverse=True)
    if not doses:
        return None
    fig, axes = plt.subplots(1, len(doses), figsize=(5.2 * len(doses) + 1.6, 3.8), squeeze=False)
    for ax, dose in zip(axes[0], doses, strict=True):
        for eng in _engine_order({r["engine"] for r in rows}):
            pts = sorted(
                (r["fraction"], r["complex_error"])
                for r in rows
                if r["engine"] == eng and r["dose"] == dose
            )
            if pts:
                x, y = zip(*pts, strict=True)
                lw = 2.2 if eng == SUBJECT else 1.2
                ax.plot([100 * v for v in x], y, marker="o", lw=lw, label=eng)
        ax.set_xlabel("positions kept (%)")
        ax.set_ylabel("complex error (aligned)")
        ax.set_yscale("log")
        ax.set_title(f"dose {dose:g} photons/frame")
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    name = f"quality-vs-data-{stem}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _plot_speed(d: dict, out: Path, stem: str) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    rows = [r for r in d.get("rows", []) if r.get("curve")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    for r in sorted(
        rows, key=lambda r: _engine_order([x["engine"] for x in rows]).index(r["engine"])
    ):
        xs = [c["seconds"] for c in r["curve"] if math.isfinite(c["error"])]
        ys = [c["error"] for c in r["curve"] if math.isfinite(c["error"])]
        ax.plot(
            xs, ys, marker="o", ms=3, lw=2.2 if r["engine"] == SUBJECT else 1.2, label=r["engine"]
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cumulative epoch time (s)")
    ax.set_ylabel("complex error (aligned)")
    ax.set_title(f"time vs error ({_label(d)}, {d.get('threads')} thread(s))")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    name = f"time-vs-error-{stem}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


# ----------------------------------------------------------------------------- sections
def _quality(name: str, d: dict, out: Path) -> list[str]:
    rows = d.get("rows", [])
    g = d.get("grid", {})
    L = [
        f"### Quality vs data kept ({_label(d)}) — `{name}`",
        "",
        f"Simulated far field: {g.get('n_positions')} Fermat-spiral positions, "
        f"{g.get('frame_size')} px frames, overlap {g.get('overlap')}, zone-plate probe; "
        f"probe prior `{d.get('probe_prior')}` for every engine; same kept subset, uniform "
        f"object start and {g.get('epochs')} epochs for every engine. Error over the region "
        "the kept frames light. " + _machine_line(d),
        "",
    ]
    engines = _engine_order({r["engine"] for r in rows})
    cols = sorted({(r["dose"], r["fraction"]) for r in rows}, key=lambda t: (-t[0], -t[1]))
    L.append("Complex error (lower is better):")
    L.append("")
    L.append("| engine | " + " | ".join(f"dose {dz:g}, {fr:.0%}" for dz, fr in cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    for e in engines:
        cells = []
        for dz, fr in cols:
            r = next(
                (r for r in rows if r["engine"] == e and r["dose"] == dz and r["fraction"] == fr),
                None,
            )
            if r is None:
                cells.append("–")
            elif not r.get("ok"):
                cells.append("failed")
            else:
                best = min(
                    (
                        x.get("complex_error", math.inf)
                        for x in rows
                        if x.get("ok") and x["dose"] == dz and x["fraction"] == fr
                    ),
                    default=None,
                )
                v = _f(r.get("complex_error"), "{:.4f}")
                cells.append(f"**{v}**" if best == r.get("complex_error") else v)
        L.append(f"| {e} | " + " | ".join(cells) + " |")
    L.append("")
    small = min((fr for _, fr in cols), default=None)
    if small is not None:
        L.append(
            f"At {small:.0%} kept: phase PSNR (dB) / phase SSIM / FRC vs truth "
            "(cycles/px, 0.5 threshold) / s per epoch:"
        )
        L.append("")
        doses = sorted({dz for dz, _ in cols}, reverse=True)
        L.append("| engine | " + " | ".join(f"dose {dz:g}" for dz in doses) + " |")
        L.append("|---|" + "---|" * len(doses))
        for e in engines:
            cells = []
            for dz in doses:
                r = next(
                    (
                        r
                        for r in rows
                        if r["engine"] == e
                        and r["dose"] == dz
                        and r["fraction"] == small
                        and r.get("ok")
                    ),
                    None,
                )
                cells.append(
                    "–"
                    if r is None
                    else f"{_f(r.get('phase_psnr'), '{:.1f}')} / "
                    f"{_f(r.get('phase_ssim'), '{:.3f}')} / "
                    f"{_f(r.get('frc_resolution'), '{:.3f}')} / "
                    f"{_f(r.get('times', {}).get('epoch_s_median'), '{:.3f}')}"
                )
            L.append(f"| {e} | " + " | ".join(cells) + " |")
        L.append("")
    png = _plot_quality(d, out, Path(name).stem)
    if png:
        L += [f"![quality vs data]({png})", ""]
    for f in sorted(out.glob(f"{Path(name).stem}-preview-*.png")):
        L += [f"![{f.stem}]({f.name})", ""]
    if d.get("skipped_engines"):
        L.append(
            "Skipped engines: " + "; ".join(f"{k} ({v})" for k, v in d["skipped_engines"].items())
        )
        L.append("")
    failed = [r for r in rows if not r.get("ok")]
    for r in failed:
        L.append(
            f"- {r['engine']} failed at dose {r['dose']:g}, {r['fraction']:.0%}: "
            f"{r.get('error_message')}"
        )
    return L


def _speed(name: str, d: dict, out: Path) -> list[str]:
    g = d.get("grid", {})
    fl = d.get("fft_floor_s")
    L = [
        f"### Speed ({_label(d)}) — `{name}`",
        "",
        f"{g.get('n_positions')} frames of {g.get('frame_size')} px, {g.get('epochs')} "
        f"epochs, true probe as prior, {d.get('threads')} torch thread(s) for every engine. "
        f"FFT floor (fft2 + ifft2 of all frames, batched, same threads, min of before/after "
        f"the engines): **{_f(fl, '{:.4f}')} s** per epoch. " + _machine_line(d),
        "",
    ]
    targets = sorted(
        {t for r in d.get("rows", []) for t in (r.get("time_to_error") or {})},
        key=float,
        reverse=True,
    )
    L.append(
        "| engine | s/epoch (median) | × FFT floor | first epoch s | setup s | import s | "
        "final error | " + " | ".join(f"s to ≤{t}" for t in targets) + " |"
    )
    L.append("|---|---|---|---|---|---|---|" + "---|" * len(targets))
    for r in sorted(
        d.get("rows", []),
        key=lambda r: _engine_order([x["engine"] for x in d["rows"]]).index(r["engine"]),
    ):
        if not r.get("ok"):
            L.append(f"| {r['engine']} | failed: {r.get('error_message')} |")
            continue
        t = r["times"]
        tte = r.get("time_to_error") or {}
        L.append(
            f"| {r['engine']} | {_f(t.get('epoch_s_median'), '{:.4f}')} | "
            f"{_f(t.get('x_fft_floor'), '{:.0f}')} | {_f(t.get('epoch_s_first'))} | "
            f"{_f(t.get('setup_s'), '{:.2f}')} | {_f(t.get('import_s'), '{:.2f}')} | "
            f"{_f(r.get('final_error'), '{:.4f}')} | "
            + " | ".join(
                "n/r" if tte.get(k) is None else _f(tte[k]["seconds"], "{:.2f}") for k in targets
            )
            + " |"
        )
    L.append("")
    h = d.get("headline", {})
    if "rnf_x_fft_floor" in h:
        L.append(
            f"RNF epoch time: **{_f(h.get('rnf_x_fft_floor'), '{:.0f}')}× the FFT floor**"
            + (
                f", **{_f(h.get('rnf_x_ptychi_fastest'), '{:.2f}')}× pty-chi's fastest "
                f"engine** ({h.get('ptychi_fastest')}, "
                f"{_f(h.get('ptychi_fastest_epoch_s'), '{:.4f}')} s/epoch)"
                if "rnf_x_ptychi_fastest" in h
                else ""
            )
            + ", measured in this run."
        )
        L.append("")
    png = _plot_speed(d, out, Path(name).stem)
    if png:
        L += [f"![time vs error]({png})", ""]
    return L


def _realdata(name: str, d: dict, out: Path) -> list[str]:
    L = [
        f"### Real data: half-data FRC ({_label(d)}) — `{name}`",
        "",
        "Two interleaved halves reconstructed independently (different seeds) from the same "
        "priors; FRC of the aligned, mean-removed halves over the well-lit region. "
        "Resolution: the standard first crossing of the half-bit curve after the "
        "low-frequency region, searched up to the band limit where the data measured less "
        "than Nyquist (FPM), in cycles/pixel (0.5 = Nyquist; higher is better) and metres "
        "where the pixel size is known. The last crossing of the 5-ring-smoothed curve is "
        "shown only as a diagnostic: it is no resolution. " + _machine_line(d),
        "",
    ]
    for ds, info in d.get("datasets", {}).items():
        if "skipped" in info:
            L += [f"- **{ds}**: skipped ({info['skipped']})", ""]
            continue
        L.append(
            f"**{ds}** ({info.get('modality')}, {info.get('n_frames')} frames of "
            f"{info.get('frame_shape')}, {info.get('epochs')} epochs per half"
            + (
                f", central {info.get('central_box_px'):.0f} px box"
                if info.get("central_box_px")
                else ""
            )
            + ")"
        )
        L.append("")
        L.append(
            "| engine | half-bit, first crossing (cyc/px) | resolution | 1/7 (cyc/px) | "
            "diagnostic: last smoothed crossing | min FRC to 0.125 cyc/px | s/epoch (half A) |"
        )
        L.append("|---|---|---|---|---|---|---|")
        for r in [r for r in d.get("rows", []) if r["dataset"] == ds]:
            if not r.get("ok"):
                L.append(f"| {r['engine']} | failed: {r.get('error_message')} | | | | | |")
                continue
            m = r.get("frc_halfbit_m")
            res = "–" if m is None else f"{m * 1e9:.0f} nm"
            L.append(
                f"| {r['engine']} | {_f(r.get('frc_halfbit_cyc_px'))} | {res} | "
                f"{_f(r.get('frc_onesev_cyc_px'))} | "
                f"{_f(r.get('diag_frc_last_halfbit_smoothed_cyc_px'))} | "
                f"{_f(r.get('frc_min_to_quarter_nyquist'))} | "
                f"{_f((r.get('times') or [{}])[0].get('epoch_s_median'), '{:.3f}')} |"
            )
        L.append("")
        if info.get("skipped_engines"):
            L.append(
                "Not run: " + "; ".join(f"{k} ({v})" for k, v in info["skipped_engines"].items())
            )
            L.append("")
        if info.get("preview") and (out / info["preview"]).exists():
            L += [f"![{ds}]({info['preview']})", ""]
    return L


def _pipeline(name: str, d: dict, out: Path) -> list[str]:
    g = d.get("grid", {})
    L = [
        f"### Pipeline cost ({_label(d)}) — `{name}`",
        "",
        f"Simulated coded data, {g.get('frame_size')} px frames, {g.get('grid')} detector "
        f"tiles, RNF {g.get('epochs')} epochs per tile, 1 torch thread per worker. "
        + _machine_line(d),
        "",
    ]
    if "compute_per_tile_s" not in d:
        return L + ["(incomplete run)", ""]
    fl = d.get("flows", {})
    f1, f2 = fl.get("1", fl.get(1, {})), fl.get("2", fl.get(2, {}))
    p = d.get("projection_1gpx", {})
    L += [
        "| quantity | value |",
        "|---|---|",
        f"| engine compute per tile (direct `run_engine`) | "
        f"{_f(d['compute_per_tile_s'], '{:.2f}')} s |",
        f"| `stages.reconstruct_tile` per tile (store I/O, priors) | "
        f"{_f(d['stage_per_tile_s'], '{:.2f}')} s "
        f"(+{100 * d['stage_overhead_fraction']:.1f} %) |",
        f"| Prefect + Dask flow per tile, 1 worker (slope of the flow time over "
        f"{len(f1.get('flow_s', {}))} tile counts) | {_f(d.get('flow_per_tile_1w_s'), '{:.2f}')} s"
        f"{_ci(f1.get('per_tile_ci95_s'), '{:.2f}')} |",
        f"| orchestration overhead per tile | "
        f"{_overhead(d['overhead_per_tile_s'], d['overhead_fraction'])}"
        f"{_ci(d.get('overhead_per_tile_ci95_s'), '{:.3f}')} |",
        f"| compute per tile above which overhead < 5 % | "
        f"{_f(d.get('compute_s_for_5pct'), '{:.0f}')} s |",
        f"| fixed flow cost (intercept: cluster start/stop, worker imports, API), 1 / 2 "
        f"workers | {_f(f1.get('fixed_s'), '{:.1f}')} / {_f(f2.get('fixed_s'), '{:.1f}')} s |",
        f"| per-tile time 1 → 2 workers (speed-up) | "
        f"{_f(f1.get('per_tile_s', f1.get('marginal_s')), '{:.2f}')} → "
        f"{_f(f2.get('per_tile_s', f2.get('marginal_s')), '{:.2f}')} s "
        f"({_f(d.get('scaling_1_to_2'), '{:.2f}')}×) |",
        f"| projected 1-gigapixel coded field, 2 workers / 1 worker | "
        f"{_f(p.get('hours_2_workers'), '{:.1f}')}{_ci(p.get('hours_2_workers_ci95'), '{:.1f}')}"
        f" / {_f(p.get('hours_1_worker'), '{:.1f}')}{_ci(p.get('hours_1_worker_ci95'), '{:.1f}')}"
        f" h ({p.get('epochs')} epochs, this tile size) |",
        "",
    ]
    mem = d.get("memory", [])
    if mem:
        L += [
            "Peak memory of one worker process reconstructing one tile:",
            "",
            "| frame (tile) px | object px | peak RSS MiB | RSS before the tile MiB | "
            "tile increment MiB | s |",
            "|---|---|---|---|---|---|",
        ]
        for m in mem:
            if "error" in m:
                L.append(f"| {m.get('frame_size')} | failed | | | | |")
                continue
            L.append(
                f"| {m['frame_size']} | {m.get('object_shape')} | "
                f"{_f(m['peak_rss_mib'], '{:.0f}')} | "
                f"{_f(m['before_tile_rss_mib'], '{:.0f}')} | "
                f"{_f(m['tile_rss_mib'], '{:.0f}')} | {_f(m['seconds'], '{:.1f}')} |"
            )
        L.append("")
    return L


#: Suite -> (section title, renderer), in report order.
def _grid(name: str, d: dict, out: Path) -> list[str]:
    """The yardstick grid's summary: per cell the best engine at equal epochs and at
    equal time, and the default engine (``SUBJECT``), each as median [min-max] of the
    complex error over the test cases (the per-engine tables are in the grid's own
    markdown beside the JSON)."""

    def cell(stats: dict, view: str, engine: str) -> str:
        v = {k: _f(x, "{:.4f}") for k, x in stats[engine][view].items()}
        return f"{engine} {v['median']} [{v['min']}-{v['max']}]"

    def best(stats: dict, view: str) -> str:
        ok = {k: e[view]["median"] for k, e in stats.items()
              if e[view]["median"] is not None and math.isfinite(e[view]["median"])}  # fmt: skip
        return cell(stats, view, min(ok, key=ok.get)) if ok else "–"

    L = [f"### Yardstick grid ({d.get('device', '?')}{', quick' if d.get('quick') else ''})"
         f" — `{name}`", "",
         f"{_machine_line(d)}. Settings frozen in `{Path(d.get('settings_file', '')).name}` "
         "(chosen on disjoint tuning cases); complex error, median [min-max] over the test "
         f"cases; per-engine tables: `{Path(name).with_suffix('.md')}`.", "",
         f"| cell | best, equal epochs | {SUBJECT}, equal epochs | best, equal time "
         f"| {SUBJECT}, equal time |", "|---|---|---|---|---|"]  # fmt: skip
    for c, summ in d.get("summary", {}).items():
        st = summ["engines"]
        own = [cell(st, v, SUBJECT) if SUBJECT in st else "–"
               for v in ("equal_epochs", "equal_time")]  # the default engine's row
        L.append(f"| {c} | {best(st, 'equal_epochs')} | {own[0]} | "
                 f"{best(st, 'equal_time')} | {own[1]} |")
    return L + [""]


SECTIONS = {
    "grid": ("Yardstick grid", _grid),
    "quality": ("Quality vs data", _quality),
    "speed": ("Speed", _speed),
    "realdata": ("Real data", _realdata),
    "pipeline": ("Pipeline cost", _pipeline),
}
