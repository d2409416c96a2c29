"""Command line: ``python -m jacviz {train,grid,report,robustness,plane,manifest,ship} ...``."""
from __future__ import annotations

import argparse
import json
import math
import sys

import models
from .config import TrainConfig

DEFAULT_LR = {"lenet": 0.1, "ddnet": 0.01, "resnet18": 0.1}
TRAIN_SIZE = {"mnist": 60000, "cifar10": 50000}


def _n_proj(s: str):
    return None if s == "exact" else int(s)


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jacviz train",
        description="Train LeNet' (MNIST) or DDNet / ResNet-18 (CIFAR-10) with any mix of L2, dropout, "
                    "Jacobian regularization (JR) and FGSM adversarial training. Writes "
                    "<out>/<config-hash>.pt and prints test accuracy and ||J||_F.",
        epilog="Schedules: --epochs E (default 10) quenches lr /10 after 30%% and 60%% of the epochs "
               "(the short schedule used for the shipped checkpoints); --paper-schedule is the paper's "
               "150k iterations with quenches at 50k and 100k; --few-shot K is full-batch SGD on K "
               "samples per class, lr 0.01, 10k iterations (Table 1).")
    p.add_argument("--model", default="lenet", choices=sorted(models.MODELS))
    p.add_argument("--dataset", default=None, choices=["mnist", "cifar10"], help="default: the model's dataset")
    p.add_argument("--wd", type=float, default=0.0, help="lambda_WD of the L2 term (paper: 5e-4)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate (paper: 0.5)")
    p.add_argument("--jr", type=float, default=0.0, help="lambda_JR (paper: 0.01), w.r.t. the normalized input")
    p.add_argument("--n-proj", type=_n_proj, default=1, help="random projections per sample, or 'exact'")
    p.add_argument("--adv", action="store_true", help="FGSM adversarial training, eps ~ U[0, --adv-eps] per sample")
    p.add_argument("--adv-eps", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="default: 0.1 LeNet'/ResNet-18, 0.01 DDNet, 0.01 few-shot")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--iterations", type=int, default=None, help="total SGD iterations (overrides --epochs)")
    p.add_argument("--milestones", type=str, default=None, help="comma-separated iterations where lr /10")
    p.add_argument("--paper-schedule", action="store_true")
    p.add_argument("--few-shot", type=int, default=None, metavar="K")
    p.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations (default: one epoch)")
    p.add_argument("--eval-samples", type=int, default=10000,
                   help="first N test images for the accuracy at each evaluation and at the end")
    p.add_argument("--jac-samples", type=int, default=None,
                   help="first N test images (at most --eval-samples, the default) for the final mean exact "
                        "||J||_F: C backward passes an image, ~7 min for 10,000 with DDNet on one CPU thread "
                        "(evaluations during training use the first 1,000)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations between resume files")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default=None, help="output folder (default: user_checkpoints/)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/<hash>.resume.pt if present")
    p.add_argument("--manifest", action="store_true", help="rewrite <out>/manifest.json afterwards")
    return p


def form_argv(*, model: str, wd: float, dropout: float, jr: float, n_proj: str, adv: bool, adv_eps: float,
              seed: int, eval_samples: int, few_shot: int, unit: str, epochs: float, iterations: int,
              lr: float) -> list[str]:
    """``train`` arguments from the app's Train form. ``unit`` 'epochs' or 'iterations' says which length
    field counts; few-shot runs by epochs get the paper's 10,000 full-batch iterations (Table 1); lr 0 means
    the model's default."""
    argv = ["--model", model, "--wd", str(wd), "--dropout", str(dropout), "--jr", str(jr), "--n-proj", n_proj,
            "--adv-eps", str(adv_eps), "--seed", str(int(seed)), "--eval-samples", str(int(eval_samples)),
            "--device", "auto"]
    if adv:
        argv.append("--adv")
    if few_shot:
        argv += ["--few-shot", str(int(few_shot))]
    if unit == "iterations":
        argv += ["--iterations", str(int(iterations))]
    elif not few_shot:
        argv += ["--epochs", str(epochs)]
    if lr > 0:
        argv += ["--lr", str(lr)]
    return argv


def config_from_args(a) -> TrainConfig:
    dataset = a.dataset or models.DATASET_OF[a.model]
    if a.few_shot:
        iterations = a.iterations or 10000
        milestones = ()
        lr = a.lr if a.lr is not None else 0.01
        steps_per_epoch = 1
    else:
        steps_per_epoch = math.ceil(TRAIN_SIZE[dataset] / a.batch_size)
        lr = a.lr if a.lr is not None else DEFAULT_LR[a.model]
        if a.paper_schedule:
            iterations, milestones = 150000, (50000, 100000)
        else:
            epochs = a.epochs if a.epochs is not None else 10
            iterations = a.iterations or max(1, round(epochs * steps_per_epoch))
            milestones = (round(0.3 * iterations), round(0.6 * iterations))
    if a.milestones is not None:
        milestones = tuple(int(m) for m in a.milestones.split(",") if m)
    every = a.eval_every or (500 if a.few_shot else steps_per_epoch)
    return TrainConfig(model=a.model, dataset=dataset, weight_decay=a.wd, dropout=a.dropout, jr=a.jr,
                       n_proj=a.n_proj, adv_train=a.adv, adv_eps_max=a.adv_eps, seed=a.seed,
                       batch_size=a.batch_size, lr=lr, iterations=iterations, milestones=milestones,
                       few_shot_k=a.few_shot, eval_every=min(every, iterations),
                       eval_samples=a.eval_samples, jac_samples=a.jac_samples,
                       checkpoint_every=a.checkpoint_every or every, device=a.device)


def cmd_train(argv) -> int:
    from . import checkpoints
    from .train import fit

    parser = train_parser()
    a = parser.parse_args(argv)
    try:
        config = config_from_args(a)
    except ValueError as err:  # TrainConfig's checks: the message says what to change, not a traceback
        parser.error(str(err))
    out = a.out or str(checkpoints.user_dir())
    print(f"training {config.label()}: {config.describe()}", file=sys.stderr)
    try:
        res = fit(config, out_dir=out, resume=a.resume)
    except KeyboardInterrupt:  # Ctrl-C: fit has said where it saved the resume file (--resume continues)
        print("training stopped", file=sys.stderr)
        return 130
    if a.manifest:
        checkpoints.write_manifest(out)
    print(json.dumps({"checkpoint": str(res.path), "label": config.label(), **res.metrics}, indent=1))
    return 0


def cmd_manifest(argv) -> int:
    from . import checkpoints

    p = argparse.ArgumentParser(prog="python -m jacviz manifest",
                                description="Rewrite manifest.json of a checkpoint folder")
    p.add_argument("folder", nargs="?", default=str(checkpoints.SHIPPED_DIR))
    print(checkpoints.write_manifest(p.parse_args(argv).folder))
    return 0


def cmd_ship(argv) -> int:
    from . import checkpoints

    p = argparse.ArgumentParser(prog="python -m jacviz ship",
                                description="Copy finished checkpoints into checkpoints/ (the app's shipped models) "
                                            "and rewrite its manifest.json")
    p.add_argument("paths", nargs="+")
    p.add_argument("--half", action="store_true", help="store weights as float16 (DDNet: 4.6 -> 2.3 MB), "
                   "with the float32 accuracy on the first 1000 test images recorded for the test")
    p.add_argument("--folder", default=str(checkpoints.SHIPPED_DIR))
    a = p.parse_args(argv)
    for path in a.paths:
        print(checkpoints.ship(path, a.folder, half=a.half))
    print(checkpoints.write_manifest(a.folder))
    return 0


def main(argv=None) -> int:
    from .cells import cli as plane_cli
    from .data import DatasetMissingError
    from .grid import cli as grid_cli
    from .report import cli as report_cli
    from .robustness import cli as robustness_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": cmd_train, "manifest": cmd_manifest, "ship": cmd_ship, "robustness": robustness_cli,
                "plane": plane_cli, "grid": grid_cli, "report": report_cli}
    if not argv or argv[0] not in commands:
        print("usage: python -m jacviz {" + ",".join(commands) + "} [--help]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return commands[argv[0]](argv[1:])
    except DatasetMissingError as err:  # says where to put the files: that, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
