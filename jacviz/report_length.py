"""Training length in REPRODUCTION.md: one mix and seed trained at two lengths, side by side.

A *study* is a list of pairs ``{'variant', 'seed', 'long': run, 'short': run or None}`` (records of a
results file): ``report.length_study`` pairs LeNet' runs of the paper's 150k-iteration schedule with the
MNIST tables' short runs while the longer schedule covers only some mixes; ``report_cifar.schedule_study``
pairs DDNet runs of the 'medium' schedule with Table S3's. ``paper`` is the dataset's table of the paper's
values (mix -> {'all': (acc %, ci), 'jac': (||J||_F, ci)}), ``per_epoch`` its SGD iterations per epoch at
batch 100 (MNIST 600, CIFAR-10 500).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .grid import PAPER_ITERATIONS
from .report import _md_table, _t975, agreement, agrees, and_join, final_ce, fmt, mean_ci, robustness_markdown, robustness_rows

Paper = Mapping[str, Mapping]


def machine(meta: dict) -> str:
    """'cpu (x86_64, 1 torch thread, 2026-12-03)' from a run's checkpoint meta (parts it lacks left out)."""
    th = meta.get("torch_threads")
    parts = [meta.get("device_name"), f"{th} torch thread{'' if th == 1 else 's'}" if th else None, meta.get("date")]
    return f"{meta.get('device', 'an unrecorded device')} ({', '.join(p for p in parts if p)})"


def ranking(accs: dict, digits: int = 1) -> str:
    """'dropout 80.7 > L2 77.8 > none 76.8' from {mix: accuracy %}."""
    return " > ".join(f"{v} {a:.{digits}f}" for v, a in sorted(accs.items(), key=lambda kv: -kv[1]))


def study_jacobians(study: list[dict], seed: int) -> dict:
    """Final test ||J||_F (normalized input) of one seed's pairs:
    {'long': {mix: norm}, 'short': {mix: norm}}, 'short' only for mixes whose short twin was trained."""
    out = {"short": {}, "long": {}}
    for p in (p for p in study if p["seed"] == seed):
        out["long"][p["variant"]] = p["long"]["metrics"]["jac_fro_normalized"]
        if p["short"]:
            out["short"][p["variant"]] = p["short"]["metrics"]["jac_fro_normalized"]
    return out


def longer_note(col, pairs: list[dict], section: str = "Training length", digits: int = 1) -> str:
    """For a full-data cell ('all' or 'jac'): what the longer runs of the same mix reached, else ''
    (accuracies with ``digits`` decimals, norms with 2)."""
    pairs = [p for p in pairs if p["short"]]
    if col not in ("all", "jac") or not pairs:
        return ""
    key, unit = ("test_acc", 100) if col == "all" else ("jac_fro_normalized", 1)
    was = ", ".join(f"{unit * p['short']['metrics'][key]:.{digits if col == 'all' else 2}f}" for p in pairs)
    now = ", ".join(f"{unit * p['long']['metrics'][key]:.{digits if col == 'all' else 2}f}" for p in pairs)
    its = pairs[0]["long"]["config"]["iterations"]
    seeds = ", ".join(str(p["seed"]) for p in pairs)
    return (f"trained {its:,} iterations instead, seed{'s' if len(pairs) > 1 else ''} {seeds} went from {was} to {now} "
            f"(REPRODUCTION.md, *{section}*)")


def length_figure(study: list[dict], paper: Paper, title: str, per_epoch: int, log_x: bool = False):
    """Test accuracy and ||J||_F against iteration for every run of the pairs: each mix in its colour, the
    short run dotted, the longer one solid, the paper's final accuracy as a dashed line."""
    from .plots_training import training_length_figure
    curves = []
    for p in study:
        for run, dash in ((p["short"], "dot"), (p["long"], "solid")):
            h = (run or {}).get("history") or []
            if h:
                curves.append({"mix": p["variant"] + (f" (seed {p['seed']})" if p["seed"] else ""),
                               "schedule": f"{run['config']['iterations']:,} it.", "dash": dash,
                               "iteration": [e["iteration"] for e in h], "test_acc": [e["test_acc"] for e in h],
                               "jac": [e["jac_fro_normalized"] for e in h]})
    acc = {p["variant"]: paper[p["variant"]]["all"][0] for p in study if not p["seed"]}
    return training_length_figure(curves, acc, title, per_epoch=per_epoch, log_x=log_x)


def length_markdown(study: list[dict], paper: Paper, per_epoch: int, digits: int = 1) -> tuple[str, str]:
    """The pairs as markdown: (summary, details). Summary: one row per pair (final test accuracy and ||J||_F
    of both runs next to the paper's, how much the last evaluation interval still moved them), the
    mixes ranked by accuracy at each length; details: every evaluation of either run (iterations of 100
    images; ``per_epoch`` an epoch), in a collapsed block. Accuracies with ``digits`` decimals (MNIST's
    differ in the second)."""
    if not study:
        return "", ""
    n_lo = study[0]["long"]["config"]["iterations"]
    n_sh = next((p["short"]["config"]["iterations"] for p in study if p["short"]), None)
    sh_name = f"{n_sh:,} it." if n_sh else "tables' schedule"
    h0 = study[0]["long"].get("history") or []
    step = f"{h0[-1]['iteration'] - h0[-2]['iteration']:,} it." if len(h0) >= 2 else "evaluation interval"
    rows, curves, acc, same = [], [], {"short": {}, "long": {}}, []
    for p in study:
        lo, sh = p["long"], p["short"]
        ref, hl = paper[p["variant"]], lo.get("history") or []
        last = (f"{100 * (hl[-1]['test_acc'] - hl[-2]['test_acc']):+.{digits}f} points, "
                f"{hl[-1]['jac_fro_normalized'] - hl[-2]['jac_fro_normalized']:+.2f}" if len(hl) >= 2 else "—")
        rows.append([p["variant"], p["seed"],
                     f"{100 * sh['metrics']['test_acc']:.{digits}f}" if sh else "not trained",
                     f"{100 * lo['metrics']['test_acc']:.{digits}f}", f"{ref['all'][0]} ± {ref['all'][1]}",
                     f"{100 * lo['metrics']['test_acc'] - ref['all'][0]:+.{digits}f}"
                     + (" (within the paper's interval)" if agrees((100 * lo["metrics"]["test_acc"], math.nan, 1),
                                                                   ref["all"]) else ""),
                     f"{sh['metrics']['jac_fro_normalized']:.2f}" if sh else "—",
                     f"{lo['metrics']['jac_fro_normalized']:.2f}", f"{ref['jac'][0]} ± {ref['jac'][1]}",
                     f"{final_ce([sh]):.3g} → {final_ce([lo]):.3g}" if sh else f"{final_ce([lo]):.3g}", last,
                     f"{lo['metrics'].get('train_time_s', 0) / 60:.0f} min"])
        if sh and p["seed"] == study[0]["seed"]:
            acc["short"][p["variant"]] = 100 * sh["metrics"]["test_acc"]
            acc["long"][p["variant"]] = 100 * lo["metrics"]["test_acc"]
        by_it = {h["iteration"]: h for h in (sh or {}).get("history") or []}
        by_lo = {h["iteration"]: h for h in hl}
        first = hl[0] if hl else None
        if first and first["iteration"] in by_it and first["iteration"] <= min(sh["config"]["milestones"] or [0]):
            same.append((p, first["iteration"], 100 * (first["test_acc"] - by_it[first["iteration"]]["test_acc"])))
        ev = []
        for it in sorted(set(by_it) | set(by_lo)):
            s, h = by_it.get(it), by_lo.get(it)
            ev.append([f"{it:,}", f"{it / per_epoch:.4g}", f"{h['lr']:g}" if h else "",
                       f"{100 * s['test_acc']:.{digits}f}" if s else "", f"{s['jac_fro_normalized']:.2f}" if s else "",
                       f"{100 * h['test_acc']:.{digits}f}" if h else "", f"{h['jac_fro_normalized']:.2f}" if h else ""])
        curves += [f"**{p['variant']}, seed {p['seed']}** ({n_lo:,}-iteration run: lr {lo['config']['lr']:g} ÷10 at "
                   f"{' and '.join(f'{m:,}' for m in lo['config']['milestones'])}; trained on {machine(lo['meta'])})\n",
                   _md_table(["iteration", "epoch", f"lr ({n_lo:,} it.)", f"test acc. % ({sh_name})",
                              f"‖J‖_F ({sh_name})", f"test acc. % ({n_lo:,} it.)", f"‖J‖_F ({n_lo:,} it.)"], ev), ""]
    md = [_md_table(["Regularizer", "seed", f"test acc. % ({sh_name})", f"test acc. % ({n_lo:,} it.)",
                     f"paper ({PAPER_ITERATIONS:,} it., 5 seeds)", f"ours ({n_lo:,} it.) − paper",
                     f"‖J‖_F ({sh_name})", f"‖J‖_F ({n_lo:,} it.)",
                     "paper ‖J‖_F", "final training-batch CE", f"change over the last {step} (acc., ‖J‖_F)",
                     f"training time ({n_lo:,} it.)"], rows), ""]
    if len(acc["long"]) >= 2:
        ref = {v: paper[v]["all"][0] for v in acc["long"]}
        md.append(f"Ranked by test accuracy (seed {study[0]['seed']}): after {n_sh:,} iterations "
                  f"{ranking(acc['short'], digits)}; after {n_lo:,} {ranking(acc['long'], digits)}; the paper after "
                  f"{PAPER_ITERATIONS:,} {ranking(ref)}.\n")
    jac = study_jacobians(study, study[0]["seed"])
    if {"none", "JR"} <= set(jac["short"]) and {"none", "JR"} <= set(jac["long"]):  # the paper's central number
        cut = {n: jac[n]["none"] / jac[n]["JR"] for n in ("short", "long")}
        pj = paper["none"]["jac"][0] / paper["JR"]["jac"][0]
        md.append(f"JR's cut of ‖J‖_F against no regularization (seed {study[0]['seed']}, ‖J‖_F none / JR): after "
                  f"{n_sh:,} iterations {jac['short']['none']:.2f} / {jac['short']['JR']:.2f} = {cut['short']:.1f}×; "
                  f"after {n_lo:,} {jac['long']['none']:.2f} / {jac['long']['JR']:.2f} = {cut['long']:.1f}×; the paper "
                  f"after {PAPER_ITERATIONS:,} {paper['none']['jac'][0]} / {paper['JR']['jac'][0]} = "
                  f"{pj:.0f}×. From {n_sh:,} to {n_lo:,} iterations ‖J‖_F changed "
                  f"{jac['long']['none'] / jac['short']['none']:.1f}× without regularization and "
                  f"{jac['long']['JR'] / jac['short']['JR']:.1f}× with JR.\n")
    if same:
        md.append(f"At iteration {same[0][1]:,}, before the short schedule's first lr drop, the two runs of a mix have "
                  "had the same lr, initialization and batches, yet their test accuracies differ by "
                  + ", ".join(f"{d:+.1f} points ({p['variant']})" for p, _, d in same)
                  + ": floating-point summation order (thread count, library version) drives two runs of one seed "
                    "apart, so a difference of that size between them is noise, not schedule.\n")
    details = ["<details><summary>Every evaluation of both runs</summary>\n", *curves, "</details>\n"]
    return "\n".join(md), "\n".join(details)


def length_means(study: list[dict], paper: Paper, paper_usps: Mapping | None = None, digits: int = 1) -> str:
    """The longer runs of the pairs averaged over their seeds, per mix, as the paper's tables: test accuracy,
    ||J||_F (normalized input) and, with ``paper_usps`` ({mix: (acc %, ci)}), USPS accuracy, each as mean ± 95%
    CI (Student's t; n = seeds) next to the paper's with whether the intervals overlap; then JR's cut of the
    mean ||J||_F. '' unless some mix has two seeds (one seed a mix is the per-seed table already)."""
    by_mix: dict = {}
    for p in study:
        by_mix.setdefault(p["variant"], []).append(p["long"])
    if not study or max(map(len, by_mix.values())) < 2:
        return ""
    n_lo = study[0]["long"]["config"]["iterations"]

    def cell(vals, ref, d):
        ours = mean_ci(vals)
        if not ours[2]:
            return ["—", f"{ref[0]} ± {ref[1]}", "—"], ours
        return [fmt(ours[0], ours[1], d), f"{ref[0]} ± {ref[1]}",
                ("yes, our mean inside the paper's" if agreement(ours, ref).startswith("within") else "yes")
                if agrees(ours, ref) else "**no**"], ours

    rows, means = [], {}
    for v, runs in by_mix.items():
        acc, a = cell([100 * r["metrics"]["test_acc"] for r in runs], paper[v]["all"], digits)
        jac, j = cell([r["metrics"]["jac_fro_normalized"] for r in runs], paper[v]["jac"], 2)
        usps = cell([100 * r["metrics"]["usps_acc"] for r in runs if r["metrics"].get("usps_acc") is not None],
                    paper_usps[v], 1)[0] if paper_usps else []
        means[v] = (a[0], j[0])
        rows.append([v, ", ".join(str(r["config"]["seed"]) for r in runs), *acc, *jac, *usps])
    head = ["Regularizer", "seeds", f"test acc. % ({n_lo:,} it.)", "paper", "intervals overlap",
            f"‖J‖_F ({n_lo:,} it.)", "paper ‖J‖_F", "intervals overlap"]
    if paper_usps:
        head += [f"USPS acc. % ({n_lo:,} it.)", "paper USPS", "intervals overlap"]
    two = (f" (Student's t: with 2 seeds the half-width is {_t975(2):.1f} standard errors)"
           if 2 in map(len, by_mix.values()) else "")
    at = "the paper's schedule" if n_lo == PAPER_ITERATIONS else f"{n_lo:,} iterations"
    md = [f"Tables 1 and 2 at {at}: each mix's {n_lo:,}-iteration runs, mean over their seeds.\n",
          _md_table(head, rows), "",
          f"Mean ± 95% CI over the seeds{two}; a single seed is a point. The paper's: 5 seeds of "
          f"{PAPER_ITERATIONS:,} iterations. Intervals overlap: yes / **no** (the paper's half-width at least its "
          f"printed rounding). Ranked by mean test accuracy: {ranking({v: m[0] for v, m in means.items()}, digits)}; "
          f"the paper {ranking({v: paper[v]['all'][0] for v in means})}.\n"]
    if {"none", "JR"} <= set(means):
        md.append(f"JR's cut of the mean ‖J‖_F against no regularization: {means['none'][1]:.2f} / "
                  f"{means['JR'][1]:.2f} = {means['none'][1] / means['JR'][1]:.0f}× (paper "
                  f"{paper['none']['jac'][0] / paper['JR']['jac'][0]:.0f}×).")
    return "\n".join(md) + "\n"


def length_robustness(study: list[dict], rob: dict) -> str:
    """Robustness of the pairs' longer runs next to their short twins (records of the same attacks on the
    same test images from ``rob``, all records of the results file), as the robustness tables; '' without any
    record of a longer run."""
    from .robustness import aggregate_seeds, attack_failure_flags
    by_key = {m["key"]: m for m in rob.get("models", [])}
    recs, twins = [], []  # twins: (short label, long label, what they are) of the pairs with both records
    for p in study:
        lo, sh = by_key.get(p["long"]["key"]), by_key.get((p["short"] or {}).get("key"))
        if lo is None:
            continue
        labels = []
        for m, run in ((sh, p["short"]), (lo, p["long"])):
            if m is not None:
                labels.append(f"{p['variant']}, {run['config']['iterations']:,} it."
                              + (f" (seed {p['seed']})" if p["seed"] else ""))
                recs.append({**m, "label": labels[-1], "group_key": m["key"]})
        if len(labels) == 2:
            twins.append((*labels, p["variant"] + (f" (seed {p['seed']})" if p["seed"] else "")))
    if not recs:
        return ""
    rows = robustness_rows({"models": recs, "groups": aggregate_seeds(recs)})
    jac = {r["label"]: r for r in recs}
    lines = [robustness_markdown(rows), "",
             f"Same attacks and test images as the robustness tables below (first {and_join(sorted({str(m['n']) for m in recs}))}; "
             "median minimal L2 fooling distance in [0,1] pixel space; a misclassified clean image counts as fooled at 0)."]
    by_label = {r["label"]: r for r in rows}
    pairs = [(by_label[s], by_label[lo], name) for s, lo, name in twins
             if "cw" in by_label[s]["median"] and "cw" in by_label[lo]["median"]]
    for a, b, name in pairs:
        ra, rb = jac[a["label"]], jac[b["label"]]
        ja, jb = (x["training_metrics"].get("jac_fro_normalized") for x in (ra, rb))
        worst = (f" (per-sample worst case over the attacks {a['median']['worst'][0]:.3f} → {b['median']['worst'][0]:.3f}"
                 + ("; CW stalled, see its attack flag"
                    if attack_failure_flags(ra["distances"]) or attack_failure_flags(rb["distances"]) else "")
                 + ")") if "worst" in a["median"] and "worst" in b["median"] else ""
        lines.append(f"{name}: training longer changed clean accuracy {a['clean'][0]:.1f} → "
                     f"{b['clean'][0]:.1f}% and the median CW distance {a['median']['cw'][0]:.3f} → "
                     f"{b['median']['cw'][0]:.3f}{worst}"
                     + (f" while ‖J‖_F went {ja:.2f} → {jb:.2f}." if ja and jb else ".")
                     + " Those medians count each model's misclassified images as fooled at 0, so they move with "
                       "clean accuracy too; on the images both models classify correctly:")
        both = both_correct_medians(ra, rb)
        lines += ["", _md_table(["attack", "images correct under both", f"median L2, {a['label']}",
                                 f"median L2, {b['label']}", "longer / shorter"],
                                [[k, n, f"{x:.3f}", f"{y:.3f}", f"{y / x:.2f}" if x else "—"]
                                 for k, (n, x, y) in both.items()]), ""]
    return "\n".join(lines) + "\n"


def both_correct_medians(a: dict, b: dict) -> dict:
    """Per attack (and the per-sample 'worst' case over them) of two robustness records on the same test
    images: (n, median a, median b) of the minimal L2 fooling distances over the images both models classify
    correctly (distance > 0 in both; an image never fooled within the budget, stored as None, counts as
    infinitely far)."""
    from .robustness import distances_from_json
    out = {}
    for k in ("noise", "fgsm", "pgd", "cw", "worst"):
        da, db = a["distances"].get(k), b["distances"].get(k)
        if da is None or db is None or len(da) != len(db) or not len(da):
            continue
        xa, xb = distances_from_json(da), distances_from_json(db)
        ok = (xa > 0) & (xb > 0)
        if ok.any():
            out[k] = (int(ok.sum()), float(np.median(xa[ok])), float(np.median(xb[ok])))
    return out
