"""Versioned SavedModel export in the TF Serving layout: ``<root>/<name>/<integer version>/``.

An algorithm hands over a ``tf.Module`` whose signatures are ``@tf.function(input_signature=...)``
methods, plus example inputs and the outputs the live model gives for them. The module is saved
to a temporary folder beside the target (a dot-name TF Serving ignores), reloaded there and every
signature is called on the examples and compared with the live outputs - by BOTH loaders: TF2
object loading (``tf.saved_model.load``) and the TF1 graph loader in a ``tf.compat.v1.Session``,
the path of TensorFlow Serving's C++ loader and of ``saved_model_cli run``. Only a folder that
passed both is renamed into the next free version (an existing version is never overwritten); a
failure removes the temporary folder, so a broken model is never published as the highest
version that TF Serving (``--model_base_path``) would pick up by itself.

Why the module tracks raw ``tf.Variable``s: a Keras 3 variable is a wrapper object around a
``tf.Variable``. ``tf.saved_model.save`` writes the wrapper into the object graph (so TF2 loading
works) but the TF1 loader restores only variables that the object graph reaches as real
``tf.Variable``s, so a module that holds Keras layers serves "uninitialized variable" errors
there. :func:`track_raw_variables` attaches the underlying ``tf.Variable`` of every Keras variable
reachable from the module (what ``keras.export.ExportArchive`` does too); we keep our own
``tf.Module`` + ``tf.function`` signatures rather than ExportArchive because several signatures
take extra inputs (a seed, task data) and return dicts, and non-Keras state (plain variables of a
functional policy) must be exported the same way.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Mapping

import numpy as np

from tf_rlnas.errors import UserError


def next_version(model_dir: str) -> int:
    versions = [int(d) for d in os.listdir(model_dir) if re.fullmatch(r"\d+", d)] if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def _reachable_keras_variables(obj, out: list, seen: set, depth: int = 0) -> None:
    import keras

    if id(obj) in seen or depth > 4:
        return
    seen.add(id(obj))
    if isinstance(obj, keras.Variable):
        out.append(obj)
    elif isinstance(obj, keras.layers.Layer):
        out.extend(obj.variables)  # all of them: trainable, BN moving statistics, seed states
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _reachable_keras_variables(o, out, seen, depth + 1)
    elif isinstance(obj, dict):
        for o in obj.values():
            _reachable_keras_variables(o, out, seen, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("tf_rlnas"):
        for o in vars(obj).values():
            _reachable_keras_variables(o, out, seen, depth + 1)


def track_raw_variables(module) -> int:
    """Attach to ``module`` the raw ``tf.Variable`` behind every Keras variable it reaches (see the
    module docstring); returns how many."""
    found: list = []
    seen: set = set()
    for o in vars(module).values():
        _reachable_keras_variables(o, found, seen)
    raw, ids = [], set()
    for v in found:
        tv = v.value  # the tf.Variable behind the Keras variable (TensorFlow backend)
        if id(tv) not in ids:
            ids.add(id(tv))
            raw.append(tv)
    module.serving_variables = raw
    return len(raw)


def publish(module, signatures: Mapping[str, object], root: str, name: str,
            examples: Mapping[str, dict], expected: Mapping[str, dict], atol: float = 1e-5,
            formats: tuple[str, ...] = ("savedmodel",), note=print) -> tuple[str, dict]:
    """Save ``module`` to a temporary folder under ``root/name``, :func:`verify` it there, convert it
    to the other ``formats`` (ONNX, LiteRT: :mod:`tf_rlnas.core.convert`, each checked in its runtime)
    and only then rename it into the next free version; returns the version folder and what
    :func:`~tf_rlnas.core.convert.convert_all` wrote into it ({file: details}). Any failure
    (saving, verification, a conversion, an interrupt) removes the temporary folder and leaves the
    published versions as they were."""
    import tensorflow as tf

    from tf_rlnas.core import convert

    convert.check_available(formats)  # a missing converter: one line, before anything is written
    track_raw_variables(module)

    model_dir = os.path.join(root, name)
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create export folder {model_dir}: {e.strerror}") from None
    tmp = os.path.join(model_dir, f".tmp-export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.saved_model.save(module, tmp, signatures=dict(signatures))
        verify(tmp, examples, expected, atol)
        converted = convert.convert_all(tmp, [f for f in formats if f != "savedmodel"], examples, expected,
                                                note)
        while True:
            target = os.path.join(model_dir, str(next_version(model_dir)))
            try:
                os.rename(tmp, target)  # fails if target exists (non-empty dir): never overwrite
                return target, converted
            except OSError:
                if not os.path.exists(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_tf1(path: str, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one signature through the TF1 SavedModel loader (TF Serving's path) in a fresh graph."""
    import tensorflow as tf

    from tensorflow.python.util import deprecation

    v1 = tf.compat.v1
    with tf.Graph().as_default() as g, v1.Session(graph=g) as sess, deprecation.silence():
        meta = v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def[signature]
        feed = {sig.inputs[k].name: np.asarray(v) for k, v in inputs.items()}
        names = sorted(sig.outputs)
        values = sess.run([sig.outputs[k].name for k in names], feed_dict=feed)
    return dict(zip(names, values))


class VerificationError(UserError):
    """An exported signature does not reproduce the live model: nothing was published. One line like
    a user error, but exit code 1: the fault is ours, not the input's."""

    exit_code = 1


def _check(where: str, sig: str, key: str, got: np.ndarray, want: np.ndarray, atol: float) -> None:
    if got.shape != np.shape(want) or not np.allclose(got, want, atol=atol):
        diff = np.max(np.abs(got - want)) if got.shape == np.shape(want) else f"shape {got.shape} vs {np.shape(want)}"
        raise VerificationError(f"exported signature {sig}:{key} differs from the live model in the {where} "
                           f"(max abs diff {diff}); nothing was exported")


def verify(path: str, examples: Mapping[str, dict], expected: Mapping[str, dict], atol: float = 1e-5) -> None:
    """Reload ``path`` with both loaders and check each signature's outputs against the live model's."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    for sig, inputs in examples.items():
        out = loaded.signatures[sig](**{k: tf.constant(v) for k, v in inputs.items()})
        tf1 = run_tf1(path, sig, inputs)
        for key, want in expected.get(sig, {}).items():
            _check("TF2 loader", sig, key, out[key].numpy(), want, atol)
            _check("TF1/Serving loader", sig, key, tf1[key], want, atol)
