"""Builds the Cython core; where compiling fails, installs the pure-Python package with a warning."""

import os
import sys
import tempfile
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: The compiled core, in pomelo_rpc/_cy: modules written in Cython (``.pyx``, each with
#: a hand-written pure twin in pomelo_rpc/core: the codecs (native frames, MQTT,
#: pinus-rpc's tcp framing), a coroutine's step, the clock, the context variables of the
#: call path, tracing's sampling) ...
CODECS = ("frames", "mqtt", "pinus_tcp", "coro", "clock", "context", "sampling")
#: ... and modules with one source for both cores: ``pomelo_rpc/core/<name>.py``, linked
#: as ``pomelo_rpc/_cy/<name>.py`` and compiled with the ``.pxd`` beside the link.
ONE_SOURCE = ("pending", "dispatch", "meter", "writer", "client_protocol", "server_protocol",
              "json_codec", "json_protocol", "invoke", "forward")
CORE = CODECS + ONE_SOURCE
#: Written into an installed package whose core could not be compiled: pomelo_rpc warns
#: at import when it finds it (pomelo_rpc.core.NOT_COMPILED names the same file).
NOT_COMPILED = "NOT_COMPILED.txt"


def extensions():
    """The core's extensions, from their Cython sources (cythonized by build_ext)."""
    if os.environ.get("POMELO_RPC_PURE", "") not in ("", "0"):
        return []
    return [Extension(f"pomelo_rpc._cy.{name}",
                      [f"pomelo_rpc/_cy/{name}.{'pyx' if name in CODECS else 'py'}"],
                      extra_compile_args=["-O2"])
            for name in CORE]


class OptionalBuildExt(build_ext):
    """build_ext that checks for a C compiler first, cythonizes, compiles the modules in
    parallel, and turns any failure into a warning and the pure-Python core."""

    failed = None

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = True        # one job per CPU

    def build_extensions(self):
        problem = self._compiler_problem()
        if problem:
            return self._fallback(f"no working C compiler: {problem}")
        try:
            from Cython.Build import cythonize
        except ImportError:
            return self._fallback("Cython is not installed")
        # Cython's C files become the sources of the extensions setuptools has prepared
        generated = cythonize(self.extensions, quiet=True, nthreads=os.cpu_count() or 1,
                              compiler_directives={"language_level": 3})
        sources = {ext.name: ext.sources for ext in generated}
        for ext in self.extensions:
            ext.sources = sources[ext.name]
        super().build_extensions()

    def build_extension(self, ext):
        if self.failed:
            return
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._fallback(exc)

    def _compiler_problem(self):
        """Why the C compiler cannot build an extension here, or None."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write("#include <Python.h>\nint probe(void) { return 0; }\n")
            try:
                self.compiler.compile([src], output_dir=tmp, include_dirs=self.include_dirs)
            except Exception as exc:  # noqa: BLE001 - CompileError, missing gcc, headers
                return str(exc) or type(exc).__name__
        return None

    def _fallback(self, why):
        self.failed = str(why)
        msg = (f"pomelo_rpc: the Cython core could not be compiled ({why}); the pure-Python "
               "core will be used (pomelo_rpc.IMPLEMENTATION == 'python', about half the "
               "calls per second). Install a C compiler and the Python headers (Debian: "
               "apt-get install gcc python3-dev) and reinstall to get the compiled core.")
        warnings.warn(msg)
        print("WARNING: " + msg, file=sys.stderr)
        if not self.inplace:        # an installed package says so at import
            folder = os.path.join(self.build_lib, "pomelo_rpc", "_cy")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, NOT_COMPILED), "w") as f:
                f.write(msg + "\n")


class BuildPy(build_py):
    """A wheel's pomelo_rpc/_cy holds only the compiled modules (and its __init__): the
    .py links, .pyx, .pxd and generated .c stay in the sdist."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "pomelo_rpc._cy":
            modules = [m for m in modules if m[1] == "__init__"]
        return modules

    def exclude_data_files(self, package, src_dir, files):
        files = super().exclude_data_files(package, src_dir, files)
        if package == "pomelo_rpc._cy":
            files = []
        return [f for f in files if not f.endswith((".c", ".html", ".so"))]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPy})
