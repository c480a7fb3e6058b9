"""Installs the ``mrcnn`` package (Mask R-CNN for Keras 3: TensorFlow 2, or JAX with ``[jax]``)."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "mrcnn", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def read_requirements():
    """The runtime section of requirements.txt (what comes before the '# Samples and tests' line)."""
    reqs = []
    with open(os.path.join(HERE, "requirements.txt")) as f:
        for line in f:
            if line.startswith("# Samples and tests"):
                break
            line = line.split("#", 1)[0].strip()
            if line:
                reqs.append(line)
    return reqs


setup(
    name="mask-rcnn",
    version=read_version(),
    description="Mask R-CNN for object detection and instance segmentation on Keras 3 and TensorFlow 2",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mrcnn", "mrcnn.*"]),
    python_requires=">=3.10",
    install_requires=read_requirements(),
    # Keras backends besides the default TensorFlow: KERAS_BACKEND=jax (README, "Backends").
    extras_require={"openimages": ["openimages"], "albumentations": ["albumentations"],
                    "jax": ["jax[cpu]>=0.6"]},
    license="MIT",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
