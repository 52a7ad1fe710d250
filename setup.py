from setuptools import find_packages, setup

setup(
    name="tf_mtvib",
    version="0.1.0",
    description="Multi-Task Variational Information Bottleneck (MTVIB) in TensorFlow 2 / Keras 3 / TFP",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_mtvib", "tf_mtvib.*"]),
    package_data={"tf_mtvib.reproduce": ["paper_tables.csv"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.20,<2.22",
        "keras>=3.10,<4",
        # TFP 0.25 imports tf_keras at start-up (only tfp.layers uses it; we never do).
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.20,<2.22",
        "keras-tuner>=1.4,<2",
        "scikit-learn>=1.3",  # keras-tuner's BayesianOptimization
        "tensorboard>=2.20,<2.22",
        "numpy>=1.26",
        "pillow>=10",
        "matplotlib>=3.8",
        "ai-edge-litert>=2.0",
    ],
    extras_require={
        # cleverhans: the reference CW-L2 that benchmarks/cw_reference.py checks tf_mtvib.cw against (its TF2 code)
        "test": ["pytest>=8", "cleverhans>=4,<5"],
        # benchmarks/bench_torch.py only (the PyTorch peer); never needed by the library or its tests
        "bench": ["torch>=2.4"],
    },
    # The main commands; each is also `python -m tf_mtvib.<command>` (train: `python train.py`).
    entry_points={"console_scripts": [
        "tf-mtvib-train=tf_mtvib.train:main",
        "tf-mtvib-evaluate=tf_mtvib.evaluate:main",
        "tf-mtvib-export=tf_mtvib.export:main",
        "tf-mtvib-tune=tf_mtvib.tune:main",
        "tf-mtvib-reproduce=tf_mtvib.reproduce.__main__:main",
        "tf-mtvib-launch=tf_mtvib.launch:main",
    ]},
)
