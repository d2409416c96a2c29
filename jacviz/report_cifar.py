"""The CIFAR-10 part of REPRODUCTION.md (Appendix E): Table S3 and Figures S3, S4, S5b/c/e/f.

Reads ``reproduction/cifar10_runs.json`` and ``reproduction/cifar10_robustness.json`` (written by
``python -m jacviz grid --dataset cifar10``); ``report.build`` appends the section this module
writes. The paper's values (``PAPER_TABLE_S3``) are the only numbers typed by hand.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .grid import (CIFAR_SCHEDULES, DEFENDED, FEWSHOT_K, PAPER_ITERATIONS, RESNET, SCHEDULE_STUDY, TABLE1,
                   is_schedule_study, variant_config)
from .report import (CLAIMS_NOTE, length_study, pair_runs, why_beside, _jac_trend, _md_table, agreement, and_join, agrees, claims, collapsed_note, current_robustness,
                     diverged_note, draw_noise_note, jacobian_reduction, load_more_draws, more_draws_note, paired_fewshot_markdown,
                     paired_fewshot_rows, fewshot_missing, figure_md, final_ce, fmt, longest_schedule, mean_ci, on_gpu,
                     robustness_markdown, robustness_rows, schedule_name, select, superseded_note, table1_markdown,
                     timing_rows, write_pngs)
from .report_length import length_figure, length_markdown, length_robustness, longer_note, study_jacobians

# Table S3: DDNet on CIFAR-10, test accuracy % (95% CI over 5 runs full data / 15 runs few-shot) and ||J||_F.
PAPER_TABLE_S3 = {
    "none": {1: (12.9, 0.7), 3: (15.5, 0.7), 10: (20.5, 1.3), 30: (26.6, 1.0), "all": (76.8, 0.4), "jac": (115.1, 1.8)},
    "L2": {1: (13.9, 1.0), 3: (14.6, 1.1), 10: (20.5, 1.0), 30: (26.6, 1.2), "all": (77.8, 0.2), "jac": (29.4, 0.5)},
    "dropout": {1: (12.9, 1.4), 3: (17.8, 0.6), 10: (24.4, 1.0), 30: (31.4, 0.5), "all": (80.7, 0.4), "jac": (184.2, 4.8)},
    "JR": {1: (14.9, 1.0), 3: (18.3, 1.0), 10: (23.7, 0.8), 30: (30.0, 0.6), "all": (75.4, 0.2), "jac": (4.0, 0.0)},
    "L2+dropout+JR": {1: (15.0, 1.1), 3: (19.6, 0.9), 10: (26.1, 0.6), 30: (33.4, 0.6), "all": (78.6, 0.2), "jac": (5.2, 0.0)},
}
COLUMNS = (*FEWSHOT_K, "all", "jac")
RESNET_NOISE = ("none", "L2", "JR", "L2+JR")  # Figure S4a: ResNet-18 under white noise


def ddnet_runs(runs: list[dict], variant: str, k: int | None = None) -> list[dict]:
    """DDNet runs of a Table-S3 cell (the schedule study's runs never count)."""
    return [r for r in select(runs, variant, k, model="ddnet", dataset="cifar10") if not is_schedule_study(r["config"])]


def table_s3_rows(runs: list[dict], diverged: list[dict] = (), study: list[dict] = (),
                  more: list[dict] = (), paper_length: list[dict] = ()) -> list[dict]:
    """One row per (regularizer, column) of Table S3: paper, ours, difference, agreement, note.

    diverged: the results file's diverged runs (grid.collect_runs); ours averages the finished runs
    only and the note counts the diverged ones. study: :func:`schedule_study` pairs, whose longer runs the
    full-data notes cite (they stay out of the cells). more: ``reproduction/fewshot_draws.py``'s runs beyond the
    table's seeds, named in their few-shot cell's note (report.more_draws_note), out of the cell.
    paper_length: ``report.length_study`` pairs (the paper's schedule for some mixes only), cited alike."""
    rows = []
    for v in TABLE1:
        for col in COLUMNS:
            paper = PAPER_TABLE_S3[v][col]
            rs = ddnet_runs(runs, v, None if col in ("all", "jac") else col)
            div = ddnet_runs(list(diverged), v, None if col in ("all", "jac") else col)
            if col == "jac":
                ours = mean_ci([r["metrics"].get("jac_fro_normalized") for r in rs])
            else:
                ours = mean_ci([100 * r["metrics"]["test_acc"] for r in rs])
            row = {"regularizer": v, "column": col, "paper": paper, "ours": ours,
                   "diff": ours[0] - paper[0] if ours[2] else math.nan, "agrees": agrees(ours, paper) if ours[2] else None}
            notes = (diverged_note(div, len(rs)), collapsed_note(rs) if col != "jac" else "",
                     _note(row, rs, runs) if rs or not div else "",
                     longer_note(col, [p for p in study if p["variant"] == v]) if not row["agrees"] else "",
                     longer_note(col, [p for p in paper_length if p["variant"] == v], "Training length: the paper's "
                                 "schedule") if not row["agrees"] else "",
                     more_draws_note(rs, ddnet_runs(list(more), v, col), paper) if col in FEWSHOT_K and rs else "")
            row["note"] = "; ".join(n for n in notes if n)
            rows.append(row)
    return rows


def mean_history(runs: list[dict], key: str) -> list[tuple[int, float]]:
    """[(iteration, mean of `key` over the runs evaluated there)] at the iterations every run evaluated."""
    per_run = [{h["iteration"]: h[key] for h in r.get("history") or [] if h.get(key) is not None} for r in runs]
    common = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    return [(i, float(np.mean([d[i] for d in per_run]))) for i in common]


def _note(row: dict, rs: list[dict], runs: list[dict]) -> str:
    n = row["ours"][2]
    if n == 0:
        return "not run yet" + ("" if row["column"] in ("all", "jac") else " (few-shot DDNet: a GPU job, see below)")
    its = sorted({r["config"]["iterations"] for r in rs})
    sched = "/".join(f"{i:,}" for i in its)
    n_paper = 5 if row["column"] in ("all", "jac") else 15
    notes = [f"{n} run{'s' if n > 1 else ''} (paper: {n_paper})"] if n < n_paper else []
    if row["agrees"]:
        return "; ".join(notes + [agreement(row["ours"], row["paper"])])
    if row["column"] == "all" and its and max(its) < PAPER_ITERATIONS:
        grow = ""
        hs = [r["history"] for r in rs if len(r.get("history") or []) >= 2]
        if hs:
            a, b = (100 * float(np.mean([h[i]["test_acc"] for h in hs])) for i in (-2, -1))
            span = hs[0][-1]["iteration"] - hs[0][-2]["iteration"]
            mean_of = f" (mean of {len(hs)} runs)" if len(hs) > 1 else ""
            grow = (f"; test accuracy still {'rose' if b > a else 'moved'} from {a:.1f} to {b:.1f}{mean_of} "
                    f"over the last {span:,} iterations")
        notes.append(f"{sched} SGD iterations ({max(its) / 500:g} epochs) instead of the paper's 150,000: "
                     f"final training-batch cross-entropy {final_ce(rs):.2f}{grow}: an undertrained model "
                     "(see Schedule above)")
    elif row["column"] == "jac":
        a, b, n_jac = _jac_trend(rs)
        if math.isfinite(a) and math.isfinite(b) and its and max(its) < PAPER_ITERATIONS:
            moving = "still growing" if b > 1.1 * a else "still shrinking" if b < a / 1.1 else "about flat"
            notes.append(f"{'smaller' if row['diff'] < 0 else 'larger'}; {moving} during our {sched}-iteration "
                         f"training ({a:.2f} → {b:.2f} on {n_jac:,} test images), which is 100× shorter than the paper's")
        else:
            notes.append(f"{'smaller' if row['diff'] < 0 else 'larger'} than the paper's; cause not established")
    elif row["column"] in FEWSHOT_K:
        notes += ["outside the paper's interval", draw_noise_note(row["ours"], row["paper"])]
    else:
        notes.append("outside the paper's interval")
    return "; ".join(n for n in notes if n)


def schedule_study(all_runs: list[dict]) -> list[dict]:
    """The 'schedule' experiment's DDNet runs (grid.SCHEDULE_STUDY mixes on the 'medium' schedule, 5x the
    tables' 'short' one), each paired with the tables' short run of the same mix and seed (``report.pair_runs``),
    mixes in Table S3's order, then by seed."""
    by_key = {r["key"]: r for r in all_runs}

    def twin(v, r):  # the short run's name, as the grid's
        return by_key.get(variant_config(v, r["config"]["seed"], "short", "cifar10").key())
    return pair_runs([r for r in all_runs if is_schedule_study(r["config"])], [v for v in TABLE1 if v in SCHEDULE_STUDY],
                     twin, model="ddnet", dataset="cifar10")


def schedule_study_figure(study: list[dict]):
    """:func:`schedule_study` pairs as ``report_length.length_figure`` (Table S3's accuracies dashed)."""
    return length_figure(study, PAPER_TABLE_S3, "DDNet on CIFAR-10: the tables' short schedule and 5× longer",
                         per_epoch=500)


def schedule_study_markdown(study: list[dict]) -> tuple[str, str]:
    """:func:`schedule_study` pairs as ``report_length.length_markdown`` against Table S3."""
    return length_markdown(study, PAPER_TABLE_S3, per_epoch=500)


def _on_gpu(runs: list[dict]) -> list[dict]:
    """The runs whose checkpoint meta says they were trained on a CUDA device."""
    return [r for r in runs if on_gpu(r.get("meta", {}))]


def _gpu_note(gpu_runs: list[dict]) -> str:
    """'3 runs (k=10 seed 1: dropout, JR, L2+dropout+JR) were trained on a GPU (NVIDIA H200, torch 2.11.0+cu130,
    2026-12-04)' for few-shot runs trained on a GPU."""
    cells: dict = {}
    for r in gpu_runs:
        cells.setdefault((r["config"]["few_shot_k"], r["config"]["seed"]), []).append(TrainConfig.from_dict(r["config"]).mix())
    where = sorted({f"{r['meta'].get('device_name', '?')}, torch {r['meta'].get('torch', '?')}, {r['meta'].get('date', '?')}"
                    for r in gpu_runs})
    what = "; ".join(f"k={k} seed {s}: {', '.join(v)}" for (k, s), v in sorted(cells.items()))
    n = len(gpu_runs)
    return f"{n} run{'' if n == 1 else 's'} ({what}) {'was' if n == 1 else 'were'} trained on a GPU ({'; '.join(where)})"


def resnet_rows(runs: list[dict]) -> list[list[str]]:
    """One row per ResNet-18 mix (Figure S4's six): [mix, seeds, test accuracy %, ||J||_F, training time].

    Accuracy on the 10,000 test images, ||J||_F (normalized input) on the first 1,000, both mean ± 95% CI
    over seeds (the value alone for one seed). The paper prints no clean numbers for ResNet-18."""
    rows = []
    for v in RESNET:
        rs = select(runs, v, model="resnet18", dataset="cifar10")
        if not rs:
            rows.append([v, "—", "—", "—", "not trained yet"])
            continue
        acc = mean_ci([100 * r["metrics"]["test_acc"] for r in rs])
        jac = mean_ci([r["metrics"].get("jac_fro_normalized") for r in rs])
        t = [r["metrics"].get("train_time_s") for r in rs if r["metrics"].get("train_time_s")]
        rows.append([v, ", ".join(str(r["config"]["seed"]) for r in rs), fmt(*acc[:2]), fmt(*jac[:2], 2),
                     f"{sum(t) / len(t) / 60:.0f} min" if t else "—"])
    return rows


def resnet_markdown(runs: list[dict]) -> str:
    """:func:`resnet_rows` as a markdown table."""
    return _md_table(["Regularizer", "seeds", "test accuracy %", "‖J‖_F", "training time (mean)"], resnet_rows(runs))


def _plain(runs: list[dict], model: str) -> list[dict]:
    return [r for r in runs if r["config"].get("model") == model and not r["config"].get("few_shot_k")
            and not r["config"].get("jr") and not r["config"].get("adv_train") and r["metrics"].get("train_time_s")
            and not on_gpu(r.get("meta", {}))]  # the text quoting these medians speaks of the CPU


def plain_step_seconds(runs: list[dict], model: str) -> float | None:
    """Median training wall time per SGD iteration (evaluations included) of the all-data runs of one
    architecture without JR or AT, or None when there are none."""
    ts = [r["metrics"]["train_time_s"] / r["config"]["iterations"] for r in _plain(runs, model)]
    return float(np.median(ts)) if ts else None


def _threads(runs: list[dict], model: str) -> str:
    """'2 torch threads a run' / '1–2 torch threads a run' for the runs plain_step_seconds reads, as their checkpoints
    recorded it (older checkpoints did not: those count as unrecorded)."""
    th = sorted({r.get("meta", {}).get("torch_threads") for r in _plain(runs, model)}, key=str)
    known = [t for t in th if t]
    if not known:
        return "threads not recorded"
    s = "–".join(map(str, sorted({min(known), max(known)})))
    return f"{s} torch thread{'' if s == '1' else 's'} a run" + (", some runs unrecorded" if len(known) < len(th) else "")


def table_s3_markdown(rows: list[dict], details: bool = True):
    """Table S3 as report.table1_markdown lays out Table 1; the long table lists only the cells we ran."""
    return table1_markdown(rows, details, ran_only=True, summary="Every cell we ran, with its difference and explanation",
                           caption="Accuracy in %, CIFAR-10 test set (10,000); ‖J‖_F with respect to the normalized "
                                   "input (x − 0.5)·2 (double it for [0,1]-pixel units), ours on the first 1,000 test "
                                   "images.")


def _model_results(rob: dict, model: str) -> dict:
    """The robustness records of one architecture, re-grouped over seeds (labels repeat across models)."""
    from .robustness import aggregate_seeds
    ms = [m for m in rob.get("models", []) if m.get("config", {}).get("model") == model]
    return {"models": ms, "groups": aggregate_seeds(ms) if ms else []}


def cifar_figures(rob: dict) -> dict:
    """S3a (noise, Table-S3 mixes), S3b (PGD) and S3c (CW) for the defended DDNets, S4a/b/c the same for
    ResNet-18, S5b/e and S5c/f (test error vs fooling distance by attack, without / with defense)."""
    from .robustness import figures_from_results
    figs = {}
    for model, fig, name, base, table, defended, undef, defd, s5 in (
            ("ddnet", "S3", "DDNet", "L2 + dropout", TABLE1, DEFENDED, "L2+dropout", "L2+dropout+JR+AT", ("b", "e")),
            ("resnet18", "S4", "ResNet-18", "L2", RESNET_NOISE, ("L2", "L2+AT", "L2+JR", "L2+JR+AT"),
             "L2", "L2+JR+AT", ("c", "f"))):
        res = _model_results(rob, model)
        groups = res["groups"]
        if not groups:
            continue

        def sub(labels):
            return {"groups": [g for g in groups if g["label"] in labels]}

        f = figures_from_results(sub(set(table)))
        if "accuracy_noise_cifar10" in f:
            figs[f"fig{fig}a_noise"] = f["accuracy_noise_cifar10"].update_layout(
                title=f"Figure {fig}a: {name} accuracy under white noise")
        f = figures_from_results(sub(set(defended)))
        if "accuracy_pgd_cifar10" in f:
            figs[f"fig{fig}b_pgd"] = f["accuracy_pgd_cifar10"].update_layout(
                title=f"Figure {fig}b: {name} accuracy under PGD (L∞ ≤ 16/255; base: {base})")
        if "fooling_cw_cifar10" in f:
            figs[f"fig{fig}c_cw"] = f["fooling_cw_cifar10"].update_layout(
                title=f"Figure {fig}c: {name} test error vs CW-L2 fooling distance (base: {base})")
        for label, letter in ((undef, s5[0]), (defd, s5[1])):
            g = [g for g in groups if g["label"] == label]
            if g:
                f = figures_from_results({"groups": g})
                k = f"attacks_{g[0]['group_key']}"
                if k in f:
                    figs[f"figS5{letter}_{model}"] = f[k].update_layout(
                        title=f"Figure S5{letter}: {name} {label}, test error vs fooling distance by attack")
    return figs


def section(results_dir: Path, png: bool = True) -> str | None:
    """The CIFAR-10 markdown section, or None when there is no ``cifar10_runs.json``."""
    runs_file = Path(results_dir) / "cifar10_runs.json"
    if not runs_file.exists():
        return None
    R = json.loads(runs_file.read_text())
    all_runs = R["runs"]
    runs, diverged = longest_schedule(all_runs), longest_schedule(R.get("diverged", []), all_runs)
    study = schedule_study(all_runs)
    paper_length = length_study(all_runs, "ddnet", "cifar10")  # longer than the tables, only some mixes yet
    table_runs = [r for r in all_runs if not is_schedule_study(r["config"])]
    rob_file = Path(results_dir) / "cifar10_robustness.json"
    rob_all = {"models": [], "groups": [], "meta": {}}
    if rob_file.exists():
        from .robustness import load_results
        rob_all = load_results(rob_file)
    rob = current_robustness(rob_all, all_runs)
    rows = table_s3_rows(runs, diverged, study, load_more_draws(results_dir, "cifar10"), paper_length)
    figs = cifar_figures(rob) if rob["models"] else {}
    if study:
        figs["cifar_training_length"] = schedule_study_figure(study)
    if paper_length:
        figs["cifar_paper_length"] = length_figure(
            paper_length, PAPER_TABLE_S3, "DDNet on CIFAR-10: the tables' short schedule and the paper's 150,000 "
            "iterations", per_epoch=500, log_x=True)
    pngs = write_pngs(figs, Path(results_dir) / "figures") if png else None
    devices = sorted({f"{r['meta'].get('device', '?')} ({r['meta'].get('device_name', '?')}, torch "
                      f"{r['meta'].get('torch', '?')})" for r in runs})
    hours = sum(r["metrics"].get("train_time_s", 0) for r in all_runs) / 3600
    full = [r for r in runs if not r["config"].get("few_shot_k")]
    its = sorted({r["config"]["iterations"] for r in full})
    div_fs = [d for d in diverged if d["config"].get("few_shot_k")]
    fs_gpu = _on_gpu([r for r in runs if r["config"].get("few_shot_k")])
    full_gpu = _on_gpu(full)
    cells = Counter((r["label"], r["config"]["few_shot_k"]) for r in runs if r["config"].get("few_shot_k"))
    per_cell = "–".join(map(str, sorted({min(cells.values(), default=0), max(cells.values(), default=0)})))
    red = jacobian_reduction(runs, "ddnet", "cifar10")
    none, jr = red["none"], red["jr"]
    md = ["# CIFAR-10 (Appendix E)\n",
          "From `reproduction/cifar10_runs.json` and `reproduction/cifar10_robustness.json` "
          "(`python -m jacviz grid --dataset cifar10`).\n",
          "## How these numbers were made\n",
          f"- **Runs**: {len(runs)} finished runs ({sum(r['config']['model'] == 'ddnet' for r in runs)} DDNet, "
          f"{sum(r['config']['model'] == 'resnet18' for r in runs)} ResNet-18){superseded_note(table_runs, runs)}"
          + (f" and {len(study)} of the schedule study (*Training length* below)" if study else "")
          + (f" and {len(paper_length)} of the paper's schedule for some mixes only (*Training length: the paper's "
             "schedule* below)" if paper_length else "") + ", "
          f"{hours:.1f} h of training wall time on {', '.join(devices) or '—'}.",
          f"- **Schedule**: {schedule_name(runs)} — "
          + (f"{'/'.join(f'{i:,}' for i in its)} SGD iterations ({'/'.join(f'{i / 500:g}' for i in its)} epochs), batch 100, momentum 0.9, lr 0.01 (DDNet) / "
             "0.1 (ResNet-18) ÷10 after 60% and 80% of them. The paper trains 150,000 iterations (300 epochs), "
             "÷10 after 50k and 100k. "
             + ("No GPU was lent to the sessions that made these full-data runs; " if not full_gpu else
                f"{len(full_gpu)} of these full-data runs were trained on a GPU; ")
             + "on the sessions' 2-core CPU "
             + "; ".join(f"a plain {name} step took {t:.2f} s (median over runs, evaluations included; "
                         f"{_threads(full, m)}), so the paper's schedule would take ~{t * PAPER_ITERATIONS / 3600:.0f} h "
                         f"a plain {name} run"
                         for name, m, t in (("DDNet", "ddnet", plain_step_seconds(full, "ddnet")),
                                            ("ResNet-18", "resnet18", plain_step_seconds(full, "resnet18"))) if t)
             + ". **Our accuracies and norms are those of undertrained models and are not comparable to the "
             "paper's**; what these runs show is how the regularizers compare after the same short training "
             "(‖J‖_F, robustness), which need not be the order they reach after 150,000 iterations."
             + (" *Training length* below measures what 5× more iterations change." if study else "")
             if its and max(its) < PAPER_ITERATIONS else "the paper's 150k iterations, ÷10 after 50k and 100k."),
          "- **Few-shot** (Table S3, columns 1–30): k training images per class drawn with the run's seed, "
          "full-batch SGD (momentum 0.9) at constant lr 0.01 for 10,000 iterations, as the paper; "
          + (f"{len(runs) - len(full)} runs, {per_cell} per cell we ran (the paper averages 15), so a cell of ours "
             "is the mean of that many draws of the k images"
             + (f"; {_gpu_note(fs_gpu)}, the others on the 2-core CPU (the same protocol and code; only the "
                "hardware differs)" if fs_gpu else "")
             + (f"; {len(div_fs)} more diverged (loss NaN; the table's notes say which) and "
                f"{'is' if len(div_fs) == 1 else 'are'} left out" if div_fs else "") + "."
             if len(runs) > len(full) else "not run yet."),
          "- **‖J‖_F**: exact Frobenius norm of the 10×3072 input-output Jacobian w.r.t. the normalized input "
          "(x − 0.5)·2, averaged over the first 1,000 test images (the paper: the test set).",
          "- **Robustness**: " + (f"first {', '.join(map(str, rob['meta'].get('n', [])))} test images, L2 distances "
                                  f"in [0,1] pixel space, PGD within L∞ 16/255, CW preset "
                                  f"{', '.join(rob['meta'].get('cw_presets', []))} "
                                  f"({json.dumps(rob['meta'].get('cw', {}))}), on "
                                  f"{and_join(rob['meta'].get('devices', []))}; "
                                  f"{rob['meta'].get('wall_s_total', 0) / 60:.0f} min in all."
                                  if rob["models"] else "not run yet."),
          "",
          "## Table S3: clean CIFAR-10 test accuracy and ‖J‖_F (DDNet)\n",
          table_s3_markdown(rows), ""]
    paired = paired_fewshot_rows(lambda v, k: ddnet_runs(runs, v, k), PAPER_TABLE_S3)
    if paired:
        md += ["### Few-shot: each regularizer against none, paired by draw\n", paired_fewshot_markdown(paired), ""]
    if none[2] and jr[2]:
        hist = mean_history(ddnet_runs(runs, "none"), "jac_fro_normalized")
        longer = study_jacobians(study, 0)["long"]
        widened = (f"; in the training-length study below, 5× longer training widened it to "
                   f"{longer['none'] / longer['JR']:.1f}× (seed 0: {longer['none']:.2f} → {longer['JR']:.2f})."
                   if {"none", "JR"} <= set(longer) else ", which these runs cannot show.")
        n_none = len(ddnet_runs(runs, "none"))
        trend = (" The unregularized DDNet's norm was still growing when our schedule ended ("
                 + ", ".join(f"{j:.2f} at iteration {i:,}" for i, j in hist)
                 + (f", means of {n_none} runs" if n_none > 1 else "") + "); in the paper it reaches 115 after 150,000 iterations, so the gap JR opens is expected to widen "
                   "with training" + widened if len(hist) >= 2 and hist[-1][1] > hist[0][1] else "")
        md.append(f"**JR cuts the mean test ‖J‖_F by {none[0] / jr[0]:.1f}×** against no regularization "
                  f"({fmt(none[0], none[1], 2)} → {fmt(jr[0], jr[1], 2)}; paper 115.1 → 4.0, 29×).{trend}\n")
    if study:
        n_lo = study[0]["long"]["config"]["iterations"]
        summary, details = schedule_study_markdown(study)
        md += [f"## Training length: DDNet, {n_lo:,} iterations against {CIFAR_SCHEDULES['short']['iterations']:,}\n",
               "How far our table's full-data numbers are from convergence: the same DDNet (mix, seed, initialization "
               f"and batch order) trained on the 'medium' schedule, the 'short' one stretched "
               f"{n_lo / CIFAR_SCHEDULES['short']['iterations']:g}× (lr ÷10 after the same 60% and 80% of the run), "
               f"evaluated every {CIFAR_SCHEDULES['medium']['eval_every']:,} iterations on the 10,000 test images "
               f"(accuracy) and the first 1,000 (‖J‖_F, normalized input). The paper trains "
               f"{PAPER_ITERATIONS / n_lo:g}× longer still. Not in the paper; "
               "`python -m jacviz grid --dataset cifar10 --experiments schedule --seeds 0`.\n",
               summary, "", length_robustness(study, rob_all),
               figure_md(pngs, "cifar_training_length", "Training length (ours): test accuracy and ‖J‖_F at every "
                         "evaluation, short runs dotted, 5× longer runs solid; dashed: the paper's final accuracy "
                         "after 150,000 iterations (its ‖J‖_F, 29–184, lies far above this axis)"), "", details]
    if paper_length:
        summary, details = length_markdown(paper_length, PAPER_TABLE_S3, per_epoch=500)
        md += ["## Training length: the paper's schedule\n",
               f"DDNet runs of the paper's {paper_length[0]['long']['config']['iterations']:,} iterations next to "
               f"their twins of the tables' schedule (same mix and seed). {why_beside(paper_length, 'Table S3', runs=table_runs, others='the defended runs')}\n",
               summary, "", length_robustness(paper_length, rob_all),
               figure_md(pngs, "cifar_paper_length", "The paper's schedule (ours): test accuracy and ‖J‖_F at every "
                         "evaluation, short runs dotted, 150,000-iteration runs solid (log iteration axis); dashed: "
                         "the paper's final accuracy"), "", details]
    rn = [r for r in full if r["config"]["model"] == "resnet18"]
    md += ["## ResNet-18: clean CIFAR-10 test accuracy and ‖J‖_F\n",
           "The paper prints no clean numbers for ResNet-18 (Table S3 is DDNet's; ResNet-18 appears only in the "
           "robustness Figures S4 and S5c/f), so these are ours alone, with nothing to set them against. "
           "Test accuracy on the 10,000 test images, ‖J‖_F w.r.t. the normalized input on the first 1,000, mean ± 95% "
           "CI over the seeds listed; lr 0.1, PyTorch's default initialization, no dropout (Appendix D).\n",
           resnet_markdown(rn), ""]
    red = jacobian_reduction(rn, "resnet18", "cifar10")
    if math.isfinite(red["ratio"]):  # both mixes trained
        md.append(f"On ResNet-18, JR cuts the mean test ‖J‖_F by {red['ratio']:.1f}× against no "
                  f"regularization ({fmt(*red['none'][:2], 2)} → {fmt(*red['jr'][:2], 2)}).\n")
    for model, name in (("ddnet", "DDNet (Figure S3, S5b/e)"), ("resnet18", "ResNet-18 (Figure S4, S5c/f)")):
        res = _model_results(rob, model)
        md.append(f"## Robustness, {name}\n")
        if not res["groups"]:
            md.append("*Not run yet.*\n")
            continue
        rrows = robustness_rows(res)
        md += [robustness_markdown(rrows), "",
               "Median minimal L2 fooling distance over the test images, mean ± std over seeds (attacks as in "
               "Appendix F; PGD steps of 1/255 within L∞ 16/255). One PGD step moves an image by √3072/255 = "
               "0.217 in L2, so a PGD median of 0.217 means over half the images are fooled by the first step: "
               "the PGD column cannot tell such models apart (CW can).\n"]
        fig = "S3" if model == "ddnet" else "S4"
        cl = (claims(rrows, fig=fig) if model == "ddnet"
              else claims(rrows, base="L2", noise_mixes=RESNET_NOISE, fig=fig))
        if cl:
            md += ["The paper's claims, checked on our numbers:\n", _md_table(["Claim", "Ours"], cl), "", CLAIMS_NOTE, ""]
            errs = [100 - r["clean"][0] for r in rrows]
            if min(errs) > 20:
                md += [f"Read these with care: our models misclassify {min(errs):.0f}–{max(errs):.0f}% of the clean "
                       "images, which count as fooled at distance 0, so the median (50% test error) is set by the "
                       "correctly classified images closest to a boundary; the curves in the figures below show the "
                       "whole distribution.\n"]
        for stem, cap in ((f"fig{fig}a_noise", f"Figure {fig}a (ours): accuracy under white noise"),
                          (f"fig{fig}b_pgd", f"Figure {fig}b (ours): accuracy under PGD, defended models"),
                          (f"fig{fig}c_cw", f"Figure {fig}c (ours): test error vs CW fooling distance, defended models"),
                          (f"figS5{'b' if model == 'ddnet' else 'c'}_{model}", "Figure S5 (ours): by attack, without defense"),
                          (f"figS5{'e' if model == 'ddnet' else 'f'}_{model}", "Figure S5 (ours): by attack, with JR + AT")):
            md += [figure_md(pngs, stem, cap), ""]
    md += ["## Compute (CIFAR-10)\n",
           _md_table(["Kind of run", "runs", "median (s)", "range (s)", "total (h)", "torch threads (runs)"],
                     timing_rows(all_runs, rob_all)), "",
           "## CIFAR-10: not yet reproduced\n", _missing(runs, study, diverged), ""]
    return "\n".join(md)


def _missing(runs: list[dict], study: list[dict] = (), diverged: list[dict] = ()) -> str:
    """What the grid plans and these runs lack, a line each; study: :func:`schedule_study` pairs (a study mix
    not trained at seed 0 is listed, once any of the study is in); diverged: runs that diverged, which the grid
    does not retry, so they count as run (their cell's note says they are out of its mean)."""
    lines = []
    for v in TABLE1 + tuple(d for d in DEFENDED if d not in TABLE1):
        n = len(ddnet_runs(runs, v))
        if n < 5:
            lines.append(f"- DDNet {v}, all data: {n} of 5 seeds")
    for k in FEWSHOT_K:
        n = fewshot_missing([len(ddnet_runs([*runs, *diverged], v, k)) for v in TABLE1])
        if n:
            lines.append(f"- DDNet few-shot k={k}: {n}")
    for v in RESNET:
        n = len(select(runs, v, model="resnet18", dataset="cifar10"))
        if n < 5:
            lines.append(f"- ResNet-18 {v}: {n} of 5 seeds")
    if any(r["config"]["iterations"] < PAPER_ITERATIONS for r in runs if not r["config"].get("few_shot_k")):
        lines.append("- the paper's 150k-iteration schedule: `python -m jacviz grid --dataset cifar10 --schedule paper` "
                     "on a GPU (our runs use 1,500)")
    todo = [v for v in SCHEDULE_STUDY if study and not any(p["variant"] == v and p["seed"] == 0 for p in study)]
    if todo:
        lines.append(f"- the training-length study (not in the paper): {and_join(todo)} at "
                     f"{CIFAR_SCHEDULES['medium']['iterations']:,} iterations, seed 0: "
                     "`python -m jacviz grid --dataset cifar10 --experiments schedule --seeds 0`")
    return "\n".join(lines) or "Everything planned is in."
