"""The one thing setup.cfg cannot declare: the tracer's compiled stop loop
(sidecar/stoploop/_stoploop.c). `pip install .` and `pip install -e .` build it; an install
without a C compiler fails here rather than run a sidecar that is several times dearer
(set CONTAINERSCAN_NO_EXTENSIONS=1 to install without it: the tracer then does every stop
in Python)."""

import os

from setuptools import Extension, setup

EXTENSIONS = [
    Extension(
        "sidecar.stoploop._stoploop",
        sources=["sidecar/stoploop/_stoploop.c"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
    )
]

setup(ext_modules=[] if os.environ.get("CONTAINERSCAN_NO_EXTENSIONS") else EXTENSIONS)
