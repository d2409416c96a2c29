"""The reproduction grid and report: configs match the CLI, collection and REPRODUCTION.md from real runs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jacviz import grid, report
from jacviz.__main__ import config_from_args, train_parser
from jacviz.checkpoints import SHIPPED_DIR


def _cli_config(*args):
    return config_from_args(train_parser().parse_args(list(args)))


def test_grid_configs_are_the_cli_configs():
    """A run started by hand with `python -m jacviz train` counts as done for the grid (same key)."""
    assert grid.variant_config("none", 3).key() == _cli_config("--seed", "3").key()
    assert grid.variant_config("L2+dropout+JR", 0).key() == _cli_config("--wd", "5e-4", "--dropout", "0.5", "--jr", "0.01").key()
    assert grid.fewshot_config("JR", 3, 2).key() == _cli_config("--jr", "0.01", "--few-shot", "3", "--seed", "2").key()
    assert grid.variant_config("JR", 0, "paper").key() == _cli_config("--jr", "0.01", "--paper-schedule").key()


def test_plan_is_seed_major_and_without_duplicates():
    cs = grid.plan(["table1", "defended"], [0, 1])
    keys = [c.key() for c in cs]
    assert len(keys) == len(set(keys)) == 2 * 5 + 2 * 3  # L2+dropout+JR is in both experiments
    assert [c.seed for c in cs[:10]] == [0] * 5 + [1] * 5
    fs = grid.plan(["fewshot"], [0], fewshot_k=[1, 3], fewshot_runs=2)
    assert len(fs) == 2 * 2 * 5 and {c.few_shot_k for c in fs} == {1, 3} and {c.seed for c in fs} == {0, 1}
    lam = grid.experiment_configs("lambda", [0])
    assert sorted(c.jr for c in lam) == sorted(grid.LAMBDAS) and len({c.label() for c in lam}) == len(lam)
    # the shipped checkpoints are seed 0 of the grid's table1 and defended runs
    done = [c for c in cs if c.seed == 0 and grid.find_checkpoint(c, [SHIPPED_DIR])]
    assert len(done) == 8


def test_mean_ci_is_students_t():
    m, h, n = report.mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(report.mean_ci([5.0])[1]) and report.mean_ci([])[2] == 0
    assert report.agrees((99.0, 0.1, 5), (98.9, 0.1)) and not report.agrees((98.0, 0.1, 5), (98.9, 0.1))


def test_a_robustness_cell_never_rounds_one_unfooled_image_to_zero_percent():
    # 1 image of 200 never fooled by FGSM (ResNet-18 JR, 2026-12-02) printed as "(0% never)" before
    row = {"label": "JR", "n_seeds": 1, "clean": (72.0, float("nan"), 1), "flags": [],
           "median": {"noise": (6.5, float("nan")), "fgsm": (0.353, float("nan"))},
           "never": {"noise": 0.09, "fgsm": 1 / 200}}
    md = report.robustness_markdown([row])
    assert "0.353 (0.5% never)" in md and "6.500 (9% never)" in md and "(0% never)" not in md
    assert report.percent_text(0.25) == "25%" and report.percent_text(0.0) == "0%"
    assert report.percent_text(0.0004) == "0.04%"  # a mean over seeds of 0, 0, 0, 1/500, 0: not "0.0%"
    assert report.threads_text([1, 1]) == "1" and report.threads_text([None]) == "unrecorded"
    assert report.threads_text([2, 1, None, 1]) == "1 (2), 2 (1), unrecorded (1)"
    assert report.and_join(["a"]) == "a" and report.and_join(["a", "b", "c"]) == "a, b and c"


def test_claims_say_whether_the_seeds_resolve_the_gap_they_rest_on():
    """A claim's verdict rests on a gap between two medians: one seed leaves its spread unmeasured;
    with several, the gap's Welch 95% interval t(0.975, ν)·sqrt(s_a²/n_a + s_b²/n_b) must exclude 0."""
    def row(label, noise, n, pgd=(0.2, 0.0)):
        return {"label": label, "n_seeds": n, "jr": None, "median": {"noise": noise, "pgd": pgd}}

    one = report.claims([row("none", (6.0, math.nan), 1), row("JR", (5.7, math.nan), 1)], fig="S3")
    assert one[0][1].startswith("does not hold: largest median noise fooling distance is none")
    assert "(none 6.00, JR 5.70); one seed of none and JR, so how much this gap varies" in one[0][1]
    mixed = report.claims([row("none", (6.0, math.nan), 1), row("JR", (5.7, 0.1), 2)])
    assert "; one seed of none, so" in mixed[0][1]
    # equal variances and n: ν = 2, t = 4.303; half-width 4.303 · sqrt(0.5²/2 + 0.5²/2) = 2.151 > gap 0.3
    wide = report.claims([row("none", (6.0, 0.5), 2), row("JR", (5.7, 0.5), 2)])
    assert "gap 0.300 ± 2.151 (95% interval over seeds, Welch; 2 and 2 seeds): these seeds do not resolve it" in wide[0][1]
    # an unresolved gap leads with that, not with a verdict that would read as a finding
    assert wide[0][1].startswith("unresolved (does not hold on the seeds' mean medians): largest median noise")
    # a holding JR mix is weighed against the best non-JR mix (L2 here, not none)
    tight = report.claims([row("none", (5.0, 0.1), 3), row("L2", (5.5, 0.1), 3), row("JR", (6.5, 0.1), 3)])
    assert tight[0][1].startswith("holds") and "gap 1.000 ± 0.227" in tight[0][1] and "the seeds resolve it" in tight[0][1]
    # the defended claims weigh +JR against +AT, and +JR+AT against the better of the two
    base = [row(lab, (5.0, 0.1), 3, pgd) for lab, pgd in (("L2+dropout", (0.20, 0.01)), ("L2+dropout+AT", (0.30, 0.01)),
                                                          ("L2+dropout+JR", (0.40, 0.01)), ("L2+dropout+JR+AT", (0.41, 0.05)))]
    pgd = dict(report.claims(base))
    assert "gap 0.100" in pgd["Fig. 3b/c: JR alone beats FGSM adversarial training against PGD"]
    assert "the seeds resolve it" in pgd["Fig. 3b/c: JR alone beats FGSM adversarial training against PGD"]
    assert pgd["Fig. 3b/c: JR + AT is the most robust against PGD"].endswith("these seeds do not resolve it")
    # rows without a seed count (hand-built) get no clause
    assert report._seed_spread((1.0, 0.1), None, (2.0, 0.1), 2) == ""


def test_claims_pair_seeds_that_share_weights_and_batches():
    """Run i of every mix starts from the same weights and batches, so the seeds' medians move together
    (MNIST noise, 5 seeds, 2026-12-07: JR 8.86, 11.26, 8.82, 9.23, 9.69 against L2 8.53, 9.21, 8.08, 7.43,
    8.62): Welch's unpaired interval does not resolve their gap, the per-seed differences do."""
    jr, l2 = [8.86, 11.26, 8.82, 9.23, 9.69], [8.53, 9.21, 8.08, 7.43, 8.62]
    diff = np.subtract(jr, l2)
    half = 2.776445 * diff.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)

    def row(label, xs, paired=True):
        out = {"label": label, "n_seeds": 5, "jr": None, "median": {"noise": (np.mean(xs), np.std(xs, ddof=1))}}
        if paired:
            out["per_seed"] = {"noise": dict(enumerate(xs))}
        return out
    unpaired = report.claims([row("L2", l2, False), row("JR", jr, False)])[0][1]
    assert "Welch; 5 and 5 seeds): these seeds do not resolve it" in unpaired and unpaired.startswith("unresolved")
    paired = report.claims([row("L2", l2), row("JR", jr)])[0][1]
    assert paired.startswith("holds: largest median noise fooling distance is JR")
    r = np.corrcoef(jr, l2)[0, 1]
    assert (f"gap {diff.mean():.3f} ± {half:.3f} (95% interval of the 5 per-seed differences, paired by seed, "
            f"r = {r:.2f}): the seeds resolve it") in paired
    # only seeds both have are paired; one shared seed is too few, and Welch's interval is used instead
    assert "paired by seed" not in report._seed_spread((9.0, 1.0), 5, (8.0, 1.0), 5, ("JR", "L2"),
                                                      ({0: 9.0, 1: 9.5}, {0: 8.0, 2: 8.5}))
    # an unfooled seed (median inf) cannot be differenced: Welch again
    assert "Welch" in report._seed_spread((9.0, 1.0), 2, (8.0, 1.0), 2, ("JR", "L2"),
                                          ({0: 9.0, 1: math.inf}, {0: 8.0, 1: 8.5}))
    # the shipped records: each row carries every seed's own median, which the group's mean is the mean of
    rob = json.loads((grid.RESULTS_DIR / "mnist_robustness.json").read_text())
    jr_row = next(r for r in report.robustness_rows(rob) if r["label"].split(" [")[0] == "JR")
    seeds = jr_row["per_seed"]["noise"]
    assert sorted(seeds) == [0, 1, 2, 3, 4]
    assert np.mean(list(seeds.values())) == pytest.approx(jr_row["median"]["noise"][0])


def test_claims_rank_unbounded_medians_instead_of_dropping_them():
    """A median of ∞ (over half of the images never fooled within the PGD budget in some seed: MNIST
    L2+dropout+JR and +JR+AT, seeds 0-2, 2026-12-05) beats every finite median; two unbounded ones are
    ranked by the share never fooled. The claims say so instead of silently leaving the row out."""
    inf, nan = math.inf, math.nan

    def row(label, pgd, never):
        return {"label": label, "n_seeds": 3, "jr": None, "median": {"noise": (5.0, 0.1), "pgd": pgd},
                "never": {"noise": 0.0, "pgd": never}}
    rows = [row("L2+dropout", (0.97, 0.07), 0.001), row("L2+dropout+AT", (1.776, 0.001), 0.03),
            row("L2+dropout+JR", (inf, nan), 0.28), row("L2+dropout+JR+AT", (inf, nan), 0.34)]
    pgd = dict(report.claims(rows))
    alone = pgd["Fig. 3b/c: JR alone beats FGSM adversarial training against PGD"]
    assert alone.startswith("holds: median PGD fooling distance L2+dropout+JR ∞ vs L2+dropout+AT 1.776")
    assert "never fooled within the budget in some seed of L2+dropout+JR" in alone
    assert alone.endswith("with an unbounded median the spread of this gap over seeds is not measured")
    both = pgd["Fig. 3b/c: JR + AT is the most robust against PGD"]
    assert both.startswith("holds: L2+dropout+JR+AT ∞, +JR ∞, +AT 1.776, base 0.970")
    assert "ranked by the share never fooled (L2+dropout+JR+AT 34%, L2+dropout+JR 28%)" in both
    rows[3]["never"]["pgd"] = 0.20  # fewer never fooled than +JR: JR + AT is no longer the most robust
    assert dict(report.claims(rows))["Fig. 3b/c: JR + AT is the most robust against PGD"].startswith("does not hold")
    rows[2]["median"]["pgd"] = (2.2, 0.05)  # +JR finite, +JR+AT unbounded: +JR+AT wins
    assert dict(report.claims(rows))["Fig. 3b/c: JR + AT is the most robust against PGD"].startswith("holds")


def test_draw_noise_inverts_the_papers_interval():
    """The per-run std read back from a 15-run 95% CI is the sample std behind it; a single run two
    standard errors above the mean scores z = 2 (the std of a difference of one run and a 15-run mean)."""
    vals = [12.9 + d for d in (-2.1, 0.4, 1.3, -0.7, 2.2, -1.5, 0.0, 0.9, -0.3, 1.8, -2.4, 0.6, -0.2, 1.1, -1.0)]
    m, h, n = report.mean_ci(vals)
    s, z = report.draw_noise((m + 2 * np.std(vals, ddof=1) * math.sqrt(1 + 1 / n), math.nan, 1), (m, h), n)
    assert s == pytest.approx(np.std(vals, ddof=1), rel=1e-9) and z == pytest.approx(2.0, rel=1e-9)
    assert "within what run-to-run scatter" in report.draw_noise_note((m + 0.5, math.nan, 1), (m, h))
    assert "more than run-to-run scatter" in report.draw_noise_note((m - 3 * s, math.nan, 1), (m, h))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Results files from the shipped seed-0 checkpoints: runs collected, robustness of two models on 40 images."""
    out = tmp_path_factory.mktemp("repro")
    configs = grid.plan(["table1", "defended"], [0])
    runs = grid.collect_runs([SHIPPED_DIR], configs)
    assert not runs["missing"] and len(runs["runs"]) == 8
    runs["meta"] = {"schedule": "short"}
    grid.write_json(runs, out / "mnist_runs.json")
    for c in (grid.variant_config("none", 0), grid.variant_config("JR", 0)):
        grid._robust_one((str(grid.find_checkpoint(c, [SHIPPED_DIR])), str(out / "rob" / f"{c.key()}.json"),
                          40, ("noise", "fgsm"), "fast", "cpu"))
    rob = grid.collect_robustness(out / "rob", grid.robustness_configs([0]))
    grid.write_json(rob, out / "mnist_robustness.json")
    return out


def test_collected_runs_carry_the_checkpoint_metrics(results_dir):
    runs = json.loads((results_dir / "mnist_runs.json").read_text())["runs"]
    manifest = {e["key"]: e for e in json.loads((SHIPPED_DIR / "manifest.json").read_text())["checkpoints"]}
    for r in runs:
        assert r["metrics"]["test_acc"] == manifest[r["key"]]["metrics"]["test_acc"]
        assert r["history"] and r["history"][-1]["iteration"] == r["config"]["iterations"]


def test_robustness_collection_groups_by_model(results_dir):
    rob = json.loads((results_dir / "mnist_robustness.json").read_text())
    assert [g["label"] for g in rob["groups"]] == ["none", "JR"]
    for m in rob["models"]:
        assert m["n"] == 40 and set(m["distances"]) == {"noise", "fgsm", "worst"} and len(m["distances"]["noise"]) == 40
    g = {g["label"]: g for g in rob["groups"]}
    # JR moves decision boundaries away from the data: larger median noise fooling distance (Figure 3a)
    assert g["JR"]["fooling"]["noise"]["median_mean"] > g["none"]["fooling"]["noise"]["median_mean"]


def test_report_puts_our_numbers_next_to_the_papers(results_dir, tmp_path):
    md = report.build(results_dir, tmp_path / "REPRODUCTION.md", png=False)
    runs = json.loads((results_dir / "mnist_runs.json").read_text())["runs"]
    rows = {(r["regularizer"], r["column"]): r for r in report.table1_rows(runs)}
    none = [r for r in runs if r["label"] == "none"][0]
    assert rows[("none", "all")]["ours"][0] == pytest.approx(100 * none["metrics"]["test_acc"])
    assert rows[("none", "all")]["paper"] == (98.9, 0.1) and rows[("none", 1)]["note"] == "not run yet"
    # every Table-1 and Table-2 row is there with the paper's value and ours
    for v in report.TABLE1:
        assert report.PAPER_NAMES[v] in md
    assert "80.4 ± 0.7" in md and f"{100 * none['metrics']['usps_acc']:.1f}" in md
    red = report.jacobian_reduction(runs)
    assert red["ratio"] == pytest.approx(none["metrics"]["jac_fro_normalized"]
                                         / [r for r in runs if r["label"] == "JR"][0]["metrics"]["jac_fro_normalized"])
    assert f"{red['ratio']:.1f}×" in md
    # the robustness table and the checked claim come from the collected robustness file
    assert "Fig. 3a: JR is the most effective regularizer against white noise" in md and "| holds" in md
    assert "few-shot k=1: 0 of 15 runs" in md


def test_report_without_results_says_what_to_run(tmp_path, capsys):
    assert report.cli(["--results", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 1
    assert "python -m jacviz grid" in capsys.readouterr().err


def test_collect_keeps_recorded_runs_whose_checkpoints_are_gone(results_dir, tmp_path):
    """Only seed 0 is kept in git: a fresh clone's `grid --stage collect` must not drop the other
    runs from the results files, nor retrain or re-evaluate them."""
    prev_runs = json.loads((results_dir / "mnist_runs.json").read_text())
    prev_rob = json.loads((results_dir / "mnist_robustness.json").read_text())
    gone = grid.fewshot_config("JR", 1, 7)  # a run whose checkpoint is not on disk
    prev_runs["runs"].append({"key": gone.key(), "label": gone.label(), "checkpoint": "runs/mnist/x.pt",
                              "config": gone.to_dict(), "metrics": {"test_acc": 0.5}, "history": [], "meta": {}})
    configs = grid.plan(["table1", "defended"], [0]) + [gone]
    runs = grid.collect_runs([tmp_path], configs, prev_runs)  # no checkpoint anywhere
    assert not runs["missing"] and len(runs["runs"]) == 9 and {r["checkpoint"] for r in runs["runs"]} == {None}
    assert grid.collect_runs([tmp_path], configs)["missing"]  # without the record they are missing
    rob = grid.collect_robustness(tmp_path / "nothing", grid.robustness_configs([0]), prev_rob)
    assert [m["key"] for m in rob["models"]] == [m["key"] for m in prev_rob["models"]]
    assert np.array_equal(rob["models"][0]["distances"]["noise"],
                          np.array([math.inf if v is None else v for v in prev_rob["models"][0]["distances"]["noise"]]))
    # the CLI: nothing to train or evaluate, and the rewritten files keep every record
    res = tmp_path / "results"
    res.mkdir()
    grid.write_json(prev_runs, res / "mnist_runs.json")
    (res / "mnist_robustness.json").write_text((results_dir / "mnist_robustness.json").read_text())
    assert grid.cli(["--experiments", "table1", "--seeds", "0", "--out", str(tmp_path / "runs"), "--also",
                     "--results", str(res), "--robust-seeds", "0", "--workers", "1"]) == 0
    after = json.loads((res / "mnist_runs.json").read_text())
    assert gone.key() in {r["key"] for r in after["runs"]} and len(after["runs"]) == 9
    assert len(json.loads((res / "mnist_robustness.json").read_text())["models"]) == 2
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_few_shot_notes_claim_a_systematic_offset_only_from_several_runs():
    """Every mix above the paper in a column is called a protocol offset only with >= 3 runs each."""
    def runs_for(n_runs):
        return [{"key": f"{v}{s}", "label": v, "config": grid.fewshot_config(v, 30, s).to_dict(),
                 "metrics": {"test_acc": (report.PAPER_TABLE1[v][30][0] + 2.0 + 0.1 * s) / 100}, "history": []}
                for v in report.TABLE1 for s in range(n_runs)]

    one = {(r["regularizer"], r["column"]): r for r in report.table1_rows(runs_for(1))}
    assert "systematic" not in one[("none", 30)]["note"] and "few runs" in one[("none", 30)]["note"]
    assert "standard errors above" in one[("none", 30)]["note"]
    three = {(r["regularizer"], r["column"]): r for r in report.table1_rows(runs_for(3))}
    note = three[("none", 30)]["note"]
    assert not three[("none", 30)]["agrees"] and "one shared offset" in note
    # the five cells move together over their shared draws (accuracy rises with the seed in each)
    assert "r = 1.00–1.00 over the 3 draws" in note and "paired by draw" in note


def _fewshot_runs(draw_effect, mix_effect, k=1, noise=0.0, seed=0, dataset="mnist"):
    """Few-shot records: run s of mix v scores 50 + draw_effect[s] + mix_effect[v] (+ noise) percent."""
    rng = np.random.default_rng(seed)
    return [{"key": f"{v}{s}", "label": v, "config": grid.fewshot_config(v, k, s, dataset).to_dict(),
             "metrics": {"test_acc": (50 + d + mix_effect[v] + noise * rng.standard_normal()) / 100}, "history": []}
            for v in report.TABLE1 for s, d in enumerate(draw_effect)]


def test_paired_differences_remove_the_scatter_of_the_draws():
    """Which samples are drawn moves every mix of a draw alike; differences paired by draw recover each
    mix's effect with an interval far narrower than the cells' own, and an offset all cells share shows
    up in the cells but not in the differences."""
    rng = np.random.default_rng(0)
    draws = 6 * rng.standard_normal(15)  # per-run std of the draws ~6 points, as at MNIST k=1
    effect = {"none": 0.0, "L2": 0.8, "dropout": 0.5, "JR": -0.2, "L2+dropout+JR": 2.5}
    paper = {v: {1: (54 + e, 1.9)} for v, e in effect.items()}  # the paper: 4 points higher in every cell
    runs = _fewshot_runs(draws, effect, noise=0.3)
    rows = report.paired_fewshot_rows(lambda v, k: report.select(runs, v, k), paper, ks=[1])
    by = {r["mix"]: r for r in rows}
    assert set(by) == set(report.TABLE1) - {"none"}
    for v, r in by.items():
        m, h, n = r["ours"]
        assert n == 15 and abs(m - effect[v]) < h < 0.5 and r["r"] > 0.99 and r["agrees"]
        assert r["paper"] == pytest.approx((effect[v], math.hypot(1.9, 1.9)))
        cell = report.mean_ci([100 * x["metrics"]["test_acc"] for x in report.select(runs, v, 1)])
        assert cell[1] > 5 * h  # the cell's own interval carries the draws' scatter
    md = report.paired_fewshot_markdown(rows)
    assert "At 1/class every regularizer's cell mean is below the paper's (by " in md and "one shared offset" in md
    # columns offset to opposite sides are named side by side (here the paper 4 points lower at k=3)
    both = {v: {1: paper[v][1], 3: (46 + e, 1.9)} for v, e in effect.items()}
    runs2 = runs + _fewshot_runs(draws, effect, k=3, noise=0.3)
    md2 = report.paired_fewshot_markdown(report.paired_fewshot_rows(lambda v, k: report.select(runs2, v, k), both, ks=[1, 3]))
    assert ("At 1/class every regularizer's cell mean is below the paper's (by " in md2
            and ", and at 3/class above it (by " in md2 and "above and below" not in md2)
    # a mix whose effect differs from the paper's is flagged, and a single pair gets no verdict
    off = report.paired_fewshot_rows(lambda v, k: report.select(runs, v, k),
                                     {**paper, "JR": {1: (54 + 5.0, 0.5)}}, ks=[1])
    assert [r["agrees"] for r in off if r["mix"] == "JR"] == [False]
    assert "At 1/class" not in report.paired_fewshot_markdown(off)
    one = _fewshot_runs(draws[:1], effect)
    assert {r["agrees"] for r in report.paired_fewshot_rows(lambda v, k: report.select(one, v, k), paper, ks=[1])} == {None}


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_more_draws_are_named_in_the_cell_note_but_stay_out_of_the_cell(dataset):
    from jacviz import report_cifar

    effect = {v: 0.0 for v in report.TABLE1}
    table = _fewshot_runs([-4.0] * 15, effect, noise=1.0, dataset=dataset)  # the table's 15 draws, seeds 0-14
    more = [r for r in _fewshot_runs([0.0] * 45, effect, noise=1.0, seed=1, dataset=dataset) if r["config"]["seed"] >= 15]
    rows = (report.table1_rows(table, more_draws=more) if dataset == "mnist" else
            report_cifar.table_s3_rows(table, more=more))
    rows = {(r["regularizer"], r["column"]): r for r in rows}
    none = rows[("none", 1)]
    paper = none["paper"]  # Table 1: 49.2 ± 1.9; Table S3: 12.9 ± 0.7 (over 15 runs)
    assert none["ours"][2] == 15 and none["ours"][0] == pytest.approx(46.0, abs=1.0)
    assert "with 30 more draws (seeds 15–44" in none["note"] and "mean over all 45" in none["note"]
    every = report.mean_ci([100 * r["metrics"]["test_acc"] for r in table + more
                            if r["label"] == "none" and r["config"]["few_shot_k"] == 1])
    assert report.fmt(*every[:2]) in none["note"]
    se = math.hypot(every[1] / report._t975(45), paper[1] / report._t975(15))
    assert f"{abs(every[0] - paper[0]) / se:.1f} standard errors of the difference" in none["note"]
    assert "more draws" not in rows[("none", 3)]["note"]  # no runs of that cell: nothing to say


def test_jacobian_norm_notes_blame_the_schedule_only_where_the_norm_still_moves():
    """A ‖J‖_F below the paper's is put down to the shorter schedule only if it grew during training."""
    def runs_with(first, last):
        return [{"key": f"{v}{s}", "label": v, "config": grid.variant_config(v, s).to_dict(),
                 "metrics": {"test_acc": 0.99, "jac_fro_normalized": last, "jac_fro_pixel": last / 0.3081},
                 "history": [{"jac_fro_normalized": first, "n_jac": 1000}, {"jac_fro_normalized": last, "n_jac": 1000}]}
                for v in report.TABLE1 for s in range(3)]

    growing = {r["regularizer"]: r for r in report.table1_rows(runs_with(5.0, 8.0)) if r["column"] == "jac"}
    assert "still grows" in growing["none"]["note"] and "5.00" in growing["none"]["note"]
    falling = {r["regularizer"]: r for r in report.table1_rows(runs_with(8.0, 5.0)) if r["column"] == "jac"}
    assert "not from the shorter schedule" in falling["none"]["note"]
    assert "cause not established" in falling["none"]["note"]


def test_a_training_worker_reports_its_pace_between_evaluations(capsys):
    """Between evaluations a grid worker prints a line at most every HEARTBEAT_S seconds with the
    seconds an iteration over that window and the time left; the first step after an evaluation
    opens a new window, so evaluation time is not counted as iteration time."""
    cfg = grid.fewshot_config("none", 1, 0)
    now = [0.0]
    log = grid._eval_logger(cfg, every_s=600, clock=lambda: now[0])

    def step(it, t):
        now[0] = t
        log({"kind": "step", "iteration": it, "total": 10000, "loss": 1.5, "ce": 1.5, "jr": 0.0, "lr": 0.01})

    step(20, 0.0)
    step(40, 300.0)  # only 300 s into the window: silent
    assert capsys.readouterr().err == ""
    step(620, 600.0)  # 600 iterations in 600 s
    err = capsys.readouterr().err
    assert "iteration 620/10000: training loss 1.500, 1.00 s an iteration over the last 600" in err
    assert "~156 min to go" in err  # 9,380 iterations left at 1 s each
    now[0] = 9000.0
    log({"kind": "eval", "iteration": 2500, "test_acc": 0.2, "jac_fro_normalized": 3.0, "n_jac": 100,
         "wall_time_s": 2500.0})
    assert "iteration 2500/10000: test acc 0.2000" in capsys.readouterr().err
    step(2520, 9500.0)  # opens a new window after the evaluation
    step(2540, 9600.0)
    assert capsys.readouterr().err == ""
    step(3140, 10100.0)  # 620 iterations in 600 s
    assert "0.97 s an iteration over the last 620" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="reads child processes from /proc (Linux)")
def test_killing_the_grid_stops_its_worker_processes():
    """`kill <pid>` of a grid running several workers (SIGTERM) must not leave them training as orphans,
    each holding a core for hours: they end with the grid. The workers here sleep instead of training."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    def children(pid):
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # field 4 of /proc/<pid>/stat: the parent's pid
                out.append(int(stat.parent.name))
        return out

    root = Path(__file__).resolve().parent.parent
    grid_proc = subprocess.Popen([sys.executable, "-c", "import time; from jacviz import grid; "
                                  "grid._pool_map(time.sleep, [600, 600], 2, 1, print)"], cwd=root)
    workers = []
    try:
        end = time.time() + 120
        while time.time() < end and len(workers) < 2:  # the two workers (and the resource tracker) start
            time.sleep(0.5)
            workers = [c for c in children(grid_proc.pid)
                       if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2, workers
        time.sleep(2)  # inside their tasks
        grid_proc.send_signal(signal.SIGTERM)
        assert grid_proc.wait(timeout=60) != 0
        end = time.time() + 30
        while time.time() < end and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if Path(f"/proc/{w}").exists()], "workers outlived the grid"
    finally:
        for pid in [grid_proc.pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        grid_proc.wait(timeout=10)


def test_a_diverged_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    """A run whose loss becomes NaN (as DDNet + dropout on 1 CIFAR image per class did at the paper's
    lr, at iteration 5,167) is written down as diverged, collected as such, not retried, and does not
    stop the grid. The NaN is injected at the 4th step of the first run: a real divergence takes hours."""
    import dataclasses

    import torch.nn.functional as F
    real_ce, calls = F.cross_entropy, []

    def ce(logits, y, *a, **k):
        calls.append(1)
        return real_ce(logits, y, *a, **k) * (float("nan") if len(calls) == 4 else 1.0)

    monkeypatch.setattr(F, "cross_entropy", ce)
    bad = dataclasses.replace(grid.fewshot_config("none", 1, 0), iterations=20, eval_every=20, checkpoint_every=20)
    good = dataclasses.replace(grid.fewshot_config("L2", 1, 0), iterations=5, eval_every=5, jac_samples=10,
                               eval_samples=100)
    logged = []
    out = grid._pool_map(grid._train_one, [(c.to_dict(), str(tmp_path), "cpu") for c in (bad, good)],
                         workers=1, threads=1, log=logged.append)
    assert "failed" in out[0] and "path" in out[1] and "FAILED" in logged[0]
    # each evaluation of the good run is logged while it trains (hours-long runs are otherwise silent)
    err = capsys.readouterr().err
    assert f"L2 (1/class) ({good.key()}) iteration 5/5: test acc" in err
    rec = json.loads((tmp_path / f"{bad.key()}{grid.DIVERGED}").read_text())
    assert rec["key"] == bad.key() and rec["iteration"] == 3 and rec["loss"] == "nan" and rec["config"]["lr"] == 0.01
    runs = grid.collect_runs([tmp_path], [bad, good])
    assert [d["key"] for d in runs["diverged"]] == [bad.key()] and not runs["missing"]
    assert [r["key"] for r in runs["runs"]] == [good.key()]
    # a fresh clone (no runs/ folder) keeps the record from the results file and does not retrain it
    assert grid.collect_runs([tmp_path / "none"], [bad], runs)["diverged"] == runs["diverged"]
    assert bad.key() in grid.recorded_keys(runs)
    # Table 1 leaves it out of the mean and says so in that cell's note
    row = {(r["regularizer"], r["column"]): r for r in report.table1_rows(runs["runs"], runs["diverged"])}[("none", 1)]
    assert row["ours"][2] == 0 and row["note"].startswith("1 of 1 runs diverged")
    assert "seed 0 at iteration 3 of 20" in row["note"]


def test_write_pngs_retries_a_failed_export_once_then_reports_the_error(tmp_path):
    """A figure export that fails once (kaleido's browser under load) is retried; one that keeps failing
    (no Chromium) is reported in place of the figure with what to install, and the others still come out."""
    import plotly.graph_objects as go

    class Flaky(go.Figure):
        fails = 1

        def write_image(self, path, **kw):
            if Flaky.fails:
                Flaky.fails -= 1
                raise RuntimeError("ReferenceError: kaleido")
            path.write_bytes(b"png")

    class Broken(go.Figure):
        def write_image(self, path, **kw):
            raise RuntimeError("no chromium")

    out = report.write_pngs({"flaky": Flaky(), "broken": Broken()}, tmp_path)
    assert out["flaky"].endswith("flaky.png") and (tmp_path / "flaky.png").read_bytes() == b"png"
    assert out["broken"].startswith("(PNG export failed: RuntimeError: no chromium") and "chromium" in out["broken"]
    assert not (tmp_path / "broken.png").exists()


def test_a_run_of_another_schedule_is_kept_and_the_longer_schedule_is_tabulated(results_dir, tmp_path):
    """A GPU call of the grid plans the paper's schedule: rewriting the results file keeps the short-schedule
    records it did not plan (runs, diverged runs and robustness), and the tables then use the longest
    schedule of each architecture only, never an average over both."""
    prev = json.loads((results_dir / "mnist_runs.json").read_text())
    prev_rob = json.loads((results_dir / "mnist_robustness.json").read_text())
    prev["diverged"] = [{"key": "d0", "label": "none", "seed": 9, "iteration": 5, "loss": "nan",
                         "config": grid.variant_config("none", 9).to_dict()}]
    paper = grid.plan(["table1"], [0], "paper")
    runs = grid.collect_runs([tmp_path], paper, prev)
    assert {r["key"] for r in runs["runs"]} == {r["key"] for r in prev["runs"]}
    assert runs["diverged"] == prev["diverged"] and len(runs["missing"]) == 5
    rob = grid.collect_robustness(tmp_path / "nothing", grid.robustness_configs([0], "paper"), prev_rob)
    assert [m["key"] for m in rob["models"]] == [m["key"] for m in prev_rob["models"]]
    # a 150k-iteration run of 'none' (its record copied from the short one, accuracy changed) covers one mix
    # of five: the tables keep the short runs and the long one stands beside them, paired with its short twin
    def long_of(v, acc):
        r = json.loads(json.dumps(report.select(prev["runs"], v, seed=0)[0]))
        r["config"].update(iterations=150000, milestones=[50000, 100000])
        r["key"], r["metrics"]["test_acc"] = f"p{v}", acc
        return r
    short, long = report.select(prev["runs"], "none", seed=0)[0], long_of("none", 0.9931)
    both = prev["runs"] + [long]
    assert report.longest_schedule(both) == prev["runs"]
    # a diverged record of the long schedule follows the tables' choice when given the runs; on its own it
    # would pick its own schedule and be counted beside the short runs
    diverged_long = {**long, "key": "dl"}
    assert report.longest_schedule([diverged_long], both) == [] and report.longest_schedule([diverged_long])
    assert report.length_study(both) == [{"variant": "none", "seed": 0, "long": long, "short": short}]
    assert report.superseded_note(both, prev["runs"]) == "" and report.schedule_name(prev["runs"]) == "short"
    # a 150k run of every Table-1 mix is not enough while the figures' defended mixes have short runs only:
    # no figure may compare runs of two schedules
    longs = [long] + [long_of(v, 0.99) for v in report.TABLE1[1:]]
    assert report.longest_schedule(prev["runs"] + longs) == prev["runs"]
    assert report.uncovered_mixes(prev["runs"] + longs, 150000) == 8  # every mix: one seed each, two wanted
    # once every full-data mix has one (one short seed each here, so one long seed is enough), the tables and
    # figures show the long runs alone: every short full-data run is superseded
    mixes = [r["label"] for r in prev["runs"] if not r["config"]["few_shot_k"]]
    assert len(mixes) == 8 and set(report.TABLE1) < set(mixes)
    longs = [long] + [long_of(v, 0.99) for v in mixes if v != "none"]
    both = prev["runs"] + longs
    current = report.longest_schedule(both)
    assert [r for r in current if not r["config"]["few_shot_k"]] == longs
    assert report.length_study(both) == []
    rows = {(r["regularizer"], r["column"]): r for r in report.table1_rows(current)}
    assert rows[("none", "all")]["ours"][:1] == (99.31,) and rows[("none", "all")]["ours"][2] == 1
    assert rows[("L2", "all")]["ours"][2] == 1
    fewshot = json.loads(json.dumps(short))
    fewshot["config"]["few_shot_k"], fewshot["key"] = 3, "f3"
    assert fewshot in report.longest_schedule(both + [fewshot])  # few-shot runs (one protocol) are all kept
    n_short = sum(1 for r in prev["runs"] if not r["config"]["few_shot_k"])
    assert f"{n_short} more runs of a shorter schedule" in report.superseded_note(both, current)
    assert report.schedule_name(current) == "paper"
    # robustness records follow the same rule: one long record stands aside, one of every mix supersedes
    assert [m["label"] for m in prev_rob["models"]] == ["none", "JR"]  # seed 0: the mixes this file has
    longs = json.loads(json.dumps(prev_rob["models"]))
    for m in longs:
        m["config"]["iterations"], m["key"] = 150000, "p" + m["key"]
    rob_long = {**prev_rob, "models": prev_rob["models"] + longs[:1]}
    assert report.current_robustness(rob_long)["models"] == prev_rob["models"]
    rob_long = {**prev_rob, "models": prev_rob["models"] + longs}
    assert report.current_robustness(rob_long)["models"] == longs


def test_the_tables_switch_schedule_at_two_seeds_of_every_mix():
    """One 150k-iteration seed of every Table-1 mix stands beside five short seeds (the cells keep a CI);
    two seeds of every mix take the tables over; with one short seed a mix, one long seed each is enough."""
    def run(v, seed, its):
        c = grid.variant_config(v, seed).to_dict()
        c.update(iterations=its)
        return {"key": f"{v}{seed}{its}", "label": v, "config": c, "metrics": {}}
    arch = ("lenet", "mnist")
    short = [run(v, s, 6000) for v in report.TABLE1 for s in range(5)]
    one = [run(v, 0, 150000) for v in report.TABLE1]
    assert report.table_iterations(short + one)[arch] == 6000
    study = report.length_study(short + one)
    assert [(p["variant"], p["seed"], p["short"]["config"]["iterations"]) for p in study] == \
        [(v, 0, 6000) for v in report.TABLE1]
    assert report.why_beside(study).startswith("Every Table 1 mix has such a run (seed 0 of every mix), so the tables and figures keep")
    more = report.length_study(short + one + [run("none", 1, 150000), run("L2", 1, 150000)])
    assert report.seeds_text(more) == "seed 0 of every mix; seed 1 of none and L2"
    two = one + [run(v, 1, 150000) for v in report.TABLE1]
    assert report.table_iterations(short + two[:-1])[arch] == 6000  # the last mix has one long seed only
    assert report.table_iterations(short + two)[arch] == 150000 and report.length_study(short + two) == []
    # a figure's mix (here n_proj = 3, Figure 2) with short runs only keeps everything short: Figure 2 would
    # otherwise compare 150k-iteration n_proj = 1 with 6k-iteration n_proj = 3
    nproj3 = [{**run("JR", s, 6000), "key": f"n3{s}"} for s in range(5)]
    for r in nproj3:
        r["config"]["n_proj"] = 3
    assert report.table_iterations(short + nproj3 + two)[arch] == 6000
    assert report.uncovered_mixes(short + nproj3 + two, 150000) == 1
    study = report.length_study(short + nproj3 + two)
    assert len(study) == 10 and "(`report.table_iterations`; 1 mix still short of that)" in report.why_beside(
        study, runs=short + nproj3 + two)
    assert report.seeds_text(study) == "seeds 0 and 1 of every mix"
    assert report.table_iterations([r for r in short if r["config"]["seed"] == 0] + one)[arch] == 150000


def test_the_longer_runs_are_averaged_over_seeds_beside_the_paper():
    """The shipped 150k-iteration runs (two seeds of some mixes): report_length.length_means gives each mix's
    mean ± 95% CI (Student's t) over its seeds next to the paper's Table 1 and 2 values."""
    from jacviz.report_length import length_means
    from scipy import stats
    runs = json.loads((grid.RESULTS_DIR / "mnist_runs.json").read_text())["runs"]
    study = report.length_study(runs)
    two = [v for v in report.TABLE1 if sum(p["variant"] == v for p in study) >= 2]
    assert two, "the shipped results have two 150k seeds of some mix"
    md = length_means(study, report.PAPER_TABLE1, report.PAPER_TABLE2, digits=2)
    for v in two:
        accs = [100 * p["long"]["metrics"]["test_acc"] for p in study if p["variant"] == v]
        half = stats.t.ppf(0.975, len(accs) - 1) * np.std(accs, ddof=1) / np.sqrt(len(accs))
        row = next(line for line in md.splitlines() if line.startswith(f"| {v} | "))
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[2] == f"{np.mean(accs):.2f} ± {half:.2f}"
        assert cells[3] == f"{report.PAPER_TABLE1[v]['all'][0]} ± {report.PAPER_TABLE1[v]['all'][1]}"
        assert cells[9] == f"{report.PAPER_TABLE2[v][0]} ± {report.PAPER_TABLE2[v][1]}"
    one_seed = [p for p in study if p["seed"] == 0]
    assert length_means(one_seed, report.PAPER_TABLE1) == ""  # one seed a mix: the per-seed table says it all


def test_length_robustness_compares_each_run_with_its_own_twin():
    """The shipped records (two seeds of some mixes at 150k, each with robustness): every sentence and
    both-correct table compares a long run with the short run of the same mix and seed, never seed 0's long
    run with seed 1's short one."""
    from jacviz.report_length import length_robustness
    runs = json.loads((grid.RESULTS_DIR / "mnist_runs.json").read_text())["runs"]
    rob = json.loads((grid.RESULTS_DIR / "mnist_robustness.json").read_text())
    by_key = {m["key"]: m for m in rob["models"]}
    study = [p for p in report.length_study(runs) if p["long"]["key"] in by_key and p["short"]["key"] in by_key]
    assert any(p["seed"] == 1 for p in study) and any(p["seed"] == 0 for p in study)
    text = length_robustness(study, rob)
    said = [line for line in text.splitlines() if ": training longer changed clean accuracy" in line]
    assert len(said) == len(study)
    for p, line in zip(study, said):
        name = p["variant"] + (f" (seed {p['seed']})" if p["seed"] else "")
        acc = [100 * by_key[p[w]["key"]]["clean_accuracy"] for w in ("short", "long")]
        assert line.startswith(f"{name}: training longer changed clean accuracy {acc[0]:.1f} → {acc[1]:.1f}%")
        jac = [p[w]["metrics"]["jac_fro_normalized"] for w in ("short", "long")]
        assert f"while ‖J‖_F went {jac[0]:.2f} → {jac[1]:.2f}." in line


def test_a_partial_paper_schedule_gets_a_training_length_section(results_dir, tmp_path):
    """A 150k-iteration LeNet' run of one mix (a CPU session's) leaves Table 1 on the short schedule; REPRODUCTION.md
    puts it beside its short twin (*Training length*: final numbers, every evaluation of either run, a figure), the
    full-data notes of that mix cite it, and the missing list says which mixes have the paper's schedule so far."""
    R = json.loads((results_dir / "mnist_runs.json").read_text())
    short = report.select(R["runs"], "none", seed=0)[0]
    long = json.loads(json.dumps(short))
    long["config"].update(iterations=150000, milestones=[50000, 100000], eval_every=5000, checkpoint_every=5000)
    long["key"], long["metrics"]["test_acc"], long["metrics"]["jac_fro_normalized"] = "pnone", 0.9912, 31.5
    long["history"] = [dict(short["history"][-1], iteration=5000 * i, test_acc=0.98 + 0.0004 * i,
                            jac_fro_normalized=8.0 + i, lr=0.1 if i <= 10 else 0.01 if i <= 20 else 0.001)
                       for i in range(1, 31)]
    (tmp_path / "mnist_runs.json").write_text(json.dumps({**R, "runs": R["runs"] + [long]}))
    rob = json.loads((results_dir / "mnist_robustness.json").read_text())
    twin = next(m for m in rob["models"] if m["key"] == short["key"])
    rec = json.loads(json.dumps(twin))
    rec["key"], rec["config"], rec["clean_accuracy"] = "pnone", long["config"], 0.975  # its robustness record
    (tmp_path / "mnist_robustness.json").write_text(json.dumps({**rob, "models": rob["models"] + [rec]}))
    md = report.build(tmp_path, tmp_path / "REPRODUCTION.md", png=False)
    plain = report.build(results_dir, tmp_path / "plain.md", png=False)
    table = lambda m: m.split("## Table 1")[1].split("<details>")[0]  # noqa: E731
    assert table(md) == table(plain)  # the cells keep the short runs
    assert "Training length" not in plain and "1 of the training-length study (below)" in md
    sec = md.split("## Training length: LeNet', the paper's 150,000 iterations against the tables' 6,000")[1].split("\n## ")[0]
    u = 100 * short["metrics"]["usps_acc"]  # the long record copies the short one's USPS accuracy: Table 2 beside
    assert f"| No regularization | 0 | {u:.1f} | {u:.1f} | 80.4 ± 0.7 |" in sec
    row = next(line for line in sec.splitlines() if line.startswith("| none | 0 |"))
    assert row.startswith(f"| none | 0 | {100 * short['metrics']['test_acc']:.2f} | 99.12 | 98.9 ± 0.1 | +0.22 | "
                          f"{short['metrics']['jac_fro_normalized']:.2f} | 31.50 | 32.9 ± 3.3 |")
    assert row.endswith(" | +0.04 points, +1.00 | " + f"{long['metrics']['train_time_s'] / 60:.0f} min |")
    assert f"| none, 6,000 it. | 1 | {100 * twin['clean_accuracy']:.2f} |" in sec and "| none, 150,000 it. | 1 | 97.50 |" in sec  # robustness beside its twin's
    assert "Same attacks and test images as the robustness tables below (first 40;" in sec
    evals = [line for line in sec.split("**none, seed 0**")[1].splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(evals) == len(short["history"]) + 30  # either run's evaluations (every 600 up to 6,000; every 5,000)
    assert evals[-1].startswith("| 150,000 | 250 | 0.001 |  |  | 99.20 | 38.00 |")
    jac_note = next(line for line in md.splitlines() if line.startswith("| No regularization | ‖J‖_F (all data) |"))
    assert (f"trained 150,000 iterations instead, seed 0 went from {short['metrics']['jac_fro_normalized']:.2f} "
            "to 31.50 (REPRODUCTION.md, *Training length*)") in jac_note
    assert ("at 2 seeds of every full-data mix: Table 1's, defended, n_proj, λ): so far, in Table 1, seed 0 of none (*Training length*); "
            "8 of the 8 full-data mixes still have fewer than 2 seeds of it") in md  # the fixture's 5 Table-1 + 3 defended
    assert "Only none has such a run (seed 0 of none), so the tables and figures keep the short schedule" in sec


def test_cell_notes_tell_an_overlap_from_a_mean_inside_the_papers_interval():
    assert report.agreement((99.0, 0.1, 5), (98.95, 0.1)) == "within the paper's interval"
    assert report.agrees((44.3, 5.6, 7), (49.2, 1.9))
    assert report.agreement((44.3, 5.6, 7), (49.2, 1.9)).startswith("our interval overlaps the paper's")
    # the paper prints one decimal: 4.0 ± 0.0 covers 3.95 to 4.05
    assert report.agrees((3.96, math.nan, 1), (4.0, 0.0)) and not report.agrees((3.94, math.nan, 1), (4.0, 0.0))


def _short_fewshot_draws(monkeypatch):
    """reproduction/fewshot_draws.py as a module, its runs cut to 20 iterations (500 test images) instead of 10,000."""
    import dataclasses
    import importlib.util

    spec = importlib.util.spec_from_file_location("fewshot_draws", grid.REPO_ROOT / "reproduction" / "fewshot_draws.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    real = grid.fewshot_config
    monkeypatch.setattr(grid, "fewshot_config", lambda *a, **kw: dataclasses.replace(
        real(*a, **kw), iterations=20, eval_every=20, checkpoint_every=20, eval_samples=500))
    return script


def test_fewshot_draws_script_trains_new_draws_and_keeps_earlier_records(tmp_path, monkeypatch):
    """reproduction/fewshot_draws.py: trains the seeds asked for (here 20 iterations instead of 10,000, on
    real MNIST), writes the grid's records, keeps records of an earlier call, and retrains nothing on a rerun."""
    from jacviz import train as train_mod

    script = _short_fewshot_draws(monkeypatch)
    args = ["--k", "1", "--out", str(tmp_path / "runs"), "--results", str(tmp_path)]
    assert script.main([*args, "--labels", "none", "--seeds", "15-16"]) == 0
    assert script.main([*args, "--labels", "JR", "--seeds", "15"]) == 0
    res = json.loads((tmp_path / "fewshot_draws_mnist.json").read_text())
    got = sorted((r["label"], r["config"]["seed"]) for r in res["runs"])
    assert got == [("JR (1/class)", 15), ("none (1/class)", 15), ("none (1/class)", 16)] and not res["missing"]
    assert all(r["config"]["few_shot_k"] == 1 and 0 <= r["metrics"]["test_acc"] <= 1 for r in res["runs"])
    # each draw trained on its own samples: the two seeds' models differ
    accs = {r["config"]["seed"]: r["metrics"]["test_acc"] for r in res["runs"] if r["label"].startswith("none")}
    assert accs[15] != accs[16]
    monkeypatch.setattr(train_mod, "fit", lambda *a, **kw: pytest.fail("a finished draw was retrained"))
    assert script.main([*args, "--labels", "none", "--seeds", "15-16"]) == 0


def test_setup_ablation_runs_pair_with_the_tables_runs_and_stay_out_of_the_table(tmp_path, monkeypatch):
    """fewshot_draws.py --init / --momentum trains the table's seeds under another reading of the set-up (20
    iterations on real MNIST here); fewshot_ablation_rows pairs each with the table's run of its seed, and no
    table cell takes them in."""
    script = _short_fewshot_draws(monkeypatch)
    args = ["--k", "1", "--labels", "none", "--seeds", "0-2", "--out", str(tmp_path / "runs"), "--results", str(tmp_path)]
    assert script.main(args) == 0  # the paper-init runs the ablation pairs with
    assert script.main([*args, "--init", "caffe_xavier"]) == 0
    runs = json.loads((tmp_path / "fewshot_draws_mnist.json").read_text())["runs"]
    assert sorted(r["config"].get("init", "paper") for r in runs) == ["caffe_xavier"] * 3 + ["paper"] * 3
    paper_init = [r for r in runs if r["config"].get("init", "paper") == "paper"]
    assert report.select(runs, "none", 1) == paper_init  # the table's selection never takes an ablation run
    rows = report.fewshot_ablation_rows([], runs, report.PAPER_TABLE1)
    assert [(r["reading"], r["k"], r["mix"], r["diff"][2]) for r in rows] == [("init caffe_xavier", 1, "none", 3)]
    acc = {(r["config"].get("init", "paper"), r["config"]["seed"]): 100 * r["metrics"]["test_acc"] for r in runs}
    want = [acc["caffe_xavier", s] - acc["paper", s] for s in range(3)]
    assert rows[0]["diff"][0] == pytest.approx(sum(want) / 3)
    assert rows[0]["gap"] == pytest.approx(rows[0]["ours"][0] - report.PAPER_TABLE1["none"][1][0])
    md = report.fewshot_ablation_markdown(rows)
    assert "`init caffe_xavier`" in md and "No regularization, 1/class" in md and "U(±√(3/fan_in))" in md
    assert "momentum" not in md.split("\n\n")[0]  # no momentum row without such runs
    # --momentum 0 (plain full-batch gradient descent, which the few-shot sentence may mean) pairs the same way,
    # and neither the table's selection nor the extra draws' mean takes those runs in
    assert script.main([*args, "--momentum", "0"]) == 0
    runs = json.loads((tmp_path / "fewshot_draws_mnist.json").read_text())["runs"]
    assert sorted(r["config"]["momentum"] for r in runs) == [0.0] * 3 + [0.9] * 6
    assert report.select(runs, "none", 1) == paper_init
    rows = report.fewshot_ablation_rows([], runs, report.PAPER_TABLE1)
    assert [(r["reading"], r["diff"][2]) for r in rows] == [("init caffe_xavier", 3), ("momentum 0", 3)]
    acc0 = {r["config"]["seed"]: 100 * r["metrics"]["test_acc"] for r in runs if r["config"]["momentum"] == 0}
    assert rows[1]["diff"][0] == pytest.approx(sum(acc0[s] - acc["paper", s] for s in range(3)) / 3)
    assert "`momentum 0`: plain full-batch gradient descent" in report.fewshot_ablation_markdown(rows)
    # --draw first (the paper's "subsample" as one fixed subset, the first sample of each class) pairs with the
    # table's run of its seed through the initial weights, and stays out of the table too
    assert script.main([*args, "--draw", "first"]) == 0
    runs = json.loads((tmp_path / "fewshot_draws_mnist.json").read_text())["runs"]
    assert sorted(r["config"].get("few_shot_draw", "random") for r in runs) == ["first"] * 3 + ["random"] * 9
    assert report.select(runs, "none", 1) == paper_init
    rows = report.fewshot_ablation_rows([], runs, report.PAPER_TABLE1)
    assert [(r["reading"], r["diff"][2]) for r in rows] == [("init caffe_xavier", 3), ("momentum 0", 3),
                                                            ("first k per class", 3)]
    accf = {r["config"]["seed"]: 100 * r["metrics"]["test_acc"] for r in runs if r["config"].get("few_shot_draw") == "first"}
    assert rows[2]["diff"][0] == pytest.approx(sum(accf[s] - acc["paper", s] for s in range(3)) / 3)
    md = report.fewshot_ablation_markdown(rows)
    assert "`first k per class`: the first k samples of each class" in md and "naming no draw" in md
    # --input-norm variance (Section 3's "dividing by the variance (0.3081)" read literally) pairs weight for weight
    assert script.main([*args, "--input-norm", "variance"]) == 0
    runs = json.loads((tmp_path / "fewshot_draws_mnist.json").read_text())["runs"]
    assert sorted(r["config"].get("input_norm", "paper") for r in runs) == ["paper"] * 12 + ["variance"] * 3
    assert report.select(runs, "none", 1) == paper_init
    rows = report.fewshot_ablation_rows([], runs, report.PAPER_TABLE1)
    assert [r["reading"] for r in rows][-1] == "input ÷ variance" and rows[-1]["diff"][2] == 3
    accv = {r["config"]["seed"]: 100 * r["metrics"]["test_acc"] for r in runs if r["config"].get("input_norm") == "variance"}
    assert rows[-1]["diff"][0] == pytest.approx(sum(accv[s] - acc["paper", s] for s in range(3)) / 3)
    md = report.fewshot_ablation_markdown(rows)
    assert "`input ÷ variance`: (x − 0.1307) / 0.3081²" in md and "dividing by the variance" in md


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_diverged_few_shot_run_counts_as_run_in_what_is_missing(dataset):
    """The grid does not retry a diverged run, so a column whose every mix has 15 runs tried (finished or
    diverged) is not listed as missing; the cell's note already says which runs diverged."""
    from jacviz import report_cifar

    runs = _fewshot_runs([0.0] * 15, {v: 0.0 for v in report.TABLE1}, dataset=dataset)
    gone = next(r for r in runs if r["label"] == "dropout" and r["config"]["seed"] == 3)
    finished = [r for r in runs if r is not gone]
    div = [{**gone, "iteration": 1909, "loss": "nan"}]

    def missing(diverged):
        if dataset == "mnist":
            return report._missing_md({"runs": finished, "diverged": diverged}, finished)
        return report_cifar._missing(finished, (), diverged)

    assert "k=1: 14–15 of 15 runs per regularizer" in missing([])
    assert "k=1:" not in missing(div) and "k=3: 0 of 15" in missing(div)


def test_ablation_verdict_rules_out_only_readings_whose_interval_ends_short_of_the_gap():
    """The gap is the paper's mean minus the mean of every run of the tables' set-up; a reading is ruled out only when its
    paired interval cannot reach it."""
    def row(init, diff):
        return {"reading": init, "k": 1, "mix": "none", "paper": (49.2, 1.9), "base_all": (46.9, 1.3, 45),
                "base": (45.7, 2.9, 15), "ours": (45.7 + diff[0], 3.0, diff[2]), "diff": diff, "gap": -3.5}
    tight, wide = row("default_bias", (-0.1, 0.3, 15)), row("xavier_normal", (0.4, 2.2, 15))
    v = report._ablation_verdict([tight, wide])
    assert "45 runs of the tables' set-up average 2.3 points below" in v
    assert "interval of `default_bias` (-0.1 ± 0.3 over 15 seeds) ends short of that gap, so that reading" in v
    assert "interval of `xavier_normal` (+0.4 ± 2.2 over 15 seeds) still reaches the gap" in v
    # a shift of the right size is not ruled out; with one seed there is no interval and nothing is said
    assert "still reaches" in report._ablation_verdict([row("caffe_xavier", (2.0, 0.5, 15))])
    assert report._ablation_verdict([row("caffe_xavier", (2.0, math.nan, 1))]) == ""
    assert "neither reading" in report._ablation_verdict([tight, row("caffe_xavier", (-0.4, 0.8, 15))])
    # an interval wholly beyond the gap overshoots the paper: not ruled out as too small, not a match either
    past = {**row("first k per class", (8.0, 1.5, 15)), "gap": 4.5}
    v = report._ablation_verdict([tight, past])
    assert "ends short of that gap, so that reading is not what separates the two." in v
    assert ("paired interval of `first k per class` (+8.0 ± 1.5 over 15 seeds), which leaves the cell 4.5 points "
            "above the paper's mean, overshoots that gap") in v and "still reaches" not in v
    assert "still reaches" in report._ablation_verdict([{**past, "diff": (8.0, 6.0, 15)}])  # 2.0 < 2.3: reaches
    # an interval wholly on the other side of zero moves the cell away from the paper: said so, not "short of"
    away = row("input ÷ variance", (-1.0, 0.7, 15))
    v = report._ablation_verdict([tight, away])
    assert ("The paired interval of `input ÷ variance` (-1.0 ± 0.7 over 15 seeds) lies wholly on the other side of no "
            "change: that reading moves the cell further from the paper's mean.") in v
    assert "`input ÷ variance` (-1.0" not in v.split("The paired")[0]  # not among those that end short
    assert report._ablation_verdict([away]).startswith(" No regularization at 1/class, whose 45 runs")
    assert "holds" not in v and "neither" not in v
    # one that holds no change (reaching 0.2 points toward the gap) ends short of it instead
    assert "`momentum 0` (-0.3 ± 0.5 over 15 seeds) ends short" in report._ablation_verdict([row("momentum 0", (-0.3, 0.5, 15))])


def test_collect_merges_the_results_file_of_another_machine(tmp_path):
    """A GPU call brings back its cifar10_runs.json and cifar10_robustness.json while its checkpoints stay
    there: `grid --stage collect --merge` adds the records ours lack (runs, diverged runs, robustness),
    never replaces one we hold, and refuses another dataset's file."""
    real = json.loads((grid.RESULTS_DIR / "cifar10_runs.json").read_text())
    real_rob = json.loads((grid.RESULTS_DIR / "cifar10_robustness.json").read_text())
    runs = [r for r in real["runs"] if r["config"].get("few_shot_k") == 1]
    assert len(runs) > 4 and real["diverged"] and len(real_rob["models"]) > 2
    res = tmp_path / "results"
    res.mkdir()
    grid.write_json({"runs": runs[:-3], "diverged": real["diverged"][:1]}, res / "cifar10_runs.json")
    grid.write_json({"models": real_rob["models"][:1]}, res / "cifar10_robustness.json")
    changed = {**runs[0], "metrics": {**runs[0]["metrics"], "test_acc": 0.99}}  # theirs differs: ours must win
    grid.write_json({"runs": [changed] + runs[-3:], "diverged": real["diverged"]}, tmp_path / "gpu_runs.json")
    grid.write_json({"models": real_rob["models"][:3]}, tmp_path / "gpu_robustness.json")
    args = ["--dataset", "cifar10", "--stage", "collect", "--experiments", "fewshot", "--fewshot-k", "1",
            "--out", str(tmp_path / "runs"), "--also", "--results", str(res)]
    assert grid.cli(args + ["--merge", str(tmp_path / "gpu_runs.json"), str(tmp_path / "gpu_robustness.json")]) == 0
    after = json.loads((res / "cifar10_runs.json").read_text())
    by_key = {r["key"]: r for r in after["runs"]}
    assert set(by_key) == {r["key"] for r in runs}
    assert by_key[runs[0]["key"]]["metrics"]["test_acc"] == runs[0]["metrics"]["test_acc"] != 0.99
    assert all(by_key[r["key"]]["checkpoint"] is None and by_key[r["key"]]["metrics"] == r["metrics"] for r in runs[-3:])
    assert {d["key"] for d in after["diverged"]} == {d["key"] for d in real["diverged"]}
    rob = json.loads((res / "cifar10_robustness.json").read_text())
    assert [m["key"] for m in rob["models"]] == [m["key"] for m in real_rob["models"][:3]]
    assert not (tmp_path / "runs").exists()  # collect trains nothing
    with pytest.raises(SystemExit, match="mnist"):
        grid.cli(args + ["--merge", str(grid.RESULTS_DIR / "mnist_runs.json")])
    with pytest.raises(SystemExit, match="not found"):
        grid.cli(args + ["--merge", str(tmp_path / "nowhere.json")])
    (tmp_path / "other.json").write_text('{"meta": {}}')
    with pytest.raises(SystemExit, match="no results file"):
        grid.cli(args + ["--merge", str(tmp_path / "other.json")])


def test_tanh_saturation_measures_the_shipped_dropout_lenet_on_real_mnist(capsys):
    """reproduction/tanh_saturation.py: one fraction per tanh layer of the shipped dropout LeNet' (the 6k-iteration
    numbers the README quotes), and a first conv scaled 100x saturates its layer."""
    import copy
    import importlib.util

    import torch

    from jacviz import checkpoints, data
    spec = importlib.util.spec_from_file_location("tanh_saturation", grid.REPO_ROOT / "reproduction" / "tanh_saturation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = grid.find_checkpoint(grid.variant_config("dropout", 0), [SHIPPED_DIR])
    assert script.main([str(path)]) == 0
    assert "dropout, 6,000 it." in capsys.readouterr().out
    model = checkpoints.load(path, device="cpu").model.eval()
    x = data.load("mnist", "test")[0][:200]
    sat = script.saturation(model, x)
    assert len(sat) == 4 and all(0 <= s <= 1 for s in sat)
    hot = copy.deepcopy(model)
    with torch.no_grad():
        hot.features[0].weight.mul_(100)
    assert script.saturation(hot, x)[0] > max(0.9, sat[0])


def test_the_schedule_line_counts_the_full_data_cells_that_agree_instead_of_asserting_it():
    """REPRODUCTION.md's Schedule line said the short schedule 'already reaches the paper's full-data
    accuracies' while Table 1's All Combined cell disagreed: the line is now computed from Table 1's rows."""
    def row(v, ours, agrees):
        return {"regularizer": v, "column": "all", "ours": (ours, 0.1, 5), "agrees": agrees,
                "diff": ours - report.PAPER_TABLE1[v]["all"][0]}

    rows = [row("none", 98.9, True), row("JR", 99.0, True), {**row("none", 1, True), "column": 1}]
    assert report.full_data_agreement(rows) == ("on this schedule the full-data test accuracies of all 2 Table-1 "
                                                "mixes agree with the paper's (Table 1; 95% intervals overlap)")
    rows.append(row("L2+dropout+JR", 98.8, False))
    assert report.full_data_agreement(rows).endswith("of 2 of the 3 Table-1 mixes agree with the paper's "
                                                     "(Table 1; 95% intervals overlap); All Combined 0.3 points below")
    assert report.full_data_agreement([]) == "no full-data run has finished yet"
