#!/usr/bin/env python3
"""Runs every curl example of README.md, as written, against a real `resattn serve`.

  python3 tests/integration/readme_examples.py [path/to/resattn]     (default build/resattn)

Each ```sh block of the README that holds a `curl` command is run with `sh -e` from a copy
of the checkout's models/ folder (so files the examples write stay out of the checkout),
with the README's address (127.0.0.1:8080) replaced by the test server's, which serves the
built-in model on a free loopback port. Such a block may hold only `curl`, `cd` and
variable assignments besides comments; a block that cannot run here must be preceded by
the line `<!-- readme-examples: skip (REASON) -->`, and is reported. Every curl must answer
2xx, and its answer is checked where it says something checkable:

  - an answer for one of the example pictures names the label in the picture's file name
    (top label of /predict and of a v2 image request, arg max of logits);
  - the tensor requests (req.json, req.bin, x.npy, tfs.json, made from 6_coat.png) give the
    logits of that picture sent as an image (within 1e-6);
  - any other answer is non-empty and not an error.

First, tools/make_requests.py must still write exactly the committed request files.
Exits 1 on any failure. Standard library only.
"""

import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "models", "examples")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_requests  # noqa: E402

SKIP = re.compile(r"<!--\s*readme-examples:\s*skip\b(.*?)-->")
ADDRESS = re.compile(r"(https?://)(127\.0\.0\.1|localhost):8080")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
REQUEST_FILES = ("req.json", "req.bin", "x.npy", "tfs.json")

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def norm(s):
    return re.sub(r"[^a-z0-9]", "", s.lower())


def label_of(png_name):
    """'9_ankle-boot.png' -> 'ankleboot'."""
    return norm(re.sub(r"^\d+[_-]", "", os.path.splitext(png_name)[0]))


def same_label(answer, want):
    a = norm(answer)
    return a == want or a.startswith(want) or want.startswith(a)


def sh_blocks(readme):
    """(first line number, text, skip reason or None) of every ```sh block."""
    lines, blocks, i = readme.split("\n"), [], 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            prev = next((lines[j] for j in range(start - 2, -1, -1) if lines[j].strip()), "")
            m = SKIP.search(prev)
            blocks.append((start + 1, "\n".join(body), m.group(1).strip(" ()") if m else None))
        i += 1
    return blocks


def commands(text):
    """The block's logical command lines: continuations joined, comments and blanks dropped."""
    out, cur = [], ""
    for line in text.split("\n"):
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append((cur + line).strip())
        cur = ""
    return out


def runnable(cmds):
    """None when every command is curl, cd or an assignment, else the first other one."""
    for c in cmds:
        word = c.split()[0]
        if word not in ("curl", "cd") and not ASSIGNMENT.match(c):
            return c
    return None


def start_server(binary, tmp):
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "server.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0",
                             "--port-file", port_file], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"resattn serve exited {proc.returncode} (log {log.name})")
        try:
            port = int(open(port_file).read().strip())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("resattn serve was not ready within 60 s")


def npy_floats(data):
    """The float32 values of a .npy file (little-endian, C order)."""
    n = struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + n].decode("latin1")
    if "'<f4'" not in header:
        raise ValueError(f"npy dtype is not <f4: {header.strip()}")
    body = data[10 + n:]
    return list(struct.unpack("<%df" % (len(body) // 4), body))


def answer_logits_and_label(body, labels):
    """(logits or None, top label or None) of an answer, whatever API gave it."""
    if body[:6] == b"\x93NUMPY":
        logits = npy_floats(body)
        return logits, labels[max(range(len(logits)), key=logits.__getitem__)]
    try:
        j = json.loads(body)
    except ValueError:
        return None, None
    if isinstance(j, dict) and "error" in j:
        raise ValueError(f"error answer: {j['error']}")
    logits = top = None
    if isinstance(j, dict) and isinstance(j.get("predictions"), list) and j["predictions"]:
        p = j["predictions"][0]
        if isinstance(p, dict):  # /predict
            top = p.get("label")
        elif isinstance(p, list):  # TF Serving: logits per instance
            logits = p
    if isinstance(j, dict) and isinstance(j.get("outputs"), list):  # v2
        for o in j["outputs"]:
            if o.get("name") == "logits" and "data" in o:
                logits = o["data"][:len(labels)]
            if o.get("name") == "top_k_labels" and o.get("data"):
                top = o["data"][0]
            if (o.get("datatype") == "BYTES" and o.get("data") and top is None
                    and o.get("name") in ("logits", "probabilities")):  # classification
                parts = str(o["data"][0]).split(":")  # "value:index:label", best first
                if len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) < len(labels):
                    top = labels[int(parts[1])]
    if logits is not None and top is None:
        top = labels[max(range(len(logits)), key=logits.__getitem__)]
    return logits, top


def check_call(n, log, labels, pictures, ref_logits, tensor_picture):
    """Check curl call n of the current block: its status, and its answer where checkable."""
    args = open(os.path.join(log, f"{n}.args")).read().split("\n")[:-1]
    cwd = open(os.path.join(log, f"{n}.cwd")).read().strip()
    headers = open(os.path.join(log, f"{n}.headers"), "rb").read().decode("latin1")
    shown = " ".join(a if len(a) < 80 else a[:60] + "…" for a in args)
    statuses = re.findall(r"^HTTP/\S+ (\d+)", headers, re.M)
    if not statuses or not statuses[-1].startswith("2"):
        fail(f"curl {shown}: status {statuses[-1] if statuses else 'none'}")
        return
    body = open(os.path.join(log, f"{n}.out"), "rb").read()
    if "-o" in args:
        body = open(os.path.join(cwd, args[args.index("-o") + 1]), "rb").read()
    if not body:
        fail(f"curl {shown}: empty answer")
        return
    # which picture was sent: a file named in the arguments, or its base64 inside them
    joined = " ".join(args)
    sent = [p for p, b64 in pictures.items() if re.search(r"@" + re.escape(p) + r"\b", joined)
            or b64 in joined]
    tensor = [f for f in REQUEST_FILES if "@" + f in joined]
    try:
        logits, top = answer_logits_and_label(body, labels)
    except ValueError as e:
        fail(f"curl {shown}: {e}")
        return
    what = ""
    if sent or tensor:
        picture = sent[0] if sent else tensor_picture
        if top is None:
            fail(f"curl {shown}: no label or logits in the answer: {body[:200]!r}")
            return
        if not same_label(top, label_of(picture)):
            fail(f"curl {shown}: top label '{top}', expected the one of {picture}")
            return
        what = f" -> {top}"
    if tensor:
        if logits is None or len(logits) != len(ref_logits):
            fail(f"curl {shown}: no logits to compare with the picture's")
            return
        err = max(abs(a - b) for a, b in zip(logits, ref_logits)) / max(map(abs, ref_logits))
        if not err <= 1e-6:
            fail(f"curl {shown}: logits differ from {tensor_picture} sent as an image "
                 f"(max relative error {err:.3g})")
            return
        what += f", logits as the picture's (error {err:.1g})"
    print(f"ok   curl {shown}{what}")


def check_request_files(tmp):
    """tools/make_requests.py writes exactly the committed request files."""
    out = os.path.join(tmp, "made")
    make_requests.write_all(make_requests.DEFAULT_IMAGE, make_requests.DEFAULT_MODEL, out)
    for f in REQUEST_FILES:
        committed = os.path.join(EXAMPLES, f)
        if not os.path.exists(committed):
            fail(f"models/examples/{f} is not committed (python3 tools/make_requests.py)")
        elif open(committed, "rb").read() != open(os.path.join(out, f), "rb").read():
            fail(f"models/examples/{f} differs from what tools/make_requests.py writes "
                 "(run it again and commit)")
        else:
            print(f"ok   models/examples/{f} is what tools/make_requests.py writes")


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build/resattn"))
    if shutil.which("curl") is None:
        print("readme_examples: curl is not installed", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="resattn-readme-")
    proc = None
    try:
        check_request_files(tmp)
        cfg = make_requests.model_config(make_requests.DEFAULT_MODEL)
        labels = cfg["labels"]
        pictures = {p: base64.b64encode(open(os.path.join(EXAMPLES, p), "rb").read()).decode()
                    for p in sorted(os.listdir(EXAMPLES)) if p.endswith(".png")}
        tensor_picture = json.load(open(os.path.join(EXAMPLES, "req.json")))["id"]
        work = os.path.join(tmp, "work")
        shutil.copytree(os.path.join(ROOT, "models"), os.path.join(work, "models"))
        proc, port = start_server(binary, tmp)
        # the reference: the tensor requests' picture sent as a v2 image (BYTES) request
        req = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                      "data": [pictures[tensor_picture]]}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/models/default/infer", data=req,
                headers={"Content-Type": "application/json"}), timeout=30) as r:
            ref_logits, _ = answer_logits_and_label(r.read(), labels)
        readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
        ran = 0
        for line, text, skip in sh_blocks(readme):
            cmds = commands(text)
            curls = sum(1 for c in cmds if c.split()[0] == "curl")
            if not curls:
                continue
            if skip is not None:
                print(f"skip README.md:{line}: {curls} curl commands ({skip})")
                continue
            other = runnable(cmds)
            if other:
                fail(f"README.md:{line}: a block with curl examples also runs '{other[:60]}': "
                     "not runnable here; mark it <!-- readme-examples: skip (REASON) -->")
                continue
            log = os.path.join(tmp, f"log{line}")
            os.makedirs(log)
            script = ('n=0\ncurl() {\n  n=$((n + 1))\n  printf "%%s\\n" "$@" > "%s/$n.args"\n'
                      '  pwd > "%s/$n.cwd"\n'
                      '  command curl -sS --max-time 60 -D "%s/$n.headers" "$@" > "%s/$n.out"\n'
                      '}\n' % (log, log, log, log)) + ADDRESS.sub(rf"\g<1>127.0.0.1:{port}", text)
            r = subprocess.run(["sh", "-e", "-c", script], cwd=work, capture_output=True,
                               text=True, timeout=300)
            done = len([f for f in os.listdir(log) if f.endswith(".args")])
            if r.returncode != 0 or done != curls:
                fail(f"README.md:{line}: the block stopped after {done} of {curls} curl commands "
                     f"(exit {r.returncode}): {r.stderr.strip()[:300]}")
            for n in range(1, done + 1):
                check_call(n, log, labels, pictures, ref_logits, tensor_picture)
            ran += done
        if ran < 10:
            fail(f"only {ran} curl examples found in README.md")
        print(f"readme_examples: {ran} curl examples run, {len(failures)} failed")
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        fail(str(e))
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if failures:
            print(f"(server log and curl answers kept in {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
