#!/usr/bin/python3
"""Seeds for the protocol, npy and model harnesses (fuzz_v2_json, fuzz_v2_binary, fuzz_tfs,
fuzz_npy, fuzz_model) from the basic_cifar_se fixture (input 1x9x11, batch 3).
Run from the repository root: /usr/bin/python3 tests/fuzz/make_protocol_corpus.py"""
import json, os, struct
import numpy as np

FX = "tests/fixtures/"
OUT = "tests/fuzz/"
x = np.load(FX + "basic_cifar_se.in.npy")  # [3, 1, 9, 11] float32
one = np.round(x[:1], 3)


def put(d, name, data):
    os.makedirs(OUT + d, exist_ok=True)
    with open(OUT + d + "/" + name, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def v2(arr, **extra):
    t = {"name": "input", "datatype": "FP32", "shape": list(arr.shape),
         "data": arr.flatten().tolist()}
    t.update(extra)
    return {"id": "r1", "inputs": [t]}


put("corpus_v2_json", "flat", json.dumps(v2(one)))
put("corpus_v2_json", "nested", json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
    "shape": [1, 1, 9, 11], "data": one.tolist()}],
    "outputs": [{"name": "probabilities"}, {"name": "topk", "parameters": {"top_k": 3}}]}))
put("corpus_v2_json", "uint8", json.dumps({"inputs": [{"name": "input", "datatype": "UINT8",
    "shape": [1, 1, 9, 11], "data": [i % 256 for i in range(99)]}],
    "parameters": {"attention": "summary"}}))
put("corpus_v2_json", "bad-shape", '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,9,12],"data":[1]}]}')
put("corpus_v2_json", "outputs", json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
    "shape": [1, 1, 9, 11], "data": one.flatten().tolist()}],
    "outputs": [{"name": "logits", "parameters": {"classification": 3}},
                {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}},
                {"name": "top_k_labels"}, {"name": "top_k_indices"},
                {"name": "top_k_probabilities", "parameters": {"binary_data": False}}],
    "parameters": {"top_k": 4, "binary_data_output": True}}))

hdr = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 9, 11],
                              "parameters": {"binary_data_size": 396}}],
                  "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
raw = one.astype("<f4").tobytes()
put("corpus_v2_binary", "json-binary", bytes([0]) + struct.pack("<H", len(hdr)) + hdr + raw)
put("corpus_v2_binary", "octet-binary", bytes([1]) + struct.pack("<H", len(hdr)) + hdr + raw)
put("corpus_v2_binary", "json-plain", bytes([0, 0xff, 0xff]) + json.dumps(v2(one)).encode())
with open(FX + "basic_cifar_se.in.npy", "rb") as f:
    npy = f.read()
put("corpus_v2_binary", "npy", bytes([2, 0xff, 0xff]) + npy)

put("corpus_tfs", "instances-hwc", json.dumps({"instances": np.transpose(one, (0, 2, 3, 1)).tolist()}))
put("corpus_tfs", "instances-chw", json.dumps({"instances": one.tolist()}))
put("corpus_tfs", "inputs", json.dumps({"inputs": one.tolist(), "signature_name": "serving_default"}))
put("corpus_tfs", "inputs-named", json.dumps({"inputs": {"input": one.tolist()}}))

put("corpus_npy", "f32", npy)
for dt in ("<f2", "<f8", "|u1", "<i2", "<u4", "<i8"):
    import io
    b = io.BytesIO()
    np.save(b, (one * 10).astype(dt))
    put("corpus_npy", dt.strip("<|"), b.getvalue())
b = io.BytesIO()
np.lib.format.write_array(b, one, version=(2, 0))
put("corpus_npy", "v2", b.getvalue())

with open(FX + "bottleneck_cifar_eca.safetensors", "rb") as f:
    put("corpus_model", "bottleneck_cifar_eca", f.read())
with open(FX + "basic_cifar_se_f16.safetensors", "rb") as f:
    put("corpus_model", "basic_cifar_se_f16", f.read())
