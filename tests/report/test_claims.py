"""'What can be claimed': lost seeds named in the claim's own sentence, and counts that read as English."""
from orthonoise.report.analysis import analyse
from orthonoise.report.render import claims_paragraph

from .fake_runs import linear_curve, write_run


def make_sweep(root, other_configs: int):
    for seed, base in ((1, 2.000), (2, 2.010), (3, 2.005)):
        write_run(root, f"muon/seed={seed}", seed=seed, val=linear_curve(base))
    for seed, value in ((1, 1.94), (2, 1.9498)):
        write_run(root, f"a/seed={seed}", seed=seed, optimizer="orthonoise", alpha=0.03, val=linear_curve(value))
    write_run(root, "a/seed=3", seed=3, optimizer="orthonoise", alpha=0.03, status="diverged", val={50: 9.0})
    for i, alpha in enumerate((1e-3, 2e-3)[:other_configs]):
        for seed, value in ((1, 2.001), (2, 2.008), (3, 2.006 + i / 1000)):
            write_run(root, f"o{i}/seed={seed}", seed=seed, optimizer="orthonoise", alpha=alpha,
                      val=linear_curve(value))


def family_sentence(root) -> str:
    text = claims_paragraph(analyse(root), [], [])
    return next(s for s in text.split(". ") if s.startswith("Against"))


def test_a_claim_whose_arm_lost_a_seed_says_so_in_the_same_sentence(tmp_path):
    make_sweep(tmp_path, other_configs=1)
    sentence = family_sentence(tmp_path)
    better = sentence[sentence.index("alpha=0.03 is better"):]
    assert better.startswith("alpha=0.03 is better (Δ -3.00% on 2 of 3 seeds; 1 diverged, simultaneous upper bound")
    assert sentence.endswith("the other config's interval includes 0")
    assert "other 1 configs" not in sentence


def test_no_clause_for_zero_others_and_plural_for_several(tmp_path):
    make_sweep(tmp_path / "none", other_configs=0)
    assert "other" not in family_sentence(tmp_path / "none")
    make_sweep(tmp_path / "two", other_configs=2)
    assert family_sentence(tmp_path / "two").endswith("the other 2 configs' intervals include 0")
