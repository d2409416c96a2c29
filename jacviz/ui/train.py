"""Page: train a model with any mix of L2, dropout, JR and FGSM adversarial training."""
import time

import pandas as pd
import streamlit as st

import models
from jacviz import checkpoints, data
from jacviz.__main__ import config_from_args, form_argv, train_parser
from jacviz.config import PAPER_VARIANTS
from jacviz.train import fit
from jacviz.ui import common

st.title("Train")
st.caption(
    "Train LeNet' (MNIST), DDNet or ResNet-18 (CIFAR-10) with the paper's regularizers. The joint "
    "loss is eq. 5: cross-entropy + λ_WD/2 ‖θ‖² + λ_JR/2 · mean‖J(x)‖²_F, with the Jacobian taken "
    f"w.r.t. the normalized input. Runs on {common.device_text()}. The checkpoint is saved in the "
    f"user folder `{checkpoints.user_dir()}` and then appears in every model list.")

FIELDS = {"tr_wd": 0.0, "tr_dropout": 0.0, "tr_jr": 0.0, "tr_adv": False}


def _apply_preset():
    p = PAPER_VARIANTS.get(st.session_state["tr_preset"], {})
    st.session_state["tr_wd"] = float(p.get("weight_decay", 0.0))
    st.session_state["tr_dropout"] = float(p.get("dropout", 0.0))
    st.session_state["tr_jr"] = float(p.get("jr", 0.0))
    st.session_state["tr_adv"] = bool(p.get("adv_train", False))


for k, v in FIELDS.items():
    st.session_state.setdefault(k, v)

st.selectbox("Preset (fills the regularizer fields with the paper's values)", list(PAPER_VARIANTS),
             key="tr_preset", on_change=_apply_preset)

with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Model and data**")
        arch = st.selectbox("Architecture", sorted(models.MODELS, key=lambda m: (m != "lenet", m)), key="tr_model",
                            format_func=lambda m: {"lenet": "LeNet' (MNIST)", "ddnet": "DDNet (CIFAR-10)",
                                                   "resnet18": "ResNet-18 (CIFAR-10)"}.get(m, m))
        few = st.number_input("Few-shot: samples per class (0 = all training data)", min_value=0,
                              max_value=5000, value=0, step=1, key="tr_few",
                              help="Table 1's protocol: full-batch SGD on k samples per class, constant lr "
                                   "0.01, 10,000 iterations (with 'Length in: iterations', the Iterations "
                                   "field sets the length instead)")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="tr_seed")
    with c2:
        st.markdown("**Regularizers**")
        wd = st.number_input("λ_WD (L2 weight decay; paper 5e-4)", min_value=0.0, max_value=1.0,
                             step=1e-4, format="%.5f", key="tr_wd")
        dropout = st.slider("Dropout rate (paper 0.5)", 0.0, 0.9, step=0.05, key="tr_dropout")
        jr = st.number_input("λ_JR (Jacobian; paper 0.01)", min_value=0.0, max_value=10.0, step=0.005,
                             format="%.4f", key="tr_jr")
        n_proj = st.selectbox("n_proj (random projections; 'exact' = C backward passes)",
                              ["1", "2", "3", "5", "10", "exact"], key="tr_nproj")
        adv = st.checkbox("FGSM adversarial training, ε ~ U[0, ε_max] (pixel units)", key="tr_adv")
        adv_eps = st.number_input("ε_max (paper 0.01)", min_value=0.0, max_value=1.0, value=0.01,
                                  step=0.005, format="%.3f", key="tr_adv_eps")
    with c3:
        st.markdown("**Schedule**")
        unit = st.radio("Length in", ["epochs", "iterations"], horizontal=True, key="tr_unit")
        epochs = st.number_input("Epochs (lr ÷10 after 30 % and 60 %)", min_value=0.01, max_value=200.0,
                                 value=1.0, step=0.5, key="tr_epochs")
        iters = st.number_input("Iterations", min_value=1, max_value=200000, value=600, step=100,
                                key="tr_iters")
        lr = st.number_input("Learning rate (0 = the paper's default for the model)", min_value=0.0,
                             max_value=10.0, value=0.0, step=0.01, format="%.4f", key="tr_lr")
        eval_samples = st.number_input("Test samples per evaluation", min_value=100, max_value=10000,
                                       value=10000, step=500, key="tr_eval_n",
                                       help="Accuracy at each evaluation and at the end is measured on the "
                                            "first N test images; mean ‖J‖_F on the first min(N, 1,000) during "
                                            "training (C backward passes an image) and on the first N at the end")
        resume = st.checkbox("Continue an interrupted run of the same config", value=True, key="tr_resume")
    submitted = st.form_submit_button("Train", type="primary")

st.caption("Clicking anything while training stops the run and saves its resume file (`<hash>.resume.pt`) "
           "at the iteration it reached (stopped during an evaluation: at the last save, written every evaluation "
           "and every 5 minutes); the same settings with *Continue an interrupted run* pick it up.")

if submitted:
    argv = form_argv(model=arch, wd=wd, dropout=dropout, jr=jr, n_proj=n_proj, adv=adv, adv_eps=adv_eps,
                     seed=seed, eval_samples=eval_samples, few_shot=few, unit=unit, epochs=epochs,
                     iterations=iters, lr=lr)
    try:
        config = config_from_args(train_parser().parse_args(argv))
    except (ValueError, SystemExit) as err:
        st.error(f"Invalid settings: {err}")
        st.stop()
    for split in ("train", "test"):  # a missing split stops here with its message, not an epoch in
        common.load_dataset(config.dataset, split)
    st.markdown(f"**{config.label()}** — {config.describe()}  \nCheckpoint name: `{config.key()}.pt`")
    twin = checkpoints.SHIPPED_DIR / f"{config.key()}.pt"
    if twin.is_file():
        st.info(f"These are the settings of the shipped checkpoint `{twin.name}` (same config hash). Your run is "
                f"saved beside it in `{checkpoints.user_dir()}`, but the model lists show the shipped one for "
                "these settings; change the seed to train a model of your own that they list.")

    bar = st.progress(0.0, text="starting...")
    c1, c2, c3 = st.columns(3)
    loss_box, acc_box, jac_box = c1.empty(), c2.empty(), c3.empty()
    steps, evals = [], []
    last = {"t": 0.0}

    def draw():
        if steps:
            loss_box.line_chart(pd.DataFrame(steps).set_index("iteration")[["loss", "cross-entropy"]],
                                x_label="iteration", y_label="training loss (eq. 5)")
        if evals:
            df = pd.DataFrame(evals).set_index("iteration")
            acc_box.line_chart(df[["test accuracy"]], x_label="iteration",
                               y_label=f"test accuracy, first {config.eval_samples:,} test images")
            n_jac = evals[-1]["n_jac"]
            jac_box.line_chart(df[["‖J‖_F (normalized input)"]], x_label="iteration",
                               y_label=f"mean ‖J‖_F, normalized input, first {n_jac:,} test images")

    def progress(ev):
        if ev["kind"] == "step":
            steps.append({"iteration": ev["iteration"], "loss": ev["loss"], "cross-entropy": ev["ce"]})
            bar.progress(min(1.0, ev["iteration"] / ev["total"]), text=common.step_text(ev))
            if time.monotonic() - last["t"] > 1.0:
                last["t"] = time.monotonic()
                draw()
        elif ev["kind"] == "eval_progress":
            # the final evaluation fills the bar afresh: it can take minutes (DDNet on a CPU)
            bar.progress(ev["done"] / ev["total"] if ev["final"] else min(1.0, ev["iteration"] / config.iterations),
                         text=common.eval_text(ev))
        elif ev["kind"] == "eval":
            evals.append({"iteration": ev["iteration"], "test accuracy": ev["test_acc"],
                          "‖J‖_F (normalized input)": ev["jac_fro_normalized"], "n_jac": ev["n_jac"]})
            draw()

    try:
        res = fit(config, out_dir=checkpoints.user_dir(), progress=progress, resume=resume, show_progress=False)
    except FloatingPointError as err:
        st.error(f"Training diverged: {err}")
        st.stop()
    except data.DatasetMissingError as err:  # e.g. a CIFAR-10 folder holding only the few-shot subsets
        common.stop_dataset_missing(err)
    except checkpoints.CheckpointError as err:
        st.error(f"**The resume file cannot be used.** {err}. Untick *Continue an interrupted run* to start "
                 "afresh, or delete the file.")
        st.stop()
    draw()
    bar.progress(1.0, text="done")
    common.clear_checkpoint_cache()
    m = res.metrics
    st.success(f"Saved `{res.path}` — test accuracy {m['test_acc']:.4f} on {m['n_test']} samples, "
               f"mean ‖J‖_F {m['jac_fro_normalized']:.3g} (normalized input) / {m['jac_fro_pixel']:.3g} "
               f"(pixels) over {m['n_jac']} samples"
               + (f", USPS accuracy {m['usps_acc']:.4f}" if m.get("usps_acc") is not None else "")
               + f", {m['train_time_s']} s. "
               + ("The model lists show the shipped checkpoint of the same settings in its place." if twin.is_file()
                  else "It now appears in every model list."))

entries, _ = common.scan_models()
user = [e for e in entries if e.source == "user"]
if user:
    st.subheader("Your models")
    st.dataframe(pd.DataFrame([{"name": e.name, "file": e.ckpt.path.name,
                                "test acc.": e.ckpt.metrics.get("test_acc"),
                                "test images": e.ckpt.metrics.get("n_test"),
                                "‖J‖_F normalized": e.ckpt.metrics.get("jac_fro_normalized"),
                                "‖J‖_F test images": e.ckpt.metrics.get("n_jac"),
                                "train time (s)": e.ckpt.metrics.get("train_time_s"),
                                "how trained": e.config.describe()} for e in user]),
                 hide_index=True, width="stretch")
