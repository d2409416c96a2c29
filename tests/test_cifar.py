"""CIFAR-10 (Appendix E): grid configs, the shipped DDNet checkpoints, and Table S3 from the real runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jacviz import checkpoints, data, grid, report, report_cifar, report_length
from jacviz.checkpoints import SHIPPED_DIR

ROOT = Path(__file__).resolve().parent.parent
CIFAR_RUNS = ROOT / "reproduction" / "cifar10_runs.json"


def test_cifar_grid_follows_appendix_e():
    """DDNet lr 0.01 with the paper's mixes, ResNet-18 lr 0.1 with L2 and never dropout, batch 100, momentum 0.9."""
    dd = grid.plan(["table1", "defended"], [0], "paper", dataset="cifar10")
    assert {c.model for c in dd} == {"ddnet"} and {c.dataset for c in dd} == {"cifar10"}
    assert {c.lr for c in dd} == {0.01} and {c.batch_size for c in dd} == {100} and {c.momentum for c in dd} == {0.9}
    assert {c.iterations for c in dd} == {150000} and {c.milestones for c in dd} == {(50000, 100000)}
    assert sorted(c.label() for c in dd) == sorted({*grid.TABLE1, *grid.DEFENDED})
    rn = grid.experiment_configs("resnet", [0, 1], dataset="cifar10")
    assert {c.model for c in rn} == {"resnet18"} and {c.lr for c in rn} == {0.1} and {c.dropout for c in rn} == {0.0}
    assert [c.label() for c in rn[:6]] == list(grid.RESNET) and {c.seed for c in rn} == {0, 1}
    fs = grid.experiment_configs("fewshot", [0], dataset="cifar10")
    assert {c.model for c in fs} == {"ddnet"} and {c.lr for c in fs} == {0.01} and {c.iterations for c in fs} == {10000}
    # MNIST keys are untouched by the dataset switch (the recorded MNIST runs stay done)
    assert grid.variant_config("JR", 0).key() == grid.variant_config("JR", 0, dataset="mnist").key()
    assert grid.variant_config("JR", 0).model == "lenet"
    with pytest.raises(ValueError, match="unknown experiment"):
        grid.experiment_configs("nproj", [0], dataset="cifar10")
    assert grid.cli(["--dataset", "cifar10", "--experiments", "lambda", "--dry-run"]) == 2


def test_cifar_grid_dry_run_lists_ddnet_and_resnet(capsys):
    assert grid.cli(["--dataset", "cifar10", "--seeds", "0", "--experiments", "table1,defended,resnet",
                     "--schedule", "short", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:4] in ("done", "todo")]
    assert len(lines) == 8 + 6
    assert sum("ddnet on cifar10" in line for line in lines) == 8
    assert sum("resnet18 on cifar10" in line for line in lines) == 6


def test_cifar_grid_mixes_picks_which_runs_train(capsys):
    """--mixes keeps the plan's runs of the named mixes only (all their seeds and k), and refuses a
    mix the plan does not have, naming the ones it has."""
    args = ["--dataset", "cifar10", "--experiments", "fewshot", "--fewshot-k", "10,30", "--fewshot-runs", "2",
            "--dry-run"]
    assert grid.cli(args + ["--mixes", "JR,L2+dropout+JR"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:4] in ("done", "todo")]
    assert len(lines) == 2 * 2 * 2  # mixes x k x runs
    assert {line.split()[2] for line in lines} == {"JR", "L2+dropout+JR"}
    assert {"(10/class)", "(30/class)"} == {line.split()[3] for line in lines}
    assert grid.cli(args + ["--mixes", "JR,dropot"]) == 2
    err = capsys.readouterr().err
    assert "dropot" in err and "dropout" in err


def test_cifar_grid_dry_run_marks_the_recorded_diverged_run(capsys):
    """A fresh clone has no runs/ folder: the results file alone tells the grid that a run diverged."""
    diverged = json.loads(CIFAR_RUNS.read_text()).get("diverged", []) if CIFAR_RUNS.is_file() else []
    if not diverged:
        pytest.skip("no diverged CIFAR-10 run recorded in this checkout")
    d = diverged[0]["config"]
    assert grid.cli(["--dataset", "cifar10", "--experiments", "fewshot", "--fewshot-k", str(d["few_shot_k"]),
                     "--fewshot-runs", str(d["seed"] + 1), "--dry-run"]) == 0
    assert f"diverged {diverged[0]['key']}" in capsys.readouterr().out


def _shipped_ddnets():
    return [p for p in sorted(SHIPPED_DIR.glob("*.pt")) if checkpoints._read(p)["config"]["model"] == "ddnet"]


def test_shipped_ddnet_checkpoints_are_float16_and_predict_like_float32():
    """Seed 0 of every DDNet mix is shipped at half size; loaded with weights_only=True and cast back to
    float32, each gets the accuracy its float32 original had on the first 1000 CIFAR-10 test images."""
    paths = _shipped_ddnets()
    if not paths:
        pytest.skip("no DDNet checkpoint shipped in this checkout")
    labels = set()
    x, y = data.load("cifar10", "test")
    for p in paths:
        raw = torch.load(p, map_location="cpu", weights_only=True)
        assert raw["meta"]["weights_dtype"] == "float16"
        assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
        assert p.stat().st_size < 2.6e6  # ~1.15M parameters at 2 bytes
        ck = checkpoints.load(p)
        assert next(ck.model.parameters()).dtype == torch.float32
        check = ck.meta["float32_check"]
        with torch.no_grad():
            pred = torch.cat([ck.model(x[s:s + 500]).argmax(1) for s in range(0, check["n"], 500)])
        acc = (pred == y[:check["n"]]).float().mean().item()
        assert abs(acc - check["test_acc"]) <= 0.003, (p.name, acc, check)
        assert acc > 0.3  # trained: far above the 10% of chance
        labels.add(ck.config.label())
    assert {*grid.TABLE1, *grid.DEFENDED} <= labels
    manifest = {e["file"] for e in json.loads((SHIPPED_DIR / "manifest.json").read_text())["checkpoints"]}
    assert {p.name for p in paths} <= manifest


def test_ship_half_records_the_float32_accuracy_on_any_number_of_images(tmp_path):
    """checkpoints.ship(half=True) measures the float32 model on the first n_check test images, n_check
    not a multiple of its 500-image blocks included."""
    paths = _shipped_ddnets()
    if not paths:
        pytest.skip("no DDNet checkpoint shipped in this checkout")
    x, y = data.load("cifar10", "test")
    ck = checkpoints.load(paths[0])
    with torch.no_grad():
        want = (ck.model(x[:120]).argmax(1) == y[:120]).float().mean().item()
    shipped = checkpoints.ship(paths[0], tmp_path, half=True, n_check=120)
    assert checkpoints.load(shipped).meta["float32_check"] == {"n": 120, "test_acc": want}


def test_table_s3_from_the_recorded_runs():
    """Table S3 next to the paper: every full-data cell of the five mixes filled from real DDNet runs;
    adding JR lowers the test ||J||_F (to JR from none, to All Combined from dropout), and where ours
    misses the paper the note says by how much the norm still moved during our short training."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    runs, diverged = R["runs"], R.get("diverged", [])
    rows = {(r["regularizer"], r["column"]): r for r in report_cifar.table_s3_rows(runs, diverged)}
    for v in grid.TABLE1:
        for col in ("all", "jac"):
            r = rows[(v, col)]
            assert r["ours"][2] >= 1 and r["note"] and r["note"] != "not run yet"
    jac = {v: rows[(v, "jac")]["ours"][0] for v in grid.TABLE1}
    assert jac["JR"] < jac["none"] and jac["L2+dropout+JR"] < jac["dropout"]
    for v in grid.TABLE1:
        r = rows[(v, "jac")]
        assert r["agrees"] or "during our" in r["note"], r["note"]
    # few-shot columns (full-batch SGD, 10k iterations): each cell we ran says how far one draw may scatter,
    # and how many of its runs diverged
    assert all(rows[(v, k)]["ours"][2] >= 1 for v in grid.TABLE1 for k in (1, 3))
    for v in grid.TABLE1:
        for k in grid.FEWSHOT_K:
            r, n = rows[(v, k)], rows[(v, k)]["ours"][2]
            d = sum(x["label"] == f"{v} ({k}/class)" for x in diverged)
            if d:
                assert f"{d} of {d + n} runs diverged" in r["note"], r["note"]
            if n:
                assert 10.0 < r["ours"][0] < 60.0  # in percent; far below what all 50k images give
                assert r["agrees"] or "standard errors" in r["note"], r["note"]
            elif not d:
                assert r["note"].startswith("not run yet")
    wide, long = report_cifar.table_s3_markdown(list(rows.values()), details=False)
    assert "76.8 ± 0.4 / **" in wide and "115.10 ± 1.80" in wide
    if any(r["ours"][2] == 2 for r in rows.values()):  # a two-run interval is 12.7 standard errors wide: said
        assert "12.7 standard errors at n=2" in wide
    md = report_cifar.section(CIFAR_RUNS.parent, png=False)
    assert "## Table S3" in md and wide in md and "not yet reproduced" in md
    for k in grid.FEWSHOT_K:  # the to-do list gives the fewest and the most runs any mix tried (diverged ones count)
        ns = [rows[(v, k)]["ours"][2] + sum(x["label"] == f"{v} ({k}/class)" for x in diverged) for v in grid.TABLE1]
        lo, hi = min(ns), max(ns)
        line = f"- DDNet few-shot k={k}: {lo if lo == hi else f'{lo}–{hi}'} of 15 runs per regularizer"
        assert (line in md) == (lo < 15) and (f"few-shot k={k}:" in md) == (lo < 15)


def test_full_data_notes_average_every_seed_not_just_the_first():
    """With several seeds in a full-data cell, the 'still rose' note and the ||J||_F trend sentence give
    means over the cell's runs (computed here from their histories), not seed 0's numbers."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    rows = {(r["regularizer"], r["column"]): r for r in report_cifar.table_s3_rows(R["runs"], R.get("diverged", []))}
    none = report_cifar.ddnet_runs(R["runs"], "none")
    if len(none) < 2:
        pytest.skip("one seed of the unregularized DDNet: nothing to average")
    hs = [r["history"] for r in none]
    before = 100 * sum(h[-2]["test_acc"] for h in hs) / len(hs)
    after = 100 * sum(h[-1]["test_acc"] for h in hs) / len(hs)
    assert f"from {before:.1f} to {after:.1f} (mean of {len(hs)} runs)" in rows[("none", "all")]["note"]
    hist = report_cifar.mean_history(none, "jac_fro_normalized")
    assert [i for i, _ in hist] == [h["iteration"] for h in hs[0]]
    assert hist[-1][1] == pytest.approx(sum(h[-1]["jac_fro_normalized"] for h in hs) / len(hs))
    md = report_cifar.section(CIFAR_RUNS.parent, png=False)
    assert f"{hist[-1][1]:.2f} at iteration {hist[-1][0]:,}, means of {len(none)} runs" in md


def _k1_cell_with_a_run_like(seed: int, **metrics):
    """A healthy recorded 'none (1/class)' run, a copy of it with ``seed`` and ``metrics`` replaced,
    and a function giving the Table S3 'none', k = 1 row of a list of runs."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    runs = json.loads(CIFAR_RUNS.read_text())["runs"]
    healthy = next(r for r in runs if r["label"] == "none (1/class)" and r["metrics"]["jac_fro_normalized"] > 1.0)
    other = json.loads(json.dumps(healthy))
    other["config"]["seed"] = seed
    other["metrics"].update(metrics)
    return healthy, other, lambda rs: {(r["regularizer"], r["column"]): r
                                       for r in report_cifar.table_s3_rows(rs)}[("none", 1)]


def test_a_collapsed_few_shot_run_is_named_in_its_cell_and_kept_in_the_mean():
    """A finished run whose network ends with the same logits for every input (‖J‖_F 0, 10% test
    accuracy: DDNet + dropout on 1 image per class at lr 0.01, seed 4) is named in its Table S3 cell's
    note and stays in the mean; a cell of healthy runs gets no such note."""
    healthy, dead, cell = _k1_cell_with_a_run_like(seed=99, test_acc=0.1, jac_fro_normalized=0.0,
                                                   final_train_loss=2.3026)
    assert "collapsed" not in cell([healthy])["note"]
    row = cell([healthy, dead])
    assert "1 of 2 finished runs collapsed to a constant output" in row["note"] and "seed 99: 10.0% test accuracy" in row["note"]
    assert row["ours"][2] == 2 and abs(row["ours"][0] - (100 * healthy["metrics"]["test_acc"] + 10.0) / 2) < 1e-9
    assert "chance training loss" not in row["note"]  # the collapsed run is named once, as collapsed


def test_a_few_shot_run_stuck_at_the_chance_loss_is_named_in_its_cell_and_kept_in_the_mean():
    """A finished run whose training loss ends at ln 10 (it never fit its 10 images) but whose
    Jacobian is far from 0 (DDNet + dropout, 1 image per class, seed 2: ‖J‖_F 1117, 9.9% test
    accuracy) is not a constant-output collapse, yet its cell's note names it; it stays in the mean."""
    healthy, stuck, cell = _k1_cell_with_a_run_like(seed=98, test_acc=0.099, jac_fro_normalized=1117.0,
                                                    final_train_loss=2.3025996)
    assert "chance training loss" not in cell([healthy])["note"]
    row = cell([healthy, stuck])
    assert "1 of 2 finished runs ended at the chance training loss" in row["note"]
    assert "seed 98: 9.9% test accuracy, ‖J‖_F 1117" in row["note"] and "collapsed" not in row["note"]
    assert row["ours"][2] == 2


def test_resnet_robustness_section_names_its_own_mixes(tmp_path):
    """The ResNet-18 half of the section (Figure S4, S5c/f; its defended models have an L2 base and no
    dropout) renders once robustness records exist. Not all six ResNet-18 mixes have records yet (CPU
    only), so the real DDNet records, relabelled, stand in for all six here (the real ResNet-18 ones
    are dropped first), to run every path of that code."""
    rob_file = CIFAR_RUNS.parent / "cifar10_robustness.json"
    if not (CIFAR_RUNS.is_file() and rob_file.is_file()):
        pytest.skip("no reproduction/cifar10_*.json in this checkout")
    rob = json.loads(rob_file.read_text())
    as_resnet = {"none": "none", "L2": "L2", "JR": "JR", "L2+dropout+JR": "L2+JR",
                 "L2+dropout+AT": "L2+AT", "L2+dropout+JR+AT": "L2+JR+AT"}
    rob["models"] = [m for m in rob["models"] if m["config"].get("model") != "resnet18"  # only the stand-ins below
                     and not grid.is_schedule_study(m["config"])]  # and the figures' schedule only
    for m in list(rob["models"]):
        if m["label"] in as_resnet:
            r = json.loads(json.dumps(m))
            r["label"] = as_resnet[m["label"]]
            r["config"].update(model="resnet18", dropout=0.0)
            r["key"] = "r" + m["key"][1:]
            r["group_key"] = "r" + m["group_key"][1:]  # seeds of one mix stay one group, as for real runs
            rob["models"].append(r)
    (tmp_path / "cifar10_robustness.json").write_text(json.dumps(rob))
    (tmp_path / "cifar10_runs.json").write_text(CIFAR_RUNS.read_text())
    from jacviz.robustness import load_results
    figs = report_cifar.cifar_figures(load_results(tmp_path / "cifar10_robustness.json"))
    for stem in ("figS3a_noise", "figS3b_pgd", "figS3c_cw", "figS5b_ddnet", "figS5e_ddnet",
                 "figS4a_noise", "figS4b_pgd", "figS4c_cw", "figS5c_resnet18", "figS5f_resnet18"):
        assert stem in figs, stem
    # S4a compares none, L2, JR, L2+JR; S4b the L2 base with +AT, +JR, +JR+AT
    # trace names are the mix, with "(mean ± std, n seeds)" appended when several seeds are pooled
    assert {t.name.split(" (")[0] for t in figs["figS4a_noise"].data if t.name} >= {"none", "L2", "JR", "L2+JR"}
    md = report_cifar.section(tmp_path, png=False)
    ddnet, resnet = md.split("## Robustness, ResNet-18")
    assert "*Not run yet.*" not in resnet.split("## Compute")[0]
    assert "Fig. S4b/c: JR alone beats FGSM adversarial training against CW" in resnet
    assert "L2+JR 0." in resnet and "vs L2+AT 0." in resnet and "L2+dropout" not in resnet.split("## Compute")[0]
    assert "Fig. S4a: JR is the most effective regularizer against white noise" in resnet
    assert "not evaluated yet" not in resnet  # all four S4a mixes are here
    partial = report.claims([{"label": "none", "median": {"noise": (6.9, 0.0)}},
                             {"label": "JR", "median": {"noise": (6.5, 0.0)}}], "L2", report_cifar.RESNET_NOISE, "S4")
    assert partial[0][1].endswith("(none 6.90, JR 6.50); L2 not evaluated yet; L2+JR not evaluated yet")
    assert "Fig. S3b/c: JR alone beats FGSM adversarial training against CW" in ddnet
    assert "L2+dropout+JR 0." in ddnet


def test_resnet_clean_table_lists_every_mix_and_the_jr_cut(tmp_path):
    """ResNet-18's clean accuracy and ||J||_F get their own table (the paper has none to compare with):
    one row per Figure-S4 mix, untrained ones marked, JR's cut of ||J||_F stated, and the schedule line
    gives a ResNet-18 step time measured from the runs. Real DDNet all-data runs stand in for ResNet-18
    ones here (relabelled, seeds moved to 100+), so the test holds whatever ResNet-18 runs exist."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    as_resnet = {"none": "none", "JR": "JR", "L2": "L2"}
    fake = []
    for r in R["runs"]:
        if (r["label"] in as_resnet and r["config"]["model"] == "ddnet" and not r["config"].get("few_shot_k")
                and not grid.is_schedule_study(r["config"])):
            f = json.loads(json.dumps(r))
            f["config"].update(model="resnet18", dropout=0.0, seed=100 + r["config"]["seed"])
            f["seed"] = f["config"]["seed"]
            f.setdefault("meta", {})["torch_threads"] = 2 if r["label"] != "L2" else None  # one run unrecorded
            fake.append(f)
    R["runs"] = [r for r in R["runs"] if r["config"]["model"] != "resnet18"] + fake
    (tmp_path / "cifar10_runs.json").write_text(json.dumps(R))
    rows = {r[0]: r for r in report_cifar.resnet_rows(fake)}
    assert list(rows) == list(grid.RESNET)
    for v in as_resnet:
        src = [r for r in fake if r["label"] == v]
        assert rows[v][1] == ", ".join(str(r["config"]["seed"]) for r in src)
        assert rows[v][2].startswith(f"{100 * sum(r['metrics']['test_acc'] for r in src) / len(src):.1f}")
    assert rows["L2+JR+AT"][1:] == ["—", "—", "—", "not trained yet"]
    md = report_cifar.section(tmp_path, png=False)
    table = md.split("## ResNet-18: clean CIFAR-10 test accuracy")[1].split("\n## ")[0]
    assert "| L2+AT | — | — | — | not trained yet |" in table
    assert "On ResNet-18, JR cuts the mean test ‖J‖_F by" in table
    t = report_cifar.plain_step_seconds(fake, "resnet18")
    per_it = [r["metrics"]["train_time_s"] / r["config"]["iterations"] for r in report_cifar._plain(fake, "resnet18")]
    assert t == pytest.approx(float(np.median(per_it)))  # the middle pair's mean where the runs are even
    assert t and (f"a plain ResNet-18 step took {t:.2f} s (median over runs, evaluations included; "
                  "2 torch threads a run, some runs unrecorded)") in md and "a plain DDNet step took" in md


def test_schedule_experiment_is_the_short_schedule_stretched_five_times():
    """The 'schedule' side study: DDNet none, dropout, L2, JR, All Combined at 7,500 iterations, lr /10 at the same
    60%/80% of the run as 'short', evaluated at the same iterations; only its runs count as the study
    (is_schedule_study)."""
    study = grid.experiment_configs("schedule", [0, 1], "paper", dataset="cifar10")  # 'medium' whatever the grid's
    short = grid.variant_config("none", 0, "short", "cifar10")
    assert [(c.label(), c.seed) for c in study] == [(v, s) for s in (0, 1)
                                                    for v in ("none", "dropout", "L2", "JR", "L2+dropout+JR")]
    s = study[0]
    assert (s.iterations, s.milestones) == (5 * short.iterations, tuple(5 * m for m in short.milestones))
    assert s.eval_every == short.eval_every and s.lr == short.lr == 0.01 and s.model == "ddnet"
    assert s.key() != short.key() and grid.is_schedule_study(s.to_dict())
    others = [short, grid.variant_config("none", 0, "paper", "cifar10"), grid.fewshot_config("none", 10, 0, "cifar10"),
              grid.variant_config("none", 0, "short", "mnist")]
    assert not any(grid.is_schedule_study(c.to_dict()) for c in others)
    assert "schedule" in grid.experiment_names("cifar10") and "schedule" not in grid.experiment_names("mnist")
    rob = grid.robustness_configs([0], "short", "cifar10")
    assert study[0] in rob and short in rob  # evaluated side by side (Training length), never in the figures


def test_the_papers_schedule_for_one_ddnet_mix_stands_beside_table_s3(tmp_path):
    """A 150k-iteration DDNet run of one mix (a GPU session that stopped early) leaves Table S3 on the short runs;
    its own section pairs it with its short twin and the mix's full-data notes cite it."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    short = report.select(R["runs"], "JR", model="ddnet", dataset="cifar10", seed=0, iterations=1500)[0]
    long = json.loads(json.dumps(short))
    long["config"].update(iterations=150000, milestones=[50000, 100000], eval_every=5000, checkpoint_every=5000)
    long["key"], long["metrics"]["test_acc"], long["metrics"]["jac_fro_normalized"] = "pJR", 0.751, 3.9
    (tmp_path / "cifar10_runs.json").write_text(json.dumps({**R, "runs": R["runs"] + [long]}))
    md = report_cifar.section(tmp_path, png=False)
    plain = report_cifar.section(CIFAR_RUNS.parent, png=False)
    table = lambda m: m.split("## Table S3")[1].split("<details>")[0]  # noqa: E731
    assert table(md) == table(plain) and "Training length: the paper's schedule" not in plain
    sec = md.split("## Training length: the paper's schedule\n")[1].split("\n## ")[0]
    assert ("Only JR has such a run (seed 0 of JR), so the tables and figures keep the short schedule; they switch to the "
            "longer one once every full-data mix they use (Table S3's, and the defended runs of the figures) has 2 seeds "
            "of it") in sec and "(`report.table_iterations`; 8 mixes still short of that)." in sec
    assert f"| JR | 0 | {100 * short['metrics']['test_acc']:.1f} | 75.1 | 75.4 ± 0.2 | -0.3 |" in sec
    acc_note = next(line for line in md.splitlines() if line.startswith("| Jacobian | all data |"))
    assert (f"trained 150,000 iterations instead, seed 0 went from {100 * short['metrics']['test_acc']:.1f} to 75.1 "
            "(REPRODUCTION.md, *Training length: the paper's schedule*)") in acc_note
    assert "and 1 of the paper's schedule for some mixes only" in md


def test_schedule_study_gets_its_own_table_and_leaves_table_s3_alone(tmp_path):
    """7,500-iteration runs of 'none' and 'dropout' (the recorded 1,500-iteration records, stretched: history
    extended, accuracy changed) neither supersede nor join the table's runs; their own section pairs each with the
    short run of its mix and seed, ranks the mixes at each length next to the paper, and shows both curves at
    their shared evaluations."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    R["runs"] = [r for r in R["runs"] if not grid.is_schedule_study(r["config"])]
    longs, shorts = [], {}
    for v, final in (("none", 0.70), ("dropout", 0.72)):
        short = shorts[v] = report.select(R["runs"], v, model="ddnet", dataset="cifar10", seed=0, iterations=1500)[0]
        long = json.loads(json.dumps(short))
        long["key"] = f"s{v}"
        long["config"].update(iterations=7500, milestones=[4500, 6000])
        long["history"] = [dict(short["history"][0], iteration=750 * i, test_acc=0.5 + 0.02 * i,
                                jac_fro_normalized=3.0 + i, lr=0.01 if i <= 6 else 0.001 if i <= 8 else 0.0001)
                           for i in range(1, 11)]
        long["metrics"].update(test_acc=final, jac_fro_normalized=13.0, train_time_s=3000.0)
        longs.append(long)
    before = report_cifar.table_s3_rows(report.longest_schedule(R["runs"]))
    assert report_cifar.table_s3_rows(report.longest_schedule(R["runs"] + longs)) == before
    (tmp_path / "cifar10_runs.json").write_text(json.dumps({**R, "runs": R["runs"] + longs[::-1]}))
    md = report_cifar.section(tmp_path, png=False)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "cifar10_runs.json").write_text(json.dumps(R))
    assert "## Training length" not in report_cifar.section(tmp_path / "plain", png=False)
    assert "training-length study" not in report_cifar.section(tmp_path / "plain", png=False)
    assert ("- the training-length study (not in the paper): L2, JR and L2+dropout+JR at 7,500 iterations, seed 0: "
            "`python -m jacviz grid --dataset cifar10 --experiments schedule --seeds 0`") in md.split("not yet reproduced")[1]
    sec = md.split("## Training length: DDNet, 7,500 iterations against 1,500")[1].split("\n## ")[0]
    summary = [line for line in sec.split("<details>")[0].splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in summary[1:]] == ["| none", "| dropout"]  # header, then Table S3's order
    n, d = shorts["none"]["metrics"], shorts["dropout"]["metrics"]
    assert summary[1].startswith(f"| none | 0 | {100 * n['test_acc']:.1f} | 70.0 | 76.8 ± 0.4 | -6.8 | "
                                 f"{n['jac_fro_normalized']:.2f} | 13.00 | 115.1 ± 1.8 | ")
    assert "| 72.0 | 80.7 ± 0.4 | -8.7 |" in summary[2]
    h0 = shorts["none"]["history"][0]  # the stretched runs' first evaluation: 52.0% at iteration 750
    assert (f"At iteration 750, before the short schedule's first lr drop, the two runs of a mix have had the same lr, "
            f"initialization and batches, yet their test accuracies differ by {52.0 - 100 * h0['test_acc']:+.1f} points "
            "(none), ") in sec
    assert summary[1].endswith(" | +2.0 points, +1.00 | 50 min |")
    assert (f"after 1,500 iterations {report_length.ranking({'none': 100 * n['test_acc'], 'dropout': 100 * d['test_acc']})}; "
            "after 7,500 dropout 72.0 > none 70.0; the paper after 150,000 dropout 80.7 > none 76.8.") in sec
    curve = sec.split("**none, seed 0**")[1].split("**dropout")[0]
    table = [line for line in curve.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 10  # header, one row per evaluation of the long run
    h0, h1 = shorts["none"]["history"]
    assert table[1].startswith(f"| 750 | 1.5 | 0.01 | {100 * h0['test_acc']:.1f} | {h0['jac_fro_normalized']:.2f} | 52.0 | 4.00 |")
    assert f"| 1,500 | 3 | 0.01 | {100 * h1['test_acc']:.1f} |" in table[2]
    assert table[3].startswith("| 2,250 | 4.5 | 0.01 |  |  | 56.0 | 6.00 |")
    assert "and 2 of the schedule study (*Training length* below)" in md
    assert "superseded" not in md.split("## Table S3")[0]
    # the full-data cells of the studied mixes cite the longer runs; their numbers stay out of the cells
    rows = {(r["regularizer"], r["column"]): r for r in report_cifar.table_s3_rows(
        report.longest_schedule(R["runs"] + longs), [], report_cifar.schedule_study(R["runs"] + longs))}
    assert rows[("none", "all")]["ours"] == next(r["ours"] for r in before if (r["regularizer"], r["column"]) == ("none", "all"))
    assert (f"trained 7,500 iterations instead, seed 0 went from {100 * n['test_acc']:.1f} to 70.0 "
            "(REPRODUCTION.md, *Training length*)") in rows[("none", "all")]["note"]
    assert f"went from {n['jac_fro_normalized']:.2f} to 13.00" in rows[("none", "jac")]["note"]
    assert "Training length" not in rows[("L2", "all")]["note"]  # no longer L2 run here
    # the figure: per run one accuracy and one ||J||_F trace with its history; the paper's accuracies as lines
    fig = report_cifar.schedule_study_figure(report_cifar.schedule_study(R["runs"] + longs))
    acc = {t.name: t for t in fig.data if t.xaxis == "x"}
    assert set(acc) == {"none, 1,500 it.", "none, 7,500 it.", "dropout, 1,500 it.", "dropout, 7,500 it."}
    assert list(acc["none, 7,500 it."].x) == [750 * i for i in range(1, 11)]
    assert list(acc["none, 1,500 it."].y) == [100 * h["test_acc"] for h in shorts["none"]["history"]]
    assert acc["none, 1,500 it."].line.dash == "dot" and acc["none, 7,500 it."].line.dash == "solid"
    jac = [t for t in fig.data if t.xaxis == "x2" and t.name == "dropout, 7,500 it."][0]
    assert list(jac.y) == [3.0 + i for i in range(1, 11)]
    assert sorted(s.y0 for s in fig.layout.shapes) == [76.8, 80.7]
    md = report_cifar.section(tmp_path, png=True)
    if Path("/usr/bin/chromium").exists():  # kaleido's browser (.ci/run installs it)
        assert "![Training length (ours)" in md
        assert (tmp_path / "figures" / "cifar_training_length.png").stat().st_size > 10_000
    else:
        assert "*Training length (ours)" in md and "PNG export failed" in md


def test_schedule_study_states_jrs_cut_of_the_jacobian_at_each_length(tmp_path):
    """With 'none' and 'JR' both trained at both lengths, the study states ||J||_F none / JR after each, next to
    the paper's 115.1 / 4.0, and how much each norm grew with the longer training."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    runs = [r for r in R["runs"] if not grid.is_schedule_study(r["config"])]
    study, short_jac = [], {}
    for v, final_jac in (("none", 40.0), ("JR", 4.0)):
        short = report.select(runs, v, model="ddnet", dataset="cifar10", seed=0, iterations=1500)[0]
        short_jac[v] = short["metrics"]["jac_fro_normalized"]
        long = json.loads(json.dumps(short))
        long["config"].update(iterations=7500, milestones=[4500, 6000])
        long["metrics"].update(jac_fro_normalized=final_jac)
        study.append({"variant": v, "seed": 0, "long": long, "short": short})
    summary, _ = report_cifar.schedule_study_markdown(study)
    n, j = short_jac["none"], short_jac["JR"]
    assert (f"JR's cut of ‖J‖_F against no regularization (seed 0, ‖J‖_F none / JR): after 1,500 iterations "
            f"{n:.2f} / {j:.2f} = {n / j:.1f}×; after 7,500 40.00 / 4.00 = 10.0×; the paper after 150,000 "
            f"115.1 / 4.0 = 29×. From 1,500 to 7,500 iterations ‖J‖_F changed {40 / n:.1f}× without "
            f"regularization and {4 / j:.1f}× with JR.") in summary
    summary, _ = report_cifar.schedule_study_markdown(study[:1])
    assert "JR's cut" not in summary  # one of the two missing: no ratio
    # Table S3's sentence on JR's cut points to the longer runs once both are in (as in the shipped results)
    for r in study:
        r["long"]["key"] = "long-" + r["variant"]
    R["runs"] = runs + [r["long"] for r in study]
    (tmp_path / "cifar10_runs.json").write_text(json.dumps(R))
    md = report_cifar.section(tmp_path, png=False).split("## Training length")[0]
    assert ("so the gap JR opens is expected to widen with training; in the training-length study below, 5× longer "
            "training widened it to 10.0× (seed 0: 40.00 → 4.00).") in md
    R["runs"] = runs + [study[0]["long"]]
    (tmp_path / "cifar10_runs.json").write_text(json.dumps(R))
    md = report_cifar.section(tmp_path, png=False).split("## Training length")[0]
    assert "so the gap JR opens is expected to widen with training, which these runs cannot show." in md


def test_schedule_study_robustness_sits_beside_its_short_twin_and_out_of_the_figures(tmp_path):
    """A robustness record of the 7,500-iteration 'none' (the recorded short record, distances halved) is
    tabulated under *Training length* next to the short run's, with the change in median CW distance and
    ||J||_F; the robustness tables and figures keep the short schedule only (report.current_robustness)."""
    rob_file = CIFAR_RUNS.parent / "cifar10_robustness.json"
    if not CIFAR_RUNS.is_file() or not rob_file.is_file():
        pytest.skip("no CIFAR-10 results files in this checkout")
    R, rob = json.loads(CIFAR_RUNS.read_text()), json.loads(rob_file.read_text())
    R["runs"] = [r for r in R["runs"] if not grid.is_schedule_study(r["config"])]
    rob["models"] = [m for m in rob["models"] if not grid.is_schedule_study(m["config"])]
    short = report.select(R["runs"], "none", model="ddnet", dataset="cifar10", seed=0, iterations=1500)[0]
    long = json.loads(json.dumps(short))
    long["key"] = "s0none"
    long["config"].update(iterations=7500, milestones=[4500, 6000])
    long["metrics"].update(test_acc=0.77, jac_fro_normalized=43.0)
    rec = next(m for m in rob["models"] if m["key"] == short["key"])
    lrec = json.loads(json.dumps(rec))
    lrec.update(key=long["key"], group_key=long["key"], config=long["config"], clean_accuracy=0.8)
    lrec["training_metrics"]["jac_fro_normalized"] = 43.0
    lrec["distances"] = {a: [None if d is None else d / 2 for d in ds] for a, ds in rec["distances"].items()}
    rob["models"].append(lrec)
    (tmp_path / "cifar10_runs.json").write_text(json.dumps({**R, "runs": R["runs"] + [long]}))
    (tmp_path / "cifar10_robustness.json").write_text(json.dumps(rob))
    md = report_cifar.section(tmp_path, png=False)
    sec = md.split("## Training length")[1].split("\n## ")[0]
    rows = [line for line in sec.split("<details>")[0].splitlines() if line.startswith("| none, ")]
    assert [r.split(" | ")[0] for r in rows] == ["| none, 1,500 it.", "| none, 7,500 it."]
    assert rows[1].split(" | ")[2] == "80.00"
    cw = rec["summaries"]["cw"]["median"]
    worst = rec["summaries"]["worst"]["median"]
    assert (f"none: training longer changed clean accuracy {100 * rec['clean_accuracy']:.1f} → 80.0% and the median "
            f"CW distance {cw:.3f} → {cw / 2:.3f} (per-sample worst case over the attacks {worst:.3f} → "
            f"{worst / 2:.3f}) while ‖J‖_F went {rec['training_metrics']['jac_fro_normalized']:.2f} → 43.00.") in sec
    # on the images both classify correctly (here: the same ones), halved distances halve every median
    both = report_length.both_correct_medians(rec, lrec)
    n_ok = sum(d is None or d > 0 for d in rec["distances"]["cw"])
    assert both["cw"][0] == n_ok and both["cw"][2] == pytest.approx(both["cw"][1] / 2)
    assert f"| cw | {n_ok} | {both['cw'][1]:.3f} | {both['cw'][2]:.3f} | 0.50 |" in sec
    assert f"| worst | {both['worst'][0]} | {both['worst'][1]:.3f} | {both['worst'][2]:.3f} | 0.50 |" in sec
    assert report_length.both_correct_medians({"distances": {"cw": [0.0, 0.2, None, 0.4]}},
                                             {"distances": {"cw": [0.1, 0.0, 0.3, 0.2]}}) == {"cw": (2, math.inf, 0.25)}
    # images 3 and 4 are correct under both; the first model never fools image 3 (infinitely far)
    # a CW that finds nothing on the longer model where PGD fools says so next to its ∞ median
    stalled = json.loads(json.dumps(lrec))
    stalled["distances"]["cw"] = [None if (d or 0) > 0 else d for d in stalled["distances"]["cw"]]
    stalled["distances"]["pgd"] = [0.5 if d is None else d for d in stalled["distances"]["pgd"]]
    text = report_length.length_robustness([{"variant": "none", "seed": 0, "long": long, "short": short}],
                                           {"models": [rec, stalled]})
    assert "CW found no adversarial example for" in text and "; CW stalled, see its attack flag)" in text
    # the grid's results file groups the figures' records only: no study group, no '[key]'-suffixed twin label
    collected = grid.collect_robustness(tmp_path / "no-runs", [], rob)
    assert lrec["key"] in {m["key"] for m in collected["models"]}
    assert lrec["key"] not in {g["group_key"] for g in collected["groups"]}
    assert not any("[" in g["label"] for g in collected["groups"])
    after = md.split("## Robustness, DDNet")[1].split("\n## ")[0]
    assert "7,500" not in after and sum(line.startswith("| none |") for line in after.splitlines()) == 1


def test_gpu_runs_are_timed_apart_and_named_in_the_report(tmp_path):
    """A run trained on a GPU (checkpoint meta device 'cuda') gets a Compute row of its own — its seconds
    would otherwise drag a CPU median down — and the few-shot bullet names it with the GPU and torch
    version, while the schedule bullet still says no GPU made the full-data runs."""
    if not CIFAR_RUNS.is_file():
        pytest.skip("no reproduction/cifar10_runs.json in this checkout")
    R = json.loads(CIFAR_RUNS.read_text())
    cpu = [r for r in R["runs"] if r["config"].get("few_shot_k") == 1 and r["label"] == "none (1/class)"
           and not report.on_gpu(r["meta"])]
    assert cpu, "the recorded runs have CPU few-shot k=1 runs"
    gpu = json.loads(json.dumps(cpu[0]))
    gpu["key"], gpu["config"]["seed"] = "0123456789", 99
    gpu["metrics"]["train_time_s"] = 12.5
    gpu["meta"].update(device="cuda:0", device_name="Test GPU", torch="9.9.9", date="2099-01-01")
    nhwc = json.loads(json.dumps(cpu[0]))  # trained in channels_last (faster on a CPU): a row of its own too
    nhwc["key"], nhwc["config"]["seed"], nhwc["metrics"]["train_time_s"] = "0123456788", 98, 7.0
    nhwc["meta"]["memory_format"] = "channels_last"
    tr = json.loads(json.dumps(nhwc))  # with transposed-convolution JR gradients, resumed from the old set-up
    tr["key"], tr["config"]["seed"], tr["metrics"]["train_time_s"] = "0123456787", 97, 5.0
    tr["meta"].update(conv_input_grad="transposed", step_setups=[
        {"from_iteration": 0, "memory_format": "contiguous", "conv_input_grad": "torch"},
        {"from_iteration": 9, "memory_format": "channels_last", "conv_input_grad": "transposed"}])
    old = json.loads(json.dumps(tr))  # resumed from a file that predates the record: not called a change
    old["key"], old["config"]["seed"], old["metrics"]["train_time_s"] = "0123456786", 96, 3.0
    old["meta"]["step_setups"][0].update(memory_format="unrecorded", conv_input_grad="unrecorded")
    abn = json.loads(json.dumps(tr))  # with BatchNorm's closed-form double backward, from a record without the key
    abn["key"], abn["config"]["seed"], abn["metrics"]["train_time_s"] = "0123456785", 95, 2.0
    abn["meta"]["bn_double_backward"] = "analytic"
    abn["meta"]["step_setups"] = [dict(abn["meta"]["step_setups"][1], from_iteration=0),
                                  dict(abn["meta"]["step_setups"][1], from_iteration=5, bn_double_backward="torch")]
    rows = report.timing_rows(cpu + [gpu, nhwc, tr, old, abn])
    by_kind = {r[0]: r for r in rows}
    # the last column counts the runs at each recorded torch thread count
    assert by_kind["ddnet, few-shot k=1, full batch 10, 10k iterations, no JR"][5] == report.threads_text(
        [r["meta"].get("torch_threads") for r in cpu])
    cpu_kind = "ddnet, few-shot k=1, full batch 10, 10k iterations, no JR"
    assert by_kind[cpu_kind][1] == len(cpu) and by_kind[cpu_kind + ", on Test GPU (GPU)"][1:3] == [1, "12"]
    assert by_kind[cpu_kind + ", channels_last"][1:3] == [1, "7"]
    assert by_kind[cpu_kind + ", channels_last, transposed-conv JR, step set-up changed mid-run"][1:3] == [1, "5"]
    assert by_kind[cpu_kind + ", channels_last, transposed-conv JR"][1:3] == [1, "3"]
    assert by_kind[cpu_kind + ", channels_last, transposed-conv JR, analytic-BN JR"][1:3] == [1, "2"]
    (tmp_path / "cifar10_runs.json").write_text(json.dumps({**R, "runs": R["runs"] + [gpu]}))
    md = report_cifar.section(tmp_path, png=False)
    bullet = next(line for line in md.splitlines() if line.startswith("- **Few-shot**"))
    assert "k=1 seed 99: none" in bullet and "Test GPU, torch 9.9.9, 2099-01-01" in bullet
    assert "| ddnet, few-shot k=1, full batch 10, 10k iterations, no JR, on Test GPU (GPU) | 1 | 12 |" in md
    assert "No GPU was lent to the sessions that made these full-data runs" in md
