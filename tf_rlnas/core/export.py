"""Versioned SavedModel export in the TF Serving layout: ``<root>/<name>/<integer version>/``.

An algorithm hands over a ``tf.Module`` whose signatures are ``@tf.function(input_signature=...)``
methods, plus example inputs and the outputs the live model gives for them. The module is saved
to a temporary folder beside the target and renamed into the next free version (an existing
version is never overwritten), then reloaded with ``tf.saved_model.load`` and every signature is
called on the examples and compared with the live outputs.
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


def save_versioned(module, signatures: Mapping[str, object], root: str, name: str) -> str:
    """Save ``module`` as the next version under ``root/name``; return the version folder."""
    import tensorflow as tf

    model_dir = os.path.join(root, name)
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create export folder {model_dir}: {e.strerror}") from None
    tmp = os.path.join(model_dir, f".tmp-export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures=dict(signatures))
    while True:
        target = os.path.join(model_dir, str(next_version(model_dir)))
        try:
            os.rename(tmp, target)  # fails if target exists (non-empty dir): never overwrite
            return target
        except OSError:
            if not os.path.exists(target):
                raise


def verify(path: str, examples: Mapping[str, dict], expected: Mapping[str, dict], atol: float = 1e-5) -> None:
    """Reload ``path`` and check each signature's outputs against the live model's."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    for sig, inputs in examples.items():
        fn = loaded.signatures[sig]
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        for key, want in expected.get(sig, {}).items():
            got = out[key].numpy()
            if got.shape != np.shape(want) or not np.allclose(got, want, atol=atol):
                raise RuntimeError(f"exported signature {sig}:{key} differs from the live model "
                                   f"(max abs diff {np.max(np.abs(got - want)) if got.shape == np.shape(want) else 'shape'})")
