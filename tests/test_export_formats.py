"""ONNX and LiteRT exports of every algorithm's serving_default: converted beside the SavedModel, then
compared with the SavedModel by a process that never imports tf_rlnas (TensorFlow runs the SavedModel,
onnxruntime and the LiteRT interpreter run the converted files, on random inputs of the signature's
shapes); a conversion that fails publishes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tf_rlnas.cli import main

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

RUNS = {
    "reinforce": ["--config", "smoke"],
    "sac": ["--config", "smoke", "--set", "env.id=Pendulum-v1"],
    "enas": ["--config", "smoke", "--set", "mode=fixed", "--set", "fixed.arc_file=random:3",
             "--set", "child.compute_dtype=bfloat16"],  # a bf16-trained child serves in float32
    "maml_trpo": ["--config", "smoke"],
    "planet": ["--config", "point_reach", "--config", "smoke", "--config", "point_reach_sac",
               "--set", "model.compute_dtype=bfloat16"],  # a bf16-trained world model serves in float32
}

# Runs with TensorFlow, onnxruntime and ai_edge_litert only: loads the SavedModel's serving_default,
# feeds the same random inputs (shapes from the signature, unknown dims = 2) to it, to model.onnx and to
# model.tflite, prints the largest differences as JSON.
CHECK = r'''
import json, sys
import numpy as np, tensorflow as tf, onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
assert "tf_rlnas" not in sys.modules
path = sys.argv[1]
fn = tf.saved_model.load(path).signatures["serving_default"]
rng = np.random.default_rng(0)
feed = {}
for name, spec in fn.structured_input_signature[1].items():
    shape = [2 if d is None else d for d in spec.shape]
    if spec.dtype == tf.uint8:
        feed[name] = rng.integers(0, 256, shape).astype(np.uint8)
    else:
        feed[name] = (0.5 * rng.normal(size=shape)).astype(spec.dtype.as_numpy_dtype)
want = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feed.items()}).items()}
sess = ort.InferenceSession(path + "/model.onnx", providers=["CPUExecutionProvider"])
names = [o.name for o in sess.get_outputs()]
onnx = dict(zip([n[:-4] if n.endswith("_out") and n[:-4] in feed else n for n in names], sess.run(names, feed)))
runner = Interpreter(model_path=path + "/model.tflite").get_signature_runner("serving_default")
lite = runner(**feed)
diff = lambda got: max(float(np.max(np.abs(np.asarray(got[k], np.float64) - want[k]))) for k in want)
print(json.dumps({"outputs": sorted(want), "onnx": diff(onnx), "tflite": diff(lite),
                  "onnx_keys": sorted(onnx), "tflite_keys": sorted(lite)}))
'''


@pytest.mark.parametrize("algo", sorted(RUNS))
def test_onnx_and_litert_match_the_savedmodel_outside_the_package(tmp_path, capsys, algo):
    run, out = str(tmp_path / "run"), str(tmp_path / "models")
    assert main(["train", algo, *RUNS[algo], "--run-dir", run, "--no-progress"]) == 0
    assert main(["export", run, "--out", out, "--format", "onnx", "--format", "tflite"]) == 0
    printed = capsys.readouterr()
    version = os.path.join(out, "run", "1")
    assert {"saved_model.pb", "model.onnx", "model.tflite"} <= set(os.listdir(version))
    assert "model.onnx: serving_default;" in printed.out and "model.tflite: serving_default" in printed.out
    # a signature a converter cannot express is one note line, not a traceback
    assert "Traceback" not in printed.err
    for line in printed.err.splitlines():
        if "cannot express" in line:
            assert line.startswith("note: ") and "stays in the SavedModel only" in line
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", CHECK, version], capture_output=True, text=True, cwd=str(tmp_path),
                         env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["onnx_keys"] == got["outputs"] == got["tflite_keys"]
    assert got["onnx"] < 1e-4 and got["tflite"] < 1e-4, got


def test_a_conversion_that_does_not_match_publishes_nothing(tmp_path, capsys, monkeypatch):
    from tf_rlnas.core import convert

    run, out = str(tmp_path / "run"), str(tmp_path / "models")
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", run, "--no-progress"]) == 0
    assert main(["export", run, "--out", out]) == 0
    capsys.readouterr()
    honest = convert.run_onnx
    monkeypatch.setattr(convert, "run_onnx", lambda model, inputs: {k: v + 0.01 for k, v in honest(model, inputs).items()})
    assert main(["export", run, "--out", out, "--format", "onnx"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [err[0]] and "ONNX export of signature serving_default failed: output 'action' differs by up to 0.01" \
        in err[0] and err[0].endswith("nothing was exported")
    assert os.listdir(os.path.join(out, "run")) == ["1"]  # no version 2, no temporary folder
    monkeypatch.undo()
    assert main(["export", run, "--out", out, "--format", "tflite"]) == 0
    assert "model.tflite" in os.listdir(os.path.join(out, "run", "2"))


def test_unknown_format_and_a_missing_converter_are_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import importlib.util

    run, out = str(tmp_path / "run"), str(tmp_path / "models")
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", run, "--out", out, "--format", "pdf"]) == 2
    assert "unknown export format 'pdf'" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    assert main(["export", run, "--out", out, "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs tf2onnx" in err[0] and '.[onnx]' in err[0]
    assert not os.path.exists(out)
