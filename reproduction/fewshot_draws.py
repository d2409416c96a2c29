"""More draws of a few-shot training subset than the paper's 15, to tell a draw effect from a bias.

In a few-shot cell of Table 1 / Table S3, run ``seed`` trains on the k samples per class that
``data.few_shot_indices(y, k, seed)`` draws, and every regularizer's run with that seed trains on the
same samples. Which samples are drawn moves test accuracy by several points, so a cell's mean over
15 runs carries that scatter, and all regularizers of a column share it. This script trains further
runs (seeds beyond the table's 0-14) of one cell, one after another through the grid's own worker,
and writes their records (the grid's results format) to ``reproduction/fewshot_draws_<dataset>.json``;
``python -m jacviz report`` puts the mean over all draws next to the table's 15.

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/fewshot_draws.py \\
      --dataset mnist --k 1 --labels none --seeds 15-44 --threads 1

With ``--init`` (an ablation, ``models.INITS``) it trains the table's own seeds 0-14 under another reading
of "the Xavier method"; each such run pairs with the table's run of its seed (same samples drawn, and for
'default_bias' / 'caffe_xavier' the same weight draw), and the report tabulates the paired differences:

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/fewshot_draws.py \\
      --dataset mnist --k 1 --labels none --seeds 0-14 --init default_bias --threads 1

``--momentum 0`` does the same for the few-shot protocol's "full-batch SGD with a constant learning rate
eta = 0.01", which, unlike the full-data sentence, names no momentum:

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/fewshot_draws.py \\
      --dataset mnist --k 1 --labels none --seeds 0-14 --momentum 0 --threads 1

``--draw first`` trains every seed on the first k samples of each class (training-set order) instead of a
draw per seed, the paper's "subsample" read as one fixed subset; each run pairs with the table's run of its
seed through the same initial weights:

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/fewshot_draws.py \\
      --dataset mnist --k 1 --labels none --seeds 0-14 --draw first --threads 1

``--input-norm variance`` trains them on LeNet' inputs divided by 0.3081² rather than 0.3081, Section 3's
"dividing by the variance (0.3081)" taken literally (0.3081 is MNIST's standard deviation); each run pairs with
the table's run of its seed weight for weight:

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/fewshot_draws.py \\
      --dataset mnist --k 1 --labels none --seeds 0-14 --input-norm variance --threads 1

Runs already on disk (``runs/<dataset>``, ``checkpoints/``, ``checkpoints/seeds/``) are not retrained.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

import models
from jacviz import grid
from jacviz.config import FEW_SHOT_DRAWS, TrainConfig

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=grid.DATASETS)
    p.add_argument("--k", type=int, required=True, help="samples per class")
    p.add_argument("--labels", default="none", help="comma-separated regularizer mixes, e.g. none,L2+dropout+JR")
    p.add_argument("--seeds", type=grid._ints, required=True, help="e.g. 15-44")
    p.add_argument("--init", default="paper", choices=sorted(models.INITS),
                   help="initialization (default: the paper's Xavier uniform, zero biases); others are ablations")
    p.add_argument("--momentum", type=float, default=TrainConfig.momentum,
                   help="SGD momentum (default the paper's 0.9); 0 reads the few-shot sentence, which names none, as "
                        "plain full-batch gradient descent: an ablation")
    p.add_argument("--draw", default="random", choices=FEW_SHOT_DRAWS,
                   help="which k samples per class (TrainConfig.few_shot_draw): drawn with each seed (default, the "
                        "tables'), or the first k of each class for every seed, an ablation")
    p.add_argument("--input-norm", default="paper", choices=sorted(models.INPUT_NORMS),
                   help="LeNet's preprocessing (TrainConfig.input_norm): divide by the std 0.3081 (default, the "
                        "tables'), or by 0.3081² ('variance', the paper's word taken literally), an ablation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="where new checkpoints go (default runs/<dataset>)")
    p.add_argument("--results", default=str(REPO / "reproduction"), help="folder of fewshot_draws_<dataset>.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out or REPO / "runs" / a.dataset)
    folders = [REPO / "checkpoints", REPO / "checkpoints" / "seeds", out]
    configs = [dataclasses.replace(grid.fewshot_config(label, a.k, s, a.dataset), init=a.init, momentum=a.momentum,
                                   few_shot_draw=a.draw, input_norm=a.input_norm)
               for label in a.labels.split(",") for s in a.seeds]
    for cfg in configs:
        if grid.find_checkpoint(cfg, folders) or grid.find_checkpoint(cfg, folders, grid.DIVERGED):
            continue
        print(time.strftime("%H:%M:%S"), "start", cfg.label(), "seed", cfg.seed, cfg.key(), flush=True)
        r = grid._train_one((cfg.to_dict(), str(out), a.device))
        print(time.strftime("%H:%M:%S"), "done", r, flush=True)
    path = Path(a.results) / f"fewshot_draws_{a.dataset}.json"
    # earlier calls (other cells, other seeds) keep their records: collect_runs keeps what it was not asked for
    res = grid.collect_runs(folders, configs, previous=grid.load_previous(path))
    grid.write_json(res, path)
    print(f"{len(res['runs'])} runs, {len(res['diverged'])} diverged, {len(res['missing'])} missing -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
