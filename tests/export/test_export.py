#!/usr/bin/python3
"""tools/export_pytorch.py and the server's loader agree on which configs are valid.

For each bad config (unknown keys such as "stdev" or "interpolation" in "preprocess", a
colour that contradicts input.channels, mean/std of the wrong length, labels that do not
match num_classes, unknown top-level or input keys, a name unusable in URLs, ...):
  - the exporter refuses it with a message naming the key and writes nothing;
  - the same config written without the exporter's checks is refused by the C loader
    (`resattn inspect` and `resattn serve` exit non-zero with one line naming the key).
A complete ImageNet-style config passes both. --labels FILE (one label a line) is stored
as the config's labels; a wrong count, a blank line or labels given twice are errors.

    RESATTN_BIN=build/resattn /usr/bin/python3 tests/export/test_export.py
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import torch  # noqa: E402
from export_pytorch import (ExportError, export, main, read_safetensors,  # noqa: E402
                            write_safetensors)
from resattn_torch import build_model, randomize  # noqa: E402

BIN = os.environ.get("RESATTN_BIN", os.path.join(ROOT, "build", "resattn"))
IMAGENET_PP = {"color": "rgb", "resize": "shorter", "resize_size": 18, "scale": 255,
               "invert": False, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
BASE = {"name": "tiny", "block": "basic", "layers": [1, 1], "stem": "cifar",
        "attention": "se", "num_classes": 3, "input": {"channels": 3, "height": 16,
                                                       "width": 16},
        "labels": ["cat", "dog", "bird"], "preprocess": IMAGENET_PP}

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def edited(path, value):
    """BASE with the dotted path set to value (None deletes it)."""
    cfg = copy.deepcopy(BASE)
    keys = path.split(".")
    d = cfg
    for k in keys[:-1]:
        d = d[k]
    if value is None:
        d.pop(keys[-1], None)
    else:
        d[keys[-1]] = value
    return cfg


# (description, config, needle the exporter's and the loader's message both contain)
BAD = [
    ("preprocess stdev", edited("preprocess.stdev", [0.2, 0.2, 0.2]), '"stdev"'),
    ("preprocess interpolation", edited("preprocess.interpolation", "bicubic"),
     '"interpolation"'),
    ("color vs channels", edited("preprocess.color", "gray"), "input.channels"),
    ("unknown color", edited("preprocess.color", "bgr"), '"color"'),
    ("mean length", edited("preprocess.mean", [0.5, 0.5]), '"mean"'),
    ("std length", edited("preprocess.std", [1, 1, 1, 1]), '"std"'),
    ("std zero", edited("preprocess.std", 0), '"std"'),
    ("resize", edited("preprocess.resize", "crop"), '"resize"'),
    ("resize_size without shorter", edited("preprocess.resize", "direct"), '"resize_size"'),
    ("resize_size type", edited("preprocess.resize_size", "256"), '"resize_size"'),
    ("scale", edited("preprocess.scale", -1), '"scale"'),
    ("invert", edited("preprocess.invert", "yes"), '"invert"'),
    ("preprocess not an object", edited("preprocess", [1]), '"preprocess"'),
    ("labels count", edited("labels", ["cat", "dog"]), "labels"),
    ("label type", edited("labels", ["cat", "dog", 3]), "labels[2]"),
    ("unknown field", edited("lables", ["a"]), '"lables"'),
    ("unknown input field", edited("input.depth", 1), '"input.depth"'),
    ("name with slash", edited("name", "my/model"), '"name"'),
    ("name with space", edited("name", "my model"), '"name"'),
    ("bn_eps", edited("bn_eps", 2), '"bn_eps"'),
    ("num_classes", edited("num_classes", 0), '"num_classes"'),
    ("layers entry", edited("layers", [1, 0]), "layers[1]"),
    ("attention", edited("attention", "fancy"), "attention"),
    ("missing input", edited("input", None), '"input"'),
]


def model_state():
    """A small network of BASE's shape with random weights."""
    m = randomize(build_model(dict(BASE, labels=None), widths=(4, 8), se_ratio=2), seed=1)
    return m.state_dict()


def run_bin(*args):
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def main_test(tmp):
    sd = model_state()
    # the good config passes both
    good = os.path.join(tmp, "good.safetensors")
    export(sd, BASE, good)
    rc, out, err = run_bin("inspect", "--json", "--model", good)
    check(rc == 0, "good config: loader accepts it (%s)" % err.strip())
    if rc == 0:
        info = json.loads(out)
        check(info["served_name"] == "tiny" and info["labels"] == BASE["labels"] and
              info["preprocess"] == IMAGENET_PP, "good config: name, labels, preprocess kept")
        m = build_model(dict(BASE, labels=None), widths=(4, 8), se_ratio=2)
        n = sum(p.numel() for p in m.parameters())
        check(info["num_params"] == n, "num_params %d == PyTorch's %d" % (info["num_params"], n))
    # each bad config: the exporter refuses it, naming the key; so does the loader
    for what, cfg, needle in BAD:
        out = os.path.join(tmp, "bad.safetensors")
        try:
            export(sd, cfg, out)
            check(False, "%s: exporter accepted it" % what)
        except ExportError as e:
            check(needle in str(e) and not os.path.exists(out),
                  "%s: exporter: %s" % (what, e))
        # the same config, written without the exporter's checks
        write_safetensors(out, sd, {"resattn.config": json.dumps(cfg)})
        for cmd in (["inspect", "--model", out],
                    ["serve", "--host", "127.0.0.1", "--port", "0", "--model", out]):
            rc, _, err = run_bin(*cmd)
            check(rc != 0 and err.count("\n") == 1 and needle in err,
                  "%s: %s exits %d: %s" % (what, cmd[0], rc, err.strip()))
        os.unlink(out)
    # the exporter's shape checks the config fixes
    for what, cfg, needle in [
            ("fc rows vs num_classes", dict(BASE, num_classes=4, labels=None), "fc.weight"),
            ("conv1 vs input.channels",
             dict(BASE, input={"channels": 1, "height": 16, "width": 16}, preprocess=None),
             "conv1.weight"),
            ("stem kernel", dict(BASE, stem="imagenet"), "conv1.weight")]:
        try:
            export(sd, cfg, os.path.join(tmp, "x.safetensors"))
            check(False, "%s: exporter accepted it" % what)
        except ExportError as e:
            check(needle in str(e), "%s: exporter: %s" % (what, e))
    # --labels FILE through the command line
    sd_path, cfg_path = os.path.join(tmp, "sd.pt"), os.path.join(tmp, "cfg.json")
    torch.save(sd, sd_path)
    with open(cfg_path, "w") as f:
        json.dump(dict(BASE, labels=None), f)

    def cli(labels_text, cfg=None):
        lp, out = os.path.join(tmp, "labels.txt"), os.path.join(tmp, "cli.safetensors")
        if os.path.exists(out):
            os.unlink(out)
        with open(lp, "w") as f:
            f.write(labels_text)
        if cfg is not None:
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export_pytorch.py"),
                            "--state-dict", sd_path, "--config", cfg_path, "--labels", lp,
                            "--out", out], capture_output=True, text=True, timeout=120)
        return p.returncode, p.stderr, out

    rc, err, out = cli("cat\ndog\nbird with spaces\n")
    meta = read_safetensors(out)[1] if rc == 0 else {}
    check(rc == 0 and json.loads(meta["resattn.config"])["labels"] ==
          ["cat", "dog", "bird with spaces"], "--labels: stored (%s)" % err.strip())
    rc, err, out = cli("cat\r\ndog\r\nbird")
    check(rc == 0 and json.loads(read_safetensors(out)[1]["resattn.config"])["labels"] ==
          ["cat", "dog", "bird"], "--labels: CRLF and no final newline")
    rc, err, out = cli("cat\ndog\n")
    check(rc == 1 and "has 2 labels, num_classes is 3" in err and not os.path.exists(out),
          "--labels: wrong count: %s" % err.strip())
    rc, err, out = cli("cat\n\ndog\n")
    check(rc == 1 and "line 2 is empty" in err, "--labels: blank line: %s" % err.strip())
    rc, err, out = cli("cat\ndog\nbird\n", cfg=BASE)
    check(rc == 1 and "--labels" in err and "keep one" in err,
          "--labels twice: %s" % err.strip())
    rc, err, out = cli("cat\ndog\nbird\n", cfg=dict(edited("preprocess.stdev", [1]), labels=None))
    check(rc == 1 and '"stdev"' in err and err.count("\n") == 1 and not os.path.exists(out),
          "CLI: bad config, one line: %s" % err.strip())


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="resattn-export-") as tmp:
        main_test(tmp)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)
