"""Training on real MNIST: smoke accuracy, determinism, resume, checkpoints, CLI."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jacviz import checkpoints
from jacviz.config import TrainConfig
from jacviz.machine import cpu_model
from jacviz.train import fit

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_beats_90_percent(tmp_path):
    cfg = TrainConfig(iterations=300, milestones=(), eval_every=300, eval_samples=2000, jr=0.01, device="cpu")
    res = fit(cfg, out_dir=tmp_path, show_progress=False)
    assert res.metrics["test_acc"] > 0.90
    assert res.path == tmp_path / f"{cfg.key()}.pt" and res.path.exists()
    assert res.metrics["jac_fro_pixel"] == pytest.approx(res.metrics["jac_fro_normalized"] / 0.3081, rel=1e-5)
    ck = checkpoints.load(res.path)
    assert ck.config == cfg and ck.label == "JR"
    assert ck.meta["torch_threads"] == torch.get_num_threads()  # step times are read with it
    # CPU runs are bit-identical only on the same CPU model at the same thread count: both recorded
    assert ck.meta["cpu_model"] == cpu_model() and ck.meta["cpu_model"]
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(ck.model(x), res.model(x))


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    # dropout, JR projections and FGSM amplitudes all draw random numbers: all must be restored
    cfg = TrainConfig(iterations=60, milestones=(30,), eval_every=20, checkpoint_every=20, eval_samples=300,
                      dropout=0.5, jr=0.01, adv_train=True, weight_decay=5e-4, device="cpu")
    full = fit(cfg, out_dir=tmp_path / "a", show_progress=False)
    part = fit(cfg, out_dir=tmp_path / "b", show_progress=False, stop_after=40)
    assert not part.finished and (tmp_path / "b" / f"{cfg.key()}.resume.pt").exists()
    resumed = fit(cfg, out_dir=tmp_path / "b", show_progress=False, resume=True)
    assert resumed.finished and not (tmp_path / "b" / f"{cfg.key()}.resume.pt").exists()
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for k in ("test_acc", "jac_fro_normalized", "usps_acc"):
        assert full.metrics[k] == resumed.metrics[k]
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_a_run_killed_between_iteration_saves_resumes_from_its_time_based_save(tmp_path, monkeypatch):
    """Slow runs also save the resume file on wall time (RESUME_EVERY_S): a run killed after iteration 40,
    long before its next 1000-iteration save, resumes from its last timed save and ends as an
    uninterrupted run does (here every iteration's save is due, RESUME_EVERY_S = 0)."""
    from jacviz import train

    cfg = TrainConfig(iterations=50, milestones=(), eval_every=25, checkpoint_every=1000, eval_samples=300,
                      dropout=0.5, device="cpu")
    full = fit(cfg, out_dir=tmp_path / "a", show_progress=False)
    monkeypatch.setattr(train, "RESUME_EVERY_S", 0.0)

    import torch.nn.functional as F
    real_ce, calls = F.cross_entropy, []

    def killed_in_iteration_41(*a, **k):  # as a kill -9: inside iteration 41, which never ends
        calls.append(1)
        if len(calls) == 41:
            raise KeyboardInterrupt
        return real_ce(*a, **k)

    monkeypatch.setattr(F, "cross_entropy", killed_in_iteration_41)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out_dir=tmp_path / "b", show_progress=False)
    monkeypatch.setattr(F, "cross_entropy", real_ce)
    saved = torch.load(tmp_path / "b" / f"{cfg.key()}.resume.pt", weights_only=True)
    assert saved["iteration"] == 40
    resumed = fit(cfg, out_dir=tmp_path / "b", show_progress=False, resume=True)
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert resumed.finished and all(torch.equal(sa[k], sb[k]) for k in sa)


SIGNALLED = TrainConfig(iterations=50, milestones=(), eval_every=25, checkpoint_every=1000, eval_samples=300,
                        dropout=0.5, jr=0.01, device="cpu")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """SIGNALLED trained without a stop, which every stopped and resumed run must end equal to."""
    return fit(SIGNALLED, out_dir=tmp_path_factory.mktemp("uninterrupted"), show_progress=False)


class ScriptStopped(BaseException):
    """Stands in for Streamlit's StopException, which a click raises inside the app's progress callback."""


@pytest.mark.parametrize("how, raised", [("SIGINT", KeyboardInterrupt), ("SIGTERM", SystemExit),
                                         ("callback", ScriptStopped)])
def test_ctrl_c_kill_or_a_stopped_caller_saves_the_iteration_it_stopped_at(tmp_path, how, raised, uninterrupted):
    """A real signal to this process, or an exception from the progress callback, at the end of iteration 40
    (no save due before 1000): the run saves the resume file at 40, not at an earlier save, raises as the
    signal or callback would have, puts the previous signal handlers back, and the resumed run ends
    bit-identical to an uninterrupted one, its history's training-loss means (summed over iterations 26-50
    across the stop) included."""
    import os
    import signal

    cfg, full = SIGNALLED, uninterrupted
    sig = getattr(signal, how, signal.SIGINT)
    before = signal.getsignal(sig)

    def stop(info):
        if info["kind"] == "step" and info["iteration"] == 40:
            if how == "callback":
                raise ScriptStopped
            os.kill(os.getpid(), sig)

    with pytest.raises(raised) as exc:
        fit(cfg, out_dir=tmp_path / "b", show_progress=False, progress=stop)
    if raised is SystemExit:
        assert exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(sig) is before
    saved = torch.load(tmp_path / "b" / f"{cfg.key()}.resume.pt", weights_only=True)
    assert saved["iteration"] == 40 and [h["iteration"] for h in saved["history"]] == [25]
    assert saved["running"]["n"] == 15
    resumed = fit(cfg, out_dir=tmp_path / "b", show_progress=False, resume=True)
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert resumed.finished and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full.metrics["test_acc"] == resumed.metrics["test_acc"]
    keys = ("iteration", "train_loss", "train_ce", "train_jr", "test_acc", "jac_fro_normalized")
    assert [[h[k] for k in keys] for h in resumed.history] == [[h[k] for k in keys] for h in full.history]


def test_step_events_carry_elapsed_time_and_a_pace_based_eta_across_a_resume(tmp_path):
    """The Train page's progress bar says how long a run took and how long its remaining iterations will take:
    step events carry elapsed_s (earlier sessions of a resumed run included) and eta_s, the remaining
    iterations at this session's pace (so a resumed run is not projected from its first session's speed)."""
    from jacviz.ui.common import duration_text, step_text

    cfg = TrainConfig(iterations=80, milestones=(), eval_every=40, checkpoint_every=40, eval_samples=200,
                      jac_samples=20, device="cpu")
    steps = []
    fit(cfg, out_dir=tmp_path, show_progress=False, stop_after=40,
        progress=lambda ev: steps.append(ev) if ev["kind"] == "step" else None)
    assert [e["iteration"] for e in steps] == [20, 40]
    assert 0 < steps[0]["elapsed_s"] < steps[1]["elapsed_s"]
    for e in steps:  # remaining iterations at the pace so far: elapsed / done * left
        assert e["eta_s"] == pytest.approx(e["elapsed_s"] / e["iteration"] * (80 - e["iteration"]), rel=1e-3, abs=1e-3)
    wall = torch.load(tmp_path / f"{cfg.key()}.resume.pt", weights_only=True)["wall_time_s"]
    resumed = []
    fit(cfg, out_dir=tmp_path, show_progress=False, resume=True,
        progress=lambda ev: resumed.append(ev) if ev["kind"] == "step" else None)
    assert [e["iteration"] for e in resumed] == [60, 80]
    assert wall < resumed[0]["elapsed_s"] < resumed[1]["elapsed_s"]  # the first session's time counts
    this_session = resumed[0]["elapsed_s"] - wall  # 20 iterations' worth, projected onto the 20 left
    assert resumed[0]["eta_s"] == pytest.approx(this_session, rel=1e-3, abs=1e-3)
    assert resumed[1]["eta_s"] == 0
    assert step_text(resumed[1]).endswith(f"· {duration_text(resumed[1]['elapsed_s'])} elapsed")
    assert "to go (then the final evaluation)" in step_text(resumed[0])
    assert [duration_text(s) for s in (0.4, 59.6, 185, 3599, 7620)] == ["0 s", "1 min 00 s", "3 min 05 s",
                                                                         "59 min 59 s", "2 h 07 min"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_interrupted_then_resumed_on_cuda(tmp_path):
    """A CUDA run resumes from its file (whose RNG states must be restored as CPU byte tensors) and
    continues with its weights and momentum on the GPU."""
    cfg = TrainConfig(iterations=40, milestones=(), eval_every=20, checkpoint_every=20, eval_samples=300,
                      dropout=0.5, jr=0.01, device="cuda")
    part = fit(cfg, out_dir=tmp_path, show_progress=False, stop_after=20)
    assert not part.finished
    resumed = fit(cfg, out_dir=tmp_path, show_progress=False, resume=True)
    assert resumed.finished and [h["iteration"] for h in resumed.history] == [20, 40]
    assert all(p.device.type == "cuda" for p in resumed.model.parameters())


def test_resnet18_config_refuses_dropout():
    """ResNet-18 has no dropout layers (Appendix D): a config asking for it fails at once, with the reason,
    not when the model is built after the dataset has loaded (the Train page shows the message)."""
    with pytest.raises(ValueError, match="no dropout"):
        TrainConfig(model="resnet18", dataset="cifar10", dropout=0.5)
    assert TrainConfig(model="resnet18", dataset="cifar10", weight_decay=5e-4, jr=0.01).label() == "L2+JR"


def test_adversarial_example_leaves_batchnorm_running_statistics_alone():
    """FGSM adversarial training of ResNet-18: the attack's forward pass (train mode, batch statistics)
    must not move the BatchNorm running statistics, so a step updates them once, with the batch it
    trains on, as a plain step does. The adversarial example is the same as without the guard."""
    from jacviz.attacks import fgsm
    from jacviz.data import load
    from jacviz.train import batch_stats_frozen
    from models import build

    x, y = load("cifar10", "test")
    x, y = x[:16], y[:16]
    torch.manual_seed(0)
    model = build("resnet18").train()
    model(x)  # running statistics away from their (0, 1) start
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    eps = torch.full((16,), 0.01)
    with batch_stats_frozen(model):
        x_adv = fgsm(model, x, y, eps)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    unguarded = fgsm(model, x, y, eps)  # same batch statistics, so the same example; this one moves them
    assert torch.equal(x_adv, unguarded)
    assert not torch.equal(before["bn1.running_mean"], model.state_dict()["bn1.running_mean"])
    assert (x_adv - x).abs().max() <= 0.01 + 1e-6 and (x_adv != x).any()


def test_train_form_few_shot_follows_table_1_unless_told_otherwise():
    """The app's Train form: few-shot by epochs is the paper's 10,000 full-batch iterations at lr 0.01;
    'iterations' sets the length for few-shot and full-data runs alike."""
    from jacviz.__main__ import config_from_args, form_argv, train_parser

    def config(**kw):
        form = dict(model="lenet", wd=0.0, dropout=0.0, jr=0.0, n_proj="1", adv=False, adv_eps=0.01, seed=0,
                    eval_samples=1000, few_shot=0, unit="epochs", epochs=1.0, iterations=600, lr=0.0)
        return config_from_args(train_parser().parse_args(form_argv(**{**form, **kw})))

    c = config(few_shot=3)
    assert (c.few_shot_k, c.iterations, c.lr, c.milestones) == (3, 10000, 0.01, ())
    assert config(few_shot=3, unit="iterations", iterations=250).iterations == 250
    assert config(unit="epochs", epochs=2.0).iterations == 1200  # 2 epochs of 600 batches of 100
    assert config(unit="iterations", iterations=250).iterations == 250
    assert config(model="ddnet", lr=0.0).lr == 0.01 and config(model="ddnet", lr=0.05).lr == 0.05


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(checkpoints.CheckpointError, match="cannot be read"):
        checkpoints.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(checkpoints.CheckpointError, match="not a jacviz checkpoint"):
        checkpoints.load(foreign)
    good, unusable = checkpoints.scan(tmp_path)
    assert good == [] and {p.name for p, _ in unusable} == {"corrupt.pt", "foreign.pt"}


def test_load_is_weights_only(tmp_path):
    """A pickle that would run code on load is refused (weights_only=True)."""
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))
    p = tmp_path / "evil.pt"
    torch.save({"format": checkpoints.FORMAT, "x": Evil()}, p)
    with pytest.raises(checkpoints.CheckpointError, match="cannot be read"):
        checkpoints.load(p)


def test_config_key_and_label():
    a = TrainConfig(jr=0.01)
    assert a.key() == TrainConfig(jr=0.01, device="cuda").key()  # device does not change the name
    assert a.key() != TrainConfig(jr=0.01, seed=1).key()
    assert TrainConfig().label() == "none"
    assert TrainConfig(weight_decay=5e-4, dropout=0.5, jr=0.01, adv_train=True).label() == "L2+dropout+JR+AT"
    assert TrainConfig.from_dict(a.to_dict()) == a


def test_cli_train_writes_loadable_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jacviz", "train", "--iterations", "60", "--eval-samples", "300",
                          "--jac-samples", "100", "--jr", "0.01", "--out", str(tmp_path), "--device", "cpu",
                          "--manifest"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["label"] == "JR" and 0 < summary["test_acc"] <= 1 and summary["jac_fro_normalized"] > 0
    assert summary["n_test"] == 300 and summary["n_jac"] == 100
    assert "it/s" in out.stderr  # progress bar shown
    assert "final evaluation, exact ||J||_F" in out.stderr  # and one for the final norms, which can take minutes
    ck = checkpoints.load(summary["checkpoint"])
    assert ck.metrics["test_acc"] == summary["test_acc"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["checkpoints"][0]["label"] == "JR"


def test_evaluations_report_the_progress_of_their_exact_jacobian_norms(tmp_path):
    """The exact ||J||_F is an evaluation's slow part (C backward passes an image; the final one over
    all 10,000 test images: ~7 min for DDNet at 41 ms an image on one CPU thread), so fit reports it by chunks:
    'eval_progress' events for the evaluations during training (first min(eval_samples, 1,000) images)
    and for the final one (jac_samples), which the Train page shows as its own bar."""
    from jacviz.ui.common import eval_text

    cfg = TrainConfig(iterations=40, milestones=(), eval_every=20, eval_samples=600, jac_samples=300, device="cpu")
    events = []
    res = fit(cfg, show_progress=False, progress=lambda ev: events.append(ev) if ev["kind"] != "step" else None)
    seen = [(e["kind"], e["iteration"], e.get("final"), e.get("done"), e.get("total")) for e in events]
    # chunks of 256 images; the intermediate evaluations' norms over the first 600, the final's over 300
    assert seen == [("eval_progress", 20, False, 256, 600), ("eval_progress", 20, False, 512, 600),
                    ("eval_progress", 20, False, 600, 600), ("eval", 20, None, None, None),
                    ("eval_progress", 40, False, 256, 600), ("eval_progress", 40, False, 512, 600),
                    ("eval_progress", 40, False, 600, 600), ("eval", 40, None, None, None),
                    ("eval_progress", 40, True, 256, 300), ("eval_progress", 40, True, 300, 300)]
    assert res.metrics["n_jac"] == 300 and res.metrics["n_test"] == 600
    first, last = events[-2], events[-1]
    assert 0 < first["elapsed_s"] <= last["elapsed_s"] and last["eta_s"] == 0
    assert first["eta_s"] == pytest.approx(first["elapsed_s"] / 256 * 44, rel=1e-6)
    assert eval_text(first).startswith("final evaluation: exact ‖J‖_F of test image 256 of 300 · ")
    assert eval_text(first).endswith(" to go") and not eval_text(last).endswith(" to go")
    assert eval_text(events[0]).startswith("evaluation at iteration 20: exact ‖J‖_F of test image 256 of 600")
    with pytest.raises(ValueError, match="jac_samples"):
        TrainConfig(eval_samples=100, jac_samples=300)


def test_every_shipped_checkpoint_loads_with_plain_weights_only():
    """A user's own ``torch.load(path, weights_only=True)``, with no allowlist, reads every shipped file
    (two LeNet' files once held their torch version as a TorchVersion object, which it refuses)."""
    paths = sorted(checkpoints.SHIPPED_DIR.rglob("*.pt"))
    assert len(paths) >= 16
    for p in paths:
        obj = torch.load(p, map_location="cpu", weights_only=True)
        assert obj["format"] == checkpoints.FORMAT and type(obj["meta"]["torch"]) is str, p.name


def test_cli_train_refuses_bad_settings_with_a_message_not_a_traceback():
    for args, says in ((["--jac-samples", "20000"], "jac_samples must be between 1 and eval_samples"),
                       (["--dropout", "1.5"], "dropout must be in [0, 1)")):
        out = subprocess.run([sys.executable, "-m", "jacviz", "train", "--iterations", "1", *args],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"python -m jacviz train: error: {says}" in out.stderr


def _subnormals_flushed() -> bool:
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def test_few_shot_mode(tmp_path):
    """Few-shot training runs with subnormal floats flushed to zero (a memorized batch's gradients reach
    them and x86 slows down on them) and leaves the process as it found it."""
    cfg = TrainConfig(few_shot_k=3, lr=0.01, iterations=100, milestones=(), eval_every=100, eval_samples=500, device="cpu")
    during = []
    res = fit(cfg, show_progress=False, progress=lambda ev: during.append(_subnormals_flushed()))
    assert 0.2 < res.metrics["test_acc"] < 0.95  # 30 training images: better than chance, far from full data
    assert during and all(during) and not _subnormals_flushed()


@pytest.mark.parametrize("name", ["ddnet", "shipped"])
def test_half_precision_checkpoint_keeps_accuracy(tmp_path, name, mnist_test):
    """save(half=True) halves the file and loads back as float32 with the same predictions."""
    from jacviz.train import accuracy

    if name == "shipped":
        path = checkpoints.SHIPPED_DIR / f"{TrainConfig(weight_decay=5e-4, dropout=0.5, jr=0.01).key()}.pt"
        if not path.exists():
            pytest.skip("shipped L2+dropout+JR checkpoint missing")
        ck = checkpoints.load(path)
        x, y = mnist_test
    else:  # an untrained DDNet: the size ratio and float32 round trip on the CIFAR-10 model
        import models
        from jacviz import data
        cfg = TrainConfig(model="ddnet", dataset="cifar10", lr=0.01)
        torch.manual_seed(0)
        ck = checkpoints.Checkpoint(Path("x"), models.build("ddnet").eval(), cfg)
        x, y = data.load("cifar10", "test")
        x, y = x[:500], y[:500]
    full = checkpoints.save(tmp_path / "full.pt", ck.model, ck.config, {}, [])
    half = checkpoints.save(tmp_path / "half.pt", ck.model, ck.config, {}, [], half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    back = checkpoints.load(half)
    assert back.meta["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in back.model.parameters())
    with torch.no_grad():
        agree = (back.model(x[:2000]).argmax(1) == ck.model(x[:2000]).argmax(1)).float().mean().item()
    assert agree >= 0.998
    assert abs(accuracy(back.model, x, y) - accuracy(ck.model, x, y)) <= 0.001


def _record_training_forwards(monkeypatch) -> list:
    """Spy on the models fit builds: for each forward in train mode (the steps, not the evaluations), whether
    its input and conv weights are channels_last and whether its convolutions take jacviz.jr_conv's
    transposed input gradients. So a test sees how the steps ran, not only what the checkpoint says."""
    import models
    from torch import nn

    seen, real_build = [], models.build

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def hook(mod, args):
            if mod.training:
                convs = [m for m in mod.modules() if isinstance(m, nn.Conv2d)]
                seen.append({"input_channels_last": not args[0].is_contiguous()
                             and args[0].is_contiguous(memory_format=torch.channels_last),
                             "weights_channels_last": all(not c.weight.is_contiguous()
                                                          and c.weight.is_contiguous(memory_format=torch.channels_last)
                                                          for c in convs),
                             "transposed": bool(convs) and all("_conv_forward" in c.__dict__ for c in convs)})
        model.register_forward_pre_hook(hook)
        return model
    monkeypatch.setattr(models, "build", build)
    return seen


def test_ddnet_on_the_cpu_trains_channels_last_to_the_same_weights(tmp_path, monkeypatch):
    """step_memory_format puts LeNet' and DDNet (with JR: in jacviz.jr_conv's set-up) in channels_last on
    a CPU (faster there; see benchmarks/memory_format.py): only the summation order may change, so two
    few-shot steps with dropout (same masks) must end at the default format's weights up to float32
    rounding, and the model and checkpoint handed back are in the default format. (Over
    30 steps few-shot training amplified any rounding change, 2 threads against 1 included, to
    1e-4-2e-3 of a weight: so two steps, not a whole run.)"""
    import jacviz.train as train

    cpu = torch.device("cpu")
    cfg = TrainConfig(model="ddnet", dataset="cifar10", few_shot_k=2, lr=0.01, iterations=2, milestones=(),
                      eval_every=2, eval_samples=200, dropout=0.5, device="cpu")
    assert train.step_memory_format(cfg, cpu) == torch.channels_last
    ddnet_jr = TrainConfig(model="ddnet", dataset="cifar10", jr=0.01)
    assert train.step_memory_format(ddnet_jr, cpu) == torch.channels_last  # with transposed-conv JR steps
    assert train.step_setup(ddnet_jr, cpu) == {"memory_format": "channels_last", "conv_input_grad": "transposed",
                                               "bn_double_backward": "torch"}
    assert train.step_setup(cfg, cpu) == {"memory_format": "channels_last", "conv_input_grad": "torch",
                                          "bn_double_backward": "torch"}
    resnet_jr = TrainConfig(model="resnet18", dataset="cifar10", jr=0.01)  # BatchNorm's closed form: CPU JR only
    assert train.step_setup(resnet_jr, cpu) == {"memory_format": "contiguous", "conv_input_grad": "transposed",
                                                "bn_double_backward": "analytic"}
    assert train.step_setup(resnet_jr, torch.device("cuda"))["bn_double_backward"] == "torch"
    assert train.step_setup(dataclasses.replace(resnet_jr, jr=0.0), cpu)["bn_double_backward"] == "torch"
    assert train.step_memory_format(TrainConfig(jr=0.01), cpu) == torch.channels_last  # LeNet', JR or not
    assert train.step_memory_format(TrainConfig(model="resnet18", dataset="cifar10"), cpu) == torch.contiguous_format
    assert train.step_memory_format(cfg, torch.device("cuda")) == torch.contiguous_format
    seen = []
    real_step_format = train.step_memory_format
    monkeypatch.setattr(train, "step_memory_format", lambda c, d: seen.append(real_step_format(c, d)) or seen[-1])
    steps = _record_training_forwards(monkeypatch)
    fast = fit(cfg, out_dir=tmp_path / "cl", show_progress=False)
    assert steps == 2 * [{"input_channels_last": True, "weights_channels_last": True, "transposed": False}]
    monkeypatch.setattr(train, "step_memory_format", lambda c, d: torch.contiguous_format)
    steps.clear()
    plain = fit(cfg, out_dir=tmp_path / "nchw", show_progress=False)
    assert steps == 2 * [{"input_channels_last": False, "weights_channels_last": False, "transposed": False}]
    assert seen == [torch.channels_last]
    sf, sp = fast.model.state_dict(), plain.model.state_dict()
    assert all(v.is_contiguous() for v in sf.values())
    import models
    torch.manual_seed(cfg.seed)
    init = models.build("ddnet").state_dict()  # the steps moved the weights far more than the formats part them
    moved = [k for k in sf if (sf[k] - init[k]).abs().max() > 0]
    assert len(moved) == 14  # 7 weights and 7 biases; the normalization's constants stay
    assert all((sf[k] - sp[k]).abs().max() < 1e-2 * (sf[k] - init[k]).abs().max() for k in moved)
    back = checkpoints.load(fast.path)
    assert all(v.is_contiguous() for v in back.model.state_dict().values())
    assert back.meta["memory_format"] == "channels_last"  # Compute tables time such runs apart
    assert checkpoints.load(plain.path).meta["memory_format"] == "contiguous"
    assert fast.metrics["test_acc"] == pytest.approx(plain.metrics["test_acc"], abs=0.01)


def test_ddnet_jr_steps_with_transposed_conv_gradients_reach_pytorchs_weights_and_record_it(tmp_path, monkeypatch):
    """On a CPU DDNet's JR steps take convolution input gradients as transposed convolutions
    (jacviz.jr_conv, channels_last): two few-shot JR steps must end at the weights of PyTorch's own
    double backward (contiguous, as before 2026-12-07) up to float32 rounding. The checkpoint records
    the set-up, and a run resumed under another set-up records both, with the iteration it changed at."""
    import models
    import jacviz.train as train

    cfg = TrainConfig(model="ddnet", dataset="cifar10", few_shot_k=2, lr=0.01, iterations=2, milestones=(),
                      eval_every=2, checkpoint_every=1, eval_samples=200, jr=0.01, device="cpu")
    steps = _record_training_forwards(monkeypatch)
    fast = fit(cfg, out_dir=tmp_path / "new", show_progress=False)
    assert steps == 2 * [{"input_channels_last": True, "weights_channels_last": True, "transposed": True}]
    monkeypatch.setattr(train, "jr_transposed_convs", lambda c, d: False)
    monkeypatch.setattr(train, "step_memory_format", lambda c, d: torch.contiguous_format)
    steps.clear()
    old = fit(cfg, out_dir=tmp_path / "old", show_progress=False)
    assert steps == 2 * [{"input_channels_last": False, "weights_channels_last": False, "transposed": False}]
    sf, so = fast.model.state_dict(), old.model.state_dict()
    torch.manual_seed(cfg.seed)
    init = models.build("ddnet").state_dict()
    moved = [k for k in sf if (sf[k] - init[k]).abs().max() > 0]
    assert len(moved) == 14
    assert all((sf[k] - so[k]).abs().max() < 1e-3 * (sf[k] - init[k]).abs().max() for k in moved)
    assert not any("_conv_forward" in m.__dict__ for m in fast.model.modules())
    meta = checkpoints.load(fast.path).meta
    assert (meta["memory_format"], meta["conv_input_grad"]) == ("channels_last", "transposed")
    assert meta["step_setups"] == [{"from_iteration": 0, "memory_format": "channels_last",
                                    "conv_input_grad": "transposed", "bn_double_backward": "torch"}]
    assert checkpoints.load(old.path).meta["conv_input_grad"] == "torch"
    # one iteration the old way, then resumed by the new code
    fit(cfg, out_dir=tmp_path / "mixed", show_progress=False, stop_after=1)
    monkeypatch.undo()
    mixed = fit(cfg, out_dir=tmp_path / "mixed", show_progress=False, resume=True)
    assert checkpoints.load(mixed.path).meta["step_setups"] == [
        {"from_iteration": 0, "memory_format": "contiguous", "conv_input_grad": "torch", "bn_double_backward": "torch"},
        {"from_iteration": 1, "memory_format": "channels_last", "conv_input_grad": "transposed",
         "bn_double_backward": "torch"}]
    # a resume file from before 'bn_double_backward' was recorded reads as PyTorch's: no change recorded
    fit(cfg, out_dir=tmp_path / "older", show_progress=False, stop_after=1)
    path = tmp_path / "older" / f"{cfg.key()}.resume.pt"
    st = torch.load(path, weights_only=True)
    st["step_setups"] = [{k: v for k, v in su.items() if k != "bn_double_backward"} for su in st["step_setups"]]
    torch.save(st, path)
    older = fit(cfg, out_dir=tmp_path / "older", show_progress=False, resume=True)
    assert checkpoints.load(older.path).meta["step_setups"] == meta["step_setups"]
