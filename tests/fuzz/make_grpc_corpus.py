#!/usr/bin/python3
"""Seeds for fuzz_grpc (tests/fuzz/fuzz_grpc.c) from the basic_cifar_se fixture (input
1x9x11): ModelInferRequests with typed and raw tensors, options, an image, framed and not.
Run from the repository root: /usr/bin/python3 tests/fuzz/make_grpc_corpus.py"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

tmp = tempfile.mkdtemp()
subprocess.check_call(["protoc", f"--python_out={tmp}", "-Iserver/grpc/proto",
                       "grpc_service.proto", "health.proto"])
sys.path.insert(0, tmp)
import grpc_service_pb2 as pb  # noqa: E402
import health_pb2 as hpb  # noqa: E402

OUT = "tests/fuzz/corpus_grpc/"
os.makedirs(OUT, exist_ok=True)
x = np.round(np.load("tests/fixtures/basic_cifar_se.in.npy")[:2], 3)  # [2, 1, 9, 11]


def put(name, target, msg):
    body = msg if isinstance(msg, bytes) else msg.SerializeToString()
    if target == 0:
        body = b"\x00" + struct.pack(">I", len(body)) + body
    with open(OUT + name, "wb") as f:
        f.write(bytes([target]) + body)


def request(raw, datatype="FP32", arr=x, **kw):
    r = pb.ModelInferRequest(model_name="m", id="r1", **kw)
    t = r.inputs.add(name="input", datatype=datatype, shape=list(arr.shape))
    if raw:
        r.raw_input_contents.append(arr.tobytes())
    elif datatype == "FP32":
        t.contents.fp32_contents.extend(arr.ravel().tolist())
    else:
        t.contents.uint_contents.extend(arr.ravel().tolist())
    return r


put("typed", 1, request(False))
put("raw-framed", 0, request(True))
put("uint8", 1, request(False, "UINT8", (x * 10).astype(np.uint8).clip(0, 255)))
put("fp16-raw", 1, request(True, "FP16", x.astype(np.float16)))
r = request(True)
r.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
r.outputs.add(name="top_k_labels")
r.parameters["top_k"].int64_param = 2
r.parameters["binary_data_output"].bool_param = True
put("options", 1, r)
img = pb.ModelInferRequest(model_name="m")
img.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
    open("models/examples/0_ankle-boot.png", "rb").read())
put("image", 0, img)
put("metadata", 2, pb.ModelMetadataRequest(name="m", version="1"))
put("health", 2, hpb.HealthCheckRequest(service="inference.GRPCInferenceService"))
