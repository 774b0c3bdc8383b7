"""The compiled type-detection filter (rhinobox/ingest/magic_*.cc); everything else is in pyproject.toml.

Optional: without a C++ compiler or RE2's headers (Debian: g++, libre2-dev) the install goes on and
the Python filter runs alone (rhinobox/ingest/magic_native.py says so in the log). With Hyperscan's
headers (Debian: libhyperscan-dev, amd64) the filter searches text with it.
"""

from pathlib import Path

from setuptools import Extension, setup

HYPERSCAN = Path("/usr/include/hs/hs.h").exists()

setup(
    ext_modules=[
        Extension(
            "rhinobox.ingest._magic_native",
            sources=["rhinobox/ingest/magic_native.cc", "rhinobox/ingest/magic_plain.cc"],
            depends=["rhinobox/ingest/magic_plain.h"],
            libraries=["re2", "hs"] if HYPERSCAN else ["re2"],
            define_macros=[("RHINOBOX_HYPERSCAN", "1")] if HYPERSCAN else [],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden"],
            optional=True,
        )
    ]
)
