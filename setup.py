"""Builds the Cython core; where compiling fails, installs the pure-Python package with a warning."""

import os
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The compiled core, in pomelo_rpc/_cy: modules written in Cython (``.pyx``, each with
#: a hand-written pure twin in pomelo_rpc/core: the codecs, and a coroutine's step) ...
CODECS = ("frames", "mqtt", "coro")
#: ... and modules with one source for both cores: ``pomelo_rpc/core/<name>.py``, linked
#: as ``pomelo_rpc/_cy/<name>.py`` and compiled with the ``.pxd`` beside the link.
ONE_SOURCE = ("pending", "dispatch", "writer", "client_protocol", "server_protocol",
              "invoke")
CORE = CODECS + ONE_SOURCE


def extensions():
    if os.environ.get("POMELO_RPC_PURE", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        warnings.warn("pomelo_rpc: Cython is not available; installing the pure-Python core")
        return []
    exts = [Extension(f"pomelo_rpc._cy.{name}",
                      [f"pomelo_rpc/_cy/{name}.{'pyx' if name in CODECS else 'py'}"],
                      extra_compile_args=["-O2"])
            for name in CORE]
    return cythonize(exts, compiler_directives={"language_level": 3}, quiet=True)


class OptionalBuildExt(build_ext):
    """build_ext that turns a compile failure into a warning and the pure-Python core."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    def _fallback(self, exc):
        msg = (f"pomelo_rpc: the Cython core could not be compiled ({exc}); "
               "the pure-Python core will be used (pomelo_rpc.IMPLEMENTATION == 'python')")
        warnings.warn(msg)
        print("WARNING: " + msg, file=sys.stderr)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
