"""The verdict logic on constructed metric sets: every rule can fail, and says why."""

from components.core.config import EvalConfig
from components.evaluate.evaluation import decide

CFG = EvalConfig(min_improvement_vs_baseline=0.2, max_slice_regression=0.1, min_slice_rows=50)


def m(mae, bias=0.0):
    return {"mae": mae, "rmse": mae * 1.3, "p90_abs_error": mae * 2, "bias": bias, "n": 1000}


def kpi(std, late=0.08, early=0.06):
    return {"delay_std_s": std, "late_share": late, "early_share": early, "outside_window_share": late + early}


RULES_KPI = kpi(1000, late=0.05, early=0.38)


def slices(*rows):
    return [
        {"slice": name, "rows": n, "candidate": c, "baseline": b, "vs_baseline": c / b - 1} for name, n, c, b in rows
    ]


GOOD_SLICES = slices(("urban", 300, 90, 140), ("rural", 200, 70, 120))
INTERVALS = {"nominal": 0.8, "coverage": 0.81, "mean_width_s": 270.0}


def metrics(cand=None, champion=None, calibrated=None, history=None):
    return {"candidate": cand or m(80), "baseline": m(140, bias=60), "baseline_calibrated": calibrated or m(120),
            "baseline_history": history or m(110), "champion": champion}


def failed(v):
    return [c["check"] for c in v["checks"] if not c["passed"]]


def test_first_model_blessed_when_it_beats_every_baseline():
    v = decide(metrics(), GOOD_SLICES, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG, INTERVALS)
    assert v["blessed"] and v["first_model"], v["reasons"]
    assert any("no champion yet" in r for r in v["reasons"])


def test_the_strongest_baseline_sets_the_bar():
    # 43 % better than the rules, but only 11 % better than the customer-history baseline.
    v = decide(metrics(cand=m(80), history=m(90)), GOOD_SLICES, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG)
    assert not v["blessed"] and failed(v) == ["beats the strongest baseline"]
    assert "strongest baseline_history 90.0 s" in v["checks"][0]["detail"]


def test_bias_must_stay_small():
    v = decide(metrics(cand=m(80, bias=-12)), GOOD_SLICES, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG)
    assert failed(v) == ["per-stop bias within +-5 s"]


def test_route_kpi_must_improve():
    v = decide(metrics(), GOOD_SLICES, {"candidate": kpi(1100), "baseline": RULES_KPI}, CFG)
    assert failed(v) == ["lowers spread of route arrival delay"]
    v = decide(metrics(), GOOD_SLICES, {"candidate": kpi(600, late=0.30, early=0.15), "baseline": RULES_KPI}, CFG)
    assert failed(v) == ["fewer window misses than the rules"]


def test_intervals_must_cover_near_nominal():
    for coverage, ok in ((0.775, True), (0.76, False), (0.84, False)):
        v = decide(metrics(), GOOD_SLICES, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG,
                   {**INTERVALS, "coverage": coverage})
        assert v["blessed"] is ok, (coverage, v["reasons"])
    v = decide(metrics(), GOOD_SLICES, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG,
               {"nominal": None, "coverage": None, "mean_width_s": None})
    assert failed(v) == ["intervals calibrated"]


def test_largest_group_bias_gap_blocks():
    fair = {
        "area_type": {"bias_gap_s": 22.0, "late_share_gap": 0.05},
        "driver_tenure": {"bias_gap_s": 3.0, "late_share_gap": 0.0},
    }
    v = decide(metrics(), GOOD_SLICES, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG, INTERVALS, fair)
    assert failed(v) == ["bias gap between groups at most 15 s"] and "area_type 22.0 s" in v["reasons"][-2]


def test_a_bad_slice_blocks_but_tiny_slices_do_not():
    bad = GOOD_SLICES + slices(("area unseen in training", 80, 150, 120))
    v = decide(metrics(), bad, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG)
    assert not v["blessed"] and any("area unseen in training: +25.0%" in r for r in v["reasons"])
    tiny = GOOD_SLICES + slices(("rare", 10, 150, 120))
    assert decide(metrics(), tiny, {"candidate": kpi(600), "baseline": RULES_KPI}, CFG)["blessed"]


def test_champion_checks_bias_late_share_and_slices():
    base = {"candidate": kpi(600, late=0.08), "baseline": RULES_KPI, "champion": kpi(600, late=0.08)}
    ok = decide(metrics(champion=m(80)), GOOD_SLICES, base, CFG)
    assert ok["blessed"] and not ok["first_model"], ok["reasons"]
    assert failed(decide(metrics(cand=m(82), champion=m(80)), GOOD_SLICES, base, CFG)) == [
        "no regression against champion"
    ]
    assert failed(decide(metrics(cand=m(80, bias=4), champion=m(80, bias=1)), GOOD_SLICES, base, CFG)) == [
        "no more biased than champion"]
    later = {**base, "candidate": kpi(600, late=0.10)}
    assert failed(decide(metrics(champion=m(80)), GOOD_SLICES, later, CFG)) == ["no more late stops than champion"]
    worse = [dict(s, champion=s["candidate"] * 0.8, vs_champion=0.25) for s in GOOD_SLICES]
    assert failed(decide(metrics(champion=m(80)), worse, base, CFG)) == [
        "no slice more than 10% worse than the champion"
    ]


def test_champion_bootstrap_bound_decides_not_the_point_estimate():
    base = {"candidate": kpi(600), "baseline": RULES_KPI, "champion": kpi(600)}
    noisy = {"mae_regression": 0.01, "lower": -0.005, "upper": 0.025, "confidence": 0.95}
    tight = {"mae_regression": 0.01, "lower": 0.006, "upper": 0.014, "confidence": 0.95}
    v = decide(metrics(cand=m(80.8), champion=m(80)), GOOD_SLICES, base, CFG, champion_test=noisy)
    assert failed(v) == ["no regression against champion"]
    assert decide(metrics(cand=m(80.8), champion=m(80)), GOOD_SLICES, base, CFG, champion_test=tight)["blessed"]
