"""Deployable bundles: ONNX, compiled library, manifest and a stand-alone runner.

A bundle is written into a temporary sibling folder and renamed into place
when complete, so a folder at the requested path is always a whole bundle.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import hwnas
from hwnas.errors import ArtifactError, HwnasError
from hwnas.metrics import overflows
from hwnas.pipeline.evaluate import Evaluation
from hwnas.util import file_sha256, filtered_native_stderr

MANIFEST = "manifest.json"

#: Runs a bundle with the stock TVM runtime only (no hwnas, no torch needed).
RUN_PY = '''\
"""Run this hwnas bundle with the stock TVM runtime.

    python run.py                  # a seeded random input; prints the output summary
    python run.py input.npy -o out.npy
    python run.py --eval data.npz  # top-1 % on x_test, y_test (raw images, preprocessed as the manifest says)
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent
manifest = json.loads((here / "manifest.json").read_text())
runtime = manifest["runtime"]
os.environ.setdefault("TVM_NUM_THREADS", str(runtime.get("num_threads", 1)))

import tvm  # noqa: E402  (after TVM_NUM_THREADS is set)
from tvm import relax  # noqa: E402

parser = argparse.ArgumentParser(description="run the compiled model once")
parser.add_argument("inputs", nargs="*", help="one .npy file per model input, in manifest order")
parser.add_argument("-o", "--output", help="write the first output to this .npy file")
parser.add_argument("--eval", metavar="DATA.npz",
                    help="top-1 %% on the arrays x_test, y_test of DATA.npz (raw images; needs a trained bundle)")
args = parser.parse_args()

specs = manifest["inputs"]
if args.inputs and len(args.inputs) != len(specs):
    sys.exit(f"run.py: the model has {len(specs)} input(s), got {len(args.inputs)} file(s)")
arrays = []
rng = np.random.default_rng(0)
for i, spec in enumerate(specs):
    if args.inputs:
        a = np.load(args.inputs[i]).astype(spec["dtype"])
        if list(a.shape) != spec["shape"]:
            sys.exit(f"run.py: input {spec['name']} must have shape {spec['shape']}, got {list(a.shape)}")
    else:
        a = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    arrays.append(a)


# @PREPROCESS@ (the module's _resize_axis and preprocess, copied in by write_bundle)


def load_vm():
    dev = tvm.device(runtime["device"], 0)
    # the runtime logs one line per memory scope while loading: keep stderr for real messages
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:
        lib = tvm.runtime.load_module(str(here / runtime["library"]))
    finally:
        os.dup2(saved_stderr, 2)
    return relax.VirtualMachine(lib, dev), dev


def predict(vm, dev, x):
    """Logits of one float input (1, C, H, W), through the integer input/output of a quantized bundle."""
    quant = runtime.get("quantization")
    if quant and quant.get("input_scale") is not None and quant.get("activation_bits") is not None:
        levels = 2 ** (quant["activation_bits"] - 1)
        dtype = "int8" if quant["activation_bits"] <= 8 else "int16"
        x = np.clip(np.round(x.astype(np.float64) / quant["input_scale"]), -levels, levels - 1).astype(dtype)
    y = vm["main"](tvm.runtime.tensor(x, dev))
    y = (list(y) if isinstance(y, (list, tuple)) or type(y).__name__ == "Array" else [y])[0].numpy()
    if quant and quant.get("output_scale") is not None:
        y = y.astype(np.float32) * quant["output_scale"]
    return y


if args.eval:
    if "preprocessing" not in manifest:
        sys.exit("run.py: this bundle records no preprocessing (it was not built from trained weights)")
    try:
        with np.load(args.eval, allow_pickle=False) as data:
            x_raw, y_true = data["x_test"], data["y_test"]
    except (OSError, KeyError, ValueError) as exc:
        sys.exit(f"run.py: cannot read x_test and y_test from {args.eval}: {exc}")
    spec = specs[0]
    x = preprocess(x_raw, manifest["preprocessing"], spec["shape"])
    if len(x) != len(y_true) or len(x) == 0:
        sys.exit(f"run.py: {args.eval} has {len(x)} images and {len(y_true)} labels")
    vm, dev = load_vm()
    classes = manifest["accuracy"]["classes"]
    pred = np.array([int(predict(vm, dev, x[i:i + 1])[0, :classes].argmax()) for i in range(len(x))])
    print(f"top-1 {100.0 * float((pred == np.asarray(y_true)).mean()):.2f} % on {len(x)} images of {args.eval} "
          f"(manifest: {manifest['accuracy']['top1']:.2f} % on its test split)")
    sys.exit(0)

vm, dev = load_vm()
out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in arrays])
outs = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
result = outs[0].numpy()
if args.output:
    np.save(args.output, result)
print(f"output {manifest['outputs'][0]['name']}: shape {list(result.shape)}, "
      f"argmax {int(result.argmax())}, sum {float(result.sum()):.6f}")
'''


def versions() -> dict[str, str]:
    import onnx
    import torch
    import tvm

    return {
        "hwnas": hwnas.__version__,
        "tvm": str(tvm.__version__),
        "torch": str(torch.__version__),
        "onnx": str(onnx.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"output folder {out} is not empty; choose another or pass --overwrite")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create output folder {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise ArtifactError(f"output folder {parent} is not writable")


@dataclasses.dataclass(frozen=True)
class Trained:
    """The trained network a bundle is compiled from: the torch module (float, eval mode), the data it was
    trained on (its held-out split is the test split) and where the weights came from (JSON-able)."""

    model: Any
    data: Any
    origin: dict[str, Any]


def write_bundle(evaluation: Evaluation, out_dir: str | Path, *, overwrite: bool = False,
                 trained: Trained | None = None) -> Path:
    """Write the bundle of ``evaluation`` to ``out_dir``; return the manifest path.

    With ``trained`` (the network compiled holds its weights), the manifest records the input preprocessing
    and the ``accuracy`` measured by running the compiled library (TVM runtime) over the test split, with its
    agreement with the torch network; the raw test split goes along as ``test_split.npz`` when it is small,
    so ``python run.py --eval test_split.npz`` repeats the measurement."""
    out = Path(out_dir).resolve()
    if evaluation.onnx_path is None:
        raise ArtifactError("this evaluation kept no ONNX file to bundle; evaluate it with a workdir")
    check_out_dir(out, overwrite)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ArtifactError(f"cannot write into {out.parent}: {exc.strerror or exc}") from None
    try:
        files: dict[str, Path] = {"onnx": tmp / "model.onnx"}
        shutil.copyfile(evaluation.onnx_path, files["onnx"])
        try:
            files.update(evaluation.target.emit(evaluation.built, tmp))
        except OSError as exc:
            raise ArtifactError(f"writing the compiled library failed: {exc}") from None
        (tmp / "run.py").write_text(run_py())
        files["runner"] = tmp / "run.py"
        manifest = _manifest(evaluation, files)
        if trained is not None:
            shape = list(evaluation.built.inputs[next(iter(evaluation.built.inputs))][0])
            manifest["preprocessing"] = trained.data.preprocessing(shape)
            manifest["training"] = trained.origin
            manifest["accuracy"] = artifact_accuracy(tmp / files["library"].name, manifest, trained)
            manifest["metrics"] = {**manifest["metrics"], "accuracy": manifest["accuracy"]["top1"]}
            check = _device_check(evaluation, tmp, manifest, trained)
            if check is not None:  # the device build's inputs were rewritten: their sha256 too
                manifest["device_check"] = check
                for entry in manifest["files"].values():
                    entry["sha256"] = file_sha256(tmp / entry["path"])
            raw = trained.data.raw_test()
            if raw.nbytes <= TEST_SPLIT_MAX_BYTES:
                np.savez_compressed(tmp / "test_split.npz", x_test=raw, y_test=trained.data.y_test.numpy())
                files["test_split"] = tmp / "test_split.npz"
                manifest["files"]["test_split"] = {"path": "test_split.npz",
                                                   "sha256": file_sha256(files["test_split"])}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST


#: the raw test split is copied into a trained bundle up to this size
TEST_SPLIT_MAX_BYTES = 16 << 20
#: test images a device build (e.g. an MCU's C bundle under QEMU) runs against the host reference
DEVICE_CHECK_IMAGES = 8


def _device_check(evaluation: Evaluation, folder: Path, manifest: dict[str, Any],
                  trained: Trained) -> dict[str, Any] | None:
    """The target's :meth:`~hwnas.targets.base.Target.device_check` on the first test images; a failing
    device build is recorded (``ran: false`` and the reason), the bundle is kept."""
    data = trained.data
    n = min(DEVICE_CHECK_IMAGES, len(data.y_test))
    x = preprocess(data.raw_test()[:n], manifest["preprocessing"], manifest["inputs"][0]["shape"])
    try:
        return evaluation.target.device_check(evaluation.built, folder, x, data.y_test.numpy()[:n],
                                              int(data.num_classes))
    except HwnasError as exc:
        return {"images": n, "ran": False, "reason": str(exc)}


def _resize_axis(x, axis, size):
    """Bilinear resampling of one axis as torch's interpolate(align_corners=False, no antialias)."""
    n = x.shape[axis]
    if n == size:
        return x
    src = (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = (src - i0).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = size
    w1 = w1.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - w1) + np.take(x, i1, axis=axis) * w1


def preprocess(x, prep, input_shape):
    """Raw images (N, C, H, W) or (N, H, W) -> network inputs (N, *input_shape[1:]) float32, as the manifest's
    ``preprocessing`` says: normalise per channel, resize (bilinear), replicate channels."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    norm = prep["normalise"]
    mean = np.asarray(norm["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    x = ((x - mean) / std).astype(np.float32)
    height, width = input_shape[2], input_shape[3]
    x = _resize_axis(_resize_axis(x, 2, height), 3, width)
    if x.shape[1] != input_shape[1]:
        x = np.repeat(x, input_shape[1] // x.shape[1], axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def run_py() -> str:
    """The bundle's ``run.py``: :data:`RUN_PY` with this module's numpy preprocessing copied in, so the bundle and
    :func:`artifact_accuracy` preprocess with the same code."""
    source = inspect.getsource(_resize_axis) + "\n\n" + inspect.getsource(preprocess)
    return RUN_PY.replace("# @PREPROCESS@ (the module's _resize_axis and preprocess, copied in by write_bundle)\n",
                          source)


def artifact_accuracy(library: Path, manifest: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """Top-1 of the compiled library (loaded as ``run.py`` loads it) over the raw test split preprocessed with
    numpy as the manifest says, and its agreement with the torch network's predictions."""
    import torch
    import tvm
    from tvm import relax

    from hwnas.accuracy.data import to_input
    from hwnas.passes.quantize import quantize_input

    runtime = manifest["runtime"]
    data = trained.data
    spec = manifest["inputs"][0]
    k = int(data.num_classes)
    try:
        with filtered_native_stderr():  # the runtime logs a line per memory scope while loading
            lib = tvm.runtime.load_module(str(library))
        dev = tvm.device(runtime["device"], 0)
        vm = relax.VirtualMachine(lib, dev)
    except Exception as exc:  # noqa: BLE001  (no such device here: a CUDA bundle built without a GPU)
        return {"top1": None, "measured": False, "reason": f"the library cannot run here: {exc}".splitlines()[0],
                "classes": k}
    x = preprocess(data.raw_test(), manifest["preprocessing"], spec["shape"])
    quant = runtime.get("quantization")
    preds = []
    for i in range(len(x)):
        xi = quantize_input(x[i:i + 1], quant["input_scale"], quant["activation_bits"]) if quant else x[i:i + 1]
        out = vm["main"](tvm.runtime.tensor(xi, dev))
        out = (list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out])[0].numpy()
        preds.append(int(out[0, :k].argmax()))
    preds = np.asarray(preds)
    y = data.y_test.numpy()
    model = trained.model.eval()
    with torch.no_grad():
        torch_preds = np.concatenate([
            model(to_input(data.x_test[b:b + 256], spec["shape"]))[:, :k].argmax(1).numpy()
            for b in range(0, len(y), 256)])
    return {
        "top1": round(100.0 * float((preds == y).mean()), 4),
        "measured": True,
        "measured_by": "the compiled library (TVM runtime) over the test split, preprocessed as recorded",
        "split": "test", "images": int(len(y)), "classes": k,
        "torch_top1": round(100.0 * float((torch_preds == y).mean()), 4),
        "agreement_with_torch": round(float((preds == torch_preds).mean()), 6),
        "quantized": bool(quant),
    }


def _manifest(ev: Evaluation, files: dict[str, Path]) -> dict[str, Any]:
    built = ev.built
    names = [n for n in built.inputs]
    import onnx

    model = onnx.load(str(files["onnx"]), load_external_data=False)
    out_names = [o.name for o in model.graph.output]
    capacity = ev.target.capacity()
    over = overflows(ev.metrics, capacity)
    return {
        "format": "hwnas-bundle/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "architecture": ev.candidate.architecture(),
        "target": ev.target.spec,
        "tvm_target": str(built.tvm_target),
        "hw": ev.hw,
        "metrics": ev.metrics,
        # False when a metric is over the device's capacity (the figures in "overflow"): the bundle will not fit
        "fits": not over,
        "capacity": capacity,
        "overflow": over,
        "timings_s": {k: round(v, 4) for k, v in ev.timings.items()},
        "inputs": [
            {"name": n, "shape": list(built.inputs[n][0]), "dtype": built.inputs[n][1]} for n in names
        ],
        "outputs": [
            {"name": out_names[i] if i < len(out_names) else f"output{i}", "shape": list(s), "dtype": d}
            for i, (s, d) in enumerate(built.outputs)
        ],
        "runtime": {"library": files["library"].name, **ev.target.runtime_info(built)},
        "files": {role: {"path": p.name, "sha256": file_sha256(p)} for role, p in files.items()},
        "versions": versions(),
    }


def verify_bundle(folder: str | Path) -> dict[str, Any]:
    """Read a bundle's manifest and check every file's sha256; return the manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder} holds no readable {MANIFEST}: {exc}") from None
    for role, entry in manifest.get("files", {}).items():
        path = folder / entry["path"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise ArtifactError(f"bundle file {path} ({role}) is missing or does not match its sha256")
    return manifest
