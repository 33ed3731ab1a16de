"""Packaging for covidspark.

``pip install .`` installs the library, the ``covidspark`` command and the
runtime dependencies except Spark, which a cluster provides; ``pip install
.[spark]`` adds pyspark for local mode and ``pip install .[spark,test]`` what
the test suite needs.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "covidspark", "_version.py"), encoding="utf-8") as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def read_readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


# pyspark is an extra: Databricks and EMR bring their own Spark, and a second one
# from the index beside it would shadow the runtime's. Locally: covidspark[spark].
SPARK = ["pyspark>=3.5,<5"]

INSTALL_REQUIRES = [
    # TensorFlow is the Keras backend; on GPU clusters the same wheel uses CUDA.
    "tensorflow>=2.16",
    "keras>=3",
    "h5py",
    # pyspark 4.x warns that pandas 3 is not fully supported; Databricks 16.4 ships 1.5.3.
    "pandas>=1.5,<3",
    "pyarrow>=11",
    "pillow>=9.5",
    "numpy>=1.23",
    # Report figures (confusion matrices, ROC and PR curves), drawn with the Agg backend.
    "matplotlib>=3.5",
    # --config params.yaml for the jobs.
    "pyyaml>=5.4",
]

SERVE = ["starlette>=0.40", "uvicorn>=0.23", "python-multipart>=0.0.9"]

EXTRAS_REQUIRE = {
    "spark": SPARK,
    # A Spark Connect client (Databricks standard access mode, serverless, builder.remote()).
    "connect": ["pyspark[connect]>=3.5,<5"],
    "dicom": ["pydicom>=2.4"],
    "openvino": ["openvino>=2024.0"],
    # engine="torch": Keras 3 on PyTorch (CPU or CUDA; PyPI's Linux wheel carries CUDA).
    "torch": ["torch>=2.4", "keras>=3.6"],
    "clahe": ["opencv-python-headless>=4.5"],
    # covidspark serve: the REST API and upload page.
    "serve": SERVE,
    # The browser test drives Debian's chromium through Playwright (no browser download).
    "test": ["pytest>=7", "pytest-xdist>=3", "scikit-learn>=1.2", "pydicom>=2.4", "openvino>=2024.0",
             "opencv-python-headless>=4.5", *SERVE, "playwright>=1.40"],
}

setup(
    name="covidspark",
    version=read_version(),
    description=(
        "Chest X-ray classification (COVID-19 / normal / pneumonia) at cluster "
        "scale: Spark ingestion, a Keras DeepImageFeaturizer, MLlib classifiers."
    ),
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["covidspark", "covidspark.*"]),
    package_data={"covidspark.serving": ["static/*.html"],
                  "covidspark.runtime": ["log4j2.properties"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["covidspark=covidspark.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
