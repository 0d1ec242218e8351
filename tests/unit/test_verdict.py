"""The verdict logic on constructed metric sets: every rule can fail, and says why."""

from components.config import EvalConfig
from components.evaluate import decide

CFG = EvalConfig(min_improvement_vs_baseline=0.2, max_slice_regression=0.1, min_slice_rows=50)


def m(mae):
    return {"mae": mae, "rmse": mae * 1.3, "p90_abs_error": mae * 2, "bias": 0.0, "n": 1000}


def kpi(std):
    return {"delay_std_s": std}


def slices(*rows):
    return [{"slice": name, "rows": n, "candidate": c, "baseline": b, "vs_baseline": c / b - 1} for name, n, c, b in rows]


GOOD_SLICES = slices(("urban", 300, 90, 140), ("rural", 200, 70, 120))


def test_first_model_blessed_when_it_beats_the_rules():
    v = decide({"candidate": m(80), "baseline": m(140), "champion": None}, GOOD_SLICES,
               {"candidate": kpi(600), "baseline": kpi(1000)}, CFG)
    assert v["blessed"] and v["first_model"]
    assert any("no champion yet" in r for r in v["reasons"])


def test_not_enough_gain_over_baseline():
    v = decide({"candidate": m(120), "baseline": m(140), "champion": None}, GOOD_SLICES,
               {"candidate": kpi(600), "baseline": kpi(1000)}, CFG)
    assert not v["blessed"]
    assert any(r.startswith("FAIL beats business-logic baseline") for r in v["reasons"])


def test_route_kpi_must_improve():
    v = decide({"candidate": m(80), "baseline": m(140), "champion": None}, GOOD_SLICES,
               {"candidate": kpi(1100), "baseline": kpi(1000)}, CFG)
    assert not v["blessed"] and any(r.startswith("FAIL lowers spread") for r in v["reasons"])


def test_a_bad_slice_blocks_but_tiny_slices_do_not():
    bad = GOOD_SLICES + slices(("area unseen in training", 80, 150, 120))
    v = decide({"candidate": m(80), "baseline": m(140), "champion": None}, bad, {"candidate": kpi(600), "baseline": kpi(1000)}, CFG)
    assert not v["blessed"] and any("area unseen in training: +25.0%" in r for r in v["reasons"])
    tiny = GOOD_SLICES + slices(("rare", 10, 150, 120))
    assert decide({"candidate": m(80), "baseline": m(140), "champion": None}, tiny,
                  {"candidate": kpi(600), "baseline": kpi(1000)}, CFG)["blessed"]


def test_regression_against_champion_blocks():
    v = decide({"candidate": m(85), "baseline": m(140), "champion": m(80)}, GOOD_SLICES,
               {"candidate": kpi(600), "baseline": kpi(1000)}, CFG)
    assert not v["blessed"] and not v["first_model"]
    assert any(r.startswith("FAIL no regression against champion") for r in v["reasons"])
