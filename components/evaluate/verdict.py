"""The release gate: every check with its outcome, as data. Blessed only if all pass.

What a route planner needs from a model, in order: that it learned something
(beats the *strongest* simple baseline, not only the biased rules), that routes
planned on it do not run late (bias near zero, fewer window misses than the
rules), that its intervals mean what they say (coverage near nominal), that no
slice or group is served much worse, and that it is not worse than the model in
production beyond noise.
"""

from __future__ import annotations

from components.core.config import EvalConfig
from components.evaluate.baselines import BASELINES, strongest
from components.evaluate.fairness import largest_bias_gap


def _check(checks: list[dict], name: str, passed: bool, detail: str) -> None:
    checks.append({"check": name, "passed": bool(passed), "detail": detail})


def _baseline_checks(checks: list[dict], metrics: dict, cfg: EvalConfig) -> None:
    cand = metrics["candidate"]
    best = strongest(metrics)
    gains = {k: 1 - cand["mae"] / metrics[k]["mae"] for k in BASELINES if metrics.get(k)}
    listed = ", ".join(f"{k} {metrics[k]['mae']:.1f} s ({gains[k]:+.1%})" for k in gains)
    _check(checks, "beats the strongest baseline", gains[best] >= cfg.min_improvement_vs_baseline,
           f"MAE {cand['mae']:.1f} s vs strongest {best} {metrics[best]['mae']:.1f} s: {gains[best]:+.1%} "
           f"(need >= {cfg.min_improvement_vs_baseline:.0%}); {listed}")
    _check(checks, f"per-stop bias within +-{cfg.max_abs_bias_s:g} s", abs(cand["bias"]) <= cfg.max_abs_bias_s,
           f"bias {cand['bias']:+.1f} s (predicted minus measured)")


def _route_checks(checks: list[dict], kpi: dict, cfg: EvalConfig) -> None:
    c, b = kpi["candidate"], kpi["baseline"]
    _check(checks, "lowers spread of route arrival delay", c["delay_std_s"] < b["delay_std_s"],
           f"delay std {c['delay_std_s']:.0f} s vs rules {b['delay_std_s']:.0f} s")
    if "late_share" in c:
        _check(checks, "fewer window misses than the rules", c["outside_window_share"] < b["outside_window_share"],
               f"late {c['late_share']:.1%} + early {c['early_share']:.1%} = {c['outside_window_share']:.1%} vs rules "
               f"late {b['late_share']:.1%} + early {b['early_share']:.1%} = {b['outside_window_share']:.1%}")


def _slice_checks(checks: list[dict], slices: list[dict], cfg: EvalConfig, against: str) -> None:
    key = f"vs_{against}"
    judged = [s for s in slices if s["rows"] >= cfg.min_slice_rows and s.get(key) is not None]
    worst = [s for s in judged if s[key] > cfg.max_slice_regression]
    who = "the rules" if against == "baseline" else "the champion"
    _check(checks, f"no slice more than {cfg.max_slice_regression:.0%} worse than {who}", not worst,
           "; ".join(f"{s['slice']}: {s[key]:+.1%}" for s in worst) or f"{len(judged)} slices checked")


def _champion_checks(checks: list[dict], metrics: dict, kpi: dict, slices: list[dict], cfg: EvalConfig,
                     champion_test: dict | None) -> None:
    cand, champ = metrics["candidate"], metrics["champion"]
    if champion_test is None:  # no per-route errors: the point estimate only
        point = cand["mae"] / champ["mae"] - 1
        champion_test = {"mae_regression": point, "upper": point, "lower": point, "confidence": 0.0}
    t = champion_test
    _check(checks, "no regression against champion", t["upper"] <= cfg.max_regression_vs_champion,
           f"MAE {cand['mae']:.1f} s vs champion {champ['mae']:.1f} s: {t['mae_regression']:+.1%}, paired bootstrap "
           f"over routes {t['confidence']:.0%} bound {t['upper']:+.1%} (limit {cfg.max_regression_vs_champion:+.1%})")
    limit = abs(champ["bias"]) + cfg.champion_bias_tolerance_s
    _check(checks, "no more biased than champion", abs(cand["bias"]) <= limit,
           f"|bias| {abs(cand['bias']):.1f} s vs champion {abs(champ['bias']):.1f} s (limit {limit:.1f} s)")
    if "late_share" in kpi["candidate"] and kpi.get("champion"):
        c, h = kpi["candidate"]["late_share"], kpi["champion"]["late_share"]
        _check(checks, "no more late stops than champion", c <= h + cfg.late_share_tolerance,
               f"late {c:.1%} vs champion {h:.1%} (tolerance {cfg.late_share_tolerance:.1%})")
    _slice_checks(checks, slices, cfg, "champion")


def decide(metrics: dict[str, dict | None], slices: list[dict], kpi: dict[str, dict | None], cfg: EvalConfig,
           intervals: dict | None = None, fairness: dict | None = None, champion_test: dict | None = None) -> dict:
    """The verdict, as data: every check with its outcome. Blessed only if all pass.

    ``intervals`` and ``fairness`` are judged when given (``evaluate`` always gives them).
    """
    checks: list[dict] = []
    _baseline_checks(checks, metrics, cfg)
    if cfg.require_route_kpi_gain:
        _route_checks(checks, kpi, cfg)
    _slice_checks(checks, slices, cfg, "baseline")
    if intervals is not None:
        cov = intervals.get("coverage")
        ok = cov is not None and abs(cov - intervals["nominal"]) <= cfg.interval_coverage_tolerance
        _check(
            checks,
            "intervals calibrated",
            ok,
            f"coverage {cov:.1%} of nominal {intervals['nominal']:.0%} "
            f"(tolerance {cfg.interval_coverage_tolerance:.0%}), "
            f"mean width {intervals['mean_width_s']:.0f} s"
            if cov is not None
            else "the model gives no intervals",
        )
    if fairness:
        grouping, gap = largest_bias_gap(fairness)
        _check(
            checks,
            f"bias gap between groups at most {cfg.max_group_bias_gap_s:g} s",
            gap <= cfg.max_group_bias_gap_s,
            f"largest: {grouping} {gap:.1f} s; "
            + ", ".join(f"{g} {v['bias_gap_s']:.1f} s" for g, v in fairness.items()),
        )
    champ = metrics.get("champion")
    if champ is None:
        _check(
            checks,
            "no regression against champion",
            True,
            "no champion yet: first model, judged against the baselines only",
        )
    else:
        _champion_checks(checks, metrics, kpi, slices, cfg, champion_test)
    blessed = all(c["passed"] for c in checks)
    reasons = [f"{'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}" for c in checks]
    return {"blessed": blessed, "reasons": reasons, "checks": checks, "first_model": champ is None}
