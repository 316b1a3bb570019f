"""Serve an exported SavedModel the way TF Serving loads it: ``saved_model_cli run`` (TensorFlow's
C++-path TF1 loader in a Session), in a fresh process that never imports tf_rlnas."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def saved_model_cli_run(path: str, signature: str, inputs: dict[str, np.ndarray], workdir: str) -> dict[str, np.ndarray]:
    os.makedirs(workdir, exist_ok=True)
    specs = []
    for k, v in inputs.items():
        f = os.path.join(workdir, f"in_{signature}_{k}.npy")
        np.save(f, np.asarray(v))
        specs.append(f"{k}={f}")
    outdir = os.path.join(workdir, f"out_{signature}")
    script = ("import atexit, runpy, sys\n"
              "atexit.register(lambda: any(k.startswith('tf_rlnas') for k in sys.modules) "
              "and sys.stderr.write('IMPORTED tf_rlnas\\n'))\n"
              "runpy.run_module('tensorflow.python.tools.saved_model_cli', run_name='__main__')\n")
    cmd = [sys.executable, "-c", script, "run", "--dir", path, "--tag_set", "serve", "--signature_def", signature,
           "--inputs", ";".join(specs), "--outdir", outdir, "--overwrite"]
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "IMPORTED tf_rlnas" not in res.stderr
    return {f[:-4]: np.load(os.path.join(outdir, f)) for f in os.listdir(outdir) if f.endswith(".npy")}
