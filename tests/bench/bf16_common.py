"""Shared by tests/bench/accuracy_bf16.py and tests/bench/bench_bf16.py: the CPU's name and
the flags that decide the precision paths, and a `resattn serve` child on a free loopback
port."""

import os
import platform
import signal
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# the /proc/cpuinfo flags that matter for the FP32 and BF16 paths
FLAGS = ("avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_line():
    """'Intel(R) Xeon(R) Processor, 2 CPUs; flags avx512f ... (no amx_bf16 amx_tile ...)'."""
    name, flags = platform.processor() or "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and name in ("?", "x86_64", ""):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    have = [x for x in FLAGS if x in flags]
    lack = [x for x in FLAGS if x not in flags]
    return "%s, %d CPUs; flags %s%s" % (name, os.cpu_count() or 0, " ".join(have),
                                         " (no %s)" % " ".join(lack) if lack else "")


class Server:
    """`resattn serve` on 127.0.0.1, port 0 (the port it prints), stopped by PID."""

    def __init__(self, binary, args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        # the log (one access line per request) goes to a file: an unread pipe would fill
        # and stop the server
        self.log = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0"] + args,
                                  stdout=subprocess.PIPE, stderr=self.log, env=e, text=True)
        self.port = int(self.p.stdout.readline())
        self.url = "http://127.0.0.1:%d" % self.port
        for _ in range(600):
            try:
                if urllib.request.urlopen(self.url + "/readyz", timeout=5).status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server on %s did not get ready" % self.url)

    def stop(self):
        """Stop it; returns its log."""
        self.p.send_signal(signal.SIGTERM)
        self.p.communicate(timeout=60)
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text
