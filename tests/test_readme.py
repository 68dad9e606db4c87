"""The README's Python blocks run as written: extracted from README.md and executed one after the
other (as one session, as the README reads) in a fresh Python process, in a temporary folder that
holds the ``reference.h5`` the README asks for (made with the command it names)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return [m.group(1) for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.S | re.M)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # this checkout's caloforge wins over any installed one
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and all(b.strip() for b in blocks)
    # the command that makes the file the blocks read, as this test makes it
    text = " ".join(README.read_text().split())
    assert "caloforge simulate --dataset ds2 --n 300 --energy log-uniform:1GeV:100GeV -o reference.h5" in text


def test_readme_python_blocks_run_as_written(tmp_path):
    blocks = python_blocks(README.read_text())
    env = _env()
    made = subprocess.run([sys.executable, "-m", "caloforge", "simulate", "--dataset", "ds2", "--n", "300",
                           "--energy", "log-uniform:1GeV:100GeV", "-o", "reference.h5"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n\n".join(f"# ---- README block {i + 1}\n{b}" for i, b in enumerate(blocks)))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"README blocks failed:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    # what the blocks say they print or write
    assert "(300, 45)" in r.stdout
    assert "['EstimatesLikelihood', 'HasLikelihood', 'NoiseMap', 'SolverSteps', 'TrainableByLoss']" in r.stdout
    assert "8 runs/cfm/model" in r.stdout
    assert (tmp_path / "generated.h5").is_file() and (tmp_path / "runs" / "cfm" / "model" / "model.json").is_file()
