"""ONNX and LiteRT (TFLite) files converted from a verified SavedModel, each checked in its own runtime.

:func:`convert_all` runs inside :func:`tf_rlnas.core.export.publish`, on the temporary SavedModel
folder that already passed both TF loaders, before that folder is renamed into its version: a
conversion that fails or does not reproduce the live model's outputs publishes nothing. Files go
beside the SavedModel they came from::

    savedmodels/<name>/<N>/saved_model.pb, variables/   (TF Serving reads only these)
    savedmodels/<name>/<N>/model.onnx                   serving_default (ONNX opset 17, tf2onnx)
    savedmodels/<name>/<N>/<signature>.onnx             the other signatures that convert
    savedmodels/<name>/<N>/model.tflite                 every signature that converts (LiteRT keeps
                                                        signatures: get_signature_runner(name))

``serving_default`` must convert and match (else one error line, exit 1); another signature that a
converter cannot express (stateless random ops in ``sample``, CEM's loops) is left out of that format
with one ``note:`` line. Checks: the converted model runs in onnxruntime / the LiteRT interpreter on
the export's example inputs and every output matches the live model within ``ATOL + RTOL * |x|``.

The converters are optional (``pip install -e ".[export]"``) and imported only here, only when a
format asks for them.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Callable, Mapping

import numpy as np

from tf_rlnas.errors import UserError

FORMATS = ("savedmodel", "onnx", "tflite")
ONNX_OPSET = 17
OUT_SUFFIX = "_out"  # an ONNX output whose signature key is also an input's: e.g. PlaNet's deter -> deter_out
ATOL, RTOL = 1e-4, 1e-4  # float32 kernels of another runtime (fused, reordered sums, XNNPACK)
NEEDS = {"onnx": (("tf2onnx", "onnxruntime"), "onnx"), "tflite": (("ai_edge_litert",), "tflite")}


def check_available(formats) -> None:
    """One error line (exit 2) naming the extra to install when a format's converter or runtime is
    missing; called before anything is written."""
    import importlib.util

    for fmt in formats:
        if fmt not in FORMATS:
            raise UserError(f"unknown export format '{fmt}' (choose from {', '.join(FORMATS)})")
        mods, extra = NEEDS.get(fmt, ((), ""))
        missing = [m for m in mods if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"--format {fmt} needs {', '.join(missing)}: pip install -e \".[{extra}]\" "
                            f"(or \".[export]\" for every format)")


@contextlib.contextmanager
def _quiet(log: list):
    """The converters and runtimes talk on stderr (Python logging, TF deprecation notes, MLIR and C++
    diagnostics): send file descriptor 2 to a file for the duration and keep its text in ``log``."""
    import logging
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    levels = [lg.level for lg in loggers]
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for lg, lvl in zip(loggers, levels):
                lg.setLevel(lvl)
            f.seek(0)
            log.append(f.read().decode("utf-8", "replace"))


def _unsupported(text: str) -> str | None:
    """The ops a converter named as unsupported in its log, as one short phrase."""
    m = re.search(r"Unsupported ops: Counter\(\{([^}]*)\}\)", text) or re.search(r"TF Select ops: ([^\n]+)", text)
    if not m:
        return None
    ops = sorted(set(re.findall(r"'?([A-Z][A-Za-z0-9]+)'?", m.group(1))))
    return "ops it has no kernel for: " + ", ".join(ops)


# ---- ONNX ------------------------------------------------------------------------------------------

def to_onnx(saved_dir: str, signature: str) -> bytes:
    """One signature of a SavedModel as an ONNX model (tf2onnx's SavedModel path: the signature's
    graph frozen, inputs and outputs named by the signature's keys)."""
    import tf2onnx
    from tf2onnx import tf_loader

    log: list = []
    with _quiet(log):
        graph_def, inputs, outputs, rename = tf_loader.from_saved_model(
            saved_dir, None, None, tag="serve", signatures=[signature], return_tensors_to_rename=True)
        taken = {rename.get(t, t) for t in inputs}
        for t in outputs:  # ONNX names must be unique: an output named like an input (PlaNet's state) gets "_out"
            if rename.get(t, t) in taken:
                rename[t] = rename.get(t, t) + OUT_SUFFIX
        model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                  opset=ONNX_OPSET, tensors_to_rename=rename)
    why = _unsupported(log[0])
    if why:
        raise ValueError(why)
    return model.SerializeToString()


def run_onnx(model: bytes, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {k: np.asarray(v) for k, v in inputs.items()})
    return {onnx_output_key(n, inputs): v for n, v in zip(names, values)}


def onnx_output_key(name: str, inputs) -> str:
    """The signature's output key of an ONNX output name (``deter_out`` -> ``deter`` where ``deter``
    is also an input)."""
    base = name[:-len(OUT_SUFFIX)]
    return base if name.endswith(OUT_SUFFIX) and base in inputs else name


# ---- LiteRT (TFLite) -------------------------------------------------------------------------------

def to_tflite(saved_dir: str, signatures: list[str]) -> bytes:
    """The SavedModel's ``signatures`` in one LiteRT flatbuffer (TensorFlow's own converter; builtin
    ops only, so the plain LiteRT interpreter runs it)."""
    import tensorflow as tf

    log: list = []
    try:
        with _quiet(log):
            conv = tf.lite.TFLiteConverter.from_saved_model(saved_dir, signature_keys=list(signatures))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            return conv.convert()
    except Exception as e:
        raise ValueError(_unsupported(str(e) + "\n" + "".join(log)) or _one_line(e)) from None


def run_tflite(model: bytes, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    with _quiet([]):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        runner = Interpreter(model_content=model).get_signature_runner(signature)
        out = runner(**{k: np.asarray(v) for k, v in inputs.items()})
    return {k: np.asarray(v) for k, v in out.items()}


# ---- both -----------------------------------------------------------------------------------------

def mismatch(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> str | None:
    """None when every expected output is there with its shape and within tolerance, else why not."""
    for key, w in want.items():
        if key not in got:
            return f"output '{key}' missing (has: {', '.join(sorted(got))})"
        g, w = np.asarray(got[key]), np.asarray(w)
        if g.shape != w.shape:
            return f"output '{key}' has shape {g.shape}, the live model's {w.shape}"
        if not np.allclose(g.astype(np.float64), w.astype(np.float64), atol=ATOL, rtol=RTOL):
            return f"output '{key}' differs by up to {np.max(np.abs(g.astype(np.float64) - w)):.3g}"
    return None


def max_diff(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> float:
    return max((float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(w, np.float64)), initial=0.0))
                for k, w in want.items()), default=0.0)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def convert_all(saved_dir: str, formats, examples: Mapping[str, dict], expected: Mapping[str, dict],
                note: Callable[[str], None] = print) -> dict[str, dict]:
    """Write the ``formats`` (besides SavedModel) of ``saved_dir``'s signatures into ``saved_dir``;
    returns {file name: {"signatures": [...], "max_diff": float, "bytes": int}}. Raises
    :class:`~tf_rlnas.core.export.VerificationError` when ``serving_default`` fails."""
    from tf_rlnas.core.export import VerificationError

    order = sorted(examples, key=lambda s: s != "serving_default")
    written: dict[str, dict] = {}

    def fail(fmt: str, sig: str, why: str) -> None:
        if sig == "serving_default":
            raise VerificationError(f"{fmt} export of signature serving_default failed: {why}; nothing was exported")
        note(f"note: {fmt} cannot express signature {sig} ({why}); it stays in the SavedModel only")

    if "onnx" in formats:
        for sig in order:
            try:
                model = to_onnx(saved_dir, sig)
                got = run_onnx(model, examples[sig])
            except Exception as e:  # a converter's or runtime's refusal, whatever its type
                fail("ONNX", sig, _one_line(e))
                continue
            why = mismatch(got, expected.get(sig, {}))
            if why:
                fail("ONNX", sig, why + " in onnxruntime")
                continue
            name = "model.onnx" if sig == "serving_default" else f"{sig}.onnx"
            with open(os.path.join(saved_dir, name), "wb") as f:
                f.write(model)
            written[name] = {"signatures": [sig], "max_diff": max_diff(got, expected.get(sig, {})), "bytes": len(model)}
    if "tflite" in formats:
        kept = []
        for sig in order:  # what the converter takes, one signature at a time
            try:
                to_tflite(saved_dir, [sig])
                kept.append(sig)
            except Exception as e:  # a converter's refusal, whatever its type
                fail("LiteRT", sig, _one_line(e))
        while kept:  # one file with those signatures; each checked in the interpreter, again if one drops out
            model, diffs, dropped = to_tflite(saved_dir, kept), [], []
            for sig in kept:
                try:
                    got = run_tflite(model, sig, examples[sig])
                    why = mismatch(got, expected.get(sig, {}))
                except Exception as e:
                    why = _one_line(e)
                if why:
                    fail("LiteRT", sig, why + " in the LiteRT interpreter")
                    dropped.append(sig)
                else:
                    diffs.append(max_diff(got, expected.get(sig, {})))
            if not dropped:
                with open(os.path.join(saved_dir, "model.tflite"), "wb") as f:
                    f.write(model)
                written["model.tflite"] = {"signatures": kept, "max_diff": max(diffs), "bytes": len(model)}
                break
            kept = [s for s in kept if s not in dropped]
    return written
