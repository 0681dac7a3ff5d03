"""``plantwatch --version``: the package's version and the build of its compiled kernels (the
Cython and numpy they were built with, the compiler, the flags, the time of compilation), so
that what runs on a gateway can be told from the wheel it came from."""

from __future__ import annotations

import argparse


def version_lines() -> list[str]:
    """The package's version, the Python it runs on and the build of each compiled kernel module."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import detectors

    try:
        own = version("plantwatch")
    except PackageNotFoundError:
        own = "(not installed)"
    lines = [f"plantwatch {own}", f"python {platform.python_version()} {platform.machine()}"]
    for name, build in detectors.kernels_build().items():
        if isinstance(build, str):
            lines.append(f"{name}: {build}")
        else:
            lines.append(f"{name}: Cython {build['cython']}, numpy {build['numpy']}, {build['compiler']}, "
                         f"{build['flags']}, built {build['built']} ({build['file']})")
    return lines


class VersionAction(argparse.Action):
    """``plantwatch --version``: print ``version_lines()`` and exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and the kernels' build, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print("\n".join(version_lines()))
        parser.exit()
