"""Bundles with a supernet's trained weights: the compiled artifact's accuracy on the test split, its agreement
with the torch subnet, and ``run.py --eval`` with only numpy and the TVM runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hwnas.accuracy.supernet import Schedule, train_supernet
from hwnas.arch import get_space
from hwnas.cli.commands import main

TINY = dict(channels=4, cells_per_stage=1)
GENOME = [3, 2, 1, 3, 0, 2]


def _bands(rng, n, classes=3, size=8):
    """Grey ``size`` x ``size`` images where class ``c`` lights row ``3c``, plus noise."""
    y = np.arange(n) % classes
    x = rng.normal(0, 0.3, (n, size, size)).astype(np.float32)
    x[np.arange(n), 3 * y] += 2.0
    return x, y


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    """A tiny nb201 supernet trained 3 epochs on a small .npz of 8x8 grey images (3 classes)."""
    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = _bands(rng, 192), _bands(rng, 64)
    data = folder / "bands.npz"
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    out = folder / "net.safetensors"
    train_supernet(get_space("nb201", **TINY), str(data), out=out, schedule=Schedule(epochs=3, batch_size=32), threads=1)
    return out, data


def test_the_bundle_holds_the_trained_weights_and_its_artifact_accuracy_is_the_torch_subnets(tmp_path, supernet, capsys):
    net, data = supernet
    out = tmp_path / "bundle"
    assert main(["compile", "--supernet", str(net), "--genome", json.dumps(GENOME), "--target", "cpu",
                 "--repeats", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    acc = manifest["accuracy"]
    assert acc["measured"] and acc["images"] == 64 and acc["classes"] == 3
    assert acc["agreement_with_torch"] >= 0.999  # float: equal predictions on (at least) 99.9 % of test images
    assert acc["top1"] == pytest.approx(acc["torch_top1"], abs=100 / 64 * 0.5)
    assert acc["top1"] > 60  # trained: chance is 33 %
    assert manifest["metrics"]["accuracy"] == acc["top1"]
    assert manifest["training"]["supernet_fingerprint"] and manifest["training"]["finetune_epochs"] == 0
    prep = manifest["preprocessing"]
    assert prep["resize"]["to"] == [32, 32] and prep["replicate_channels"] == {"from": 1, "to": 3}
    assert "top-1" in capsys.readouterr().out.replace("accuracy:", "top-1")

    # a fresh interpreter without hwnas: numpy + TVM runtime, the raw test split preprocessed as recorded
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with np.load(data) as d, np.load(out / "test_split.npz") as kept:  # the bundle keeps the raw test split
        np.testing.assert_allclose(kept["x_test"][:, 0], d["x_test"], atol=1e-5)
        assert np.array_equal(kept["y_test"], d["y_test"])
        np.savez(tmp_path / "mine.npz", x_test=d["x_test"], y_test=d["y_test"])  # the user's own raw images
    proc = subprocess.run([sys.executable, "-I", str(out / "run.py"), "--eval", str(tmp_path / "mine.npz")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"top-1 {acc['top1']:.2f} % on 64 images" in proc.stdout


def test_a_mismatched_supernet_is_refused_in_one_line(tmp_path, supernet, capsys):
    net, _ = supernet
    rc = main(["compile", "--supernet", str(net), "--space", "nb201", "--genome", json.dumps(GENOME),
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "was trained for nb201" in err and "not for nb201" in err
    rc = main(["compile", "--space", "nb201", "--finetune-epochs", "1", "--out", str(tmp_path / "c")])
    assert rc == 2 and "--finetune-epochs needs --supernet" in capsys.readouterr().err


def test_an_mcu_bundle_fine_tuned_classifies_test_images_under_qemu_as_the_host_reference_does(
        tmp_path, supernet, capsys):
    """One compile covers both: fine-tuning (the manifest's inherited accuracy beside the bundle's) and the
    MCU bundle's device check (its C build under QEMU against the host int8 reference on test images)."""
    from hwnas.accuracy.supernet import count_correct, trained_subnet
    from hwnas.cli.report import bundle_accuracy_line
    from hwnas.targets.mcu.toolchain import missing_tools

    if missing_tools(qemu=True):
        pytest.skip(f"MCU toolchain missing ({', '.join(missing_tools(qemu=True))}): run scripts/setup_mcu.sh")
    net, data = supernet
    out = tmp_path / "mcu"
    assert main(["compile", "--supernet", str(net), "--genome", json.dumps(GENOME), "--target", "mcu:nrf52840",
                 "--finetune-epochs", "3", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    training, acc = manifest["training"], manifest["accuracy"]
    assert training["finetune_epochs"] == 3
    # the inherited figure is the subnet's own accuracy before fine-tuning ...
    space, inherited, split, origin = trained_subnet(net, None, GENOME)
    shape = space.input_shape(GENOME)
    assert origin["inherited_top1"] is None
    assert training["inherited_top1"] == pytest.approx(100 * count_correct(inherited, split, shape) / len(split.y_test))
    # ... and the bundle was made from the fine-tuned weights (the torch figure beside the int8 artifact's)
    _, tuned, _, _ = trained_subnet(net, None, GENOME, finetune_epochs=3)
    assert any(not torch.equal(a, b) for a, b in zip(inherited.state_dict().values(), tuned.state_dict().values()))
    assert acc["torch_top1"] == pytest.approx(100 * count_correct(tuned, split, shape) / len(split.y_test))
    assert acc["quantized"] and acc["agreement_with_torch"] >= 0.9  # int8 against float: nearly always equal
    line = bundle_accuracy_line(manifest)
    assert f"after 3 fine-tuning epochs (inherited weights: {training['inherited_top1']:.2f} % in torch)" in line

    check = manifest["device_check"]
    assert check["ran"] and check["images"] == 8 and "mps2-an386" in check["device"]
    with np.load(data) as d:
        assert check["labels"] == d["y_test"][:8].tolist()
    assert check["device_predictions"] == check["host_predictions"] and check["outputs_equal"]
    # the bundle classifies: its host predictions on those images are mostly right (chance: 33 %)
    assert sum(a == b for a, b in zip(check["host_predictions"], check["labels"])) >= 6
    # the shipped input.h holds those 8 images and expected_output.txt their host outputs
    assert "#define HWNAS_INPUTS 8" in (out / "input.h").read_text()
    assert len((out / "expected_output.txt").read_text().splitlines()) == 8
    from hwnas.pipeline.artifacts import verify_bundle

    verify_bundle(out)  # the manifest's sha256 are those of the rewritten files
    assert "device check: equal predictions on 8/8 test images (bit-exact outputs)" in capsys.readouterr().out
