"""Training with any mix of L2, dropout, Jacobian regularization and FGSM adversarial training.

``fit(config)`` runs SGD with momentum on the joint loss of eq. 5,
    L = CE + lambda_WD/2 |theta|^2 + lambda_JR/2 * mean_batch ||J(x)||_F^2,
with the Jacobian taken w.r.t. the normalized input (paper convention) and estimated with
Algorithm 1 (``n_proj`` random projections, or exact). It evaluates every ``eval_every``
iterations, saves a resumable checkpoint atomically every ``checkpoint_every`` iterations (and at
least every ``RESUME_EVERY_S`` seconds, for slow CPU runs), and
writes the final checkpoint ``<out_dir>/<config.key()>.pt``. CPU runs are bit-reproducible:
batch order comes from a per-epoch generator and every other random draw (dropout, projections,
FGSM amplitudes) from the global generator, whose state the resume file stores.
"""
from __future__ import annotations

import math
import os
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import models
from . import checkpoints, data
from .attacks import fgsm
from .config import TrainConfig, recorded_setup
from .jacobian import jacobian_frobenius, jacobian_penalty
from .jr_batchnorm import analytic_double_backward
from .jr_conv import transposed_input_grads
from .machine import cpu_model

ProgressFn = Callable[[dict], None]
# Also save the resume file after this much wall time since the last save: a ResNet-18 JR step took
# 3.9 s on the 2-core CPU VM (6-8 s beside other work), so 250 iterations between saves risked 16-33
# minutes of work to a kill. The end of a session here kills its trainings without a signal they could
# catch (no SIGTERM notice in the grid logs of 2026-12-07; they went on from their last saves), so every 5 minutes;
# a save takes well under a second (a DDNet resume file is 9 MB).
RESUME_EVERY_S = 300.0


@contextmanager
def batch_stats_frozen(model: nn.Module):
    """Within the block, BatchNorm layers still normalize with the batch's own statistics (train
    mode) but leave running_mean / running_var / num_batches_tracked as they are.

    Used for the FGSM forward of adversarial training, so that one SGD step updates the running
    statistics once (with the batch it trains on), as a plain step does. Only ResNet-18 has
    BatchNorm; LeNet' and DDNet are unaffected."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False  # train mode + no tracking: batch statistics, no buffer update
    try:
        yield model
    finally:
        for m in bns:
            m.track_running_stats = True


@contextmanager
def stop_requests(enabled: bool = True):
    """Within the block, Ctrl-C (SIGINT) and ``kill`` (SIGTERM) only ask the training loop to stop: it ends
    the iteration it is in, saves the resume file and then raises KeyboardInterrupt / SystemExit(143), so a
    stopped run loses no finished iteration (by default up to RESUME_EVERY_S of work would be lost). A second
    Ctrl-C stops at once. Yields a dict whose 'signal' is the signal number once one came, else None.

    Python runs signal handlers in the main thread only, so in any other thread (the app trains in a
    Streamlit script thread) and with ``enabled`` False the handlers are left as they are."""
    state: dict = {"signal": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def ask(signum, frame):
        if state["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        state["signal"] = signum
        # os.write, not print: a handler that prints can land inside tqdm's write to sys.stderr, and the
        # buffered stream refuses that reentrant call with a RuntimeError
        os.write(2, f"\njacviz: {signal.Signals(signum).name}; stopping after this iteration to save the resume "
                    "file (Ctrl-C again to stop at once)\n".encode())

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(s, handler)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite at ``iteration`` (0-based) with learning rate ``lr``."""

    def __init__(self, iteration: int, loss: float, lr: float):
        super().__init__(f"loss became {loss} at iteration {iteration}; lower the lr")
        self.iteration, self.loss, self.lr = iteration, loss, lr


@dataclass
class TrainResult:
    model: nn.Module
    config: TrainConfig
    metrics: dict
    history: list
    path: Path | None
    finished: bool


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Fraction of samples whose argmax logit equals the label (model in its current mode)."""
    dev = next(model.parameters()).device
    correct = 0
    for s in range(0, len(x), batch):
        correct += (model(x[s:s + batch].to(dev)).argmax(1).cpu() == y[s:s + batch]).sum().item()
    return correct / max(1, len(x))


def evaluate(model: nn.Module, dataset: str, n: int = 10000, n_jac: int | None = None,
             jac_progress: Callable[[int, int], None] | None = None) -> dict:
    """Clean test accuracy on the first ``n`` test samples and mean exact ||J||_F on the first
    ``n_jac`` (default n), in normalized and pixel space; USPS accuracy for MNIST models.
    jac_progress: ``(images done, n_jac)`` after each chunk of the exact norms, the slow part
    (C backward passes an image)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    x, y = data.load(dataset, "test")
    x, y = x[:n], y[:n]
    xj = x[: (n_jac or n)].to(dev)
    jn = jacobian_frobenius(model, xj, "normalized", progress=jac_progress).cpu()
    std = models.input_std(model)
    out = {"test_acc": accuracy(model, x, y), "n_test": len(x),
           "jac_fro_normalized": jn.mean().item(), "jac_fro_pixel": (jn / std).mean().item(),
           "n_jac": len(xj)}
    if dataset == "mnist":
        try:
            xu, yu = data.load("usps", "test")
            out["usps_acc"] = accuracy(model, xu, yu)
        except data.DatasetMissingError as err:
            out["usps_acc"] = None
            out["usps_note"] = str(err)
    model.train(was_training)
    return out


def _batch_indices(n: int, batch: int, it: int, seed: int, cache: dict) -> torch.Tensor:
    """Indices for iteration ``it``: a fresh permutation each epoch from its own generator."""
    steps = max(1, n // batch)
    epoch, pos = divmod(it, steps)
    if cache.get("epoch") != epoch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        cache["epoch"], cache["perm"] = epoch, torch.randperm(n, generator=g)
    return cache["perm"][pos * batch:(pos + 1) * batch]


def step_memory_format(config: TrainConfig, dev: torch.device) -> torch.memory_format:
    """Memory format of the weights and batches while training: on a CPU, channels_last for LeNet'
    and DDNet; else the default (contiguous).

    Only the speed changes (the same arithmetic, summed in another order). Measured on this project's
    2-core Intel Xeon VM, 1 thread (benchmarks/memory_format.py, 2026-12-07), contiguous / channels_last
    step time: LeNet' 1.1-1.8x (plain, FGSM AT and JR steps, batch 10-300); DDNet 1.2-1.4x without
    JR (batch 100, 300); with JR PyTorch's own double backward was 0.91-0.96x (it copies batch-transposed
    tensors between the formats), so DDNet JR steps are channels_last only with the transposed-convolution
    input gradients of :func:`jr_transposed_convs` (benchmarks/jr_conv.py); ResNet-18 1.1x, left in the
    default. A GPU was not measured and keeps the default."""
    if dev.type != "cpu":
        return torch.contiguous_format
    if config.model == "lenet" or (config.model == "ddnet" and (not config.jr or jr_transposed_convs(config, dev))):
        return torch.channels_last
    return torch.contiguous_format


def jr_transposed_convs(config: TrainConfig, dev: torch.device) -> bool:
    """Whether JR steps take convolutions' input gradients as transposed convolutions (jacviz.jr_conv):
    on a CPU, for DDNet and ResNet-18. The gradients are the same to float rounding; only the speed changes.

    Measured on this project's 2-core Intel Xeon VM, 1 thread, 2026-12-07 (benchmarks/jr_conv.py,
    benchmarks/results/jr_conv_cpu_2026-12-07.txt), a JR step's time with PyTorch's double backward
    over its time transposed: DDNet 1.39x at batch 100 and 1.51x at 300 (PyTorch's in the default
    layout, the one it trained in, against transposed in channels_last; the JR / plain step ratio fell
    from 2.9-3.6 to 2.1-2.4); ResNet-18 1.14-1.16x at batch 100 (both in the default layout; channels_last
    JR steps took 1.6x longer); LeNet' 0.75-1.24x, no gain, so it keeps PyTorch's. Not measured on a GPU."""
    return dev.type == "cpu" and bool(config.jr) and config.model in ("ddnet", "resnet18")


def jr_analytic_batchnorm(config: TrainConfig, dev: torch.device) -> bool:
    """Whether JR steps take BatchNorm's double backward in closed form (jacviz.jr_batchnorm): on a CPU,
    for ResNet-18 (the only model with BatchNorm). The gradients are the same to float rounding; only the
    speed changes.

    Measured on this project's 2-core Intel Xeon VM, 1 thread, beside a 2-thread training, 2026-12-07
    (benchmarks/jr_batchnorm.py, benchmarks/results/jr_batchnorm_cpu_2026-12-07.txt), a ResNet-18 JR step
    (batch 100, with :func:`jr_transposed_convs`' convolutions) took 8.39 s with PyTorch's BatchNorm double
    backward and 6.91 s in closed form (1.21x; JR / plain 2.54 -> 2.09). Not measured on a GPU, so a GPU
    keeps PyTorch's."""
    return dev.type == "cpu" and bool(config.jr) and config.model == "resnet18"


def step_setup(config: TrainConfig, dev: torch.device) -> dict:
    """How this machine takes a training step of ``config``: memory format, JR's convolution input
    gradient ('transposed' or PyTorch's 'torch') and BatchNorm's double backward ('analytic' or
    'torch'). Checkpoints record it (meta.step_setups)."""
    fmt = step_memory_format(config, dev)
    return {"memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
            "conv_input_grad": "transposed" if jr_transposed_convs(config, dev) else "torch",
            "bn_double_backward": "analytic" if jr_analytic_batchnorm(config, dev) else "torch"}


def lr_at(config: TrainConfig, it: int) -> float:
    """Step schedule: lr divided by 10 at each milestone iteration (the paper's 'quenches')."""
    return config.lr * 0.1 ** sum(it >= m for m in config.milestones)


def fit(config: TrainConfig, out_dir: str | Path | None = None, progress: ProgressFn | None = None,
        resume: bool = False, stop_after: int | None = None, show_progress: bool = True,
        n_jac_during: int = 1000) -> TrainResult:
    """Train ``config``; returns the model (eval mode), final metrics and per-eval history.

    out_dir: where ``<key>.pt`` (final) and ``<key>.resume.pt`` (periodic) go; None = no files.
    progress: called with a dict at the end of every 20th iteration and the last ({'kind': 'step', 'iteration', 'total',
      'loss', 'ce', 'jr', 'lr', 'elapsed_s': wall seconds of training so far, earlier sessions of a resumed
      run included, 'eta_s': seconds the remaining iterations will take at this session's pace, evaluations
      included, the final one not}), during each evaluation's exact ||J||_F ({'kind': 'eval_progress',
      'iteration', 'final': the evaluation after training, 'done', 'total': test images, 'elapsed_s', 'eta_s'})
      and after each evaluation during training ({'kind': 'eval', ...metrics}).
    resume: continue from ``<key>.resume.pt`` when it exists (same result as uninterrupted).
    Ctrl-C or ``kill`` (in the main thread, with out_dir set) stops after the current iteration, saves the
      resume file there and raises KeyboardInterrupt / SystemExit(143) (:func:`stop_requests`).
      So does an exception raised by ``progress`` at a 'step' or 'eval' event (it is then re-raised): a
      stopped Streamlit script keeps its iterations (stopped during an evaluation, it keeps the last save).
    stop_after: stop (as if interrupted) after this many iterations, leaving the resume file.
    n_jac_during: test samples for the mean ||J||_F at intermediate evaluations (final: config.jac_samples).
    """
    # Subnormal floats (below 1.2e-38): once a few-shot run memorizes its batch, the cross-entropy's
    # gradients fall there, and x86 CPUs compute on them in microcode: a DDNet step on 3 images per
    # class at loss 1.5e-6 took 335 ms with them and 200 ms flushed to zero (2-core VM, 1 thread, both cores busy).
    # Flushing drops only values no float32 weight of normal size can register as an update.
    flushing = torch.set_flush_denormal(True)
    try:
        return _fit(config, out_dir, progress, resume, stop_after, show_progress, n_jac_during)
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def _fit(config: TrainConfig, out_dir: Path | None, progress: ProgressFn | None, resume: bool,
         stop_after: int | None, show_progress: bool, n_jac_during: int) -> TrainResult:
    dev = resolve_device(config.device)
    out_dir = Path(out_dir) if out_dir is not None else None
    key = config.key()
    resume_path = out_dir / f"{key}.resume.pt" if out_dir else None

    torch.manual_seed(config.seed)
    model = models.build(config.model, dropout=config.dropout)
    models.apply_init(model, config.init)
    models.apply_input_norm(model, config.input_norm)
    here = step_setup(config, dev)
    fmt = torch.channels_last if here["memory_format"] == "channels_last" else torch.contiguous_format
    model = model.to(dev, memory_format=fmt)
    std = models.input_std(model)
    if not config.few_shot_k and config.dataset == "cifar10":
        from .fewshot_pack import is_subset_only
        if is_subset_only(data.data_root()):  # never train on the zeros that stand in for uncarried images
            raise data.DatasetMissingError(
                f"{data.data_root()} holds only CIFAR-10's few-shot subsets (python -m jacviz.fewshot_pack); "
                "all-data training needs the full cifar-10-batches-py")
    x_train, y_train = data.load(config.dataset, "train")
    if config.few_shot_k:
        idx = data.few_shot_indices(y_train, config.few_shot_k, config.seed, config.few_shot_draw)
        x_train, y_train = x_train[idx], y_train[idx]
    batch = len(x_train) if config.few_shot_k else config.batch_size
    x_train, y_train = x_train.to(dev), y_train.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)

    start, history, wall, setups = 0, [], 0.0, []
    run = {"loss": 0.0, "ce": 0.0, "jr": 0.0, "n": 0}  # training-loss sums since the last evaluation
    if resume and resume_path and resume_path.exists():
        # on the CPU: the RNG states must stay CPU byte tensors (set_rng_state refuses CUDA ones);
        # load_state_dict moves weights and momentum buffers to the model's device
        st = torch.load(resume_path, map_location="cpu", weights_only=True)
        if st.get("key") != key:
            raise checkpoints.CheckpointError(f"{resume_path.name} belongs to another config")
        model.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        start, history, wall = st["iteration"], st["history"], st["wall_time_s"]
        run = st.get("running", run)  # files written before 2026-12-07 restart these sums at the resume
        # resume files written before 2026-12-07 did not record how their steps were taken
        setups = [recorded_setup(su) for su in st.get("step_setups") or [
            {"from_iteration": 0, "memory_format": "unrecorded", "conv_input_grad": "unrecorded"}]]
        torch.set_rng_state(st["rng_cpu"])
        if dev.type == "cuda" and "rng_cuda" in st:
            torch.cuda.set_rng_state(st["rng_cuda"])

    if not setups or {k: v for k, v in setups[-1].items() if k != "from_iteration"} != here:
        setups.append({"from_iteration": start, **here})

    def save_resume(it: int, elapsed: float) -> None:
        st = {"key": key, "config": config.to_dict(), "iteration": it, "history": history, "step_setups": setups,
              "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
              "wall_time_s": elapsed, "running": run, "rng_cpu": torch.get_rng_state()}
        if dev.type == "cuda":
            st["rng_cuda"] = torch.cuda.get_rng_state()
        checkpoints.atomic_torch_save(st, resume_path)

    def keep_if_stopped(done: int, event: dict) -> None:
        """progress(event) at the end of iteration ``done`` (or of its evaluation): if the caller stops there by
        raising (the app: a click ends its Streamlit script), save the resume file at ``done`` and re-raise."""
        try:
            progress(event)
        except BaseException:
            if resume_path:
                save_resume(done, time.perf_counter() - t0)
            raise

    def eval_reporter(iteration: int, final: bool) -> Callable[[int, int], None]:
        """Progress of an evaluation's exact ||J||_F, as 'eval_progress' events and, for the final one
        (all eval_samples unless jac_samples is set: minutes for DDNet on a CPU), a tqdm bar."""
        state: dict = {"t": time.perf_counter()}

        def report(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = tqdm(total=total, disable=not (show_progress and final), unit="image",
                                    desc="final evaluation, exact ||J||_F", dynamic_ncols=True, leave=False)
            state["bar"].update(done - state["bar"].n)
            if progress:
                el = time.perf_counter() - state["t"]
                progress({"kind": "eval_progress", "iteration": iteration, "final": final, "done": done,
                          "total": total, "elapsed_s": el, "eta_s": el / done * (total - done)})
            if done >= total:
                state["bar"].close()
        return report

    end = config.iterations if stop_after is None else min(config.iterations, stop_after)
    bar = tqdm(total=config.iterations, initial=start, disable=not show_progress,
               desc=f"train {config.label()}", unit="it", dynamic_ncols=True)
    perm_cache: dict = {}
    t0 = time.perf_counter() - wall
    t_session = last_save = time.perf_counter()
    model.train()
    done = start
    # the model's convolutions and BatchNorm layers are switched back before it is returned or saved
    with (transposed_input_grads(model, enabled=here["conv_input_grad"] == "transposed"),
          analytic_double_backward(model, enabled=here["bn_double_backward"] == "analytic"),
          stop_requests(enabled=resume_path is not None) as stop):
        for it in range(start, end):
            lr = lr_at(config, it)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = _batch_indices(len(x_train), batch, it, config.seed, perm_cache)
            x, y = x_train[idx].contiguous(memory_format=fmt), y_train[idx]
            if config.adv_train:
                eps = torch.rand(len(x), device=dev) * config.adv_eps_max
                with batch_stats_frozen(model):  # eq. 10 per sample, in train mode as the step itself
                    x = fgsm(model, x, y, eps)
            if config.jr:
                x = x.detach().requires_grad_(True)
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            loss = ce
            jr_val = torch.zeros((), device=dev)
            if config.jr:
                # penalty w.r.t. the normalized input: ||J_norm||^2 = std^2 ||J_pixel||^2
                jr_val = jacobian_penalty(x, logits, config.n_proj) * std ** 2
                loss = loss + config.jr / 2 * jr_val
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(it, loss.item(), lr)
            run["loss"] += loss.item(); run["ce"] += ce.item(); run["jr"] += jr_val.item(); run["n"] += 1
            done = it + 1
            bar.update(1)
            if done % config.eval_every == 0 or done == config.iterations:
                m = evaluate(model, config.dataset, config.eval_samples, n_jac_during,
                             eval_reporter(done, final=False))
                n = max(1, run["n"])
                rec = {"iteration": done, "train_loss": run["loss"] / n, "train_ce": run["ce"] / n,
                       "train_jr": run["jr"] / n, "lr": lr, "wall_time_s": time.perf_counter() - t0,
                       "test_acc": m["test_acc"], "jac_fro_normalized": m["jac_fro_normalized"],
                       "jac_fro_pixel": m["jac_fro_pixel"], "n_jac": m["n_jac"]}
                history.append(rec)
                run = {"loss": 0.0, "ce": 0.0, "jr": 0.0, "n": 0}
                bar.set_postfix(acc=f"{rec['test_acc']:.4f}", J=f"{rec['jac_fro_normalized']:.2f}")
                if progress:
                    keep_if_stopped(done, {"kind": "eval", **rec})
            if resume_path and done < config.iterations and (done % config.checkpoint_every == 0 or done == end
                                                             or time.perf_counter() - last_save > RESUME_EVERY_S):
                save_resume(done, time.perf_counter() - t0)
                last_save = time.perf_counter()
            if progress and (done % 20 == 0 or done == config.iterations):
                now = time.perf_counter()
                keep_if_stopped(done, {"kind": "step", "iteration": done, "total": config.iterations,
                                       "loss": loss.item(), "ce": ce.item(), "jr": jr_val.item(), "lr": lr,
                                       "elapsed_s": now - t0,
                                       "eta_s": (now - t_session) / (done - start) * (config.iterations - done)})
            if stop["signal"] is not None:
                break
    bar.close()
    if stop["signal"] is not None:  # asked to stop: keep every finished iteration, then stop as asked
        save_resume(done, time.perf_counter() - t0)
        print(f"jacviz: saved {resume_path} at iteration {done} of {config.iterations}; rerun with resume "
              "to continue", file=sys.stderr, flush=True)
        if stop["signal"] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + stop["signal"])
    model = model.to(memory_format=torch.contiguous_format).eval()  # checkpoints and callers get the default
    finished = end >= config.iterations
    if not finished:
        return TrainResult(model, config, {}, history, resume_path, False)

    wall = time.perf_counter() - t0
    metrics = evaluate(model, config.dataset, config.eval_samples, config.jac_samples,
                       eval_reporter(config.iterations, final=True))
    metrics.update({"train_time_s": round(wall, 1), "iterations": config.iterations,
                    "final_train_loss": history[-1]["train_loss"] if history else None})
    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses
    meta = {"torch": str(torch.__version__), "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "date": time.strftime("%Y-%m-%d"), "torch_threads": torch.get_num_threads(),
            "memory_format": here["memory_format"], "conv_input_grad": here["conv_input_grad"],
            "bn_double_backward": here["bn_double_backward"],
            "step_setups": setups}  # one entry unless a resumed run was continued by code that steps differently
    path = None
    if out_dir:
        path = checkpoints.save(out_dir / f"{key}.pt", model, config, metrics, history, meta)
        if resume_path.exists():
            resume_path.unlink()
    return TrainResult(model, config, metrics, history, path, True)
