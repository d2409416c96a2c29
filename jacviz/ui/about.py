"""Page: what the paper claims, how to read the pictures, what the shipped checkpoints are."""
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from jacviz import checkpoints
from jacviz.config import PAPER_VARIANTS
from jacviz.grid import CIFAR_SCHEDULES, PAPER_ITERATIONS
from jacviz.ui import common

st.title("About")
st.markdown(r"""
**Robust Learning with Jacobian Regularization** (Hoffman, Roberts & Yaida, 2019), reproduced.

### What the paper claims
* A classifier's logits $z = f(x)$ move under an input perturbation $\epsilon$ by
  $\sum_i J_{c;i}(x)\,\epsilon_i$ to first order (eq. 1), where $J_{c;i} = \partial z_c/\partial x_i$ is
  the input-output Jacobian (eq. 2). Penalizing its squared Frobenius norm
  $\|J(x)\|_F^2 = \sum_{c,i} J_{c;i}^2$ (eq. 3) on the training data, added to the loss with weight
  $\lambda_{JR}/2$ (eq. 5), makes predictions stable against perturbations: it **pushes decision
  boundaries away from the data and enlarges the decision cells** (Figure 1).
* For a linear model this is exactly L² weight decay; for a nonlinear network it is not, and
  L² only smooths the rugged cells of an unregularized net without necessarily enlarging them.
* **Cheap to compute** (Section 2.3): instead of C backward passes (one per class, eq. 6), draw
  $n_{proj}$ random unit vectors $\hat v$ on the sphere $S^{C-1}$ and use
  $C\,|\hat v\cdot J|^2$, an unbiased estimate (eqs. 7-8, Algorithm 1) whose relative variance is at
  most $2(C-1)/(C+2)$ (eq. 16) and is further averaged down over the mini-batch. With
  $n_{proj}=1$ training costs ≈1.3× a plain SGD step for LeNet' and gives the same accuracy and
  ‖J‖_F as the exact penalty (Figure 2).
* **Generalization is kept** (Section 3.1): on MNIST, JR keeps clean test accuracy (≈99 %) while
  reducing ‖J‖_F by an order of magnitude (Table 1: 32.9 → 1.1, w.r.t. the normalized input);
  regularizers combined help most with few samples per class and on the unseen USPS domain (Table 2).
* **Robustness improves** (Section 3.2, Figure 3): JR is the most effective regularizer against
  white noise, and on its own beats FGSM adversarial training against PGD and Carlini-Wagner
  attacks; JR + adversarial training is more robust still.

### How to read the decision-cell pictures (page *Decision cells*)
A test sample $x_0$ (black dot) and a 2-D plane through it,
$x(a, b) = x_0 + a\,u + b\,v$ with orthonormal $u, v$ in pixel space, so the axes are **L2
distances in [0, 1] pixel units** (for MNIST in $\mathbb R^{784}$). Each colour is the class a model
predicts at that point; transparency and contours follow the maximum softmax probability; the circle
around $x_0$ has the radius of the closest decision boundary **within the plane** (Figure 1). The
plane is random (Fig. 1, S1), spanned by the FGSM directions of an undefended and a defended model
(Fig. S2: adversarial examples of the first often do not fool the second), through two other test
samples, or along the two most sensitive input directions (top singular vectors of J at $x_0$).
The paper does not clip: far from $x_0$ the points are not images; the *clip* option clips them to [0, 1].

### The regularizers
| name | what is added | paper's value |
|---|---|---|
| L2 | $\frac{\lambda_{WD}}{2}\|\theta\|^2$ (weight decay) | $\lambda_{WD}=5\cdot10^{-4}$ |
| dropout | units of the two hidden fully connected layers zeroed at random while training | rate 0.5 |
| JR | $\frac{\lambda_{JR}}{2}\,\mathrm{mean}_{\mathcal B}\|J(x)\|_F^2$, w.r.t. the normalized input, $n_{proj}=1$ | $\lambda_{JR}=0.01$ |
| AT | FGSM adversarial training: each training image replaced by $x + \epsilon\,\mathrm{sign}(\nabla_x L)$ | $\epsilon\sim U[0, 0.01]$ |

"L2+dropout+JR" is Table 1's *All Combined*; the defended models of Figure 3b/c add AT to L2+dropout.

### Spaces and units used in this app
Models take [0, 1] pixels and normalize inside (MNIST: $(x-0.1307)/0.3081$). **‖J‖_F is reported
w.r.t. the normalized input** (the paper's Table-1 convention; = pixel-space norm × 0.3081 for MNIST)
and also w.r.t. pixels where said. Attack budgets, noise σ, plane coordinates and fooling distances
are in [0, 1] pixel units (L2 unless marked L∞).
""")

st.subheader("Shipped checkpoints")


def _row(cfg: dict, label, file, m: dict, meta: dict, trained) -> dict:
    """One checkpoint's row, from its manifest entry or from the file itself."""
    return {"model": cfg.get("model"), "dataset": cfg.get("dataset"), "iterations": cfg.get("iterations"),
            "label": label, "seed": cfg.get("seed"), "file": file,
            "test acc.": m.get("test_acc"), "USPS acc.": m.get("usps_acc"),
            "‖J‖_F normalized": m.get("jac_fro_normalized"), "‖J‖_F pixel": m.get("jac_fro_pixel"),
            "test samples": m.get("n_test"), "‖J‖_F test samples": m.get("n_jac"),
            "train time (s)": m.get("train_time_s"), "device": meta.get("device_name") or meta.get("device"),
            "how trained": trained}


manifest_path = checkpoints.SHIPPED_DIR / "manifest.json"
rows = []
source = ""
if manifest_path.is_file():
    try:
        manifest = json.loads(manifest_path.read_text())
        rows = [_row(e.get("config", {}), e.get("label"), e.get("file"), e.get("metrics", {}), e.get("meta", {}),
                     e.get("trained")) for e in manifest.get("checkpoints", [])]
        source = f"from `{manifest_path}`"
    except (OSError, ValueError) as err:
        st.warning(f"`{manifest_path}` could not be read ({err}); listing the checkpoint files instead "
                   "(`python -m jacviz manifest` rewrites it).")
if not rows:
    rows = [_row(e.config.to_dict(), e.config.label(), e.ckpt.path.name, e.ckpt.metrics, e.ckpt.meta,
                 e.config.describe()) for e in common.scan_models()[0] if e.source == "shipped"]
    source = "read from the checkpoint files (no manifest.json yet)"
if rows:
    order = list(PAPER_VARIANTS)  # MNIST first, then CIFAR-10; within one, the paper's order of the mixes
    rows.sort(key=lambda r: (r["dataset"] != "mnist", str(r["dataset"]), str(r["model"]),
                             order.index(r["label"]) if r["label"] in order else len(order), str(r["label"])))
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, width="stretch")
    scheds = sorted({(r["model"], r["dataset"], r["iterations"]) for r in rows if r["iterations"]}, key=str)
    short = [s for s in scheds if s[2] < PAPER_ITERATIONS]
    st.caption(
        f"{len(rows)} checkpoints, {source}. Measured by the trainer after training: clean accuracy "
        "on the first 'test samples' of the test set of the model's dataset (MNIST models also on the USPS test "
        "set, 2,007 images upsampled to 28×28), mean exact ‖J(x)‖_F over the first '‖J‖_F test samples' "
        "w.r.t. the normalized input and w.r.t. [0, 1] pixels, and wall time. Single runs (one seed each, "
        f"the 'seed' column) of " + ", ".join(f"{m} on {d}: {i:,} SGD iterations" for m, d, i in scheds) + "."
        + (" Those shorter than the paper's 150k iterations show the regularizers' ordering after the same "
           "short training, not the paper's exact numbers." if short else ""))
    st.download_button("Download table (CSV)", df.to_csv(index=False), "checkpoints.csv", "text/csv")
else:
    st.info("No shipped checkpoints found in `checkpoints/` yet.")

st.subheader("Reproduction: the paper's tables next to ours")
RESULTS_DIR = checkpoints.REPO_ROOT / "reproduction"
RUNS_FILE = RESULTS_DIR / "mnist_runs.json"
CIFAR_RUNS_FILE = RESULTS_DIR / "cifar10_runs.json"


def _results(path: Path) -> dict | None:
    """A results file of `python -m jacviz grid` ('runs': finished runs, 'diverged': runs whose loss became
    NaN), or None with a warning."""
    try:
        results = json.loads(path.read_text())
        if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
            raise ValueError("it has no list of 'runs'")
        from jacviz.report import longest_schedule  # as REPRODUCTION.md: runs of superseded schedules left out
        return {**results, "runs": longest_schedule(results["runs"]), "all_runs": results["runs"],
                "diverged": longest_schedule(results.get("diverged", []), results["runs"])}
    except (OSError, ValueError) as err:
        st.warning(f"`{path}` could not be read ({type(err).__name__}: {err}); restore it with "
                   "`git checkout reproduction/` or rebuild it with `python -m jacviz grid --stage collect` "
                   "(`--dataset cifar10` for CIFAR-10's).")
        return None


if RUNS_FILE.is_file():
    from jacviz import report

    repro = _results(RUNS_FILE)
    if repro is not None:
        repro_runs = repro["runs"]
        st.caption(f"The same tables as `REPRODUCTION.md`, computed here from `{RUNS_FILE.name}` "
                   f"({len(repro_runs)} finished runs; written by `python -m jacviz grid`). Mean ± 95% CI "
                   "(Student's t) over runs; n = runs.")
        st.markdown("**Table 1**: clean MNIST test accuracy (%) by samples per class, and mean test ‖J‖_F "
                    "(normalized input)")
        more = report.load_more_draws(RESULTS_DIR, "mnist")  # reproduction/fewshot_draws.py's runs
        mnist_study = report.length_study(repro["all_runs"])  # longer runs: cited by the notes, not in the cells
        wide_md, long_md = report.table1_markdown(  # with the extra draws in the notes
            report.table1_rows(repro_runs, repro.get("diverged", []), more, mnist_study),
            details=False)
        st.markdown(wide_md)
        with st.expander("Every cell with its difference and explanation"):
            st.markdown(long_md)
        paired = report.paired_fewshot_rows(lambda v, k: report.select(repro_runs, v, k), report.PAPER_TABLE1)
        if paired:
            with st.expander("Few-shot: each regularizer against none, paired by draw"):
                st.markdown(report.paired_fewshot_markdown(paired))
        ablation = report.fewshot_ablation_rows(repro_runs, more, report.PAPER_TABLE1)
        if ablation:
            with st.expander("Few-shot: other readings of the paper's set-up (initialization, momentum)"):
                st.markdown(report.fewshot_ablation_markdown(ablation))
        red = report.jacobian_reduction(repro_runs)
        if red["ratio"] == red["ratio"]:  # not nan
            st.markdown(f"JR cuts the mean test ‖J‖_F by **{red['ratio']:.1f}×** against no regularization "
                        f"(paper: {red['paper_ratio']:.0f}×).")
        if mnist_study:
            from jacviz.report_length import length_markdown, length_means
            n_long = mnist_study[0]["long"]["config"]["iterations"]
            means = length_means(mnist_study, report.PAPER_TABLE1, report.PAPER_TABLE2, digits=2)
            if means:
                st.markdown(f"**Table 1 and 2 at the paper's schedule**: LeNet' trained {n_long:,} iterations, "
                            "mean over its seeds of each mix, test and USPS accuracy (%) and test ‖J‖_F")
                st.markdown(means)
            st.markdown(f"**Training length**: LeNet' trained the paper's {n_long:,} iterations next to its twin "
                        "of Table 1's short schedule (same mix and seed), final test accuracy (%) and ‖J‖_F")
            st.markdown(length_markdown(mnist_study, report.PAPER_TABLE1, per_epoch=600, digits=2)[0])
            st.caption(report.why_beside(mnist_study, runs=repro["all_runs"]) + " `REPRODUCTION.md` "
                       "(*Training length*) has every evaluation, their robustness and a figure.")
        st.markdown("**Table 2**: accuracy (%) on the USPS test set of the models trained on all of MNIST")
        st.markdown(report.table2_markdown(report.table2_rows(repro_runs)))
        usps_long = report.length_usps(mnist_study)  # '' without longer runs
        if usps_long:
            st.markdown(usps_long)
        st.caption("Robustness figures and the checked claims are in `REPRODUCTION.md`; the Robustness page "
                   "shows the same robustness results interactively.")
else:
    st.info(f"No reproduction results yet (`{RUNS_FILE}`): run `python -m jacviz grid`, then "
            "`python -m jacviz report`.")

if CIFAR_RUNS_FILE.is_file():
    from jacviz import report, report_cifar

    cifar = _results(CIFAR_RUNS_FILE)
    if cifar is not None:
        cifar_runs, cifar_diverged = cifar["runs"], cifar.get("diverged", [])
        its = sorted({r["config"]["iterations"] for r in cifar_runs
                      if not r["config"].get("few_shot_k") and r["config"]["model"] == "ddnet"})
        its_fs = sorted({r["config"]["iterations"] for r in cifar_runs if r["config"].get("few_shot_k")})
        st.markdown("**Table S3**: clean CIFAR-10 test accuracy (%) of DDNet and mean test ‖J‖_F (normalized input)")
        st.caption(f"From `{CIFAR_RUNS_FILE.name}` ({len(cifar_runs)} finished runs"
                   + (f", {len(cifar_diverged)} diverged, left out of the means" if cifar_diverged else "")
                   + "). Our DDNets on all data trained "
                   f"{'/'.join(f'{i:,}' for i in its)} SGD iterations"
                   + (" against the paper's 150,000: their accuracies and norms are those of undertrained models "
                      "(each cell's note says how far training had got). " if its and max(its) < PAPER_ITERATIONS else
                      ", as the paper. ")
                   + (f"The few-shot runs follow the paper: {'/'.join(f'{i:,}' for i in its_fs)} full-batch "
                      "iterations." if its_fs else ""))
        study = report_cifar.schedule_study(cifar["all_runs"])  # cited by the full-data notes, not in the cells
        wide_md, long_md = report_cifar.table_s3_markdown(
            report_cifar.table_s3_rows(cifar_runs, cifar_diverged, study, report.load_more_draws(RESULTS_DIR, "cifar10"),
                                       report.length_study(cifar["all_runs"], "ddnet", "cifar10")),
            details=False)
        st.markdown(wide_md)
        with st.expander("Every Table-S3 cell we ran, with its difference and explanation"):
            st.markdown(long_md)
        paired = report.paired_fewshot_rows(lambda v, k: report_cifar.ddnet_runs(cifar_runs, v, k),
                                            report_cifar.PAPER_TABLE_S3)
        if paired:
            with st.expander("Table S3 few-shot: each regularizer against none, paired by draw"):
                st.markdown(report.paired_fewshot_markdown(paired))
        resnet = [r for r in cifar_runs if r["config"]["model"] == "resnet18"]
        if resnet:
            st.markdown("**ResNet-18** on all of CIFAR-10: clean test accuracy (%) and mean test ‖J‖_F "
                        "(normalized input), ours alone: the paper prints no clean ResNet-18 numbers")
            st.markdown(report_cifar.resnet_markdown(resnet))
            sched = "/".join(f"{i:,}" for i in sorted({r["config"]["iterations"] for r in resnet}))
            st.caption(f"{len(resnet)} runs of {sched} SGD iterations (lr 0.1, batch 100, no dropout); "
                       "mean ± 95% CI over the seeds listed.")
        if study:
            n_long, n_short = study[0]["long"]["config"]["iterations"], CIFAR_SCHEDULES["short"]["iterations"]
            st.markdown(f"**Training length**: DDNet trained {n_long:,} iterations next to its {n_short:,}-iteration "
                        "twin (same seed, the tables' schedule), final test accuracy (%) and ‖J‖_F")
            summary, _ = report_cifar.schedule_study_markdown(study)
            st.markdown(summary)
            st.caption("Not in the paper: a side study of how far the short schedule's numbers move with 5× more "
                       "training. `REPRODUCTION.md` (*Training length*) has every evaluation, a figure and the "
                       "robustness of both lengths.")
