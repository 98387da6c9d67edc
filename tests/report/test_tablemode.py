"""`python -m orthonoise.report --table FILE.csv`: the same engine on a CSV of results from anywhere."""
import json
import math

import pytest

from orthonoise.report import engine
from orthonoise.report.__main__ import main


def write_csv(path, rows, header="group,seed,value"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_json_per_group_with_simultaneous_bounds_and_verdicts(tmp_path, capsys):
    rows = []
    for seed, noise in ((1, 0.001), (2, -0.002), (3, 0.0015)):
        rows += [("muon", seed, 2.0 + noise), ("ortho_a", seed, 1.95 + noise * 1.1),
                 ("ortho_b", seed, 2.0 + noise * 0.9)]
    table = write_csv(tmp_path / "r.csv", rows)
    assert main(["--table", str(table), "--baseline", "muon", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analysis"] == engine.PAIRED and result["baseline"] == "muon"
    a, b = result["groups"]["ortho_a"], result["groups"]["ortho_b"]
    assert a["n"] == 3 and a["high_pct"] < -1 and a["verdict"] == "PASS" and a["low_pct"] < a["delta_pct"]
    assert b["verdict"] == "FAIL" and abs(b["delta_pct"]) < 0.01  # no gain, interval wholly above −1%
    assert main(["--table", str(table), "--baseline", "muon", "--margin", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"]["ortho_a"]["verdict"] == "FAIL"  # 2.5% < 3%


def test_steps_take_the_last_and_repeated_rows_count_once(tmp_path, capsys):
    rows = [("muon", 1, 100, 3.0), ("muon", 1, 500, 2.0), ("muon", 2, 500, 2.02), ("x", 1, 500, 1.9),
            ("x", 2, 500, 1.93), ("x", 2, 500, 1.92)]
    table = write_csv(tmp_path / "r.csv", rows, header="group,seed,step,value")
    assert main(["--table", str(table), "--json"]) == 0  # the first group is the baseline by default
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["baseline"] == "muon" and result["groups"]["x"]["n"] == 2
    assert "group 'x' seed '2' step 500 appears more than once" in captured.err


def test_bad_table_is_one_error_line(tmp_path, capsys):
    table = write_csv(tmp_path / "r.csv", [("a", 1)], header="name,seed")
    assert main(["--table", str(table)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    table = write_csv(tmp_path / "s.csv", [("a", 1, 2.0), ("a", 2, 2.1)])
    assert main(["--table", str(table), "--baseline", "nope"]) == 2
    assert "--baseline 'nope' is not a group" in capsys.readouterr().err


def clear_gain_rows(extra=()):
    rows = []
    for seed, noise in ((1, 0.001), (2, -0.002), (3, 0.0015), (4, 0.0005)):
        rows += [("muon", seed, 2.0 + noise), ("x", seed, 1.90 + noise * 1.1)]
    return rows + list(extra)


@pytest.mark.parametrize("bad", ["nan", "inf", "", None], ids=["nan", "inf", "blank", "short-row"])
def test_a_non_finite_or_missing_value_is_a_diverged_seed_that_forbids_pass(tmp_path, capsys, bad):
    rows = [r for r in clear_gain_rows() if not (r[0] == "x" and r[1] == 4)]
    rows.append(("x", 4) if bad is None else ("x", 4, bad))
    table = write_csv(tmp_path / "r.csv", rows)
    assert main(["--table", str(table), "--baseline", "muon", "--json"]) == 0
    captured = capsys.readouterr()
    x = json.loads(captured.out)["groups"]["x"]
    assert x["n"] == 3 and x["diverged"] == 1 and x["high_pct"] < -1  # the interval alone would PASS
    assert x["verdict"] == "INCONCLUSIVE" and x["reason"] == "diverged seeds: no PASS"
    assert "group 'x' seed 4: no finite value: counted as a diverged seed" in captured.err
    assert main(["--table", str(table), "--baseline", "muon"]) == 0
    assert "x: n=3 (1 diverged)" in capsys.readouterr().out


def test_a_diverged_baseline_seed_forbids_pass_for_every_group(tmp_path, capsys):
    table = write_csv(tmp_path / "r.csv", clear_gain_rows([("muon", 5, "nan"), ("x", 5, 1.9)]))
    assert main(["--table", str(table), "--baseline", "muon", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["groups"]["muon"]["diverged"] == 1 and result["groups"]["x"]["verdict"] == "INCONCLUSIVE"


@pytest.mark.parametrize("value", ["0", "-1.5"])
def test_a_non_positive_value_is_one_error_line_naming_it(tmp_path, capsys, value):
    table = write_csv(tmp_path / "r.csv", clear_gain_rows([("x", 7, value)]))
    assert main(["--table", str(table), "--baseline", "muon"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and "row 10" in captured.err and "column 'value'" in captured.err
    assert f"value {value!r} is not positive" in captured.err


def test_seeds_that_read_as_numbers_are_compared_as_numbers(tmp_path, capsys):
    rows = [(g, f"{s}.0" if g == "x" else s, v) for g, s, v in clear_gain_rows()]
    table = write_csv(tmp_path / "r.csv", rows)
    assert main(["--table", str(table), "--baseline", "muon", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analysis"] == engine.PAIRED and result["groups"]["x"]["verdict"] == "PASS"


def test_identical_values_give_no_interval_and_say_why(tmp_path, capsys):
    rows = [(g, s, v) for g, s, v in clear_gain_rows() if g == "muon"]
    table = write_csv(tmp_path / "r.csv", rows + [("same", s, v) for _, s, v in rows])
    assert main(["--table", str(table), "--baseline", "muon", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)["groups"]["same"]
    assert same["verdict"] == "INCONCLUSIVE" and same["reason"] == engine.NO_SPREAD
    assert same["low_pct"] is None and same["high_pct"] is None and same["delta_pct"] == 0


def test_json_is_strict_with_null_for_undefined(tmp_path, capsys):
    """One seed a group and a diverged one: nothing is estimable, every undefined number is null."""
    table = write_csv(tmp_path / "r.csv", [("muon", 1, 2.0), ("muon", 2, "nan"), ("x", 1, 1.9)])
    assert main(["--table", str(table), "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    result = json.loads(out, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert result["sigma_pct"] is None and result["groups"]["x"]["verdict"] == "INCONCLUSIVE"


def test_empty_csv_bom_header_and_nan_margin(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["--table", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "empty file" in err and err.count("\n") == 1
    header_only = write_csv(tmp_path / "h.csv", [])
    header_only.write_text("group,seed,value\n")
    assert main(["--table", str(header_only)]) == 2
    assert "no data rows" in capsys.readouterr().err
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + write_csv(tmp_path / "plain.csv", clear_gain_rows()).read_bytes())
    assert main(["--table", str(bom), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"]["x"]["verdict"] == "PASS"
    for margin in ("nan", "inf", "-1"):
        assert main(["--table", str(bom), "--margin", margin]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --margin {float(margin)}") and err.count("\n") == 1


def test_many_groups_use_no_multivariate_integrals(tmp_path, capsys):
    """60 groups: Šidák multipliers and adjusted p-values are closed forms (the 100 × 100 timing is
    bench/tablemode_scale.py's)."""
    rows = [(f"g{g}", s, 2.0 * math.exp(0.01 * math.sin(7 * g + 3 * s) + 0.002 * s)) for g in range(60)
            for s in range(4)]
    table = write_csv(tmp_path / "r.csv", rows)
    assert main(["--table", str(table), "--baseline", "g0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    q = engine.sidak_quantile(59, 3)
    assert all(g["baseline"] or g["adjusted_p"] is not None for g in result["groups"].values())
    assert q == pytest.approx(engine.stats.t.ppf(0.5 + 0.95 ** (1 / 59) / 2, 3))
