"""`python -m orthonoise.report --table FILE.csv`: the same engine on a CSV of results from anywhere."""
import json

from orthonoise.report.__main__ import main


def write_csv(path, rows, header="group,seed,value"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_json_per_group_with_simultaneous_bounds_and_verdicts(tmp_path, capsys):
    rows = []
    for seed, noise in ((1, 0.001), (2, -0.002), (3, 0.0015)):
        rows += [("muon", seed, 2.0 + noise), ("ortho_a", seed, 1.95 + noise * 1.1), ("ortho_b", seed, 2.0 + noise)]
    table = write_csv(tmp_path / "r.csv", rows)
    assert main(["--table", str(table), "--baseline", "muon", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analysis"] == "blocked Dunnett" and result["baseline"] == "muon"
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
