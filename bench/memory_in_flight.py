"""Client memory with 10,000 calls in flight, against idle (issue target: < 20 MB more).

    python bench/memory_in_flight.py [--calls 10000] [--core cython|python]

The server (its own process) holds every call for two seconds (an async method that
sleeps), so all of them are in flight at once; the client's RSS is read from /proc
before the calls and with them all in flight. ``python -m pomelo_rpc bench`` prints
the same figure; this script measures it alone, for either core.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc.bench import memory_in_flight, start_rpc_server, stop_all  # noqa: E402


def main():
    """Measure, print, exit 1 if the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--core", default=pomelo_rpc.IMPLEMENTATION)
    args = parser.parse_args()
    proc, port = start_rpc_server("mem", pure=args.core == "python")
    try:
        result = pomelo_rpc.run(memory_in_flight(port, args.calls, args.core))
    finally:
        stop_all([proc])
    (name, grown), = result.items()
    print(f"{name} ({args.core} core): +{grown:.1f} MB; "
          f"{'met' if grown < 20 else 'NOT met'}")
    return 0 if grown < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
