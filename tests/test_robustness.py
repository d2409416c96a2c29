"""Robustness evaluation (jacviz.robustness, jacviz.plots_robustness) on real MNIST."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from jacviz import attacks as A
from jacviz import robustness as R

CW_TEST = {"steps": 50, "lr": 0.1, "binary_steps": 5}  # small CW for tests (property checks only)


class Quantized(nn.Module):
    """Deliberately masked model: rounds pixels to 5 levels first, so input gradients are 0."""

    def __init__(self, inner: nn.Module, levels: int = 4):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


class Saturated(nn.Module):
    """Deliberately masked model: logits x 1e4 (distillation at T=1, footnote 5): softmax saturates."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 1e4


class Constant(nn.Module):
    """Always predicts class ``c`` (its logits do depend on x in the graph, with zero gradient)."""

    def __init__(self, c: int = 1):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(c), 10).float() * 5)

    def forward(self, x):
        return self.logits.expand(len(x), 10) + 0 * x.flatten(1).sum(1, keepdim=True)


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.fixture(scope="module")
def small(mnist_test):
    x, y = mnist_test
    return x[:100], y[:100]


@pytest.fixture(scope="module")
def cw_dist(lenet_plain, lenet_jr, mnist_test):
    x, y = mnist_test
    x, y = x[:30], y[:30]
    return {name: R.fooling_distances(m, x, y, "cw", cw_kwargs=CW_TEST)
            for name, m in (("plain", lenet_plain), ("jr", lenet_jr))}


# ---------------------------------------------------------------- accuracy curves
def test_noise_accuracy_decreases_with_sigma(lenet_plain, small):
    x, y = small
    c = R.accuracy_curve(lenet_plain, x, y, "noise", [0, 0.2, 0.4, 0.6, 0.8], n_draws=3)
    acc = np.array(c["accuracies"])
    assert acc[0] == R.clean_accuracy(lenet_plain, x, y)
    assert np.all(np.diff(acc) <= 0.02)  # non-increasing up to sampling noise
    assert acc[-1] < acc[0] - 0.3
    assert c["strength_name"] == "sigma" and c["n"] == len(x) and len(c["accuracy_std"]) == 5


def test_fgsm_curve_equals_fgsm_and_never_beats_clean(lenet_plain, small):
    x, y = small
    eps = [0.0, 0.05, 0.1, 0.2]
    c = R.accuracy_curve(lenet_plain, x, y, "fgsm", eps)
    clean = R.clean_accuracy(lenet_plain, x, y)
    assert c["accuracies"][0] == clean and max(c["accuracies"]) <= clean
    assert len(c["accuracies"]) == len(eps)
    for e, acc in zip(eps, c["accuracies"]):
        assert acc == R.clean_accuracy(lenet_plain, A.fgsm(lenet_plain, x, y, e), y)


def test_pgd_curve_is_incremental_and_matches_pgd(lenet_plain, small):
    x, y = small
    counted = Counting(lenet_plain)
    K = 12
    c = R.accuracy_curve(counted, x, y, "pgd", list(range(K + 1)), eps=8 / 255)
    assert counted.calls == K + 1  # one trajectory: K gradient steps + 1 forward, not K^2/2
    for k in (3, K):
        assert c["accuracies"][k] == R.clean_accuracy(lenet_plain, A.pgd(lenet_plain, x, y, k, eps=8 / 255), y)
    assert c["accuracies"][K] <= c["accuracies"][0]
    assert c["settings"]["eps"] == 8 / 255 and c["settings"]["step_size"] == A.PGD_STEP


# ---------------------------------------------------------------- fooling distances
def test_fooling_distances_zero_for_misclassified_inf_for_unfoolable(mnist_test):
    x, y = mnist_test
    x, y = x[:60], y[:60]
    const = Constant(1)
    for method in ("noise", "fgsm", "pgd", "cw"):
        kw = {"cw_kwargs": {"steps": 3, "binary_steps": 1}, "pgd_max_steps": 5}
        d = R.fooling_distances(const, x, y, method, **kw)
        assert torch.all(d[y != 1] == 0), method
        assert torch.all(torch.isinf(d[y == 1])), method
    s = R.summarize(d)
    assert s["n"] == 60 and s["fraction_never_fooled"] == pytest.approx((y == 1).float().mean().item())


def test_fgsm_ray_search_agrees_with_dense_scan(lenet_plain, small):
    x, y = small
    x, y = x[:40], y[:40]
    d = R.fooling_distances(lenet_plain, x, y, "fgsm")
    grad, _ = A.input_gradient(lenet_plain, x, y)
    direction = grad.sign()
    eps_grid = torch.linspace(0, 0.4, 401)
    dense = torch.full((len(x),), math.inf)
    with torch.no_grad():
        for e in eps_grid:
            xa = (x + e * direction).clamp(0, 1)
            fooled = (lenet_plain(xa).argmax(1) != y) & torch.isinf(dense)
            dense[fooled] = (xa - x)[fooled].flatten(1).norm(dim=1)
    both = torch.isfinite(dense) & torch.isfinite(d)
    assert both.float().mean() >= 0.9
    close = (d[both] - dense[both]).abs() <= 0.02 * dense[both] + 0.03  # dense grid step 1e-3 in eps
    assert close.float().mean() >= 0.9


def test_pgd_distances_inside_saturation_constraint(lenet_plain, small):
    x, y = small
    eps = 16 / 255
    d = R.fooling_distances(lenet_plain, x, y, "pgd", pgd_eps=eps, pgd_max_steps=30)
    D = x[0].numel()
    finite = d[torch.isfinite(d)]
    # L_inf <= eps implies L2 <= eps sqrt(D); a 400-step LeNet' is fooled at 16/255 for most samples
    assert len(finite) > 0.5 * len(d) and finite.max() <= eps * math.sqrt(D) + 1e-4


def test_cw_is_closer_than_fgsm_and_noise(lenet_plain, mnist_test, cw_dist):
    x, y = mnist_test
    x, y = x[:30], y[:30]
    cw = R.summarize(cw_dist["plain"])["median"]
    fgsm = R.summarize(R.fooling_distances(lenet_plain, x, y, "fgsm"))["median"]
    noise = R.summarize(R.fooling_distances(lenet_plain, x, y, "noise"))["median"]
    assert cw < fgsm < noise  # Appendix F: CW > FGSM > white noise in effectiveness


def test_jacobian_regularization_increases_cw_distance(cw_dist):
    # Appendix G / field notes: JR roughly doubles the median CW distance; demand 1.3x here
    plain, jr = (R.summarize(cw_dist[k]) for k in ("plain", "jr"))
    assert jr["median"] > 1.3 * plain["median"]
    assert jr["fraction_never_fooled"] <= 0.1


def test_error_cdf_and_summary():
    d = np.array([0.0, 0.5, 1.0, 2.0, math.inf])
    np.testing.assert_allclose(R.error_cdf(d, [0, 0.4, 0.5, 1.5, 100]), [0.2, 0.2, 0.4, 0.6, 0.8])
    s = R.summarize(d)
    assert s == {"n": 5, "median": 1.0, "mean_finite": 0.875, "fraction_never_fooled": 0.2,
                 "fraction_misclassified": 0.2}
    assert R.summarize([1.0, math.inf, math.inf])["median"] == math.inf
    w = R.worst_case({"a": torch.tensor([1.0, math.inf]), "b": torch.tensor([2.0, 3.0])})
    assert w.tolist() == [1.0, 3.0]


# ---------------------------------------------------------------- gradient masking
MASK_KW = {"pgd_eps_grid": [2 / 255, 8 / 255, 32 / 255]}


def test_masking_flags_quiet_on_normal_model(lenet_plain, small):
    x, y = small
    assert R.masking_flags(lenet_plain, x[:50], y[:50], **MASK_KW) == []


@pytest.mark.parametrize("wrap,why", [(Quantized, "carries no information"), (Saturated, "softmax saturation")])
def test_masking_flags_trigger_on_masked_models(lenet_plain, small, wrap, why):
    x, y = small
    flags = R.masking_flags(wrap(lenet_plain), x[:50], y[:50], **MASK_KW)
    text = " ".join(flags)
    assert "exactly zero" in text and why in text
    assert "noise beats the gradient attacks" in text


def test_a_starved_cw_is_flagged_where_pgd_fools_and_a_working_one_is_not(lenet_plain, small):
    """The attack check on real MNIST: CW run for 2 Adam steps in one round at c = 1e-4 cannot reach
    the boundary, so it returns inf on images that PGD (32/255) fools; the flag says so. With the test
    CW settings it fools what PGD fools, and nothing is flagged."""
    x, y = small
    x, y = x[:40], y[:40]
    d = {"pgd": R.fooling_distances(lenet_plain, x, y, "pgd"),
         "cw": R.fooling_distances(lenet_plain, x, y, "cw", cw_kwargs={"steps": 2, "binary_steps": 1, "c0": 1e-4})}
    missed = int((torch.isinf(d["cw"]) & torch.isfinite(d["pgd"])).sum())
    assert missed > 0.5 * len(x)  # the starved attack really misses: the check has something to see
    (flag,) = R.attack_failure_flags(d)
    assert flag.startswith(f"CW found no adversarial example for {missed}/40 samples") and "PGD fool" in flag
    d["cw"] = R.fooling_distances(lenet_plain, x, y, "cw", cw_kwargs=CW_TEST)
    assert R.attack_failure_flags(d) == []


def test_attack_flags_reach_groups_and_report_rows_from_stored_distances(tmp_path):
    """Records written before the check (JSON lists, None = never fooled) get it at aggregation;
    seeds are named when a group has several, and the report's robustness rows carry the flag."""
    from jacviz.report import robustness_markdown, robustness_rows
    inf_cw = [None] * 8 + [0.5, 0.6]  # CW never fools 8 of 10 ...
    pgd = [1.0] * 10                  # ... that PGD fools
    rec = {"group_key": "g", "label": "dropout", "dataset": "mnist", "seed": 0, "curves": {},
           "clean_accuracy": 1.0, "config": {}, "distances": {"pgd": pgd, "cw": inf_cw}}
    (g,) = R.aggregate_seeds([rec])
    assert g["attack_flags"] == R.attack_failure_flags(rec["distances"])
    assert "8/10 samples (80% of all evaluated)" in g["attack_flags"][0]
    assert g["masking_flags"] == []  # the gradient-masking checks are a separate question
    ok = {**rec, "seed": 1, "distances": {"pgd": pgd, "cw": [0.5] * 10}}
    (g2,) = R.aggregate_seeds([rec, ok])
    assert len(g2["attack_flags"]) == 1 and g2["attack_flags"][0].startswith("seed 0: CW found no")
    (row,) = robustness_rows({"models": [rec], "groups": [g]})
    assert row["flags"] == g["attack_flags"]
    assert "8/10 samples" in robustness_markdown([row])
    # a results file written before the check gets the flag when read
    old = tmp_path / "robustness.json"
    old.write_text(json.dumps({"models": [rec], "groups": [{k: v for k, v in g.items() if k != "attack_flags"}]}))
    assert R.load_results(old)["groups"][0]["attack_flags"] == g["attack_flags"]
    # CW below the tolerance (1 of 30 samples), or no other attack to compare with: quiet
    assert R.attack_failure_flags({"pgd": [1.0] * 30, "cw": [None] + [0.5] * 29}) == []
    assert R.attack_failure_flags({"cw": [None] * 10}) == []


def test_non_monotone_detector():
    assert R._non_monotone([1, 2, 3, 4], [0.1, 0.5, 0.9, 1.0], 0.05) is None
    assert R._non_monotone([1, 2, 3, 4], [0.1, 0.6, 0.58, 0.9], 0.05) is None  # within tolerance
    assert R._non_monotone([1, 2, 3, 4], [0.1, 0.6, 0.3, 0.9], 0.05) == (2, 3, pytest.approx(0.3))


# ---------------------------------------------------------------- runner, seeds, figures, CLI
def test_run_robustness_cli_writes_json_and_figures(lenet_plain, lenet_jr, tmp_path):
    from jacviz import checkpoints
    from jacviz.config import TrainConfig

    paths = []
    for model, cfg in ((lenet_plain, TrainConfig(seed=0)), (lenet_plain, TrainConfig(seed=1)),
                       (lenet_jr, TrainConfig(jr=0.1, seed=0))):
        paths.append(checkpoints.save(tmp_path / "ck" / f"{cfg.key()}.pt", model, cfg, {"test_acc": 0.97}, []))
    (tmp_path / "ck" / "broken.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "res"
    rc = R.cli(["--checkpoints", str(tmp_path / "ck"), "--attacks", "noise,fgsm,pgd,cw", "--n", "16",
                "--out", str(out), "--device", "auto", "--cw-steps", "5", "--cw-binary-steps", "2",
                "--pgd-iterations", "4", "--sigmas", "0,0.5", "--fgsm-eps", "0,0.1", "--no-png", "--quiet",
                "--no-masking"])
    assert rc == 0
    raw = json.loads((out / "robustness.json").read_text())
    meta = raw["meta"]
    assert meta["torch"] == torch.__version__ and meta["device"] in ("cpu", "cuda") and meta["date"]
    assert len(raw["models"]) == 3 and len(raw["skipped"]) == 1
    m0 = raw["models"][0]
    assert m0["n"] == 16 and m0["label"] and m0["key"] and m0["curves"]["pgd"]["strengths"] == [0, 1, 2, 3, 4]
    assert m0["fooling_settings"]["cw"]["steps"] == 5 and m0["curves"]["noise"]["settings"]["n_draws"] == 3
    groups = {g["label"]: g for g in raw["groups"]}
    assert groups["none"]["n_seeds"] == 2 and groups["JR(λ=0.1)"]["n_seeds"] == 1
    assert len(groups["none"]["curves"]["fgsm"]["accuracies"]) == 2
    back = R.load_results(out / "robustness.json")
    for rec in back["models"]:
        assert set(rec["distances"]) == {"noise", "fgsm", "pgd", "cw", "worst"}
        assert np.all(rec["distances"]["worst"] <= rec["distances"]["cw"])
    # never fooled (inf) is stored as JSON null and comes back as inf, from a list or an array alike
    d = np.array([0.0, 0.25, np.inf])
    assert json.loads(json.dumps(R._jsonable(d))) == [0.0, 0.25, None]
    for stored in (R._jsonable(d), d):
        assert np.array_equal(R.distances_from_json(stored), d)
    html = sorted(p.name for p in out.glob("*.html"))
    assert "accuracy_pgd_mnist.html" in html and "fooling_cw_mnist.html" in html
    assert R.cli(["--checkpoints", str(tmp_path / "ck"), "--attacks", "bogus", "--out", str(out)]) == 2
    assert R.cli(["--checkpoints", str(tmp_path / "ck" / "broken.pt"), "--attacks", "noise", "--n", "4",
                  "--out", str(tmp_path / "none"), "--quiet", "--no-png"]) == 1


def test_seed_bands_and_axis_titles():
    from jacviz import plots_robustness as P

    x = [0, 1, 2]
    fig = P.accuracy_figure({"JR": (x, [[1.0, 0.8, 0.5], [1.0, 0.6, 0.3]]), "none": (x, [1.0, 0.5, 0.1])}, "noise")
    fills = [t for t in fig.data if t.fill == "tonexty"]
    assert len(fills) == 1  # one band: only JR has several seeds
    mean = [t for t in fig.data if t.name and t.name.startswith("JR")][0]
    np.testing.assert_allclose(mean.y, [100, 70, 40])
    assert "pixel space" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text
    cdf = P.fooling_cdf_figure({"CW": ([0, 1, 2], [0.1, 0.5, 0.9])})
    assert cdf.layout.xaxis.title.text == "L2 distance in [0,1] pixel space"
    assert cdf.layout.showlegend and cdf.data[0].name == "CW"  # a lone curve still says what it is
    P.add_flag_annotations(cdf, {"JR": ["gradient is exactly zero"]})
    assert "gradient is exactly zero" in cdf.layout.annotations[0].text


def test_aggregate_seeds_mean_std():
    def rec(seed, acc, d):
        return {"group_key": "g", "label": "JR", "dataset": "mnist", "seed": seed,
                "curves": {"noise": {"strength_name": "sigma", "strengths": [0, 1], "accuracies": acc, "settings": {}}},
                "distances": {"cw": torch.tensor(d)}}
    groups = R.aggregate_seeds([rec(0, [1.0, 0.4], [0.0, 1.0, math.inf]), rec(1, [1.0, 0.6], [0.5, 1.0, 2.0])])
    (g,) = groups
    assert g["n_seeds"] == 2
    np.testing.assert_allclose(g["curves"]["noise"]["mean"], [1.0, 0.5])
    np.testing.assert_allclose(g["curves"]["noise"]["std"], [0.0, np.std([0.4, 0.6], ddof=1)])
    f = g["fooling"]["cw"]
    assert f["grid"][-1] == pytest.approx(2.1) and f["never_fooled_mean"] == pytest.approx(1 / 6)
    assert f["error_mean"][-1] == pytest.approx((2 / 3 + 1) / 2)


def test_one_mix_on_two_architectures_is_named_by_architecture():
    # cifar10_robustness.json holds DDNet and ResNet-18 models of the same mixes ("none", "L2", "JR")
    def rec(key, model, label="none"):
        return {"group_key": key, "label": label, "dataset": "cifar10", "seed": 0, "config": {"model": model},
                "curves": {}, "distances": {"cw": torch.tensor([0.1, 0.2])}}
    groups = R.aggregate_seeds([rec("a1", "ddnet"), rec("b2", "resnet18"), rec("c3", "ddnet", "JR"),
                                rec("d4", "resnet18", "L2"), rec("e5", "resnet18", "L2")])
    assert [g["label"] for g in groups] == ["ddnet none", "resnet18 none", "ddnet JR", "resnet18 L2 [d4]",
                                            "resnet18 L2 [e5]"]
    figs = R.figures_from_results({"groups": groups})
    assert figs["fooling_cw_cifar10"].layout.title.text == "CIFAR-10: test error vs CW fooling distance"
    (one,) = R.aggregate_seeds([rec("a1", "ddnet")])
    assert one["label"] == "none"  # one architecture: the mix's own name


def test_environment_names_the_cpu_model_and_thread_count():
    """Robustness records say which CPU model and thread count computed them (CPU results are
    bit-identical only on the same kind of CPU at the same thread count); the model name is
    /proc/cpuinfo's where there is one, not just the architecture."""
    from pathlib import Path

    from jacviz.machine import cpu_model
    from jacviz.robustness import environment
    env = environment(torch.device("cpu"))
    assert env["cpu_model"] == cpu_model() and env["torch_threads"] == torch.get_num_threads()
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in (info.read_text().splitlines() if info.exists() else [])
             if ln.lower().startswith("model name")]
    if names:
        assert cpu_model() == names[0]


def test_a_callable_progress_hears_each_stage_batch_by_batch(lenet_plain, small):
    """The app's robustness bar: progress(stage, batches done, batches) before each stage's first batch and
    after each, for the curves and the distances alike."""
    x, y = small
    heard = []
    R.evaluate_model(lenet_plain, x, y, ("noise", "fgsm"), batch_size=len(x) // 2 + 1, masking=False,
                     progress=lambda *a: heard.append(a))
    stages = list(dict.fromkeys(h[0] for h in heard))
    assert stages == ["noise curve", "noise distances", "fgsm curve", "fgsm distances"]
    for st in stages:
        assert [h[1:] for h in heard if h[0] == st] == [(0, 2), (1, 2), (2, 2)]
