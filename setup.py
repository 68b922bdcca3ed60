"""Build of the optional C accelerator of ``mailwarden analyze`` (everything else is in
pyproject.toml). ``optional=True``: without a C compiler and Python headers the package installs
and runs on the pure-Python code (``mailwarden.sources.accel.available()`` is then False)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mailwarden.sources._postfixscan",
            ["src/mailwarden/sources/_postfixscan.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"],
        )
    ]
)
