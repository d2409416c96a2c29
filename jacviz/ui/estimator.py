"""Page: how good is the random-projection estimate of ||J||_F^2 (Section 2.3, eq. 16)?"""
import dataclasses
import json
import time

import pandas as pd
import streamlit as st

from jacviz import estimator, plots_estimator, train
from jacviz.ui import common

st.title("Jacobian estimator")
st.caption(
    "The Jacobian regularizer needs ‖J(x)‖²_F = Σ_c ‖∂z_c/∂x‖², which costs C backward passes "
    "computed exactly (eq. 6). The paper instead draws n_proj random unit vectors v on the sphere "
    "S^{C-1} and uses C·|v·J|² (eqs. 7-8, Algorithm 1): unbiased, with relative variance at most "
    "2(C−1)/(C+2) per projection (eq. 16), for one backward pass per projection. Here both are "
    "measured on real test samples.")

entries, _ = common.scan_models()
if not entries:
    st.info("No usable checkpoints yet: train one on the *Train* page.")
    st.stop()

by_id = {e.id: e for e in entries}
c1, c2, c3 = st.columns(3)
with c1:
    mid = st.selectbox("Model", list(by_id), format_func=lambda i: by_id[i].name, key="est_model")
    entry = by_id[mid]
    x_all, y_all = common.load_dataset(entry.config.dataset, "test")
    n = st.number_input("Test samples (the first B of the test set)", min_value=1,
                        max_value=min(1000, len(x_all)), value=min(100, len(x_all)), step=10,
                        key="est_B", help="Batch size 100 is the paper's mini-batch.")
with c2:
    n_projs = st.multiselect("n_proj values", [1, 2, 3, 5, 10, 20, 50], default=[1, 2, 3, 5, 10],
                             key="est_nproj")
    repeats = st.number_input("Independent draws per n_proj", min_value=2, max_value=2000, value=200,
                              step=50, key="est_repeats")
with c3:
    space = st.radio("Jacobian w.r.t.", ["normalized", "pixel"], key="est_space",
                     format_func=lambda s: {"normalized": "normalized input (paper, Table 1)",
                                            "pixel": "[0, 1] pixels"}[s])
    seed = st.number_input("Seed of the draws", min_value=0, max_value=2**31 - 1, value=0, key="est_seed")

if not n_projs:
    st.warning("Pick at least one n_proj value.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def _study(_model, model_id, dataset, n, n_projs, repeats, seed, space, _progress=None):
    x, _ = common.load_dataset(dataset, "test")
    return estimator.projection_study(_model, x[:n], n_projs, repeats, seed, space, progress=_progress)


t_study = time.perf_counter()
study = common.run_with_bar(
    lambda report: _study(entry.model, mid + str(entry.ckpt.path.stat().st_mtime_ns), entry.config.dataset,
                          int(n), tuple(sorted(int(k) for k in n_projs)), int(repeats), int(seed), space,
                          _progress=report),
    lambda *r: common.study_text(*r, elapsed_s=time.perf_counter() - t_study),
    f"Computing the exact Jacobians of {int(n):,} test images, then {int(repeats):,} random-projection draws...")

C = study["C"]
m1, m2, m3 = st.columns(3)
m1.metric(f"Exact batch mean ‖J‖²_F ({space} input)", f"{study['exact_batch_mean']:.4g}",
          help=f"Mean over the {study['B']} samples of the exact squared Frobenius norm ({space} input)")
m2.metric(f"Exact batch mean ‖J‖_F ({space} input)", f"{(study['exact'] ** 0.5).mean():.4g}",
          help=f"Mean over the {study['B']} samples of the per-sample norm, w.r.t. the {space} input"
               + (" (the quantity Table 1 reports)" if space == "normalized" else
                  " (Table 1 reports it w.r.t. the normalized input: pick that above to compare)"))
m3.metric("eq. 16 bound, one projection", f"{study['bound_1']:.3f}", help=f"2(C−1)/(C+2) with C = {C} classes")

table = pd.DataFrame([{
    "n_proj": r["n_proj"],
    "batch estimate, mean over draws": r["batch_mean"],
    "batch estimate, std over draws": r["batch_std"],
    "relative std of batch estimate (measured)": r["batch_rel_std"],
    "relative std of batch estimate (eq. 15)": r["batch_rel_std_theory"],
    "per-sample rel. variance, measured (mean)": r["sample_rel_var_measured_mean"],
    "per-sample rel. variance, measured (max)": r["sample_rel_var_measured_max"],
    "per-sample rel. variance, eq. 15 (mean)": r["sample_rel_var_theory_mean"],
    "eq. 16 bound / n_proj": r["bound"],
} for r in study["rows"]])
st.subheader("Estimates against the exact value")
st.dataframe(table, hide_index=True, width="stretch")
st.caption(
    f"Batch estimate: the mean over the first {study['B']} test samples of the n_proj-projection estimate of "
    f"‖J‖²_F w.r.t. the {'normalized' if space == 'normalized' else '[0, 1] pixel'} input, drawn "
    f"{study['repeats']} times independently (seed {seed}); its std shows the "
    "(n_proj·|B|)^-1/2 suppression of Section 2.3. Per-sample relative variance: the variance over "
    "the draws of one sample's estimate of ‖J‖²_F, divided by its exact (‖J‖²_F)²; 'eq. 15' evaluates the exact "
    "variance formula from each sample's Jacobian; the bound (eq. 16) holds for any J. Projections "
    "v·J are formed from the exact per-sample Jacobian (C batched backward passes), which equals "
    "what autograd's vector-Jacobian product returns (checked in tests/test_estimator.py).")

f1, f2 = st.columns(2)
f1.plotly_chart(plots_estimator.relative_variance_figure(study), width="stretch")
f2.plotly_chart(plots_estimator.batch_estimates_figure(study), width="stretch")

st.download_button("Download table (CSV)", table.to_csv(index=False), "estimator_study.csv", "text/csv")

st.subheader("Cost: one training step with the JR term")
st.caption(
    "Each variant is timed as a full training-step computation on the same batch: forward, "
    "cross-entropy, penalty (with the graph kept for the weight gradient), backward to the weights; "
    "median of the repeats after one warm-up. 'exact' loops over the C basis vectors (eq. 6). The "
    "paper reports ≈1.3× a plain step for n_proj = 1 on LeNet' (NVIDIA GP100). Measured now, on this "
    "machine, when you press the button (other processes on the machine change the numbers).")
cc1, cc2 = st.columns([1, 3])
with cc1:
    reps = st.number_input("Timed repeats", min_value=1, max_value=50, value=5, key="est_cost_reps")
    go_cost = st.button("Measure cost now", key="est_cost_go")
timed = tuple(sorted(int(k) for k in n_projs if k <= 10)) or (1,)  # larger n_proj: slower than exact
cost_key = ("est_cost", mid, entry.ckpt.path.stat().st_mtime_ns, int(n), int(reps), timed)
if go_cost:
    x, y = x_all[: int(n)], y_all[: int(n)]
    with st.spinner("Timing..."):
        # stepped as jacviz.train would step a JR run of this model here (layout, convolution gradients)
        setup = train.step_setup(dataclasses.replace(entry.config, jr=entry.config.jr or 0.01),
                                 next(entry.model.parameters()).device)
        st.session_state["est_cost_result"] = (cost_key, estimator.cost_ratio(
            entry.model, x, y, n_projs=timed, repeats=int(reps), step_setup=setup))
res = st.session_state.get("est_cost_result")
with cc2:
    if res and res[0] == cost_key:
        cost = res[1]
        su = cost["step_setup"]
        st.markdown(f"Measured on **{cost['machine']}** (`{cost['device']}`), batch {cost['batch']}, "
                    f"median of {cost['repeats']} runs; stepped as *Train* steps this model here: "
                    f"{su['memory_format']} layout, convolution input gradients "
                    + ("as transposed convolutions (`jacviz.jr_conv`)" if su["conv_input_grad"] == "transposed"
                       else "by PyTorch's own double backward") + ".")
        ct = pd.DataFrame([{"variant": k if k in ("plain", "exact") else f"n_proj={k}",
                            "seconds per step": v,
                            "× plain step": cost["ratio_to_plain"][k],
                            "× exact JR step": cost["ratio_to_exact"][k]} for k, v in cost["seconds"].items()])
        st.dataframe(ct, hide_index=True, width="stretch")
        if skipped := sorted(int(k) for k in n_projs if k > 10):
            st.caption(f"n_proj = {', '.join(map(str, skipped))} not timed: more projections than the "
                       f"C = {C} backward passes of the exact penalty cost more than it"
                       + ("; n_proj = 1 is timed in their place." if 1 not in n_projs and timed == (1,) else "."))
        st.download_button("Download timings (JSON)", json.dumps(cost, indent=1), "estimator_cost.json",
                           "application/json")
    else:
        st.caption("Not measured yet for these settings.")
