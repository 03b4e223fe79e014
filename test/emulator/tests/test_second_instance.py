"""Self-test: a second emulator instance with TLS, --bool-as-int and a UTC project."""

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

from harness import GENERATOR, Emulator, make_cert


class TestSecondInstance(unittest.TestCase):
    """TLS, --bool-as-int and a UTC project on a small data set."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="emu-selftest2-")
        cls.data = os.path.join(cls.tmp, "data")
        subprocess.run([sys.executable, GENERATOR, "--out", cls.data, "--events", "300", "--seed", "9"], check=True,
                       stderr=subprocess.DEVNULL)
        cls.cert = make_cert(cls.tmp)
        cls.emu = Emulator(cls.data, ["--bool-as-int"], tls=cls.cert)

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_tls(self):
        if not self.cert:
            self.skipTest("openssl not available")
        st, b, _ = self.emu.query("SELECT count() FROM events", project=1)
        self.assertEqual((st, b["results"]), (200, [[300]]))
        # a plain-HTTP client gets no answer from the TLS port
        c = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=5)
        with self.assertRaises((http.client.HTTPException, ConnectionError, socket.timeout, OSError)):
            c.request("POST", "/api/projects/1/query/", "{}")
            c.getresponse().read()
        c.close()
        # the server still works after that
        self.assertEqual(self.emu.query("SELECT 1", project=1)[0], 200)

    def test_bool_as_int_and_utc(self):
        st, b, _ = self.emu.query("SELECT is_deleted, is_identified, created_at FROM raw_persons LIMIT 20", project=1)
        self.assertEqual(st, 200)
        self.assertTrue(all(r[0] in (0, 1) and r[1] in (0, 1) and not isinstance(r[0], bool) for r in b["results"]))
        self.assertTrue(all(r[2].endswith("Z") for r in b["results"]))
        self.assertEqual(b["types"][2][1], "DateTime64(3, 'UTC')")
        # --bool-as-int renders Boolean columns ($is_bounce) as 1/0 too
        st, b, _ = self.emu.query("SELECT $is_bounce FROM sessions LIMIT 50", project=1)
        self.assertEqual(st, 200)
        self.assertTrue(any(r[0] is not None for r in b["results"]))
        # $is_bounce may be null (as the real PostHog can answer); the others are 1/0
        self.assertTrue(all(r[0] is None or (r[0] in (0, 1) and not isinstance(r[0], bool))
                            for r in b["results"]))
