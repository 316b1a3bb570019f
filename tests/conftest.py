import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # TFP 0.25 compares versions with distutils at import time
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:tensorflow_probability.*")


@pytest.fixture
def repo_root():
    return REPO


def tb_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from a run's TensorBoard event files."""
    import tensorflow as tf
    # the accumulator TensorBoard's own Python data path uses (it purges on SessionLog.START restarts)
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    ea = EventAccumulator(logdir, size_guidance={"tensors": 0})
    ea.Reload()
    out = {}
    for tag in ea.Tags()["tensors"]:
        values = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in ea.Tensors(tag)]
        if values and values[0][1].ndim == 0 and values[0][1].dtype.kind == "f":  # scalars only
            out[tag] = [(s, float(v)) for s, v in values]
    return out
