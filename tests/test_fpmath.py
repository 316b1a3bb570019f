"""oneDNN's bf16 math mode for SAC's bfloat16 layers (tf_rlnas.nn.precision, tf_rlnas.nn.fpmath).

The pytest process imported TensorFlow without the mode, so here the fpmath ops are exact float32
(their gradient is checked against tf.matmul); a child process started with the mode checks that
they then compute in bfloat16 and that SAC picks them, and that the CLI asks for the mode only for
configs that compute that way."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_rlnas import config as C
from tf_rlnas import registry
from tf_rlnas.nn import precision
from tf_rlnas.nn.fpmath import bf16_fpmath_active, fpmath_matmul


def test_fpmath_matmul_and_its_gradient_equal_matmul_without_the_mode():
    assert not bf16_fpmath_active()  # this process: TF loaded without TF_SET_ONEDNN_FPMATH_MODE
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(7, 5)), tf.float32)
    w = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    up = tf.constant(rng.normal(size=(7, 3)), tf.float32)  # a non-uniform upstream gradient
    grads = []
    for mm in (fpmath_matmul, tf.matmul):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = mm(x, w)
            loss = tf.reduce_sum(y * up)
        grads.append((y, *tape.gradient(loss, [x, w])))
    for mine, ref in zip(*grads):
        np.testing.assert_allclose(mine.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    # and the closed forms: dL/dx = up w^T, dL/dw = x^T up
    np.testing.assert_allclose(grads[0][1].numpy(), up.numpy() @ w.numpy().T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0][2].numpy(), x.numpy().T @ up.numpy(), rtol=1e-5, atol=1e-5)


def _cfg(algo, *sets, config=None):
    spec = registry.get(algo)
    files = [config] if config else []
    return C.resolve(spec.load("config"), files, list(sets))


def test_the_mode_is_requested_only_for_configs_that_compute_bfloat16_through_it(monkeypatch):
    """The CLI's one decision before TF loads (clikit.prepare_process -> the algorithm's registry hook ->
    precision.prepare_process) asks for the mode exactly for SAC/ACE configs that resolve to bfloat16
    without XLA."""
    from tf_rlnas.clikit import prepare_process

    asked = []
    monkeypatch.setattr(precision, "request_bf16_fpmath", lambda: asked.append(True) or True)

    def requests(algo, *sets):
        asked.clear()
        prepare_process(algo, _cfg(algo, *sets))
        return bool(asked)
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert requests("sac")  # auto -> bfloat16 on a bf16 CPU
    assert requests("ace")
    assert not requests("sac", "agent.matmul_dtype=float32")
    assert not requests("sac", "train.jit_compile=true")  # XLA: its own dots
    assert not requests("maml_trpo")  # einsums that must stay float32
    assert not requests("enas")
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert not requests("sac")  # auto -> float32 without native bf16
    assert requests("sac", "agent.matmul_dtype=bfloat16")  # asked for explicitly


def test_request_sets_the_variable_only_before_tensorflow_loads_and_never_over_the_users(monkeypatch):
    env = precision.FPMATH_ENV
    monkeypatch.setenv(env, "unset-below")  # records the original state: restored after the test, so the
    monkeypatch.delenv(env)                  # BF16 set below cannot leak into later tests' subprocesses
    assert precision.request_bf16_fpmath() is False  # TF is loaded in this process: too late
    assert env not in os.environ
    monkeypatch.delitem(sys.modules, "tensorflow")  # as the CLI sees it before importing TF
    assert precision.request_bf16_fpmath() is True
    assert os.environ[env] == "BF16"
    monkeypatch.setenv(env, "STRICT")  # the user's choice wins
    assert precision.request_bf16_fpmath() is False
    assert os.environ[env] == "STRICT"


def test_the_request_test_left_the_environment_as_it_found_it():
    # runs after the test above (file order): a leaked BF16 would put later CLI subprocesses
    # (MAML-TRPO, ENAS) in bf16 math
    assert os.environ.get(precision.FPMATH_ENV) != "BF16"


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from tf_rlnas import clikit, config as C, registry
    from tf_rlnas.nn import precision
    spec = registry.get("sac")
    cfg = C.resolve(spec.load("config"), [], ["agent.matmul_dtype=bfloat16"])
    clikit.prepare_process("sac", cfg)  # what `tf_rlnas train` does before TF loads
    import tensorflow as tf
    from tf_rlnas.nn.fpmath import bf16_fpmath_active, fpmath_matmul
    from tf_rlnas.algos.sac.learner import SACLearner
    from tf_rlnas.algos.sac.networks import Linear
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(64, 96)), tf.float32)
    w = tf.constant(rng.normal(size=(96, 32)), tf.float32)
    exact = x.numpy().astype(np.float64) @ w.numpy().astype(np.float64)
    bf = lambda a: tf.cast(tf.cast(a, tf.bfloat16), tf.float32).numpy().astype(np.float64)
    rounded_inputs = bf(x) @ bf(w)  # bf16 products, accumulated in (near) exact arithmetic
    y = fpmath_matmul(x, w).numpy()
    lin = Linear(32, matmul_dtype="bfloat16", bf16_via="fpmath")
    lin.build((None, 96))
    lin.kernel.assign(w)
    sac = SACLearner(5, 2, cfg.agent, seed=0)
    xla = SACLearner(5, 2, cfg.agent, seed=0, jit_compile=True)
    print(json.dumps({
        "active": bf16_fpmath_active(),
        "err_vs_exact": float(np.abs(y - exact).max()),
        "err_vs_bf16_inputs": float(np.abs(y - rounded_inputs).max()),
        "layer_matches": bool(np.array_equal(lin(x).numpy(), y)),
        "sac_via": sac.bf16_via, "xla_via": xla.bf16_via,
        "full_precision_err": float(np.abs(lin(x, full_precision=True).numpy() - exact).max()),
    }))
""")


@pytest.mark.skipif(not precision.native_bfloat16(), reason="the CPU has no native bfloat16")
def test_with_the_mode_fpmath_products_are_bfloat16_and_sac_uses_them():
    env = {k: v for k, v in os.environ.items() if k != precision.FPMATH_ENV}
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if not r["active"]:
        # oneDNN ignores the math mode for BatchMatMul on some native-bfloat16 CPUs (measured: an AMD
        # EPYC with AVX512_BF16, TF 2.21): the learners must then see it and fall back to casts
        assert r["sac_via"] == "cast" and r["xla_via"] == "cast", r
        assert r["err_vs_exact"] < 1e-3  # and the product really was float32
        pytest.skip("oneDNN's BF16 math mode has no effect on this CPU's BatchMatMul (the fallback to casts "
                    "was checked)")
    # the inputs were rounded to bfloat16 (an error float32 would not make: ~1e-5 here) and the
    # products accumulated in float32 (the result is the bf16-input product to float32 rounding)
    assert r["err_vs_exact"] > 1e-2
    assert r["err_vs_bf16_inputs"] < 1e-3
    assert r["layer_matches"]  # Linear(bfloat16, fpmath) is exactly the fpmath product (no bias, linear)
    assert r["full_precision_err"] < 1e-3  # acting / serving stay float32 with the mode on
    assert r["sac_via"] == "fpmath" and r["xla_via"] == "cast"


def test_the_cli_notes_an_inherited_mode_on_runs_that_do_not_want_it(monkeypatch, capsys):
    from tf_rlnas.clikit import prepare_process

    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    monkeypatch.setenv(precision.FPMATH_ENV, "BF16")  # e.g. exported in the shell for SAC runs
    prepare_process("maml_trpo", _cfg("maml_trpo"))
    assert "compute in bfloat16" in capsys.readouterr().err
    prepare_process("sac", _cfg("sac"))  # a run that computes this way: nothing to say
    assert capsys.readouterr().err == ""


def test_large_bf16_layers_keep_the_cast_path():
    """fpmath only pays for small kernels (256 x 256 measured faster, 1024 x 1024 slower than casts)."""
    from tf_rlnas.algos.sac.networks import FPMATH_MAX_KERNEL, Linear

    small, large = Linear(256, matmul_dtype="bfloat16", bf16_via="fpmath"), Linear(1024, matmul_dtype="bfloat16", bf16_via="fpmath")
    small.build((None, 256))
    large.build((None, 1024))
    assert 256 * 256 <= FPMATH_MAX_KERNEL < 1024 * 1024
    assert small.bf16_via == "fpmath" and large.bf16_via == "cast"
