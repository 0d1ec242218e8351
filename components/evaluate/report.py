"""The evaluation report: Markdown with plots, a model card, and one self-contained copy for the KFP UI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.evaluate.baselines import BASELINES, strongest
from components.evaluate.importance import REDUNDANCY_NOTE

LABELS = {"baseline": "rules", "baseline_calibrated": "rules, bias removed", "baseline_history": "customer history",
          "champion": "champion", "candidate": "candidate"}


def _figure(size: tuple[float, float]):
    # Figure objects, not pyplot: no global backend switch (a notebook keeps its inline plots).
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _save(fig, ax, path: Path, title: str, xlabel: str | None = None, ylabel: str | None = None,
          legend: bool = False) -> None:
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _plots(ev, out: Path, names: list[str]) -> None:
    fig, ax = _figure((9, 6))
    labels = [s["slice"] for s in ev.slices]
    ypos = np.arange(len(labels))
    width = 0.8 / len(names)
    for i, k in enumerate(names):
        ax.barh(ypos + (i - (len(names) - 1) / 2) * width, [s.get(k, np.nan) for s in ev.slices], height=width,
                label=LABELS.get(k, k))
    ax.set_yticks(ypos, labels, fontsize=8)
    ax.invert_yaxis()
    _save(fig, ax, out / "slices.png", "Error by slice", xlabel="MAE (s)", legend=True)

    fig, ax = _figure((7, 4))
    for k in names:
        r = ev.route_kpi[k]
        ax.hist(ev.delays[k] / 60, bins=80, range=(-60, 60), histtype="step",
                label=f"{LABELS.get(k, k)} (late {r['late_share']:.0%}, early {r['early_share']:.0%})")
    window = ev.context.get("thresholds", {}).get("promised_window_s")
    if window:
        for x in (-window / 60, window / 60):
            ax.axvline(x, color="grey", linestyle=":")
    _save(fig, ax, out / "route_delay.png", "Route replay: arrival delay",
          xlabel="arrival delay at stop (min); dotted: the promised window", ylabel="stops", legend=True)

    fig, ax = _figure((7, 4))
    groups = list(ev.importance)
    ax.barh(groups, [ev.importance[g] for g in groups])
    ax.invert_yaxis()
    _save(fig, ax, out / "importance.png", "Grouped permutation importance",
          xlabel="MAE increase when the group is shuffled (s)")

    if ev.errors_by_week is not None:
        fig, ax = _figure((7, 3.5))
        ev.errors_by_week.rename(columns=LABELS).plot(ax=ax, marker="o")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        _save(fig, ax, out / "weeks.png", "Error by held-out week", ylabel="MAE (s)")


def model_card(ev) -> list[str]:
    """Intended use, data, slices, limits and the gate's thresholds: what a user of the model must know."""
    ctx, t = ev.context, ev.context.get("thresholds", {})
    weeks = ctx.get("weeks", {})

    def span(split: str) -> str:
        w = weeks.get(split) or []
        return f"{w[0]} .. {w[-1]} ({len(w)} weeks)" if w else "-"

    nominal = ev.intervals.get("nominal")
    return [
        "## Model card", "",
        "- **Intended use**: planned service time per delivery stop (seconds), for route plans and the "
        "customer's arrival window; the mean is what a route adds up, the interval "
        f"({nominal:.0%} central) what a promised window can be set from." if nominal else
        "- **Intended use**: planned service time per delivery stop (seconds), for route plans.",
        ("- **Not for**: judging individual drivers or customers (the driver is not an input; customers appear "
        "only as salted hashes), or stops outside the areas and season it was trained on without monitoring."),
        (f"- **Data window**: trained on {span('train')}, calibrated (mean correction, intervals) and early-stopped "
        f"on {span('val')}, tested on {span('test')}."),
        ("- **Slices and groups judged**: area type, apartment floor with and without elevator, order size, new and "
        "returning customers, areas unseen in training; bias and late share per area type and driver tenure band."),
        ("- **Limits**: areas opened after training get the unseen-area embedding plus their area type (expect a "
        "larger error there); holiday weeks bring larger orders and were rare in training; heavy-tailed delays "
        "(customer not home) and route-wide shocks (traffic, weather, a driver's bad day) are not predictable "
        "and dominate the arrival delay late on a route."),
        (f"- **Gate**: >= {t.get('min_improvement_vs_baseline', 0):.0%} MAE gain over the strongest baseline; "
        f"|bias| <= {t.get('max_abs_bias_s')} s; fewer window misses (+-{t.get('promised_window_s', 0):.0f} s) than "
        f"the rules; interval coverage within {t.get('interval_coverage_tolerance', 0):.0%} of nominal; bias gap "
        f"between groups <= {t.get('max_group_bias_gap_s')} s; no slice > {t.get('max_slice_regression', 0):.0%} worse "
        f"than the rules or the champion; against the champion: MAE regression bound <= "
        f"{t.get('max_regression_vs_champion', 0):.0%} (paired bootstrap over routes), late share within "
        f"{t.get('late_share_tolerance', 0):.0%}, |bias| within {t.get('champion_bias_tolerance_s')} s."), ""]


def _tables(ev, names: list[str]) -> list[str]:
    m, k = ev.metrics, ev.route_kpi
    best = strongest(m)
    lines = ["", "## Per stop (held-out weeks)", "",
             "| model | MAE s | RMSE s | P90 abs err s | bias s | candidate's gain |", "|---|---:|---:|---:|---:|---:|"]
    for name in [n for n in (*BASELINES, "champion", "candidate") if m.get(n)]:
        r = m[name]
        gain = "" if name == "candidate" else f"{1 - m['candidate']['mae'] / r['mae']:+.1%}"
        mark = " (strongest baseline)" if name == best else ""
        lines.append(f"| {LABELS[name]}{mark} | {r['mae']:.1f} | {r['rmse']:.1f} | {r['p90_abs_error']:.1f} | "
                     f"{r['bias']:+.1f} | {gain} |")
    if m.get("baseline_calibrated"):
        lines += ["", (f"Of the gain over the rules ({m['baseline']['mae']:.1f} s), removing their bias alone is worth "
                  f"{m['baseline']['mae'] - m['baseline_calibrated']['mae']:.1f} s; learning adds "
                  f"{m['baseline_calibrated']['mae'] - m['candidate']['mae']:.1f} s more.")]
    lines += [
        "",
        "## Route replay KPI",
        "",
        "Late: arriving after the promised window; early: before it.",
        "",
        "| model | delay mean s | delay std s | late | early | outside window |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in [n for n in (*BASELINES, "champion", "candidate") if k.get(n)]:
        r = k[name]
        lines.append(f"| {LABELS[name]} | {r['delay_mean_s']:+.0f} | {r['delay_std_s']:.0f} | {r['late_share']:.1%} | "
                     f"{r['early_share']:.1%} | {r['outside_window_share']:.1%} |")
    if ev.windows:
        lines += ["", "## Holiday weeks and normal weeks", "",
                  ("The last weeks of the year are holiday weeks (larger orders); the figures above mix them with "
                  "the normal weeks of the test window, shown apart here."), "",
                  "| window | weeks | model | MAE s | bias s | late | early |", "|---|---|---|---:|---:|---:|---:|"]
        for wname, w in ev.windows.items():
            for name in ("baseline", "candidate"):
                pm, rk = w["metrics"][name], w["route_kpi"][name]
                lines.append(f"| {wname} | {len(w['weeks'])} | {LABELS[name]} | {pm['mae']:.1f} | {pm['bias']:+.1f} | "
                             f"{rk['late_share']:.1%} | {rk['early_share']:.1%} |")
    return lines


def _intervals_fairness(ev) -> list[str]:
    lines = []
    iv = ev.intervals
    if iv.get("coverage") is not None:
        lines += [
            "",
            "## Intervals",
            "",
            (
                f"Nominal {iv['nominal']:.0%} central interval, split-conformal on the validation weeks: coverage on "
                f"the test weeks {iv['coverage']:.1%} (below {iv['below_share']:.1%}, above {iv['above_share']:.1%}), "
                f"mean width {iv['mean_width_s']:.0f} s."
            ),
        ]
        for w, c in iv.get("by_window", {}).items():
            lines.append(f"- {w}: coverage {c['coverage']:.1%}, mean width {c['mean_width_s']:.0f} s")
    if ev.fairness:
        min_rows = ev.context.get("thresholds", {}).get("min_group_rows")
        lines += [
            "",
            "## Groups (fairness)",
            "",
            (
                f"Gaps are taken between groups of at least {min_rows} stops; a smaller group (a few drivers' routes) "
                "is shown but not judged: its figures are those routes' shocks more than the model."
            ),
            "",
            "| grouping | group | stops | bias s | MAE s | late | early | judged |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for grouping, g in ev.fairness.items():
            for name, v in g["groups"].items():
                lines.append(f"| {grouping} | {name} | {v['rows']} | {v['bias_s']:+.1f} | {v['mae_s']:.1f} | "
                             f"{v['late_share']:.1%} | {v['early_share']:.1%} | {'yes' if v.get('judged') else 'no'} |")
        lines += [""] + [f"- {grouping}: bias gap {g['bias_gap_s']:.1f} s, late-share gap {g['late_share_gap']:.1%}, "
                         f"MAE gap {g['mae_gap_s']:.1f} s" for grouping, g in ev.fairness.items()]
    if ev.champion_test:
        t = ev.champion_test
        lines += [
            "",
            "## Against the champion",
            "",
            (
                f"Paired bootstrap over {t['routes']} routes ({t['samples']} resamples): relative MAE regression "
                f"{t['mae_regression']:+.2%}, bounds [{t['lower']:+.2%}, {t['upper']:+.2%}] at {t['confidence']:.0%}."
            ),
        ]
    return lines


def write_report(ev, out_dir: str | Path, title: str = "Evaluation") -> Path:
    """Markdown report with PNG plots; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [k for k in ("baseline", "baseline_calibrated", "champion", "candidate") if ev.metrics.get(k)]
    _plots(ev, out, names)
    v = ev.verdict
    lines = [f"# {title}", "", f"**Verdict: {'BLESSED' if v['blessed'] else 'NOT BLESSED'}**", ""]
    lines += [f"- {r}" for r in v["reasons"]]
    lines += _tables(ev, names)
    lines += ["", "![route delay](route_delay.png)"]
    lines += _intervals_fairness(ev)
    lines += ["", "## Slices", "", "| slice | rows | rules MAE | candidate MAE | candidate bias | vs rules |",
              "|---|---:|---:|---:|---:|---:|"]
    for s in ev.slices:
        lines.append(f"| {s['slice']} | {s['rows']} | {s['baseline']:.1f} | {s['candidate']:.1f} | "
                     f"{s['candidate_bias']:+.1f} | {s['vs_baseline']:+.1%} |")
    lines += ["", "![slices](slices.png)", "", "## What the model relies on", "", REDUNDANCY_NOTE, ""]
    hidden = ev.importance_history_hidden
    lines += ["| group | MAE increase when shuffled, s | the same, history hidden, s |", "|---|---:|---:|"]
    lines += [f"| {g} | {d:+.1f} | {hidden.get(g, float('nan')):+.1f} |" for g, d in ev.importance.items()]
    lines += ["", "![importance](importance.png)", "", "![weeks](weeks.png)", ""]
    lines += model_card(ev)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def inline_images(markdown_path: str | Path) -> str:
    """The report with its PNGs embedded as data URIs: one file the KFP UI can show."""
    import base64
    import re

    path = Path(markdown_path)

    def embed(match: re.Match) -> str:
        png = path.parent / match.group(2)
        if not png.exists():
            return ""
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", embed, path.read_text())
