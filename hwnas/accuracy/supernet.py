"""Train a weight-sharing supernet once on the user's data; rank its subnets with inherited weights.

    train_supernet(space, "digits", out=Path("net.safetensors"), schedule=Schedule(epochs=4))
    get_accuracy("supernet:net.safetensors").evaluate(space, genome) -> 97.1

Training (:func:`train_supernet`) follows the **sandwich rule with in-place distillation** of BigNAS
(Yu et al., ECCV 2020, section 3.1) as OFA's progressive shrinking also uses it (Cai et al., ICLR
2020): every step trains the largest subnet on the labels, then the smallest and ``random_subnets``
random ones on the largest's soft predictions (KL divergence, its logits detached); their gradients
add up and one optimizer step follows. SGD with Nesterov momentum 0.9, cosine learning-rate decay
to 0 over all steps (BigNAS, OFA), label smoothing 0.1 on the largest (OFA), gradients clipped to norm 5.

A subnet is evaluated (:func:`inherited_accuracy`) with the supernet's weights after its batch-norm
statistics are recalibrated on a fixed subset of the training images (BigNAS, OFA: shared running
statistics are meaningless for any one subnet), then top-1 on the held-out split.

The file is safetensors (never pickle): the shared tensors under ``w/``, and in a checkpoint the
optimizer's under ``opt/``; its metadata ``hwnas`` is a JSON header: format, space and options, data
and its fingerprint, schedule, epochs done, per-epoch held-out accuracies, versions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hwnas.accuracy.data import ImageData, check_classes, data_option, image_data, to_input
from hwnas.accuracy.registry import AccuracyEvaluator, Deploy, int_option, register_accuracy, threads_option, \
    torch_threads
from hwnas.arch import ArchSpace, get_space
from hwnas.arch.supernet import Supernet
from hwnas.errors import DataNotFoundError, InvalidConfigError
from hwnas.util import file_sha256

__all__ = ["FORMAT", "Schedule", "SupernetAccuracy", "SupernetFile", "checkpoint_path", "inherited_accuracy",
           "load_supernet", "recalibrated_subnet", "train_subnet", "train_supernet", "trained_subnet"]

FORMAT = "hwnas-supernet/1"
#: split of digits and image folders (the supernet's held-out split is fixed by its data)
SPLIT_SEED, TEST_FRACTION = 0, 0.25


#: training images that recalibrate a subnet's batch norm, as OFA does (2,000 images of the training set:
#: ``sub_train_size`` of its ImageNet data provider). With 256, the subset drawn moved Kendall tau of the
#: ranking benchmark (mbv2, digits, 30 epochs) between 0.35 and 0.69; with all 1,348 digits 0.64-0.73.
BN_IMAGES = 2000


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The training schedule (every field is recorded in the file's header)."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    random_subnets: int = 2
    clip_norm: float = 5.0
    seed: int = 0
    #: training images that recalibrate batch norm before a subnet is scored (all of them when fewer)
    bn_images: int = BN_IMAGES

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 2), ("random_subnets", 0), ("seed", 0),
                              ("bn_images", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidConfigError(f"supernet training: {name} must be an integer >= {minimum}, got {value!r}")
        for name in ("lr", "clip_norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InvalidConfigError(f"supernet training: {name} must be a number > 0, got {v!r}")
        for name in ("momentum", "weight_decay", "label_smoothing"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise InvalidConfigError(f"supernet training: {name} must be in [0, 1), got {v!r}")


def _versions() -> dict[str, str]:
    import hwnas

    return {"hwnas": hwnas.__version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def checkpoint_path(out: Path) -> Path:
    """Where :func:`train_supernet` writes its per-epoch checkpoint for ``out``."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")


@dataclasses.dataclass
class SupernetFile:
    """A supernet file read back: its header, shared tensors and (a checkpoint's) optimizer tensors."""

    path: Path
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    fingerprint: str

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SupernetFile:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = Path(path).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"supernet file {path} not found; train one with `hwnas supernet train`")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InvalidConfigError(f"cannot read {path} as a safetensors file: {str(exc).splitlines()[0]}") from None
        try:
            header = json.loads(meta.get("hwnas", ""))
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise InvalidConfigError(f"{path} is not an hwnas supernet (no {FORMAT} header)")
        return cls(path=path, header=header,
                   tensors={k[2:]: v for k, v in tensors.items() if k.startswith("w/")},
                   optimizer={k[4:]: v for k, v in tensors.items() if k.startswith("opt/")},
                   fingerprint=file_sha256(path))

    @staticmethod
    def write(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor],
              optimizer: dict[str, torch.Tensor] | None = None) -> None:
        """Write atomically (a temporary file renamed into place)."""
        from safetensors.torch import save_file

        blob = {f"w/{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
        blob.update({f"opt/{k}": v.detach().cpu().contiguous() for k, v in (optimizer or {}).items()})
        tmp = path.with_name(path.name + ".partial")
        save_file(blob, str(tmp), metadata={"hwnas": json.dumps(header, sort_keys=True)})
        os.replace(tmp, path)


# --------------------------------------------------------------------------- evaluation with inherited weights


def _bn_subset(data: ImageData, schedule_seed: int, count: int) -> torch.Tensor:
    """The fixed training images that recalibrate batch norm: the first ``count`` of a seeded order."""
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(schedule_seed + 7919))
    return order[: min(count, len(order))]


def recalibrate(model: nn.Module, data: ImageData, shape: Sequence[int], subset: torch.Tensor, *,
                batch_size: int = 64, device: str = "cpu") -> None:
    """Batch-norm running statistics re-estimated (cumulative average) on the images ``subset``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        # batches of equal size (to one image): the cumulative average weighs every batch alike
        for idx in torch.tensor_split(subset, max(1, -(-len(subset) // batch_size))):
            if len(idx) >= 2:
                model(to_input(data.x_train[idx], shape).to(device))
    for m in norms:
        m.momentum = 0.1
    model.eval()


def count_correct(model: nn.Module, data: ImageData, shape: Sequence[int], *, device: str = "cpu") -> int:
    """Correct held-out predictions of ``model`` (its first ``data.num_classes`` logits)."""
    model.eval()
    k, correct = data.num_classes, 0
    with torch.no_grad():
        for b in range(0, len(data.y_test), 256):
            logits = model(to_input(data.x_test[b: b + 256], shape).to(device))[:, :k].cpu()
            correct += int((logits.argmax(1) == data.y_test[b: b + 256]).sum())
    return correct


def recalibrated_subnet(supernet: Supernet, genome: Sequence[int], data: ImageData, *,
                        bn_images: int = BN_IMAGES, seed: int = 0) -> nn.Module:
    """``space.build(genome)`` with the supernet's weights and batch norm recalibrated (eval mode, CPU): the
    network that is scored and that a bundle deploys."""
    model = supernet.subnet(genome)
    shape = supernet.space.input_shape(genome)
    recalibrate(model, data, shape, _bn_subset(data, seed, bn_images))
    return model


def inherited_accuracy(supernet: Supernet, genome: Sequence[int], data: ImageData, *,
                       bn_images: int = BN_IMAGES, seed: int = 0, device: str = "cpu") -> float:
    """Top-1 % on the held-out split of the subnet of ``genome`` with inherited, recalibrated weights."""
    model = supernet.subnet(genome).to(device)
    shape = supernet.space.input_shape(genome)
    recalibrate(model, data, shape, _bn_subset(data, seed, bn_images), device=device)
    return 100.0 * count_correct(model, data, shape, device=device) / len(data.y_test)


# --------------------------------------------------------------------------- loading and checking


def _data_spec(data: str | None) -> str:
    return "digits" if data is None else str(data)


def load_supernet(path: str | os.PathLike[str], space: ArchSpace | None = None) -> tuple[Supernet, ImageData, SupernetFile]:
    """The supernet in ``path`` (its space rebuilt from the header, or checked against ``space``), its data
    and the file. A supernet trained for another space, other options or unfinished is one error line."""
    f = SupernetFile.read(path)
    h = f.header
    if space is not None:
        check_supernet_space(f, space)
    else:
        space = get_space(h["space"], **h["space_options"])
    if h["epochs_done"] < h["schedule"]["epochs"]:
        raise InvalidConfigError(f"supernet {f.path} is unfinished ({h['epochs_done']} of {h['schedule']['epochs']} "
                                 f"epochs); continue it with `hwnas supernet train ... --resume`")
    data = image_data(data_option("supernet", h["data_spec"] if h["data_spec"] != "digits" else None),
                      split_seed=SPLIT_SEED, test_fraction=TEST_FRACTION)
    if dict(data.source) != h["data"]:
        raise InvalidConfigError(f"supernet {f.path} was trained on {h['data_spec']} with fingerprint "
                                 f"{json.dumps(h['data'], sort_keys=True)}; that data has changed since")
    net = Supernet(space, seed=h["schedule"]["seed"])
    net.load_shared(f.tensors)
    return net, data, f


def check_supernet_space(f: SupernetFile, space: ArchSpace) -> None:
    """Refuse, in one line, a supernet trained for another space or other space options (classes included)."""
    h = f.header
    mine = json.loads(json.dumps(space.options()))
    if h["space"] != space.name or h["space_options"] != mine:
        raise InvalidConfigError(
            f"supernet {f.path} was trained for {h['space']} {json.dumps(h['space_options'], sort_keys=True)}, "
            f"not for {space.name} {json.dumps(mine, sort_keys=True)}; train one for this space with "
            f"`hwnas supernet train --space {space.name} ...` (same --space-option values)")


# --------------------------------------------------------------------------- the evaluator


@register_accuracy
class SupernetAccuracy(AccuracyEvaluator):
    """Top-1 % of a subnet with weights inherited from a trained supernet (``supernet:NET.safetensors``).

    Batch norm is recalibrated on the supernet's fixed training subset, then the held-out split of the data
    the supernet was trained on is scored: seconds per candidate, deterministic. On a target that deploys
    other numerics (quantized bit-widths), the deployed network is scored, calibrated on training images.
    """

    name = "supernet"
    description = "a subnet of a trained weight-sharing supernet (hwnas supernet train): inherited weights, top-1 %"
    spec_option = "path"
    uses_deployment = True
    calibration_images = 64

    def __init__(self, *, path: str | os.PathLike[str] | None = None, threads: int | None = 1) -> None:
        """Options: ``path`` (the supernet's .safetensors, also ``supernet:PATH``), ``threads`` (torch threads
        while evaluating, restored after; None leaves torch's setting)."""
        if path is None or not str(path).strip():
            raise InvalidConfigError("accuracy evaluator supernet needs a file: --accuracy supernet:NET.safetensors")
        self.path = Path(str(path)).expanduser().resolve()
        self.file = SupernetFile.read(self.path)
        self.threads = threads_option(self.name, threads)
        self._loaded: tuple[Supernet, ImageData] | None = None

    def check(self, space: ArchSpace) -> None:
        check_supernet_space(self.file, space)

    def settings(self) -> dict[str, Any]:
        h = self.file.header
        return {"evaluator": self.name, "supernet": str(self.path), "fingerprint": self.file.fingerprint,
                "space": h["space"], "space_options": h["space_options"], "data": h["data"],
                "bn_images": h["schedule"]["bn_images"], "threads": self.threads}

    def _supernet(self, space: ArchSpace) -> tuple[Supernet, ImageData]:
        if self._loaded is None:
            net, data, _ = load_supernet(self.path, space)
            check_classes(data, space)
            self._loaded = (net, data)
        return self._loaded

    def subnet(self, space: ArchSpace, genome: Sequence[int]) -> tuple[nn.Module, ImageData]:
        """The recalibrated subnet of ``genome`` (what is scored and deployed) and the supernet's data."""
        net, data = self._supernet(space)
        sched = self.file.header["schedule"]
        with torch_threads(self.threads):
            model = recalibrated_subnet(net, genome, data, bn_images=sched["bn_images"], seed=sched["seed"])
        return model, data

    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...], deploy: Deploy | None = None
                  ) -> tuple[float, dict[str, Any]]:
        self.check(space)
        start = time.perf_counter()
        model, data = self.subnet(space, genome)
        shape = space.input_shape(genome)
        with torch_threads(self.threads):
            if deploy is None:
                correct = count_correct(model, data, shape)
            else:
                correct = count_correct_deployed(model, deploy, data, shape, self.calibration_images)
        return 100.0 * correct / len(data.y_test), {
            "inherited": True, "deployed": deploy is not None, "supernet_fingerprint": self.file.fingerprint,
            "test_samples": len(data.y_test), "eval_s": round(time.perf_counter() - start, 4)}


def count_correct_deployed(model: nn.Module, deploy: Deploy, data: ImageData, shape: Sequence[int],
                           calibration_images: int) -> int:
    """Correct held-out predictions of the network ``deploy`` makes of ``model``, calibrated on the first
    ``calibration_images`` training images."""
    model.eval()
    calibration = to_input(data.x_train[:calibration_images], shape).numpy()
    predict = deploy(model, shape, calibration)
    k, correct = data.num_classes, 0
    for b in range(0, len(data.y_test), 256):
        logits = np.asarray(predict(to_input(data.x_test[b: b + 256], shape).numpy()))[:, :k]
        correct += int(((logits.argmax(1) == data.y_test[b: b + 256].numpy()) & np.isfinite(logits).all(1)).sum())
    return correct


# --------------------------------------------------------------------------- training


def _optimizer(net: Supernet, s: Schedule) -> torch.optim.Optimizer:
    # no weight decay on batch-norm and bias tensors (OFA, BigNAS)
    decay = [p for p in net.parameters() if p.dim() > 1]
    plain = [p for p in net.parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": s.weight_decay}, {"params": plain, "weight_decay": 0.0}],
                           lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0)


def _optimizer_tensors(net: Supernet, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    by_param = {id(p): name for name, p in net.named_parameters()}
    out = {}
    for p, state in opt.state.items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                out[f"{by_param[id(p)]}/{k}"] = v
    return out


def _load_optimizer_tensors(net: Supernet, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(net.named_parameters())
    for key, v in tensors.items():
        name, _, k = key.partition("/")
        if name not in params:
            raise InvalidConfigError(f"the checkpoint's optimizer state names an unknown tensor {name}")
        opt.state[params[name]][k] = v.to(params[name].device).clone()


def train_supernet(
    space: ArchSpace,
    data_spec: str | None,
    *,
    out: Path,
    schedule: Schedule,
    resume: bool = False,
    device: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the supernet of ``space`` on ``data_spec`` (None: digits) and write it to ``out``; return its header.

    ``threads``: torch's intra-op threads while training (restored after); None leaves torch's setting (one
    per core; on a machine shared with other work, 1 can be several times faster).

    A checkpoint (:func:`checkpoint_path`) is written after every epoch; ``resume`` continues from it (or
    returns at once when ``out`` is already the finished supernet of these settings). ``progress`` is
    called after every step with ``epoch, step, steps, loss, images_per_s`` and after every epoch also
    with ``largest_acc`` and ``smallest_acc`` (held-out top-1 %, batch norm recalibrated).
    """
    out = Path(out)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise InvalidConfigError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidConfigError("--device cuda: this torch sees no CUDA device")
    data_value = data_option("supernet", data_spec)
    data = image_data(data_value, split_seed=SPLIT_SEED, test_fraction=TEST_FRACTION)
    check_classes(data, space)
    net = Supernet(space, seed=schedule.seed)  # also checks that the space implements a supernet
    header = {
        "format": FORMAT, "space": space.name, "space_options": json.loads(json.dumps(space.options())),
        "data_spec": _data_spec(None if data_value is None else str(data_value)), "data": dict(data.source),
        "num_classes": data.num_classes, "train_images": len(data.y_train), "test_images": len(data.y_test),
        "schedule": dataclasses.asdict(schedule), "epochs_done": 0, "history": [],
        "largest": list(net.largest), "smallest": list(net.smallest),
        "method": "sandwich rule + in-place distillation (BigNAS; OFA)",
    }
    ckpt = checkpoint_path(out)
    optimizer = _optimizer(net, schedule)
    if resume:
        for candidate in (out, ckpt):
            if not candidate.is_file():
                continue
            f = SupernetFile.read(candidate)
            same = {k: f.header.get(k) for k in ("space", "space_options", "data", "schedule")}
            if same != {k: header[k] for k in same}:
                raise InvalidConfigError(f"{candidate} was trained with other settings (space, data or schedule); "
                                         f"train into another --out, or drop --resume to start over")
            if candidate == out:
                return {**f.header, "train_s_this_run": 0.0, "cached": True}  # already finished
            net.load_shared(f.tensors)
            _load_optimizer_tensors(net, optimizer, f.optimizer)
            header["epochs_done"], header["history"] = f.header["epochs_done"], f.header["history"]
            break
    elif out.exists() or ckpt.exists():
        raise InvalidConfigError(f"{out if out.exists() else ckpt} exists; pass --resume to continue or finish it, "
                                 f"or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidConfigError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
    if not os.access(out.parent, os.W_OK):
        raise InvalidConfigError(f"folder {out.parent} is not writable")

    with torch_threads(threads_option("supernet training", threads)):
        return _train(net, space, data, header, optimizer, out=out, ckpt=ckpt, schedule=schedule, device=device,
                      progress=progress)


def _train(net: Supernet, space: ArchSpace, data: ImageData, header: dict[str, Any], optimizer, *, out: Path,
           ckpt: Path, schedule: Schedule, device: str, progress) -> dict[str, Any]:
    net.to(device)
    s = schedule
    n = len(data.y_train)
    bs = min(s.batch_size, n)
    steps_per_epoch = max(1, n // bs)  # the last, short batch is dropped
    total = steps_per_epoch * s.epochs
    bn_subset = _bn_subset(data, s.seed, s.bn_images)
    largest, smallest = net.largest, net.smallest
    started = time.perf_counter()
    for epoch in range(header["epochs_done"], s.epochs):
        # everything random in an epoch is drawn from (seed, epoch): a resumed run repeats it exactly
        gen = torch.Generator().manual_seed(s.seed * 1000003 + epoch)
        rng = np.random.default_rng([s.seed, epoch])
        order = torch.randperm(n, generator=gen)
        net.train()
        t_epoch, seen = time.perf_counter(), 0
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            lr = 0.5 * s.lr * (1 + math.cos(math.pi * global_step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[step * bs: (step + 1) * bs]
            y = data.y_train[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            genomes = [largest, smallest] + [space.sample(rng) for _ in range(s.random_subnets)]
            teacher = None
            losses = []
            for i, genome in enumerate(genomes):
                x = to_input(data.x_train[idx], space.input_shape(genome)).to(device)
                logits = net(x, genome)[:, : data.num_classes]
                if i == 0:
                    loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
                    teacher = F.softmax(logits.detach(), dim=1)
                else:
                    loss = F.kl_div(F.log_softmax(logits, dim=1), teacher, reduction="batchmean")
                loss.backward()
                losses.append(float(loss.detach()))
            if not all(math.isfinite(v) for v in losses):
                raise InvalidConfigError(f"supernet training diverged at epoch {epoch + 1}, step {step + 1} "
                                         f"(loss {losses}); try a smaller lr")
            nn.utils.clip_grad_norm_(net.parameters(), s.clip_norm)
            optimizer.step()
            seen += len(idx)
            if progress is not None:
                progress({"epoch": epoch + 1, "epochs": s.epochs, "step": step + 1, "steps": steps_per_epoch,
                          "loss": losses[0], "distill_loss": float(np.mean(losses[1:])) if len(losses) > 1 else 0.0,
                          "images_per_s": seen / max(time.perf_counter() - t_epoch, 1e-9), "lr": lr})
        # held-out accuracy of the largest and smallest subnets (batch norm recalibrated)
        accs = {}
        for name, genome in (("largest", largest), ("smallest", smallest)):
            model = net.subnet(genome).to(device)
            recalibrate(model, data, space.input_shape(genome), bn_subset, device=device)
            accs[name] = 100.0 * count_correct(model, data, space.input_shape(genome), device=device) / len(data.y_test)
        header["epochs_done"] = epoch + 1
        header["history"].append({"epoch": epoch + 1, "largest_acc": round(accs["largest"], 3),
                                  "smallest_acc": round(accs["smallest"], 3),
                                  "seconds": round(time.perf_counter() - t_epoch, 2)})
        header["versions"] = _versions()
        header["device"] = device
        SupernetFile.write(ckpt, header, net.shared(), _optimizer_tensors(net, optimizer))
        if progress is not None:
            progress({"epoch": epoch + 1, "epochs": s.epochs, "step": steps_per_epoch, "steps": steps_per_epoch,
                      "largest_acc": accs["largest"], "smallest_acc": accs["smallest"], "epoch_done": True})
    header["train_s_this_run"] = round(time.perf_counter() - started, 2)
    header["versions"] = _versions()
    header["device"] = device
    SupernetFile.write(out, header, net.shared())
    ckpt.unlink(missing_ok=True)
    return header


# --------------------------------------------------------------------------- deployment


def train_subnet(model: nn.Module, data: ImageData, shape: Sequence[int], *, epochs: int, lr: float,
                 batch_size: int = 64, seed: int = 0, label_smoothing: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float = 5.0, bn_images: int = BN_IMAGES, device: str = "cpu") -> nn.Module:
    """``model`` trained alone on the labels for ``epochs`` epochs (SGD, Nesterov momentum 0.9, cosine from
    ``lr`` to 0), batch norm then recalibrated on the fixed subset; in place, returned in eval mode. A
    supernet's subnet is fine-tuned with it, and the ranking benchmark trains stand-alone networks with it."""
    if epochs <= 0:
        return model
    model.to(device)
    gen = torch.Generator().manual_seed(seed + 104729)
    decay = [p for p in model.parameters() if p.dim() > 1]
    plain = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    n = len(data.y_train)
    bs = min(batch_size, n)
    steps = max(1, n // bs)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for step in range(steps):
            t = (epoch * steps + step) / (epochs * steps)
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * t))
            idx = order[step * bs: (step + 1) * bs]
            logits = model(to_input(data.x_train[idx], shape).to(device))[:, : data.num_classes]
            loss = F.cross_entropy(logits, data.y_train[idx].to(device), label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
    recalibrate(model, data, shape, _bn_subset(data, seed, bn_images), device=device)
    return model.cpu().eval()


def trained_subnet(path: str | os.PathLike[str], space: ArchSpace | None, genome: Sequence[int], *,
                   finetune_epochs: int = 0) -> tuple[ArchSpace, nn.Module, ImageData, dict[str, Any]]:
    """The network a bundle deploys from the supernet in ``path``: ``(space, model, data, origin)`` where
    ``model`` is ``space.build(genome)`` with inherited weights (recalibrated, optionally fine-tuned)."""
    int_option("supernet", "finetune_epochs", finetune_epochs, minimum=0)
    evaluator = SupernetAccuracy(path=path)
    h = evaluator.file.header
    if space is None:
        space = get_space(h["space"], **h["space_options"])
    evaluator.check(space)
    genome = space.validate(genome)
    model, data = evaluator.subnet(space, genome)
    inherited = None
    if finetune_epochs:
        inherited = round(100.0 * count_correct(model, data, space.input_shape(genome)) / len(data.y_test), 4)
        # a tenth of the supernet's peak learning rate: the weights are trained already
        train_subnet(model, data, space.input_shape(genome), epochs=finetune_epochs, lr=h["schedule"]["lr"] / 10,
                     seed=h["schedule"]["seed"], bn_images=h["schedule"]["bn_images"])
    origin = {"supernet": str(evaluator.path), "supernet_fingerprint": evaluator.file.fingerprint,
              "data": h["data_spec"], "data_fingerprint": h["data"], "supernet_epochs": h["epochs_done"],
              "finetune_epochs": finetune_epochs, "inherited_top1": inherited,
              "batch_norm": f"recalibrated on {h['schedule']['bn_images']} training images"}
    return space, model, data, origin
