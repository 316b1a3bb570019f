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


# ---- the fast tier: `python -m pytest -m fast tests` (~3 min on 2 cores, every algorithm) -------
# Whole files of unit tests, plus per algorithm a learning / resume / CLI test that runs in seconds.
FAST_FILES = {"test_config.py", "test_distributions.py", "test_optim.py", "test_returns.py", "test_maml_units.py",
              "test_sac_ace_units.py", "test_cli.py", "test_report.py", "test_layers.py"}
FAST_TESTS = {
    # REINFORCE: learns the one-shot game; resume equals an uninterrupted run
    "test_reinforce.py::test_oneshot_converges_to_tau[4.0]", "test_reinforce.py::test_resume_matches_uninterrupted",
    # ENAS: controller and child units, a search resume
    "test_enas.py::test_log_prob_of_sampled_arc_equals_recomputed", "test_enas.py::test_skip_penalty_matches_numpy",
    "test_enas.py::test_factorized_reduction_values_and_gradient", "test_enas.py::test_controller_learns_a_synthetic_reward",
    "test_enas.py::test_advantages_ema_and_leave_one_out", "test_enas.py::test_search_resume_restores_everything",
    # SAC / ACE
    "test_sac_ace.py::test_ace_weighted_log_prob_equals_sac_when_all_weights_are_one",
    "test_sac_ace.py::test_soft_reset_mixes_fresh_init_exactly_and_clears_moments",
    "test_reliability.py::test_sac_ace_resume_equals_an_uninterrupted_run_whose_envs_reset_at_the_checkpoint",
    # MAML-TRPO
    "test_maml.py::test_gae_with_masks_matches_a_hand_computation",
    "test_maml.py::test_second_order_meta_gradient_matches_finite_differences_and_differs_from_first_order",
    # PlaNet
    "test_planet.py::test_cem_finds_the_maximum_of_a_quadratic", "test_planet.py::test_kl_and_image_quantisation",
    "test_planet.py::test_loader_takes_half_from_new_episodes_and_bounds_its_cache",
    "test_planet.py::test_phases_choose_the_dataset_and_whether_anything_updates",
    "test_reliability.py::test_planet_resume_equals_an_uninterrupted_run",
    # reliability
    "test_reliability.py::test_export_that_fails_verification_publishes_nothing",
    "test_reliability.py::test_refused_input_leaves_no_run_directory",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path, _, name = item.nodeid.partition("::")
        base = os.path.basename(path)
        if base in FAST_FILES or f"{base}::{name}" in FAST_TESTS or f"{base}::{name.split('[')[0]}" in FAST_TESTS:
            item.add_marker(pytest.mark.fast)
