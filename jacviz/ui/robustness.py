"""Page: accuracy under noise / FGSM / PGD and fooling-distance CDFs (Figure 3, S3-S5)."""
import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from jacviz import attacks, checkpoints, robustness
from jacviz.ui import common

st.title("Robustness")
st.caption(
    "Section 3.2 of the paper: test accuracy under white noise (eq. 9), FGSM (eq. 10) and PGD (FGSM steps of "
    "1/255 within L∞ ≤ 32/255 on MNIST, 16/255 on CIFAR-10), and the test error as a function of the minimal "
    "L2 distance at which each attack fools the model (Figure 3c, S5; Carlini-Wagner as in Appendix F). All "
    "budgets and distances are in [0, 1] pixel space. Samples never fooled are counted, never dropped; the "
    "'worst' curve takes the smallest distance over the attacks per sample; gradient-masking checks flag "
    "results that look too good to be true.")

# Precomputed: the reproduction grid's results (all seeds; `python -m jacviz grid`), else a
# robustness.json written next to the shipped checkpoints by `python -m jacviz robustness`.
SHIPPED = next((p for p in (checkpoints.REPO_ROOT / "reproduction" / "mnist_robustness.json",
                            checkpoints.SHIPPED_DIR / "robustness.json") if p.is_file()),
               checkpoints.SHIPPED_DIR / "robustness.json")
# CIFAR-10 (DDNet, ResNet-18): `python -m jacviz grid --dataset cifar10`
SHIPPED_CIFAR = checkpoints.REPO_ROOT / "reproduction" / "cifar10_robustness.json"
RUNS = checkpoints.user_dir() / "robustness_runs"
RUN_RESTORE = "delete that run's folder and run the evaluation again."
ATTACK_NAMES = {"noise": "white noise", "fgsm": "FGSM", "pgd": "PGD", "cw": "CW-L2"}
BATCH = 500  # test samples an attack processes at once in a new run (the progress text counts these batches)


@st.cache_data(show_spinner=False, max_entries=16)
def _load(path: str, mtime_ns: int, current: bool = False, runs_path: str = "", runs_mtime_ns: int = 0) -> dict:
    """A robustness results file; ``current``: the reproduction grid's, whose models trained on another schedule
    than the tables' are left out, as in REPRODUCTION.md (``report.longest_schedule``: the short runs until the
    paper's 150k-iteration ones cover every mix with two seeds, then those), the schedule chosen from the grid's
    runs file ``runs_path`` where there is one, as the report chooses it."""
    from jacviz.report import current_robustness
    res = robustness.load_results(path)
    if not current:
        return res
    cur = current_robustness(res, json.loads(Path(runs_path).read_text())["runs"] if runs_path else None)
    hidden = len(res.get("models", [])) - len(cur.get("models", []))
    return {**cur, "hidden": (f"{hidden} more model{'s' if hidden > 1 else ''} of this file, trained on another "
                              "schedule than the tables' (REPRODUCTION.md, *Training length*), "
                              f"{'are' if hidden > 1 else 'is'} left out here and kept in the JSON download.")
            if hidden else ""}


def _figures(results: dict, labels: tuple) -> dict:
    groups = [g for g in results.get("groups", []) if g["label"] in labels]
    return robustness.figures_from_results({"groups": groups})


def show(results: dict, source: str, key: str, path: str) -> None:
    """Figures, summary table, masking flags and downloads of one results dict."""
    groups = results.get("groups", [])
    for sk in results.get("skipped", []):
        st.warning(f"`{sk['path']}` was not evaluated: it could not be loaded ({sk['reason']}). Retrain it "
                   "on the *Train* page or remove it, then run the evaluation again.")
    if not groups:
        st.info("These results hold no evaluated model.")
        return
    if results.get("hidden"):
        st.caption(results["hidden"])
    meta = results.get("meta", {})
    labels = [g["label"] for g in groups]
    # more than six curves per panel hide each other: start with the first five (the Table-1 mixes in the
    # reproduction results) and let the user add the defended models and the lambda sweep
    chosen = st.multiselect("Models shown", labels, default=labels if len(labels) <= 6 else labels[:5],
                            key=f"rob_show_{key}",
                            help=f"{len(labels)} models in these results; add or remove to compare.")
    st.caption(f"{source}: first {meta.get('n_requested', '?')} test samples, computed on "
               f"{meta.get('device_name') or meta.get('device', '?')} ({meta.get('device', '?')}), "
               f"torch {meta.get('torch', '?')}, {meta.get('date', '?')}."
               + (f" CW-L2: {attacks.cw_text(meta['cw'])}."
                  if "cw" in meta.get("attacks", []) and meta.get("cw") else ""))
    keys = {g["group_key"]: g["label"] for g in groups if g["label"] in chosen}
    rows = []
    for r in results.get("models", []):
        if r.get("group_key") not in keys:
            continue
        cfg = r.get("config") if isinstance(r.get("config"), dict) else {}
        row = {"model": keys[r["group_key"]], "seed": r.get("seed"), "training iterations": cfg.get("iterations"),
               "test samples (first n)": r.get("n"),
               "clean accuracy": r.get("clean_accuracy")}
        for meth, d in r.get("distances", {}).items():
            s = robustness.summarize(d)
            name = ATTACK_NAMES.get(meth, meth)
            row[f"median L2 fooling distance, {name}"] = s["median"]
            row[f"never fooled, {name}"] = s["fraction_never_fooled"]
        row["masking flags"] = len(r.get("masking_flags", []))
        row["attack flags"] = len(robustness.attack_failure_flags(r.get("distances", {})))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption("Training iterations: SGD steps of the model's run (the paper's full-data runs take 150,000, "
                   "its few-shot runs 10,000; fewer leave a model undertrained, see REPRODUCTION.md). "
                   "Median L2 fooling distance: over the evaluated samples, 0 for samples already misclassified, "
                   "∞ (shown as inf) when more than half were never fooled within the attack's budget. "
                   "Never fooled: fraction of samples the attack did not fool within its budget. Budgets: "
                   + " · ".join(sorted({robustness.budget_text(r["fooling_settings"])
                                        for r in results.get("models", [])
                                        if r.get("group_key") in keys and r.get("fooling_settings")}))
                   + ". Distances: L2 in [0, 1] pixel space.")
    ran_checks = any("masking_flags" in r for r in results.get("models", []))
    flagged = False
    for g in groups:
        if g["label"] in chosen:
            for flag in g.get("masking_flags", []):
                st.warning(f"**Gradient-masking check, {g['label']}:** {flag}")
                flagged = True
            for flag in g.get("attack_flags", []):
                st.warning(f"**Attack check, {g['label']}:** {flag}")
                flagged = True
    if not ran_checks:
        st.info("Gradient-masking checks were not run for these results.")
    elif not flagged and chosen:
        st.success("Gradient-masking checks (zero gradients, noise beating gradient attacks, PGD success "
                   "non-monotone in its budget) and the attack check (CW never fooling what FGSM or PGD fool) "
                   "raised no flag for the models shown.", icon=":material/check:")
    if not chosen:
        return
    figs = _figures(results, tuple(chosen))
    acc = [k for k in figs if k.startswith("accuracy_")]
    fool = [k for k in figs if k.startswith("fooling_")]
    per = [k for k in figs if k.startswith("attacks_")]
    tabs = st.tabs(["Accuracy vs strength", "Fooling-distance CDFs", "Attacks compared per model"])
    for tab, keys in zip(tabs, (acc, fool, per)):
        with tab:
            if not keys:
                st.caption("Not computed in these results.")
            cols = st.columns(2)
            for i, k in enumerate(keys):
                cols[i % 2].plotly_chart(figs[k], width="stretch", key=f"rob_fig_{key}_{k}",
                                         config={"toImageButtonOptions": {"format": "png", "filename": k}})
    c1, c2, _ = st.columns([1, 1, 3])
    if not table.empty:
        c1.download_button("Summary (CSV)", table.to_csv(index=False), "robustness_summary.csv", "text/csv",
                           key=f"rob_csv_{key}", on_click="ignore")
    c2.download_button("All results (JSON)", lambda: Path(path).read_bytes(), "robustness.json", "application/json",
                       key=f"rob_json_{key}", on_click="ignore")


def show_file(path: Path, source: str, key: str, current: bool, restore: str) -> None:
    """:func:`show` of a results file, or a warning saying what to do when it cannot be read."""
    runs = path.with_name(path.name.replace("_robustness.json", "_runs.json"))  # the grid's runs beside it
    runs_args = (str(runs), runs.stat().st_mtime_ns) if current and runs != path and runs.is_file() else ("", 0)
    try:
        show(_load(str(path), path.stat().st_mtime_ns, current, *runs_args), source, key, str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        st.warning(f"`{path}` could not be read ({type(err).__name__}: {err}); {restore}")


# ---------------------------------------------------------------------------------- precomputed
st.subheader("Precomputed results")
precomputed = [(path, title, key, restore) for path, title, key, restore in (
    (SHIPPED, "**MNIST (LeNet')**", "shipped", "restore it with `git checkout reproduction/` or rebuild it with "
                                               "`python -m jacviz grid --stage collect`."),
    (SHIPPED_CIFAR, "**CIFAR-10 (DDNet; ResNet-18 where run)**", "cifar10",
     "restore it with `git checkout reproduction/` or rebuild it with "
     "`python -m jacviz grid --dataset cifar10 --stage collect`.")) if path.is_file()]
for path, title, key, restore in precomputed:  # each file on its own: one missing or broken hides not the other
    if len(precomputed) > 1:
        st.markdown(title)
    show_file(path, f"`{path}`", key, True, restore)
if not precomputed:
    st.info(f"No precomputed results yet (`{SHIPPED}`). Write them with "
            "`python -m jacviz robustness --checkpoints checkpoints --out checkpoints --no-png`, "
            "or run an evaluation below.")

# ---------------------------------------------------------------------------------- new run
st.subheader("New evaluation")
entries, _ = common.scan_models()
if not entries:
    st.info("No usable checkpoints to evaluate.")
    st.stop()
by_id = {e.id: e for e in entries}
with st.form("rob_form"):
    c1, c2, c3 = st.columns(3)
    ids = c1.multiselect("Models (each on its own dataset's test set)", list(by_id),
                         default=common.default_model_ids(entries), format_func=lambda i: by_id[i].name,
                         key="rob_models")
    chosen_attacks = c2.multiselect("Attacks", list(robustness.ATTACKS), default=["noise", "fgsm", "pgd"],
                                    format_func=ATTACK_NAMES.get, key="rob_attacks",
                                    help="CW-L2 is the strongest and by far the slowest")
    n = c3.number_input("Test samples (first n of the test set; paper: 1000)", min_value=10, max_value=10000,
                        value=200, step=50, key="rob_n")
    cw_preset = c2.radio("CW-L2 protocol", ["fast", "paper"], horizontal=True, key="rob_cw",
                         format_func=lambda p: f"{p}: "
                         + attacks.cw_text(attacks.CW_FAST if p == "fast" else attacks.CW_PAPER))
    pgd_k = c3.number_input("PGD curve: iterations k = 0..K", min_value=1, max_value=200,
                            value=robustness.DEFAULT_PGD_ITERATIONS, key="rob_pgd")
    masking = c1.checkbox("Gradient-masking checks (on up to 500 samples)", value=True, key="rob_masking")
    go_run = st.form_submit_button("Run", type="primary")

if go_run:
    if not ids or not chosen_attacks:
        st.warning("Pick at least one model and one attack.")
        st.stop()
    sel = [by_id[i] for i in ids]
    for ds in sorted({e.config.dataset for e in sel}):  # a missing dataset stops here with where to put it,
        common.load_dataset(ds, "test")                # before any model is evaluated
    cw = dict(attacks.CW_FAST if cw_preset == "fast" else attacks.CW_PAPER)
    spec = {"models": [[str(e.ckpt.path), e.ckpt.path.stat().st_mtime_ns] for e in sel],
            "attacks": sorted(chosen_attacks), "n": int(n), "cw": cw, "pgd": int(pgd_k), "masking": masking,
            "device": str(common.device())}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    out_dir = RUNS / key
    result_file = out_dir / "robustness.json"
    if result_file.is_file():
        st.caption(f"Same settings as an earlier run: loaded from `{result_file}`.")
    else:
        bar = st.progress(0.0, text="starting...")
        now = {"k": 0, "name": "", "t0": time.perf_counter()}
        names = {Path(e.ckpt.path).name: e.name for e in sel}

        def log(msg: str) -> None:
            head = msg.split(":", 1)[0]
            if head in names:
                now["k"] += 1
                now["name"] = names[head]
                bar.progress((now["k"] - 1) / len(sel), text=f"model {now['k']}/{len(sel)}: {now['name']}")

        def stage(desc: str, done: int, total: int) -> None:
            """Within a model: which attack's curve or distances, in batches of up to BATCH test samples."""
            if desc == "checkpoints":
                return
            what, kind = desc.rsplit(" ", 1)
            bar.progress((now["k"] - 1) / len(sel),
                         text=f"model {now['k']}/{len(sel)}: {now['name']} · {ATTACK_NAMES.get(what, what)} "
                              f"{kind}: {done} of {total} batches (≤ {BATCH} test samples each) done"
                              + (" (gradient-masking checks follow the attacks)" if masking else "")
                              + f" · {common.duration_text(time.perf_counter() - now['t0'])} elapsed")

        with st.spinner("Evaluating..."):
            try:
                robustness.run_robustness([e.ckpt.path for e in sel], chosen_attacks, int(n), out_dir=out_dir,
                                          device=common.device(), progress=stage, cw_kwargs=cw,
                                          pgd_iterations=int(pgd_k), masking=masking, png=False, log=log,
                                          batch_size=BATCH)
            except Exception as err:  # noqa: BLE001 (shown to the user, who can change the settings)
                st.error(f"The evaluation failed ({type(err).__name__}: {err}). Nothing was saved; try fewer "
                         "test samples or models, or the fast CW protocol, and run it again.")
                st.stop()
        bar.progress(1.0, text="done")
        (out_dir / "settings.json").write_text(json.dumps(spec, indent=1))
    st.session_state["rob_last"] = str(result_file)

last = st.session_state.get("rob_last")
if last and Path(last).is_file():
    show_file(Path(last), f"Run `{Path(last).parent.name}`", "run", False, RUN_RESTORE)
elif RUNS.is_dir() and any(RUNS.glob("*/robustness.json")):
    earlier = sorted(RUNS.glob("*/robustness.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    pick = st.selectbox("Earlier runs in the user folder", [str(p) for p in earlier], key="rob_earlier",
                        format_func=lambda p: f"{Path(p).parent.name} "
                        f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(Path(p).stat().st_mtime))})")
    show_file(Path(pick), f"Run `{Path(pick).parent.name}`", "earlier", False, RUN_RESTORE)
