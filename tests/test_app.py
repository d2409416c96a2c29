"""The Streamlit app through streamlit.testing.v1.AppTest (no browser).

Models: two LeNet' checkpoints trained here on real MNIST for 80 steps and saved into a temporary
user folder, so the tests do not depend on which shipped checkpoints exist
(shipped ones in checkpoints/ are listed too when present).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from jacviz import checkpoints
from jacviz.config import TrainConfig
from jacviz.train import fit

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TIMEOUT = 180  # seconds per script run: the CPU here is shared with training jobs
PAGES = ["jacviz/ui/cells.py", "jacviz/ui/robustness.py", "jacviz/ui/train.py",
         "jacviz/ui/estimator.py", "jacviz/ui/about.py"]


@pytest.fixture(scope="session")
def user_models(tmp_path_factory):
    """(folder, [config keys]): a plain and a JR LeNet', 80 SGD steps on real MNIST each (seconds),
    trained and saved by jacviz.train.fit like any user model."""
    folder = tmp_path_factory.mktemp("user_ckpts")
    keys = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app does on CPU: small batches, shared machine (see ui/common.py)
    try:
        for jr in (0.0, 0.1):
            cfg = TrainConfig(lr=0.05, iterations=80, milestones=(), jr=jr, seed=11, eval_every=80,
                              eval_samples=500, checkpoint_every=80, device="cpu")
            fit(cfg, out_dir=folder, show_progress=False)
            keys.append(cfg.key())
    finally:
        torch.set_num_threads(threads)
    return folder, keys


@pytest.fixture
def app(user_models, monkeypatch):
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(user_models[0]))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["cells_res"] = 51  # keep the test grids small
    return at


def _errors(at):
    return [e.value for e in at.error] + [str(e.value) for e in at.exception]


def _figure(at) -> dict:
    charts = at.get("plotly_chart")
    assert charts, "no plotly chart on the page"
    return json.loads(charts[0].proto.spec)


def _table(at):
    return at.dataframe[0].value


def test_every_page_runs(app):
    app.run()
    assert not app.exception, _errors(app)
    assert app.get("plotly_chart"), "the landing page shows the decision-cell figure"
    for page in PAGES[1:] + PAGES[:1]:
        app.switch_page(page).run()
        assert not app.exception, (page, _errors(app))
        assert not app.error, (page, _errors(app))
        if page.endswith("estimator.py"):  # a norm says its space (Table 1's is the normalized input's)
            assert "Exact batch mean ‖J‖_F (normalized input)" in [m.label for m in app.metric]
            app.radio(key="est_space").set_value("pixel").run()
            assert "Exact batch mean ‖J‖_F (pixel input)" in [m.label for m in app.metric]
            # the cost table says how its steps were taken (as Train would take a JR step of this model here)
            app.number_input(key="est_B").set_value(8)
            app.number_input(key="est_cost_reps").set_value(1)
            app.button(key="est_cost_go").click().run()
            assert not app.exception, _errors(app)
            said = " ".join(m.value for m in app.markdown)
            assert "stepped as *Train* steps this model here: channels_last layout" in said
            assert "PyTorch's own double backward" in said  # LeNet' keeps it (jacviz.train.jr_transposed_convs)
            assert len(app.dataframe[-1].value) == 1 + len(app.multiselect(key="est_nproj").value) + 1


def _bar_script():
    import threading

    import streamlit as st

    from jacviz.ui import common

    shown = {k: threading.Event() for k in range(1, 4)}

    def work(report):
        for k in range(1, 4):
            report("draws", k, 3)
            assert shown[k].wait(30), f"report {k} was not drawn"  # the next report waits for this one's bar
        if st.session_state.get("fail"):
            raise RuntimeError("work failed")
        return "result"

    drawn = []

    def text(*r):
        drawn.append(common.study_text(*r))
        shown[r[1]].set()
        return drawn[-1]

    out = common.run_with_bar(work, text, "starting", poll_s=0.05)
    st.write(out)
    st.write(" | ".join(t for _, t in drawn))


def test_run_with_bar_draws_each_report_and_returns_the_work(monkeypatch):
    """The Estimator page's study runs in a worker thread (a cached function must not draw on the page) while
    the script thread draws its reports; the result, or the work's exception, reaches the script."""
    at = AppTest.from_function(_bar_script, default_timeout=60).run()
    assert not at.exception, _errors(at)
    assert at.markdown[0].value == "result"
    assert at.markdown[1].value.split(" | ") == [
        f"step 2 of 2, random-projection estimates: draw {k:,} of 3 (all n_proj values)" for k in (1, 2, 3)]
    assert not at.get("progress")  # removed at the end
    at.session_state["fail"] = True
    at.run()
    assert at.exception and "work failed" in at.exception[0].value


def test_sample_plane_and_models_change_output(app, user_models):
    app.run()
    assert not app.exception, _errors(app)
    fig0, tab0 = _figure(app), _table(app)

    app.number_input(key="cells_sample").set_value(5).run()
    assert not app.exception, _errors(app)
    fig1, tab1 = _figure(app), _table(app)
    assert fig1["data"] != fig0["data"]
    assert not tab1.equals(tab0)
    assert app.query_params["sample"] == "5"

    app.selectbox(key="cells_plane").set_value("samples").run()
    assert not app.exception, _errors(app)
    fig2 = _figure(app)
    assert fig2["data"] != fig1["data"]
    assert app.query_params["plane"] == "samples"

    ms = app.multiselect(key="cells_models")
    before = list(ms.value)
    after = user_models[1] if before != user_models[1] else user_models[1][:1]
    ms.set_value(after).run()
    assert not app.exception, _errors(app)
    tab3 = _table(app)
    assert len(tab3) == len(after) and list(tab3["model"]) != list(tab1["model"])
    assert _figure(app)["data"] != fig2["data"]
    assert app.query_params["models"] == ",".join(after)


def test_corrupt_and_foreign_checkpoints_listed(tmp_path, user_models, monkeypatch):
    for f in user_models[0].glob("*.pt"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "corrupt.pt").write_bytes(os.urandom(2000))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["cells_res"] = 51
    at.run()
    assert not at.exception, _errors(at)
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "corrupt.pt" in side and "foreign.pt" in side
    assert "not a jacviz checkpoint" in side and "cannot be read" in side
    assert any("Unusable checkpoint files (2)" in e.proto.label for e in at.sidebar.expander)
    assert at.get("plotly_chart"), "the page still shows the cells"
    assert any("Retrain such a model" in c.value for c in at.sidebar.caption)  # and what to do about them
    # a robustness run that could not load a file says so and what to do, instead of showing fewer rows
    run = json.loads((ROOT / "reproduction" / "mnist_robustness.json").read_text())
    run["skipped"] = [{"path": str(tmp_path / "corrupt.pt"), "reason": "UnpicklingError: invalid load key"}]
    (tmp_path / "robustness_runs" / "earlier").mkdir(parents=True)
    (tmp_path / "robustness_runs" / "earlier" / "robustness.json").write_text(json.dumps(run))
    at.switch_page("jacviz/ui/robustness.py").run()
    assert not at.exception, _errors(at)
    assert any("corrupt.pt` was not evaluated: it could not be loaded (UnpicklingError" in w.value
               and "Retrain it" in w.value for w in at.warning)


def test_url_state_round_trips(user_models, monkeypatch):
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(user_models[0]))
    ids = user_models[1]
    want = {"dataset": "mnist", "sample": "17", "plane": "samples", "seed": "3", "models": ",".join(ids)}
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["cells_res"] = 51
    at.query_params.update(want)
    at.run()
    assert not at.exception, _errors(at)
    assert at.number_input(key="cells_sample").value == 17
    assert at.selectbox(key="cells_plane").value == "samples"
    assert at.number_input(key="cells_seed").value == 3
    assert at.multiselect(key="cells_models").value == ids
    assert {k: at.query_params[k] for k in want} == want
    assert not at.warning


def test_bad_url_values_fall_back_with_warning(app):
    app.query_params.update({"sample": "99999", "plane": "bogus", "seed": "x", "models": "nope"})
    app.run()
    assert not app.exception, _errors(app)
    text = " ".join(w.value for w in app.warning)
    for word in ("sample=99999", "plane=bogus", "seed=x", "nope"):
        assert word in text
    assert app.number_input(key="cells_sample").value == 0
    assert app.selectbox(key="cells_plane").value == "random"
    assert app.query_params["plane"] == "random" and app.query_params["sample"] == "0"
    assert app.multiselect(key="cells_models").value  # the default selection
    assert app.get("plotly_chart")


def test_missing_dataset_shows_error_not_exception(app, tmp_path, monkeypatch):
    monkeypatch.setenv("JACVIZ_DATA", str(tmp_path))
    app.run()
    assert not app.exception, _errors(app)
    assert app.error and "Dataset missing" in app.error[0].value and str(tmp_path) in app.error[0].value
    app.switch_page("jacviz/ui/estimator.py").run()
    assert not app.exception, _errors(app)


def _fill_train_form(app):
    """L2 from the preset, 20 iterations, accuracy on 100 test images, seed 5."""
    app.selectbox(key="tr_preset").set_value("L2").run()
    assert app.number_input(key="tr_wd").value == 5e-4
    app.radio(key="tr_unit").set_value("iterations")
    app.number_input(key="tr_iters").set_value(20)
    app.number_input(key="tr_eval_n").set_value(100)
    app.number_input(key="tr_seed").set_value(5)


def test_training_in_the_app_adds_a_model(app, tmp_path, user_models, monkeypatch):
    for f in user_models[0].glob("*.pt"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(tmp_path))
    app.run()
    before = set(app.multiselect(key="cells_models").options)
    app.switch_page("jacviz/ui/train.py").run()
    _fill_train_form(app)
    next(b for b in app.button if b.label == "Train").click().run()
    assert not app.exception, _errors(app)
    assert app.success and "test accuracy" in app.success[0].value
    saved = [p for p in tmp_path.glob("*.pt") if not p.name.endswith(".resume.pt")]
    assert len(saved) == 3
    new_id = next(p.stem for p in saved if p.stem not in user_models[1])
    app.switch_page("jacviz/ui/cells.py").run()
    ms = app.multiselect(key="cells_models")
    assert len(ms.options) == len(before) + 1
    ms.set_value([new_id]).run()
    assert not app.exception, _errors(app)
    assert app.dataframe[0].value["model"].iloc[0].startswith("L2")

    # the same settings as a shipped checkpoint: the lists show the shipped one, and the page says so
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / f"{new_id}.pt").write_bytes((tmp_path / f"{new_id}.pt").read_bytes())
    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", shipped)
    app.switch_page("jacviz/ui/train.py").run()
    _fill_train_form(app)
    next(b for b in app.button if b.label == "Train").click().run()
    assert not app.exception, _errors(app)
    assert any(f"settings of the shipped checkpoint `{new_id}.pt`" in i.value for i in app.info)
    assert "show the shipped checkpoint of the same settings in its place" in app.success[0].value


def test_train_page_stops_with_a_message_on_a_subset_only_cifar10(app, tmp_path, monkeypatch):
    """All-data training on a CIFAR-10 folder rebuilt from the few-shot package (its other images are zeros)
    is refused by fit; the page shows why instead of a traceback."""
    from jacviz.fewshot_pack import MARKER

    real = Path(os.environ["JACVIZ_DATA"]) / "cifar-10-batches-py"
    mine = tmp_path / "cifar-10-batches-py"
    mine.mkdir()
    for f in real.iterdir():
        (mine / f.name).symlink_to(f)
    (mine / MARKER).write_text("test\n")
    monkeypatch.setenv("JACVIZ_DATA", str(tmp_path))
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(tmp_path / "user"))
    app.switch_page("jacviz/ui/train.py").run()
    app.selectbox(key="tr_model").set_value("ddnet")
    app.radio(key="tr_unit").set_value("iterations")
    app.number_input(key="tr_iters").set_value(5)
    next(b for b in app.button if b.label == "Train").click().run()
    assert not app.exception, _errors(app)
    assert app.error and "Dataset missing" in app.error[0].value and "few-shot subsets" in app.error[0].value


def test_train_page_explains_why_resnet18_takes_no_dropout(app):
    app.switch_page("jacviz/ui/train.py").run()
    app.selectbox(key="tr_preset").set_value("L2+dropout+JR").run()
    app.selectbox(key="tr_model").set_value("resnet18")
    next(b for b in app.button if b.label == "Train").click().run()
    assert not app.exception, _errors(app)
    assert app.error and "Invalid settings" in app.error[0].value and "no dropout" in app.error[0].value


def _cw_fast_table(app, model, clip=False):
    """The Decision-cells page's CW-L2 table (fast protocol) for one model."""
    app.switch_page("jacviz/ui/cells.py").run()
    app.checkbox(key="cells_clip").set_value(clip)
    app.multiselect(key="cells_models").set_value([model]).run()
    app.radio(key="cells_cw_protocol").set_value("fast")
    app.button(key="cells_cw_go").click().run()
    assert not app.exception, _errors(app)
    return app.dataframe[-1].value


def test_robustness_run_and_cw_button(app, user_models):
    app.switch_page("jacviz/ui/robustness.py").run()
    assert not app.exception, _errors(app)
    app.multiselect(key="rob_models").set_value(user_models[1][:1])
    app.multiselect(key="rob_attacks").set_value(["noise", "fgsm"])
    app.number_input(key="rob_n").set_value(20)
    app.checkbox(key="rob_masking").uncheck()
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception, _errors(app)
    summary = app.dataframe[-1].value
    assert "median L2 fooling distance, FGSM" in summary.columns and summary["test samples (first n)"].iloc[0] == 20
    assert len(app.get("plotly_chart")) >= 3

    cw = _cw_fast_table(app, user_models[1][0])
    assert list(cw.columns)[:2] == ["model", "CW-L2 fooling distance (L2 px)"] and len(cw) == 1
    assert np.isfinite(cw.iloc[0, 1]) and not any("stopped short" in w.value for w in app.warning)


def test_a_failed_robustness_run_says_what_to_change(app, user_models, monkeypatch):
    """An evaluation that fails (here: an injected out-of-memory error) is an error message saying what to
    try, not a traceback."""
    from jacviz import robustness

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")
    monkeypatch.setattr(robustness, "run_robustness", boom)
    app.switch_page("jacviz/ui/robustness.py").run()
    app.multiselect(key="rob_models").set_value(user_models[1][:1])
    app.number_input(key="rob_n").set_value(10)
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception, _errors(app)
    msg = " ".join(e.value for e in app.error)
    assert "The evaluation failed (RuntimeError: CUDA out of memory (injected))" in msg and "try fewer" in msg


def test_a_cw_that_stops_short_is_called_so_where_the_plane_crosses_a_boundary(app, user_models, monkeypatch):
    """CW starved to one Adam step of one round (c = 1e-6) finds nothing, while the plane, clipped to [0, 1] so
    that its boundary point is an image CW could reach, meets another class: the page says the attack stopped
    short instead of leaving a bare ∞ that reads as robustness."""
    import streamlit as st

    from jacviz import attacks
    for k, v in {"steps": 1, "binary_steps": 1, "c0": 1e-6}.items():
        monkeypatch.setitem(attacks.CW_FAST, k, v)
    st.cache_data.clear()  # CW distances of this sample from other tests
    cw = _cw_fast_table(app, user_models[1][0], clip=True)
    assert np.isinf(cw["CW-L2 fooling distance (L2 px)"].iloc[0])
    assert not cw["in-plane radius (L2 px)"].iloc[0].startswith(">")  # the plane leaves x0's cell
    assert any("the attack stopped short (fast protocol)" in w.value for w in app.warning)
    st.cache_data.clear()


def test_robustness_page_shows_the_shipped_reproduction_results(app):
    """The grid's results load at once; the Table-1 mixes are shown first, others can be added."""
    # the file the page loads first (importing the page module here would run it outside the app)
    path = Path(__file__).resolve().parent.parent / "reproduction" / "mnist_robustness.json"
    if not path.is_file():
        pytest.skip("no reproduction robustness results in the repository")
    from jacviz import report
    from jacviz.robustness import load_results
    runs = json.loads((path.parent / "mnist_runs.json").read_text())["runs"]  # whose schedule the tables use
    shipped = report.current_robustness(load_results(path), runs)  # a longer schedule's few records stand aside
    labels = [g["label"] for g in shipped["groups"]]
    app.switch_page("jacviz/ui/robustness.py").run()
    assert not app.exception, _errors(app)
    show = app.multiselect(key="rob_show_shipped")
    expected = labels if len(labels) <= 6 else labels[:5]
    assert list(show.value) == expected
    table = app.dataframe[0].value
    assert list(table["model"]) == [m["label"] for m in shipped["models"] if m["label"] in expected]
    hidden = len(load_results(path)["models"]) - len(shipped["models"])  # the 150k runs stand aside, said so
    assert (any(c.value.startswith(f"{hidden} more model") for c in app.caption)) == (hidden > 0)
    assert set(table["test samples (first n)"]) == {m["n"] for m in shipped["models"]}
    # each row says how long its model trained (the tables' schedule, not the paper's 150k)
    assert list(table["training iterations"]) == [m["config"]["iterations"] for m in shipped["models"]
                                                  if m["label"] in expected]
    if len(labels) > len(expected):
        show.set_value(expected + [labels[-1]]).run()
        assert not app.exception, _errors(app)
        assert labels[-1] in list(app.dataframe[0].value["model"])


def test_gallery_picks_a_sample_and_other_datasets(app, user_models):
    app.run()
    app.selectbox(key="gal_class").set_value(3).run()
    assert not app.exception, _errors(app)
    buttons = [b for b in app.button if (b.key or "").startswith("gal_use_")]
    assert buttons and all(b.label.startswith("#") for b in buttons)
    pick = int(buttons[2].label[1:])
    buttons[2].click().run()
    assert not app.exception, _errors(app)
    assert app.number_input(key="cells_sample").value == pick
    assert app.query_params["sample"] == str(pick)
    assert app.dataframe[0].value["prediction at x0"].notna().all()

    app.multiselect(key="gal_wrong").set_value(user_models[1][:1]).run()
    assert not app.exception, _errors(app)
    assert "test samples match" in " ".join(c.value for c in app.caption)

    app.selectbox(key="cells_dataset").set_value("usps").run()  # MNIST models on USPS
    assert not app.exception, _errors(app)
    assert app.number_input(key="cells_sample").value < 2007 and app.get("plotly_chart")
    # the trainer's accuracy there is MNIST's (said so, with its test-image count); USPS's own beside it
    usps = app.dataframe[0].value
    by_name = {e.name: e for e in common_entries()}
    assert list(usps["USPS acc. (trainer)"]) == [by_name[m].ckpt.metrics["usps_acc"] for m in usps["model"]]
    assert list(usps["test images (trainer)"]) == [by_name[m].ckpt.metrics["n_test"] for m in usps["model"]]
    assert any("own dataset (MNIST)" in c.value for c in app.caption)
    app.selectbox(key="cells_dataset").set_value("cifar10").run()
    assert not app.exception, _errors(app)
    if any(e.config.dataset == "cifar10" for e in common_entries()):  # the shipped DDNets: a figure, not a notice
        assert app.get("plotly_chart") and not any(i.value.startswith("No usable checkpoint") for i in app.info)
    else:
        assert any("CIFAR-10" in i.value for i in app.info)


def test_about_lists_shipped_checkpoints_from_the_files_without_a_manifest(app, tmp_path, monkeypatch):
    """No manifest.json: the table is read from the checkpoint files, with the columns the manifest gives."""
    manifest = {e["file"]: e for e in json.loads((ROOT / "checkpoints" / "manifest.json").read_text())["checkpoints"]}
    name = next(f for f, e in manifest.items() if e["config"]["model"] == "lenet")
    (tmp_path / name).write_bytes((ROOT / "checkpoints" / name).read_bytes())
    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", tmp_path)
    app.switch_page("jacviz/ui/about.py").run()
    assert not app.exception, _errors(app)
    row = app.dataframe[0].value.iloc[0]
    assert row["file"] == name and row["label"] == manifest[name]["label"]
    assert row["test acc."] == manifest[name]["metrics"]["test_acc"]
    assert row["‖J‖_F test samples"] == manifest[name]["metrics"]["n_jac"] and row["how trained"]
    assert any("read from the checkpoint files" in c.value for c in app.caption)


def test_about_shows_the_reproduction_tables(app):
    """About computes Table 1/2 from reproduction/mnist_runs.json with the same functions as REPRODUCTION.md."""
    from jacviz import report

    runs_file = ROOT / "reproduction" / "mnist_runs.json"
    if not runs_file.is_file():
        pytest.skip("no reproduction/mnist_runs.json in this checkout")
    app.switch_page("jacviz/ui/about.py").run()
    assert not app.exception, _errors(app)
    # the shipped checkpoints' table says each one's seed and how many test images its ‖J‖_F averages
    manifest = json.loads((ROOT / "checkpoints" / "manifest.json").read_text())["checkpoints"]
    shipped = app.dataframe[0].value
    want = {e["file"]: (e["config"]["seed"], e["metrics"]["n_jac"]) for e in manifest}
    assert {f: (s, n) for f, s, n in zip(shipped["file"], shipped["seed"], shipped["‖J‖_F test samples"])} == want
    all_runs = json.loads(runs_file.read_text())["runs"]
    runs = report.longest_schedule(all_runs)  # a longer schedule's runs stand beside Table 1 until complete
    wide, _ = report.table1_markdown(report.table1_rows(runs), details=False)
    shown = [m.value for m in app.markdown]
    assert wide in shown
    study = report.length_study(all_runs)  # the training-length summary, as REPRODUCTION.md's
    from jacviz.report_length import length_markdown
    summary = length_markdown(study, report.PAPER_TABLE1, 600, digits=2)[0].strip()
    assert (summary in [m.strip() for m in shown]) == bool(study)
    from jacviz.report_length import length_means
    means = length_means(study, report.PAPER_TABLE1, report.PAPER_TABLE2, digits=2).strip()  # over seeds
    assert (means in [m.strip() for m in shown]) == bool(means)
    usps = report.length_usps(study).strip()  # Table 2 at the longer schedule, beside Table 2
    assert (usps in [m.strip() for m in shown]) == bool(usps)
    assert report.table2_markdown(report.table2_rows(runs)) in shown
    paired = report.paired_fewshot_markdown(
        report.paired_fewshot_rows(lambda v, k: report.select(report.longest_schedule(runs), v, k), report.PAPER_TABLE1))
    assert paired and paired in shown  # the few-shot differences paired by draw, as REPRODUCTION.md has them
    more = report.load_more_draws(ROOT / "reproduction", "mnist")
    ablation = report.fewshot_ablation_markdown(report.fewshot_ablation_rows(runs, more, report.PAPER_TABLE1))
    assert ablation and ablation in shown  # the set-up ablations (reproduction/fewshot_draws.py --init/--momentum)


def test_robustness_page_shows_each_results_file_on_its_own(app, user_models, tmp_path, monkeypatch):
    """Without the MNIST results file the CIFAR-10 one is still shown, and an unreadable run of the user's is
    a warning saying what to do, not a traceback."""
    import shutil

    rob_file = ROOT / "reproduction" / "cifar10_robustness.json"
    if not rob_file.is_file():
        pytest.skip("no CIFAR-10 reproduction results in this checkout")
    repo = tmp_path / "repo"
    (repo / "reproduction").mkdir(parents=True)
    (repo / "checkpoints").mkdir()
    shutil.copy(rob_file, repo / "reproduction")
    monkeypatch.setattr(checkpoints, "REPO_ROOT", repo)
    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", repo / "checkpoints")
    user = tmp_path / "user"
    shutil.copytree(user_models[0], user)
    (user / "robustness_runs" / "broken").mkdir(parents=True)
    (user / "robustness_runs" / "broken" / "robustness.json").write_text("{not json")
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(user))
    app.switch_page("jacviz/ui/robustness.py").run()
    assert not app.exception, _errors(app)
    assert not any("No precomputed results" in i.value for i in app.info)
    show = app.multiselect(key="rob_show_cifar10")
    assert show.value and set(show.value) <= {g["label"] for g in json.loads(rob_file.read_text())["groups"]}
    assert any("broken" in w.value and "could not be read (JSONDecodeError" in w.value
               and "delete that run's folder" in w.value for w in app.warning)
    budgets = next(c.value for c in app.caption if "Budgets:" in c.value)
    assert "PGD: up to 100 steps of 1/255 within L∞ 16/255" in budgets and "FGSM: ε up to 1" in budgets


def test_robustness_and_about_show_the_cifar10_reproduction(app):
    """The CIFAR-10 grid's results: robustness curves of the DDNets under their own heading, Table S3 on About."""
    from jacviz import report, report_cifar

    rob_file, runs_file = ROOT / "reproduction" / "cifar10_robustness.json", ROOT / "reproduction" / "cifar10_runs.json"
    if not (rob_file.is_file() and runs_file.is_file()):
        pytest.skip("no CIFAR-10 reproduction results in this checkout")
    rob = json.loads(rob_file.read_text())
    app.switch_page("jacviz/ui/robustness.py").run()
    assert not app.exception, _errors(app)
    show = app.multiselect(key="rob_show_cifar10")
    assert show.value and set(show.value) <= {g["label"] for g in rob["groups"]}
    assert "**CIFAR-10 (DDNet; ResNet-18 where run)**" in [m.value for m in app.markdown]
    cifar_table = app.dataframe[1].value  # after the MNIST one
    assert set(cifar_table["test samples (first n)"]) == {m["n"] for m in rob["models"]}
    assert cifar_table["clean accuracy"].between(0.1, 1.0).all()
    current = report.current_robustness(rob, json.loads(runs_file.read_text())["runs"])
    shown = {g["group_key"] for g in current["groups"] if g["label"] in show.value}
    assert set(cifar_table["training iterations"]) == {m["config"]["iterations"] for m in current["models"]
                                                       if m["group_key"] in shown}
    resnet = [g["label"] for g in rob["groups"] if g["label"].startswith("resnet18 ")]
    if resnet:  # DDNet and ResNet-18 runs of one mix are told apart by architecture, and each can be shown
        assert any(g["label"].startswith("ddnet ") for g in rob["groups"])
        show.set_value(resnet).run()
        assert not app.exception, _errors(app)
        assert set(app.dataframe[1].value["model"]) == set(resnet)
    app.switch_page("jacviz/ui/about.py").run()
    assert not app.exception, _errors(app)
    R = json.loads(runs_file.read_text())
    rows = report_cifar.table_s3_rows(report_cifar.longest_schedule(R["runs"]), R.get("diverged", []),
                                      report_cifar.schedule_study(R["runs"]),  # notes cite the longer runs
                                      report.load_more_draws(ROOT / "reproduction", "cifar10"),
                                      report.length_study(R["runs"], "ddnet", "cifar10"))
    wide, long = report_cifar.table_s3_markdown(rows, details=False)
    assert wide in [m.value for m in app.markdown] and long in [m.value for m in app.markdown]
    if R.get("diverged"):  # the caption counts them and the long table's notes say which
        assert "runs diverged" in long
        assert any(f"{len(R['diverged'])} diverged, left out of the means" in c.value for c in app.caption)
    resnet = [r for r in report_cifar.longest_schedule(R["runs"]) if r["config"]["model"] == "resnet18"]
    assert (report_cifar.resnet_markdown(resnet) in [m.value for m in app.markdown]) == bool(resnet)
    study = report_cifar.schedule_study(R["runs"])  # the training-length study's summary, as REPRODUCTION.md's
    assert (report_cifar.schedule_study_markdown(study)[0].strip() in [m.value.strip() for m in app.markdown]) == bool(study)
    if study:
        assert any(m.value.startswith("**Training length**: DDNet trained 7,500 iterations") for m in app.markdown)


@pytest.fixture(scope="session")
def cifar_user_model(tmp_path_factory):
    """A DDNet trained for 8 SGD steps on real CIFAR-10 (seconds): enough to exercise every CIFAR-10 path."""
    folder = tmp_path_factory.mktemp("cifar_ckpts")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(model="ddnet", dataset="cifar10", lr=0.01, iterations=8, milestones=(), seed=5,
                          eval_every=8, eval_samples=100, checkpoint_every=8, device="cpu")
        fit(cfg, out_dir=folder, show_progress=False, n_jac_during=20)
    finally:
        torch.set_num_threads(threads)
    return folder, cfg.key()


def test_cifar10_decision_cells_and_gallery(cifar_user_model, monkeypatch):
    """CIFAR-10 is offered like MNIST: colour samples, planes through them, the per-model table."""
    monkeypatch.setenv("JACVIZ_USER_CHECKPOINTS", str(cifar_user_model[0]))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["cells_res"] = 31
    at.query_params["dataset"] = "cifar10"
    at.query_params["sample"] = "3"
    at.run()
    assert not at.exception, _errors(at)
    assert at.selectbox(key="cells_dataset").value == "cifar10"
    fig = _figure(at)
    assert fig["data"], "no traces in the CIFAR-10 decision-cell figure"
    table = _table(at)
    assert table["prediction at x0"].notna().all() and table["‖J(x0)‖_F normalized input"].gt(0).all()
    assert all(m.startswith("ddnet ") for m in table["model"])
    # with shipped DDNets the default is their five Table-S3 mixes, else the one user model
    assert len(table) in (1, 5)
    assert at.image, "the CIFAR-10 sample thumbnail is shown"
    from jacviz import data, gallery
    thumb = gallery.to_image(data.load("cifar10", "test")[0][3])
    assert thumb.shape == (32, 32, 3) and thumb.dtype.name == "uint8"  # in colour
    at.number_input(key="cells_sample").set_value(4).run()
    assert not at.exception, _errors(at)
    assert _figure(at)["data"] != fig["data"]


def common_entries():
    """The models the app lists (outside a script run: the scan itself, uncached)."""
    from jacviz.ui import common
    return common.scan_models()[0]
