"""The example out-of-tree backend as a user meets it: installed package, CLI, docs; plugin discovery rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-a-target.md"
EXAMPLE = ROOT / "examples" / "hwnas-example-dsp"


def hwnas(*argv, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "hwnas", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_code_block_of_the_guide_is_the_example_code():
    source = (EXAMPLE / "hwnas_example_dsp" / "__init__.py").read_text()
    shown = [b for b in blocks("python") if not b.startswith("# run")]
    assert len(shown) >= 5
    for b in shown:
        assert b in source, f"docs/writing-a-target.md shows code the example does not have:\n{b}"
    for b in blocks("toml"):
        assert b in (EXAMPLE / "pyproject.toml").read_text()


def test_the_guide_runs(tmp_path):
    code = "\n".join(b for b in blocks("python") if b.startswith("# run"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_installed_plugin_works_in_targets_compile_and_search(tmp_path):
    out = hwnas("targets", cwd=tmp_path)
    assert out.returncode == 0 and "exdsp:<variant>" in out.stdout and "SIMD multiply-accumulate lanes" in out.stdout
    out = hwnas("compile", "--space", "nb201", "--genome", "[3,3,3,3,3,3]", "--target", "exdsp:small",
                "--hw", '{"lanes": 16}', "--out", str(tmp_path / "bundle"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["target"] == "exdsp:small" and manifest["hw"]["lanes"] == 16
    assert manifest["metrics"]["energy_mj"] > 0
    out = hwnas("search", "--space", "nb201", "--target", "exdsp:large", "--objectives",
                "accuracy,latency_ms,energy_mj", "--accuracy", "proxy", "--budget", "2", "--pop-size", "2",
                "--workers", "1", "--artifacts", "0", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 points evaluated" in out.stdout
    out = hwnas("compile", "--space", "nb201", "--target", "exdsp:tiny", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == (
        "hwnas: error: target exdsp needs a device: exdsp:<small|large>, got 'tiny'")


def _fake_distribution(folder: Path, dist: str, module: str, code: str, entry: str) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(code))
    info = folder / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hwnas.targets]\n{entry}\n")


def test_a_duplicate_or_broken_plugin_is_refused_and_said(tmp_path):
    plugins = tmp_path / "site"
    plugins.mkdir()
    _fake_distribution(plugins, "fake_cpu", "fake_cpu", """
        from hwnas.targets.cpu.target import CpuTarget
        class Impostor(CpuTarget):
            description = "another cpu"
        """, "cpu = fake_cpu:Impostor")
    _fake_distribution(plugins, "broken_plugin", "broken_plugin", "raise RuntimeError('no device driver')\n",
                       "broken = broken_plugin:Target")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]))
    out = hwnas("targets", cwd=tmp_path, env=env)
    assert out.returncode == 0
    assert "cpu: host CPU via LLVM" in out.stdout and "another cpu" not in out.stdout
    assert "exdsp:<variant>" in out.stdout  # the good plugin still works
    warnings = [ln for ln in out.stderr.splitlines() if ln.startswith("hwnas: warning:")]
    assert any("cpu = fake_cpu:Impostor (package fake_cpu) refused: target name 'cpu' is already registered" in w
               for w in warnings), out.stderr
    assert any("broken = broken_plugin:Target" in w and "RuntimeError: no device driver" in w for w in warnings)
    out = hwnas("compile", "--space", "nb201", "--target", "broken", "--out", str(tmp_path / "o"), cwd=tmp_path,
                env=env)
    assert out.returncode == 2 and re.search(r"unknown target 'broken'; known: .*cpu, exdsp", out.stderr)
