"""The reproduction grid: every training and robustness run behind REPRODUCTION.md, one command.

``python -m jacviz grid`` enumerates the runs of the paper's MNIST experiments (LeNet'), or
with ``--dataset cifar10`` those of Appendix E (DDNet and ResNet-18 on CIFAR-10),
trains what is missing (each run resumable from its atomic ``<key>.resume.pt``; finished runs,
here or in ``--also`` folders such as the shipped ``checkpoints/``, are skipped), evaluates
robustness of the chosen runs, and collects everything into the results files that
``python -m jacviz report`` turns into REPRODUCTION.md:

- ``<results>/<dataset>_runs.json`` (mnist_runs.json, cifar10_runs.json): config, final
  metrics (test accuracy, USPS accuracy, mean test ||J||_F) and per-evaluation history of
  every finished run;
- ``<results>/<dataset>_robustness.json``: per-model robustness records and mean/std over seeds
  (the format of ``jacviz.robustness.run_robustness``; the app's Robustness page loads it).

Experiments (Section 3 and Appendices of Hoffman et al. 2019):
  table1    the five Table-1 mixes on all of MNIST (also Table 2: USPS accuracy of the same runs)
  defended  L2+dropout base with +AT, +JR, +JR+AT (Figure 3b/c, S5)
  fewshot   the Table-1 mixes on k = 1, 3, 10, 30 samples per class (full-batch SGD, lr 0.01, 10k it)
  nproj     JR with n_proj = 3 and exact (Figure 2; n_proj = 1 is table1's JR)
  lambda    L2+dropout+JR with lambda_JR in 0.001, 0.003, 0.03, 0.1 (Figure S6; 0 and 0.01 are in defended)

With --dataset cifar10 (Appendix E; lr 0.01 DDNet, 0.1 ResNet-18):
  table1    DDNet, the five Table-S3 mixes on all of CIFAR-10
  defended  DDNet, L2+dropout base with +AT, +JR, +JR+AT (Figure S3b/c, S5e)
  fewshot   DDNet, the Table-S3 mixes on k = 1, 3, 10, 30 samples per class
  resnet    ResNet-18 (L2, no dropout): none, L2, JR, L2+JR, L2+AT, L2+JR+AT (Figure S4, S5c/f)
  schedule  DDNet none, dropout, L2, JR, L2+dropout+JR on the 'medium' schedule (the short one
            stretched 5x), to measure how far test accuracy and ||J||_F move with training length
            (not in the paper)

Schedules: 'paper' is 150k iterations, lr /10 at 50k and 100k; 'short' is, for LeNet' on MNIST,
10 epochs (6000 iterations), lr /10 at 1800 and 3600, which reaches the paper's full-data
accuracies (REPRODUCTION.md compares them); for CIFAR-10 it is 3 epochs (1500 iterations), lr /10
at 900 and 1200: what a 2-core CPU trains in minutes, far below the paper's accuracies (a GPU
job otherwise). 'auto' picks 'paper' with CUDA and 'short' without.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from .config import PAPER_VARIANTS, TrainConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "reproduction"

TABLE1 = ("none", "L2", "dropout", "JR", "L2+dropout+JR")  # the last is Table 1's "All Combined"
DEFENDED = ("L2+dropout", "L2+dropout+AT", "L2+dropout+JR", "L2+dropout+JR+AT")
FEWSHOT_K = (1, 3, 10, 30)
NPROJ = (3, None)
LAMBDAS = (0.001, 0.003, 0.03, 0.1)
EXPERIMENTS = ("table1", "defended", "fewshot", "nproj", "lambda")
CIFAR_EXPERIMENTS = ("table1", "defended", "fewshot", "resnet", "schedule")
SCHEDULE_STUDY = ("none", "dropout", "L2", "JR", "L2+dropout+JR")  # DDNet mixes of the 'schedule' experiment:
# the plain ones first, the cheapest on a CPU (dropout the mix the short schedule hurts most; best in Table S3); then
# JR, at ~2.6x a plain step, for the paper's central number: how far ||J||_F stays below the unregularized one as
# training goes on; All Combined last, the short schedule's second-worst mix (56.6% against the paper's 78.6)
RESNET = ("none", "L2", "JR", "L2+JR", "L2+AT", "L2+JR+AT")  # Figure S4: L2, never dropout
DATASETS = ("mnist", "cifar10")
PAPER_ITERATIONS = 150000  # Appendices B and E: every full-data run, lr /10 after 50k and 100k
SCHEDULES = {
    "short": {"iterations": 6000, "milestones": (1800, 3600), "eval_every": 600, "checkpoint_every": 600},
    "paper": {"iterations": PAPER_ITERATIONS, "milestones": (50000, 100000), "eval_every": 5000, "checkpoint_every": 5000},
}
# CIFAR-10 (Appendix E): the final ||J||_F on the first 1000 test images (10 backward passes each).
CIFAR_SCHEDULES = {
    "short": {"iterations": 1500, "milestones": (900, 1200), "eval_every": 750, "checkpoint_every": 250,
              "jac_samples": 1000},
    "paper": {"iterations": PAPER_ITERATIONS, "milestones": (50000, 100000), "eval_every": 5000,
              "checkpoint_every": 5000, "jac_samples": 1000},
    # 'short' stretched 5x (15 epochs, lr /10 at the same 60% and 80% of the run), for the 'schedule'
    # experiment only: evaluated every 750 iterations, as 'short', so the two curves share points.
    "medium": {"iterations": 7500, "milestones": (4500, 6000), "eval_every": 750, "checkpoint_every": 250,
               "jac_samples": 1000},
}
CIFAR_LR = {"ddnet": 0.01, "resnet18": 0.1}
# Few-shot protocol of Table 1 (paper, Section 3.1): full batch, constant lr 0.01, 10k iterations.
FEWSHOT = {"lr": 0.01, "iterations": 10000, "milestones": (), "eval_every": 2500, "checkpoint_every": 2500}
# Robustness defaults (Appendix F: 1000 test samples); CW preset by device (see robustness --help).
ROBUST_ATTACKS = ("noise", "fgsm", "pgd", "cw")


def is_schedule_study(config: dict) -> bool:
    """Whether a run's config (a dict, as the results files hold it) is one of the 'schedule' experiment's:
    its full-data runs stand beside the tables' runs and never supersede or join them."""
    m = CIFAR_SCHEDULES["medium"]
    return (config.get("dataset") == "cifar10" and not config.get("few_shot_k")
            and config.get("iterations") == m["iterations"] and tuple(config.get("milestones", ())) == m["milestones"])


def resolve_schedule(name: str) -> str:
    if name == "auto":
        import torch
        return "paper" if torch.cuda.is_available() else "short"
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose auto, {', '.join(SCHEDULES)}")
    return name


def variant_config(variant: str, seed: int, schedule: str = "short", dataset: str = "mnist",
                   model: str | None = None, **overrides) -> TrainConfig:
    """TrainConfig of a named mix (``config.PAPER_VARIANTS``) on all of MNIST (LeNet') or of
    CIFAR-10 (``model`` 'ddnet', the default there, or 'resnet18'; Appendix E learning rates)."""
    if dataset == "mnist":
        return TrainConfig(seed=seed, **SCHEDULES[schedule], **{**PAPER_VARIANTS[variant], **overrides})
    model = model or "ddnet"
    return TrainConfig(model=model, dataset=dataset, lr=CIFAR_LR[model], seed=seed, **CIFAR_SCHEDULES[schedule],
                       **{**PAPER_VARIANTS[variant], **overrides})


def fewshot_config(variant: str, k: int, seed: int, dataset: str = "mnist") -> TrainConfig:
    """Few-shot run: k samples per class drawn with ``seed`` (data.few_shot_indices), full batch
    (LeNet' on MNIST, DDNet on CIFAR-10)."""
    arch = {} if dataset == "mnist" else {"model": "ddnet", "dataset": dataset, "jac_samples": 1000}
    return TrainConfig(seed=seed, few_shot_k=k, **FEWSHOT, **arch, **PAPER_VARIANTS[variant])


def experiment_names(dataset: str = "mnist") -> tuple[str, ...]:
    return EXPERIMENTS if dataset == "mnist" else CIFAR_EXPERIMENTS


def experiment_configs(name: str, seeds: Sequence[int], schedule: str = "short",
                       fewshot_k: Sequence[int] = FEWSHOT_K, fewshot_runs: int | None = None,
                       dataset: str = "mnist") -> list[TrainConfig]:
    """The runs of one experiment, seed-major (all mixes of seed 0 first), so a partial grid is balanced.

    fewshot_runs: runs per few-shot cell (paper: 15); default len(seeds). Their seeds are 0..runs-1.
    """
    if name not in experiment_names(dataset):
        raise ValueError(f"unknown experiment {name!r} for {dataset}; choose from {', '.join(experiment_names(dataset))}")
    if name == "table1":
        return [variant_config(v, s, schedule, dataset) for s in seeds for v in TABLE1]
    if name == "defended":
        return [variant_config(v, s, schedule, dataset) for s in seeds for v in DEFENDED]
    if name == "fewshot":
        runs = range(fewshot_runs) if fewshot_runs is not None else seeds
        return [fewshot_config(v, k, s, dataset) for s in runs for k in fewshot_k for v in TABLE1]
    if name == "nproj":
        return [variant_config("JR", s, schedule, n_proj=n) for s in seeds for n in NPROJ]
    if name == "lambda":
        return [variant_config("L2+dropout+JR", s, schedule, jr=lam) for s in seeds for lam in LAMBDAS]
    if name == "schedule":  # always 'medium', whatever the grid's schedule: a side study, not a table's runs
        return [variant_config(v, s, "medium", dataset) for s in seeds for v in SCHEDULE_STUDY]
    return [variant_config(v, s, schedule, dataset, "resnet18") for s in seeds for v in RESNET]  # resnet


def robustness_configs(seeds: Sequence[int], schedule: str = "short", dataset: str = "mnist") -> list[TrainConfig]:
    """Runs whose robustness the report shows: Table-1 mixes (Fig. 3a / S3a), defended (Fig. 3b/c,
    S3b/c, S5), the lambda sweep (S6, MNIST), the ResNet-18 runs (S4, CIFAR-10) and the CIFAR-10
    schedule study (beside its short twins in *Training length*, never in the figures)."""
    names = ("table1", "defended", "lambda") if dataset == "mnist" else ("table1", "defended", "resnet", "schedule")
    out: list[TrainConfig] = []
    for s in seeds:
        for name in names:
            for c in experiment_configs(name, [s], schedule, dataset=dataset):
                if c not in out:
                    out.append(c)
    return out


def plan(experiments: Sequence[str], seeds: Sequence[int], schedule: str = "short",
         fewshot_k: Sequence[int] = FEWSHOT_K, fewshot_runs: int | None = None,
         dataset: str = "mnist") -> list[TrainConfig]:
    """Every run of the experiments, without duplicates (the same config in two experiments runs once).

    Order: experiment by experiment as given, seed-major inside each."""
    out, seen = [], set()
    for name in experiments:
        for c in experiment_configs(name, seeds, schedule, fewshot_k, fewshot_runs, dataset):
            if c.key() not in seen:
                seen.add(c.key())
                out.append(c)
    return out


def find_checkpoint(config: TrainConfig, folders: Sequence[Path], suffix: str = ".pt") -> Path | None:
    """The finished checkpoint of ``config`` in the first folder that has one (or, with
    ``suffix=DIVERGED``, the record of its diverged run)."""
    for f in folders:
        p = Path(f) / f"{config.key()}{suffix}"
        if p.exists():
            return p
    return None


DIVERGED = ".diverged.json"  # <key>.diverged.json: a run whose loss became NaN/inf (train.TrainingDiverged)


# ----------------------------------------------------------------------------- workers
def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


HEARTBEAT_S = 600.0  # seconds between a training worker's progress lines between evaluations


def _eval_logger(cfg: TrainConfig, every_s: float = HEARTBEAT_S, clock=time.monotonic):
    """fit's progress callback for grid workers: one stderr line per evaluation, and between
    evaluations one line at most every ``every_s`` seconds with the iteration, the training loss, the
    seconds an iteration over that window and the time left at that pace (hours-long CPU runs
    otherwise print nothing for an hour; a tqdm bar is off in workers, whose stderr is a log file)."""
    window: dict = {}

    def say(iteration: int, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')}   {cfg.label()} ({cfg.key()}) iteration {iteration}/{cfg.iterations}: "
              f"{text}", file=sys.stderr, flush=True)

    def on_progress(ev: dict) -> None:
        if ev["kind"] == "eval":
            say(ev["iteration"], f"test acc {ev['test_acc']:.4f}, ||J||_F {ev['jac_fro_normalized']:.2f} "
                                 f"({ev['n_jac']} images), {ev['wall_time_s']:.0f} s of training")
            window.clear()  # an evaluation's time is not an iteration's
        elif ev["kind"] == "step":
            now = clock()
            if not window:  # the first step after start, resume or evaluation opens the window
                window.update(t=now, it=ev["iteration"])
                return
            its = ev["iteration"] - window["it"]
            if now - window["t"] >= every_s and its > 0:
                per_it = (now - window["t"]) / its
                left = (ev["total"] - ev["iteration"]) * per_it / 60
                say(ev["iteration"], f"training loss {ev['loss']:.3f}, {per_it:.2f} s an iteration over the last "
                                     f"{its}, ~{left:.0f} min to go at that pace (evaluations not counted)")
                window.update(t=now, it=ev["iteration"])
    return on_progress


def _train_one(args) -> dict:
    config_dict, out_dir, device = args
    from .robustness import environment
    from .train import TrainingDiverged, fit
    cfg = dataclasses.replace(TrainConfig.from_dict(config_dict), device=device)
    t0 = time.perf_counter()
    try:
        res = fit(cfg, out_dir=out_dir, resume=True, show_progress=False, progress=_eval_logger(cfg))
    except TrainingDiverged as exc:  # recorded, so the report shows it and the grid does not retry it
        rec = {"key": cfg.key(), "label": cfg.label(), "seed": cfg.seed, "config": cfg.to_dict(),
               "iteration": exc.iteration, "loss": str(exc.loss), "lr": exc.lr, "error": str(exc),
               "environment": environment(cfg.device if cfg.device != "auto" else "cpu")}
        write_json(rec, Path(out_dir) / f"{cfg.key()}{DIVERGED}")
        return {"key": cfg.key(), "label": cfg.label(), "wall_s": time.perf_counter() - t0, "failed": str(exc)}
    return {"key": cfg.key(), "label": cfg.label(), "path": str(res.path), "wall_s": time.perf_counter() - t0,
            "test_acc": res.metrics.get("test_acc")}


def _robust_one(args) -> dict:
    path, out_file, n, attacks, cw_preset, device = args
    from . import attacks as A
    from . import data
    from .checkpoints import load
    from .robustness import _jsonable, model_record, resolve_device
    dev = resolve_device(device)
    ckpt = load(path, device=dev)
    x, y = data.load(ckpt.config.dataset, "test")
    cw = dict(A.CW_PAPER if cw_preset == "paper" else A.CW_FAST)
    t0 = time.perf_counter()
    rec = model_record(ckpt, _rel(path), x[:n], y[:n], attacks, dev, cw_kwargs=cw)
    rec["wall_s"] = time.perf_counter() - t0
    rec["cw_preset"] = cw_preset
    from .robustness import environment
    rec["environment"] = environment(dev)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(out_file) + ".tmp")
    tmp.write_text(json.dumps(_jsonable(rec), allow_nan=False) + "\n")
    os.replace(tmp, out_file)
    return {"key": rec["key"], "label": rec["label"], "wall_s": rec["wall_s"]}


def _rel(path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def _pool_map(fn, tasks: list, workers: int, threads: int, log):
    """Run tasks in ``workers`` processes of ``threads`` torch threads each; log each as it ends.

    A task that returns a ``failed`` entry (a diverged run) is logged as FAILED and the rest go on."""
    if not tasks:
        return []

    def report(i: int, r: dict) -> dict:
        what = f"FAILED: {r['failed']}" if "failed" in r else "in"
        log(f"[{i + 1}/{len(tasks)}] {r['label']} ({r['key']}) {what} {r['wall_s']:.0f} s")
        return r

    if workers <= 1:
        _init_worker(threads)
        return [report(i, fn(t)) for i, t in enumerate(tasks)]
    import multiprocessing as mp
    import signal
    import threading
    ctx = mp.get_context("spawn")  # fork after torch initialised its thread pool can hang
    # `kill <grid pid>` (SIGTERM) would end this process at once and leave the workers training as orphans:
    # turn it into an exception, so that leaving the `with` terminates the pool (a finished run's checkpoint is
    # on disk already; a running one ends its iteration and saves its resume file: train.stop_requests)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        with ctx.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
            return [report(i, r) for i, r in enumerate(pool.imap_unordered(fn, tasks))]
    finally:
        if main and previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise SystemExit(f"grid stopped by signal {signum}; its worker processes were terminated")


# ----------------------------------------------------------------------------- collect
def load_previous(path: Path) -> dict:
    """An earlier results file (``mnist_runs.json`` or ``mnist_robustness.json``), or {} if there is none."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{path} cannot be read ({err}); move it away to rebuild it from checkpoints only")


def recorded_keys(previous: dict) -> set[str]:
    """Keys of the runs (or robustness records) an earlier results file already holds, diverged runs included."""
    return {r["key"] for r in previous.get("runs", previous.get("models", [])) + previous.get("diverged", [])}


def merge_previous(previous: dict, other: dict, dataset: str, source: str = "another results file") -> tuple[dict, int]:
    """``previous`` plus the records of ``other`` whose keys it lacks, and how many were added.

    ``other`` is a results file written elsewhere (``<dataset>_runs.json`` or ``<dataset>_robustness.json``
    brought back from a lent GPU machine, whose checkpoints stay there): its finished runs, diverged runs
    or robustness records join this one's (``previous`` must be of the same kind of file). A record this
    file already holds is never replaced. Raises SystemExit when ``other`` is no results file or holds
    another dataset's records."""
    fields = ("models",) if "models" in other else ("runs", "diverged")
    if not any(f in other for f in fields):
        raise SystemExit(f"{source} is no results file of `python -m jacviz grid` (no runs or models in it)")
    have, out, added = recorded_keys(previous), dict(previous), 0
    for field in fields:
        new = [r for r in other.get(field, []) if r["key"] not in have]
        wrong = sorted({r.get("config", {}).get("dataset") for r in new} - {dataset})
        if wrong:
            raise SystemExit(f"{source} holds {wrong} records, not {dataset} ones")
        if field == "runs":  # the checkpoints stayed on the other machine
            new = [{**r, "checkpoint": None} for r in new]
        if new:
            out[field] = list(previous.get(field, [])) + new
            added += len(new)
    return out, added


def collect_runs(folders: Sequence[Path], configs: Sequence[TrainConfig], previous: dict | None = None) -> dict:
    """Metrics and histories of the finished runs among ``configs`` (missing ones listed).

    A run whose checkpoint is not on disk (only seed 0 of each mix is kept in git; the other
    checkpoints live in the gitignored ``runs/``) keeps its record from ``previous``, the
    results file written when it was trained, with ``checkpoint`` set to None. Runs that diverged
    (a ``<key>.diverged.json`` record, or one in ``previous``) are listed under ``diverged``. Records of
    ``previous`` outside ``configs`` (another schedule, seed or k than this call plans) are kept as they are:
    rewriting the results file never loses a run (the report picks which to tabulate)."""
    from .checkpoints import CheckpointError, _read
    before = {r["key"]: r for r in (previous or {}).get("runs", [])}
    before_div = {r["key"]: r for r in (previous or {}).get("diverged", [])}
    runs, missing, diverged = [], [], []
    for c in configs:
        p = find_checkpoint(c, folders)
        if p is None:
            if c.key() in before:
                runs.append({**before[c.key()], "checkpoint": None})
                continue
            d = find_checkpoint(c, folders, DIVERGED)
            if d is not None or c.key() in before_div:
                diverged.append(json.loads(d.read_text()) if d is not None else before_div[c.key()])
                continue
            missing.append({"key": c.key(), "label": c.label(), "seed": c.seed})
            continue
        try:
            obj = _read(p)
        except CheckpointError as err:
            missing.append({"key": c.key(), "label": c.label(), "seed": c.seed, "reason": str(err)})
            continue
        runs.append({"key": c.key(), "label": c.label(), "checkpoint": _rel(p), "config": obj["config"],
                     "metrics": obj.get("metrics", {}), "history": obj.get("history", []),
                     "meta": obj.get("meta", {})})
    planned = {c.key() for c in configs}
    runs += [r for k, r in before.items() if k not in planned]
    diverged += [r for k, r in before_div.items() if k not in planned]
    return {"runs": runs, "missing": missing, "diverged": diverged}


def collect_robustness(folder: Path, configs: Sequence[TrainConfig], previous: dict | None = None) -> dict:
    """Merge per-checkpoint robustness records into one results dict with seed groups.

    Records missing from ``folder`` (a fresh clone has no ``runs/``) are kept from ``previous``, and so are
    ``previous`` records outside ``configs`` (another schedule or seed than this call plans). The seed groups
    leave out the schedule study's records (``is_schedule_study``): the report shows those beside their short
    twins only, and the app's Robustness page not at all."""
    from .robustness import aggregate_seeds, distances_from_json
    before = {r["key"]: r for r in (previous or {}).get("models", [])}
    records = []
    planned = [c.key() for c in configs]
    for key in planned + [k for k in before if k not in set(planned)]:
        f = Path(folder) / f"{key}.json"
        r = json.loads(f.read_text()) if f.exists() else before.get(key)
        if r is not None:
            r = dict(r)
            r["distances"] = {k: distances_from_json(d) for k, d in r.get("distances", {}).items()}
            records.append(r)
    envs = [r.get("environment", {}) for r in records]
    meta = {"n_models": len(records), "samples": "first n samples of the test split", "space": "[0,1] pixel space",
            "distances": "L2 in pixel space; null = never fooled within the budget",
            "n": sorted({r["n"] for r in records}), "cw_presets": sorted({r.get("cw_preset", "?") for r in records}),
            "devices": sorted({f"{e.get('device')} ({e.get('device_name')}, {e.get('torch_threads')} "
                                 f"thread{'' if e.get('torch_threads') == 1 else 's'})" for e in envs}),
            "torch": sorted({str(e.get("torch")) for e in envs}),
            "wall_s_total": round(sum(r.get("wall_s", 0) for r in records), 1),
            # the fields run_robustness writes, which the app's Robustness page shows
            "n_requested": max((r["n"] for r in records), default=0),
            "attacks": sorted({k for r in records for k in r.get("distances", {}) if k != "worst"}),
            "device": ", ".join(sorted({str(e.get("device")) for e in envs})),
            "device_name": ", ".join(sorted({str(e.get("device_name")) for e in envs})),
            "date": max((str(e.get("date", "")) for e in envs), default="")[:10]}
    meta["torch"] = ", ".join(meta["torch"])
    if records:
        from . import attacks as A
        meta["cw"] = A.CW_PAPER if meta["cw_presets"] == ["paper"] else A.CW_FAST
    grouped = [r for r in records if not is_schedule_study(r.get("config", {}))]
    return {"meta": meta, "models": records, "groups": aggregate_seeds(grouped) if grouped else [], "skipped": []}


def write_json(obj, path: Path) -> Path:
    from .robustness import _jsonable
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=None, allow_nan=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- CLI
def _ints(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jacviz grid",
        description="Train and evaluate the grid of runs behind REPRODUCTION.md (LeNet' on MNIST, or DDNet and "
                    "ResNet-18 on CIFAR-10 with --dataset cifar10), resumably: "
                    "finished runs are skipped, interrupted ones continue from their resume file, and a run whose "
                    "loss becomes NaN is recorded as diverged (<key>.diverged.json), reported, and not retried. "
                    "Then `python -m jacviz report` writes REPRODUCTION.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Experiments", 1)[1].join(["Experiments", ""]) + """
Examples:
  python -m jacviz grid --dry-run                       # list what would run
  python -m jacviz grid --workers 2 --threads 1         # everything, 2 processes of 1 thread
  python -m jacviz grid --experiments table1 --seeds 0-4 --stage train
  python -m jacviz grid --stage robustness --robust-seeds 0-2 --robust-n 1000
  python -m jacviz grid --stage collect                 # only rewrite the results files
  python -m jacviz grid --dataset cifar10 --experiments table1,defended --seeds 0 --workers 2 --threads 1

Measured on this project's 2-core CPU VM (1 torch thread a process, two at once, short schedule):
a full-data LeNet' run takes ~2 min plain, ~4 min with JR, ~3.5 min with AT, ~9 min with JR+AT,
~8 min with n_proj=3, ~19 min with exact JR; a few-shot run 0.7 min (k=1, plain) to 18 min (k=30,
JR); robustness of one model on 500 images ~1.5 min (medians). A DDNet run (CIFAR-10, short
schedule, 1,500 iterations) takes ~7 min plain, ~15 min with JR, ~15 min with AT, ~30 min with
JR+AT; robustness of one DDNet on 200 images ~5 min; a few-shot DDNet run ~10 / ~17 / ~48 min
(k=1 / 3 / 10) plain and ~21 / ~36 / ~117 min with JR. A ResNet-18 run (1 process of 2 threads) takes ~40 min plain,
~2 h with JR; its robustness on 200 images ~15 min. REPRODUCTION.md (sections Compute) lists
every kind of run with its measured times.""")
    p.add_argument("--dataset", default="mnist", choices=DATASETS, help="mnist (LeNet') or cifar10 (DDNet, ResNet-18)")
    p.add_argument("--experiments", default=None,
                   help=f"comma-separated subset of {','.join(EXPERIMENTS)} (mnist) or {','.join(CIFAR_EXPERIMENTS)} "
                        "(cifar10); default all")
    p.add_argument("--seeds", type=_ints, default=list(range(5)), help="training seeds, e.g. 0-4 (paper: 5)")
    p.add_argument("--fewshot-runs", type=int, default=15, help="runs per few-shot cell (paper: 15)")
    p.add_argument("--fewshot-k", type=_ints, default=list(FEWSHOT_K), help="samples per class, e.g. 1,3,10,30")
    p.add_argument("--mixes", default=None,
                   help="comma-separated regularizer mixes to run, as the dry run names them (e.g. JR,L2+dropout+JR); "
                        "default every mix. Only which runs train and are attacked: the results files keep every run")
    p.add_argument("--schedule", default="auto", help="auto | short | paper (full-data runs)")
    p.add_argument("--stage", default="all", choices=["all", "train", "robustness", "collect"])
    p.add_argument("--robust-seeds", type=_ints, default=list(range(5)), help="seeds whose robustness is evaluated")
    p.add_argument("--robust-n", type=int, default=1000, help="test samples for robustness (paper: 1000)")
    p.add_argument("--cw-preset", default="auto", choices=["auto", "paper", "fast"],
                   help="auto: paper with CUDA, fast on CPU (see `python -m jacviz robustness --help`)")
    p.add_argument("--out", default=None, help="where new checkpoints go (default runs/<dataset>)")
    p.add_argument("--also", nargs="*", default=[str(REPO_ROOT / "checkpoints"), str(REPO_ROOT / "checkpoints" / "seeds")],
                   help="folders whose finished checkpoints count as done (default: the shipped seed-0 models "
                        "and checkpoints/seeds/, the other seeds kept in git)")
    p.add_argument("--results", default=str(RESULTS_DIR), help="where the results JSON files go")
    p.add_argument("--merge", nargs="*", default=[], metavar="FILE",
                   help="results files written on another machine (a GPU call's <dataset>_runs.json or "
                        "<dataset>_robustness.json): their records that ours lack are added, ours are kept")
    p.add_argument("--workers", type=int, default=1,
                   help="processes (on one GPU they share it: 14 few-shot DDNet runs at once on an NVIDIA H200 "
                        "made about 2x the progress of one run alone, 2026-12-04)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores / workers)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dry-run", action="store_true", help="print the plan and what is done, run nothing")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    try:
        a = p.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code or 0)
    names = experiment_names(a.dataset)
    experiments = [e for e in (a.experiments or ",".join(names)).split(",") if e]
    bad = [e for e in experiments if e not in names]
    if bad:
        print(f"unknown experiments {bad} for {a.dataset}; choose from {','.join(names)}", file=sys.stderr)
        return 2
    import torch
    schedule = resolve_schedule(a.schedule)
    cuda = torch.cuda.is_available() and a.device in ("auto", "cuda") or a.device.startswith("cuda")
    cw_preset = a.cw_preset if a.cw_preset != "auto" else ("paper" if cuda else "fast")
    threads = a.threads or max(1, (os.cpu_count() or 1) // max(1, a.workers))
    out = Path(a.out or REPO_ROOT / "runs" / a.dataset)
    ds = a.dataset
    folders = [*map(Path, a.also), out]  # committed copies first, so the results files cite them
    robust_dir = out / "robustness"
    log = lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", file=sys.stderr, flush=True)  # noqa: E731

    results = Path(a.results)
    runs_file, rob_file = results / f"{ds}_runs.json", results / f"{ds}_robustness.json"
    prev_runs = load_previous(runs_file)
    prev_rob = load_previous(rob_file)
    for f in a.merge:
        if not Path(f).is_file():
            raise SystemExit(f"--merge: {f} not found")
        other = load_previous(Path(f))
        if "models" in other:
            prev_rob, n = merge_previous(prev_rob or {"models": []}, other, ds, f)
        else:
            prev_runs, n = merge_previous(prev_runs or {"runs": []}, other, ds, f)
        log(f"merged {n} new records from {f}")
    recorded, recorded_rob = recorded_keys(prev_runs), recorded_keys(prev_rob)
    configs = plan(experiments, a.seeds, schedule, a.fewshot_k, a.fewshot_runs, ds)
    if a.mixes:
        mixes = [m for m in a.mixes.split(",") if m]
        known = {c.mix() for c in configs}
        if unknown := [m for m in mixes if m not in known]:
            print(f"--mixes: {unknown} not among this plan's mixes ({', '.join(sorted(known))})", file=sys.stderr)
            return 2
        configs = [c for c in configs if c.mix() in mixes]
    # done: a checkpoint on disk, or a run the results file already records (its checkpoint may be gone);
    # a diverged run counts as done (delete its <key>.diverged.json and results record to retry it)
    todo = [c for c in configs if find_checkpoint(c, folders) is None and c.key() not in recorded
            and find_checkpoint(c, folders, DIVERGED) is None]
    rconfigs = [c for c in robustness_configs(a.robust_seeds, schedule, ds) if c.key() in {k.key() for k in configs}]
    rtodo = [c for c in rconfigs
             if not (robust_dir / f"{c.key()}.json").exists() and c.key() not in recorded_rob]
    log(f"schedule {schedule}; {len(configs)} runs planned, {len(configs) - len(todo)} done; "
        f"robustness of {len(rconfigs)} runs planned, {len(rconfigs) - len(rtodo)} done (n={a.robust_n}, CW {cw_preset})")
    if a.dry_run:
        div_keys = {d["key"] for d in prev_runs.get("diverged", [])}
        for c in configs:
            diverged = c.key() in div_keys or find_checkpoint(c, folders, DIVERGED) is not None
            state = "todo" if c in todo else "diverged" if diverged else "done"
            print(f"{state:8s} {c.key()} {c.label():28s} seed {c.seed}  {c.describe()}")
        return 0
    if a.stage in ("all", "train") and todo:
        log(f"training {len(todo)} runs with {a.workers} worker(s) x {threads} thread(s) into {out}")
        _pool_map(_train_one, [(c.to_dict(), str(out), a.device) for c in todo], a.workers, threads, log)
    if a.stage in ("all", "robustness"):
        tasks = []
        for c in rtodo:
            path = find_checkpoint(c, folders)
            if path is None:
                why = ("its checkpoint was not kept (the results file records the run; remove that record "
                       "to retrain it)") if c.key() in recorded else "not trained yet"
                log(f"robustness of {c.label()} seed {c.seed} skipped: {why}")
                continue
            tasks.append((str(path), str(robust_dir / f"{c.key()}.json"), a.robust_n, ROBUST_ATTACKS, cw_preset, a.device))
        if tasks:
            log(f"robustness of {len(tasks)} runs")
            _pool_map(_robust_one, tasks, a.workers, threads, log)
    all_configs = plan(names, sorted(set(a.seeds) | set(range(5))), schedule, FEWSHOT_K,
                       max(a.fewshot_runs, 15), ds)
    runs = collect_runs(folders, all_configs, prev_runs)
    runs["meta"] = {"schedule": schedule, "schedules": {k: {kk: list(vv) if isinstance(vv, tuple) else vv
                                                           for kk, vv in v.items()}
                                                       for k, v in (SCHEDULES if ds == "mnist" else CIFAR_SCHEDULES).items()},
                    "fewshot": {k: list(v) if isinstance(v, tuple) else v for k, v in FEWSHOT.items()},
                    "written": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    runs["missing"] = [m for m in runs["missing"] if m["key"] in {c.key() for c in configs}]
    write_json(runs, runs_file)
    rob = collect_robustness(robust_dir, robustness_configs(sorted(set(a.robust_seeds) | set(range(5))), schedule, ds),
                             prev_rob)
    if rob["models"]:
        write_json(rob, rob_file)
    log(f"wrote {runs_file} ({len(runs['runs'])} finished runs)"
        + (f" and {rob_file.name} ({len(rob['models'])} models)" if rob["models"] else ""))
    return 0
