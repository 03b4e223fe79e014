#!/usr/bin/python3
"""Self-test of the PostHog Query API emulator (stdlib unittest).

    python3 test/emulator_selftest.py [-v] [TestClass.test_name ...]

Runs every test case in test/emulator/tests/test_*.py (shared harness: test/emulator/tests/harness.py).
Generates data with generate_data.py (plus a bulk of small events so that more than 50,000 rows
exist), starts test/emulator/server.py as a subprocess on a free port and talks HTTP to it.
A second small instance checks TLS, --bool-as-int and a UTC project.  Exits non-zero on failure.
"""

import glob
import importlib
import os
import sys
import unittest

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emulator", "tests")


def load_test_classes():
    """Import each test module and bring its TestCase classes here, so that unittest.main() finds them
    (and names such as TestQueries.test_functions work on the command line)."""
    sys.path.insert(0, TESTS)
    for path in sorted(glob.glob(os.path.join(TESTS, "test_*.py"))):
        module = importlib.import_module(os.path.basename(path)[:-3])
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, unittest.TestCase) and obj.__module__ == module.__name__:
                if name in globals():
                    raise RuntimeError("test class %s is defined twice (%s)" % (name, path))
                globals()[name] = obj


load_test_classes()

if __name__ == "__main__":
    unittest.main()
