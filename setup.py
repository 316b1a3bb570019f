import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
config_files = {}
for root, _, files in os.walk(os.path.join(here, "configs")):
    rel = os.path.relpath(root, here)
    config_files[os.path.join("share", "tf_rlnas", rel)] = [os.path.join(rel, f) for f in files if f.endswith(".yaml")]

ONNX = ["tf2onnx==1.17.0", "onnx==1.23.2", "onnxruntime==1.32.0"]
TFLITE = ["ai-edge-litert==2.3.0"]  # the LiteRT interpreter; the converter is TensorFlow's own
EXPORT = ONNX + TFLITE

setup(
    name="tf_rlnas",
    version="0.1.0",
    description="TensorFlow 2 / Keras reinforcement learning and RL-driven neural architecture search "
                "(ENAS, MAML-TRPO, SAC/ACE, REINFORCE, PlaNet)",
    long_description=open(os.path.join(here, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["tf_rlnas", "tf_rlnas.*"]),
    data_files=list(config_files.items()),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",
        "tensorflow-datasets>=4.9,<5",
        "gymnasium[mujoco,classic-control]>=1.0,<2",
        # dm-control 1.0.50 (PlaNet's DMC tasks) needs mujoco >= 3.17 and crashes on 4.0; gymnasium 1.4's v5
        # envs run on 3.17 too: one mujoco for both
        "mujoco>=3.17,<4",
        "pyyaml>=6",
        "rich>=13",
        "numpy>=1.26,<3",
        "scikit-learn>=1.4",
        "lingam>=1.9",
        "threadpoolctl>=3",
        "imageio>=2.30",
        "imageio-ffmpeg>=0.5",  # ships its own ffmpeg binary: MP4 videos of evaluation episodes
        "scipy>=1.10",  # tf_rlnas report: bootstrap confidence intervals, trimmed means
        "matplotlib>=3.7",  # tf_rlnas report: the curves
    ],
    extras_require={
        # ray: the MAML Ray-sampler test; dm-control: the PlaNet DMC pixel test
        "test": ["pytest>=8", "pytest-timeout>=2", "ray>=2.40", "dm-control>=1.0.50", *EXPORT],
        "ray": ["ray>=2.40"],
        # DeepMind Control tasks for PlaNet. dm-control 1.0.50 needs mujoco >= 3.17 and crashes on
        # mujoco 4.0 ('MjModel' has no attribute 'flex_vertedge'); install_requires pins mujoco < 4,
        # which gymnasium's v5 envs also run on: one mujoco for both.
        "dmc": ["dm-control>=1.0.50"],
        # tf_rlnas export --format onnx / tflite: the versions verified with TensorFlow 2.21 (tf2onnx 1.17.0
        # declares protobuf>=3.20, no conflict with TF's protobuf; its own CI stops at TF 2.15, so every
        # conversion is checked in its runtime before it is published)
        "onnx": ONNX,
        "tflite": TFLITE,
        "export": EXPORT,
        "and-cuda": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
    entry_points={"console_scripts": ["tf_rlnas=tf_rlnas.cli:main"]},
)
