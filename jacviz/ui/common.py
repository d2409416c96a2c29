"""Streamlit glue shared by the pages: cached checkpoints/models/data, sidebar, URL state.

Caching (DESIGN principle 5): models with ``st.cache_resource`` keyed by checkpoint path,
modification time and size (a retrained file is reloaded, a new one is picked up on the next
rerun); arrays with ``st.cache_data`` in the pages, models passed as ``_model`` (not hashed).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import streamlit as st
import torch
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from jacviz import checkpoints, data
from jacviz.config import PAPER_VARIANTS
from jacviz.train import resolve_device

T = TypeVar("T")
# The five Table-1 regularizer mixes, in the paper's order: the default model selection.
TABLE1_LABELS = ("none", "L2", "dropout", "JR", "L2+dropout+JR")
DATASET_NAMES = {"mnist": "MNIST", "usps": "USPS (MNIST models, domain shift)", "cifar10": "CIFAR-10"}
# Which training set a model must come from to be shown a dataset (USPS is read by MNIST models).
TRAINED_ON = {"mnist": "mnist", "usps": "mnist", "cifar10": "cifar10"}


@dataclass(frozen=True)
class ModelEntry:
    """A usable checkpoint as the app lists it. ``id`` (the config hash) is the stable name used in
    URLs; ``name`` is the label shown (unique among the listed models)."""

    id: str
    name: str
    source: str          # 'shipped' | 'user'
    ckpt: checkpoints.Checkpoint

    @property
    def config(self):
        return self.ckpt.config

    @property
    def model(self):
        return self.ckpt.model


# ------------------------------------------------------------------------------------- device
@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    """CUDA when present, else CPU (``jacviz.train.resolve_device('auto')``).

    On CPU the app runs torch single-threaded unless ``JACVIZ_TORCH_THREADS`` says otherwise: its
    work is many small batches, and on a shared machine two spinning threads per op were measured
    2-5x slower than one (dense 101^2 plane: 5.9 s with 2 threads vs 2.5 s with 1 on the busy
    2-core dev box)."""
    dev = resolve_device("auto")
    if dev.type == "cpu":
        try:
            torch.set_num_threads(max(1, int(os.environ.get("JACVIZ_TORCH_THREADS", "1"))))
        except (ValueError, RuntimeError):
            pass
    return dev


def device_text() -> str:
    dev = device()
    if dev.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(dev)})"
    return f"CPU ({torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() > 1 else ''})"


# -------------------------------------------------------------------------------- checkpoints
@st.cache_resource(show_spinner=False, max_entries=256)
def _load_checkpoint(path: str, mtime_ns: int, size: int, dev: str):
    """(Checkpoint, None) or (None, reason). Keyed by path + mtime + size + device."""
    try:
        return checkpoints.load(path, dev), None
    except checkpoints.CheckpointError as err:
        return None, str(err)
    except Exception as err:  # anything else unreadable: report it, keep the app running
        return None, f"{Path(path).name}: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in Path(folder).glob("*.pt") if not p.name.endswith(".resume.pt"))
    except OSError:
        return []


def _order(entry: tuple) -> tuple:
    ck, source = entry
    label = ck.config.label()
    known = list(PAPER_VARIANTS)
    # MNIST first (the landing page's dataset), then CIFAR-10; within one, the paper's order
    return (0 if source == "shipped" else 1, ck.config.dataset != "mnist", ck.config.dataset, ck.config.model,
            known.index(label) if label in known else len(known), label, ck.path.name)


def scan_models() -> tuple[list[ModelEntry], list[tuple[Path, str]]]:
    """Usable models of the shipped and user folders (shipped first, Table-1 order) and the
    unusable files with the reason. Cheap on reruns: only new or modified files are read."""
    good, bad = [], []
    dev = str(device())
    for source, folder in (("shipped", checkpoints.SHIPPED_DIR), ("user", checkpoints.user_dir())):
        for p in _files(folder):
            try:
                stat = p.stat()
            except OSError as err:
                bad.append((p, f"{p.name}: {err}"))
                continue
            ck, why = _load_checkpoint(str(p.resolve()), stat.st_mtime_ns, stat.st_size, dev)
            if ck is None:
                bad.append((p, why))
            else:
                good.append((ck, source))
    good.sort(key=_order)
    labels = [ck.config.label() for ck, _ in good]
    arch_labels = [(ck.config.model, ck.config.label()) for ck, _ in good]  # names repeat only within one model
    entries, seen = [], set()
    for (ck, source), label, arch_label in zip(good, labels, arch_labels):
        key = ck.config.key()
        if key in seen:  # same config in both folders: the shipped one wins
            continue
        seen.add(key)
        name = label
        if ck.config.model != "lenet":
            name = f"{ck.config.model} {name}"
        if arch_labels.count(arch_label) > 1:
            name += f" · {source} {key[:6]}"
        elif source == "user":
            name += " · user"
        entries.append(ModelEntry(key, name, source, ck))
    return entries, bad


def clear_checkpoint_cache() -> None:
    """Forget loaded checkpoints (after training or when files were replaced)."""
    _load_checkpoint.clear()


def models_for(dataset: str, entries: list[ModelEntry] | None = None) -> list[ModelEntry]:
    """Models that can be shown samples of ``dataset`` (USPS: the MNIST models)."""
    entries = scan_models()[0] if entries is None else entries
    return [e for e in entries if e.config.dataset == TRAINED_ON[dataset]]


def default_model_ids(entries: list[ModelEntry]) -> list[str]:
    """The five Table-1 variants (shipped, full data) when present, else the first five models."""
    picks = []
    for label in TABLE1_LABELS:
        for e in entries:
            if e.source == "shipped" and e.config.label() == label and not e.config.few_shot_k:
                picks.append(e.id)
                break
    if not picks:
        picks = [e.id for e in entries[:5]]
    return picks


# ----------------------------------------------------------------------------------- datasets
def load_dataset(name: str, split: str = "test"):
    """``jacviz.data.load`` or an ``st.error`` with the DatasetMissingError message and a stop."""
    try:
        return data.load(name, split)
    except data.DatasetMissingError as err:
        stop_dataset_missing(err)


def stop_dataset_missing(err: Exception) -> None:
    """The page's message for a ``data.DatasetMissingError`` (it says where to put the files), then a stop."""
    st.error(f"**Dataset missing.** {err}")
    st.stop()


# ------------------------------------------------------------------------------------ sidebar
def sidebar() -> None:
    """Shared sidebar: compute device, checkpoint folders, unusable files with reasons."""
    entries, bad = scan_models()
    with st.sidebar:
        st.caption(f"Compute: **{device_text()}** · data: `{data.data_root()}`")
        n_user = sum(e.source == "user" for e in entries)
        st.caption(f"**{len(entries)} usable models** ({len(entries) - n_user} shipped in "
                   f"`checkpoints/`, {n_user} in the user folder `{checkpoints.user_dir()}`)")
        if not entries:
            st.warning("No usable checkpoints yet. Train one on the *Train* page or with "
                       "`python -m jacviz train`.")
        with st.expander(f"Unusable checkpoint files ({len(bad)})", expanded=bool(bad)):
            if not bad:
                st.caption("None: every *.pt file in both folders loaded.")
            else:
                st.caption("Retrain such a model on the *Train* page (a checkpoint of an older jacviz), or move "
                           "the file out of its folder, then *Rescan checkpoint folders*.")
            for path, reason in bad:
                st.markdown(f"- `{path}`  \n  {reason}")
        if st.button("Rescan checkpoint folders", help="Reload every checkpoint file from disk"):
            clear_checkpoint_cache()
            st.rerun()


# ---------------------------------------------------------------------------------- URL state
def url_params_once(page: str) -> dict[str, str]:
    """The URL query parameters, the first time ``page`` runs in this session; {} afterwards
    (later reruns keep the widget values the user chose)."""
    flag = f"_url_read_{page}"
    if st.session_state.get(flag):
        return {}
    st.session_state[flag] = True
    return {k: st.query_params.get(k) for k in st.query_params.keys()}


def warn(msg: str) -> None:
    """Queue a warning shown at the top of the page on this run and the next (URL fallbacks)."""
    st.session_state.setdefault("_warnings", []).append(msg)


def show_warnings() -> None:
    for msg in st.session_state.pop("_warnings", []):
        st.warning(msg)


def parse_int(raw, lo: int, hi: int, name: str, default: int) -> int:
    """``raw`` as an int in [lo, hi], or ``default`` with a warning naming the parameter."""
    try:
        val = int(str(raw).strip())
    except (TypeError, ValueError):
        warn(f"URL parameter `{name}={raw}` is not an integer; using {default}.")
        return default
    if not lo <= val <= hi:
        warn(f"URL parameter `{name}={raw}` is outside [{lo}, {hi}]; using {default}.")
        return default
    return val


def set_url(params: dict[str, str]) -> None:
    """Write ``params`` to the URL, leaving it alone when nothing changed."""
    want = {k: str(v) for k, v in params.items()}
    have = {k: st.query_params.get(k) for k in st.query_params.keys()}
    if have != want:
        st.query_params.from_dict(want)


def keep(page: str, keys: list[str]) -> None:
    """Remember widget values across page switches (Streamlit drops state of unrendered widgets)."""
    st.session_state[f"_keep_{page}"] = {k: st.session_state[k] for k in keys if k in st.session_state}


def restore(page: str) -> None:
    for k, v in st.session_state.get(f"_keep_{page}", {}).items():
        if k not in st.session_state:
            st.session_state[k] = v


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def duration_text(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 07 min' (rounded to whole seconds / minutes)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(s / 60)
    return f"{m // 60} h {m % 60:02d} min"


def eval_text(ev: dict) -> str:
    """The Train page's progress-bar text for a ``train.fit`` 'eval_progress' event: which evaluation, how
    many test images have their exact ‖J‖_F (C backward passes an image), and the time left at its pace."""
    which = "final evaluation" if ev["final"] else f"evaluation at iteration {ev['iteration']:,}"
    text = (f"{which}: exact ‖J‖_F of test image {ev['done']:,} of {ev['total']:,} · "
            f"{duration_text(ev['elapsed_s'])} elapsed")
    if ev["done"] < ev["total"]:
        text += f", about {duration_text(ev['eta_s'])} to go"
    return text


def step_text(ev: dict) -> str:
    """The Train page's progress-bar text for a ``train.fit`` step event: where the run is, its loss and
    lr, the time it has taken and, at its pace so far, the time the remaining iterations will take."""
    text = f"iteration {ev['iteration']:,}/{ev['total']:,} · loss {ev['loss']:.4f} · lr {ev['lr']:g}"
    if "elapsed_s" in ev:
        text += f" · {duration_text(ev['elapsed_s'])} elapsed"
        if ev["iteration"] < ev["total"]:
            text += f", about {duration_text(ev['eta_s'])} to go (then the final evaluation)"
    return text


def script_threads(workers: int) -> ThreadPoolExecutor:
    """Worker threads that belong to this script run (st.cache_data and session state work in them)."""
    ctx = get_script_run_ctx()
    return ThreadPoolExecutor(max_workers=max(1, workers),
                              initializer=lambda: add_script_run_ctx(threading.current_thread(), ctx))


def run_with_bar(work: Callable[[Callable[..., None]], T], text: Callable[..., tuple[float, str]],
                 first: str, poll_s: float = 0.25) -> T:
    """``work(report)`` in a worker thread of this script run, its reports drawn on a progress bar here.

    work calls ``report(*args)`` as it goes; ``text(*args)`` turns the latest report into the bar's
    (fraction, text); ``first`` is the bar's text before any report. The bar is removed at the end.
    Why a thread: a ``st.cache_data`` function must not draw on elements made outside it (its cache
    replay would fail), so the cached work only stores its reports and this thread draws them."""
    latest: dict = {}
    bar = st.progress(0.0, text=first)
    with script_threads(1) as pool:
        fut = pool.submit(work, lambda *args: latest.update(args=args))
        shown = None
        while True:
            try:
                result = fut.result(timeout=poll_s)
                break
            except FutureTimeout:
                if (args := latest.get("args")) is not None and args != shown:
                    shown = args
                    frac, label = text(*args)
                    bar.progress(min(1.0, max(0.0, frac)), text=label)
    bar.empty()
    return result


def study_text(stage: str, done: int, total: int, elapsed_s: float | None = None) -> tuple[float, str]:
    """The Estimator page's bar for an ``estimator.projection_study`` report: (fraction of the stage, text)."""
    if stage == "jacobians":
        text = f"step 1 of 2, exact Jacobians (C backward passes an image): test image {done:,} of {total:,}"
    else:
        text = f"step 2 of 2, random-projection estimates: draw {done:,} of {total:,} (all n_proj values)"
    if elapsed_s is not None:
        text += f" · {duration_text(elapsed_s)} elapsed"
    return done / max(1, total), text


def cells_text(done: int, total: int, resolution: int, elapsed_s: float, running: list[str]) -> str:
    """The Decision-cells page's bar text: models finished (grid, in-plane radius, ‖J(x0)‖_F), time so far,
    and what each running model is doing (its grid's share done, or how far its boundary rays reached)."""
    text = (f"{done} of {total} models done ({resolution}×{resolution} grid, closest boundary, ‖J(x0)‖_F) · "
            f"{duration_text(elapsed_s)} elapsed")
    return text + "".join(f" · {r}" for r in running)
