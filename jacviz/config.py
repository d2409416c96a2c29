"""Training configuration: a frozen dataclass stored inside every checkpoint (nanoGPT-style), and how
recorded step set-ups (checkpoint meta.step_setups) read under later code."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

# Fields that do not change what is learned: left out of the checkpoint name.
_NOT_IN_KEY = ("device", "checkpoint_every", "eval_every", "eval_samples", "jac_samples")
FEW_SHOT_DRAWS = ("random", "first")  # TrainConfig.few_shot_draw
# Fields added after the first checkpoints, with their defaults: left out of the key while at the default, so
# every earlier checkpoint keeps its name (and records that predate a field read as its default).
_ADDED_LATER = (("init", "paper"), ("few_shot_draw", "random"), ("input_norm", "paper"))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (Section 3 and Appendix E of the paper).

    Schedules are in SGD iterations, as in the paper (full data: lr 0.1 LeNet' / 0.01 DDNet,
    batch 100, /10 after 50k and 100k iterations, 150k total). ``few_shot_k`` switches to the
    few-shot protocol: k training samples per class, full-batch SGD (batch_size is ignored).
    weight_decay is lambda_WD of the L2 term lambda_WD/2 theta^2 (eq. 4); jr is lambda_JR of
    eq. 5 with the penalty taken w.r.t. the *normalized* input as in the paper; n_proj=None is
    the exact penalty. adv_train: FGSM adversarial training with eps ~ U[0, adv_eps_max] per
    sample in [0,1] pixel space; the model is trained on the perturbed images.
    eval_samples: test images for the accuracy at each evaluation and at the end; jac_samples:
    the first test images over which the final mean ||J||_F is taken (None = eval_samples; the
    exact norm costs 10 backward passes an image, minutes for DDNet on a CPU).
    init: 'paper' (Xavier uniform, zero biases for LeNet'/DDNet; PyTorch's default for ResNet-18), or for
    LeNet'/DDNet another reading of "the Xavier method" (``models.INITS``), an ablation; left out of the
    key (so of every checkpoint name) while it is 'paper'.
    few_shot_draw: which k samples per class a few-shot run trains on (``data.few_shot_indices``): 'random'
    (drawn with the run's seed, so each seed of a cell trains on other samples) or 'first' (the first k of
    each class in the training set's order, the same for every seed, which then varies only the initial
    weights and dropout masks), an ablation; left out of the key while it is 'random'.
    input_norm: LeNet's preprocessing, 'paper' (÷ the std 0.3081) or 'variance' (÷ 0.3081², Section 3's word
    taken literally; ``models.INPUT_NORMS``), an ablation; left out of the key while it is 'paper'.
    """

    model: str = "lenet"
    dataset: str = "mnist"
    weight_decay: float = 0.0
    dropout: float = 0.0
    jr: float = 0.0
    n_proj: int | None = 1
    adv_train: bool = False
    adv_eps_max: float = 0.01
    seed: int = 0
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    iterations: int = 6000
    milestones: tuple[int, ...] = (1800, 3600)
    few_shot_k: int | None = None
    eval_every: int = 600
    eval_samples: int = 10000
    jac_samples: int | None = None
    checkpoint_every: int = 600
    device: str = "auto"
    init: str = "paper"
    few_shot_draw: str = "random"
    input_norm: str = "paper"

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.n_proj is not None and self.n_proj < 1:
            raise ValueError("n_proj must be >= 1, or None for the exact penalty")
        if self.jac_samples is not None and not 1 <= self.jac_samples <= self.eval_samples:
            raise ValueError("jac_samples must be between 1 and eval_samples (the first test images of the "
                             "final ||J||_F are taken from those the accuracy is measured on)")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        from models import INITS
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {sorted(INITS)}")
        if self.few_shot_draw not in FEW_SHOT_DRAWS:
            raise ValueError(f"unknown few_shot_draw {self.few_shot_draw!r}; choose one of {FEW_SHOT_DRAWS}")
        if self.few_shot_draw != "random" and not self.few_shot_k:
            raise ValueError("few_shot_draw picks a few-shot run's samples; all-data runs (few_shot_k None) use them all")
        from models import INPUT_NORMS
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {self.input_norm!r}; choose one of {sorted(INPUT_NORMS)}")
        if self.input_norm != "paper" and self.model != "lenet":
            raise ValueError("input_norm readings are for LeNet' on MNIST; CIFAR-10's (x − 0.5)·2 is unambiguous")
        if self.init != "paper" and self.model == "resnet18":
            raise ValueError("ResNet-18 uses PyTorch's default init (Appendix D); the init ablations are for "
                             "the Xavier-initialized LeNet' and DDNet")
        if self.model == "resnet18" and self.dropout:
            raise ValueError("ResNet-18 has no dropout layers (Appendix D: the paper uses L2 but no dropout "
                             "for it); set dropout to 0")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**d)

    def key(self) -> str:
        """Short stable hash of the fields that define what is learned (names the checkpoint)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_KEY}
        for f, default in _ADDED_LATER:
            if d[f] == default:  # added after the first checkpoints: their names stay as they were
                del d[f]
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    def mix(self) -> str:
        """The regularizer mix alone, e.g. 'none', 'L2', 'JR', 'L2+dropout+JR+AT'."""
        parts = []
        if self.weight_decay:
            parts.append("L2")
        if self.dropout:
            parts.append("dropout")
        if self.jr:
            jr = "JR" if self.n_proj == 1 else ("JR exact" if self.n_proj is None else f"JR n_proj={self.n_proj}")
            if self.jr != 0.01:  # the paper's lambda_JR goes unsaid; others name theirs (Figure S6 sweep)
                jr += f"(λ={self.jr:g})"
            parts.append(jr)
        if self.adv_train:
            parts.append("AT")
        return "+".join(parts) or "none"

    def label(self) -> str:
        """Human name of the run: its mix, then what else sets it apart, e.g. 'JR (10/class)'."""
        name = self.mix()
        if self.few_shot_k:
            name += f" ({self.few_shot_k}/class)"
        if self.init != "paper":
            name += f" [init {self.init}]"
        if self.few_shot_draw != "random":
            name += f" [{self.few_shot_draw} k per class]"
        if self.input_norm != "paper":
            name += f" [input ÷ {self.input_norm}]"
        return name

    def describe(self) -> str:
        """One line saying how the model was trained."""
        first = " (the first of each class)" if self.few_shot_draw == "first" else ""
        sched = (f"full-batch SGD on {self.few_shot_k}/class{first}, lr {self.lr}, {self.iterations} it"
                 if self.few_shot_k else
                 f"SGD m={self.momentum}, batch {self.batch_size}, lr {self.lr} /10 at {list(self.milestones)}, {self.iterations} it")
        regs = f"lambda_WD={self.weight_decay}, dropout={self.dropout}, lambda_JR={self.jr}"
        if self.jr:
            regs += f" (n_proj={'exact' if self.n_proj is None else self.n_proj})"
        if self.adv_train:
            regs += f", FGSM AT eps~U[0,{self.adv_eps_max}]"
        init = "" if self.init == "paper" else f"; init {self.init}"
        if self.input_norm != "paper":
            init += f"; input ÷ {self.input_norm} (0.3081²)"
        return f"{self.model} on {self.dataset}, seed {self.seed}; {sched}; {regs}{init}"


PAPER_VARIANTS: dict[str, dict] = {
    # The five Table-1 regularizer mixes and the defended models of Fig. 3b/c.
    "none": {},
    "L2": {"weight_decay": 5e-4},
    "dropout": {"dropout": 0.5},
    "JR": {"jr": 0.01},
    "L2+dropout+JR": {"weight_decay": 5e-4, "dropout": 0.5, "jr": 0.01},
    "L2+dropout+AT": {"weight_decay": 5e-4, "dropout": 0.5, "adv_train": True},
    "L2+dropout+JR+AT": {"weight_decay": 5e-4, "dropout": 0.5, "jr": 0.01, "adv_train": True},
    "L2+dropout": {"weight_decay": 5e-4, "dropout": 0.5},
    # ResNet-18 on CIFAR-10 has L2 but no dropout (Appendix D/E, Figure S4).
    "L2+JR": {"weight_decay": 5e-4, "jr": 0.01},
    "L2+AT": {"weight_decay": 5e-4, "adv_train": True},
    "L2+JR+AT": {"weight_decay": 5e-4, "jr": 0.01, "adv_train": True},
}


def recorded_setup(setup: dict) -> dict:
    """A step_setups entry with the keys later code added, as the code before them stepped: records
    written before 2026-12-07 have no 'bn_double_backward' (PyTorch's, or 'unrecorded' with the rest)."""
    unrecorded = setup.get("memory_format") == "unrecorded"
    return {"bn_double_backward": "unrecorded" if unrecorded else "torch", **setup}
