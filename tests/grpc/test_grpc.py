#!/usr/bin/python3
"""The gRPC service of `resattn serve` against a real gRPC client (Debian's python3-grpcio).

    /usr/bin/python3 tests/grpc/test_grpc.py [path/to/resattn] [TEST_NAME ...]

Message classes come from `protoc --python_out` of the repository's own proto files
(server/grpc/proto/) into a temporary directory, so the test speaks exactly what the server
was built from. Every server runs on loopback with both an HTTP and a gRPC port, is stopped
with SIGTERM and must exit 0 (under the ASan build a leak or error makes it exit non-zero).
Covered: every RPC, typed and raw tensors, images, outputs/classification/attention/id/
model_version, parity with the HTTP v2 answers, the README's Python client, 32 concurrent calls batched (with HTTP
requests in the same batches), each error status, TLS, drain on SIGTERM, and a bad-input
corpus (protobuf and gRPC framing, the latter over raw HTTP/2 with python3-h2) after which
the server still serves. Needs protoc, python3-grpcio, python3-protobuf, python3-h2,
python3-numpy, openssl, and python3-torch for the slow model of the load tests.
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [a for a in sys.argv[1:]]
BIN = os.path.abspath(ARGS.pop(0)) if ARGS and not ARGS[0].startswith("test_") else \
    os.path.join(ROOT, "build", "resattn")
ONLY = set(ARGS)
WORK = tempfile.mkdtemp(prefix="resattn-grpc-test.")
# the sanitizer build is several times slower: longer waits, same assertions
SLOW = 4 if "asan" in BIN else 1

subprocess.check_call(["protoc", f"--python_out={WORK}", "-I",
                       os.path.join(ROOT, "server", "grpc", "proto"),
                       "grpc_service.proto", "health.proto"])
sys.path.insert(0, WORK)
import grpc  # noqa: E402
import grpc_service_pb2 as pb  # noqa: E402
import health_pb2 as hpb  # noqa: E402

SERVICE = "inference.GRPCInferenceService"
EXAMPLE_PNG = os.path.join(ROOT, "models", "examples", "0_ankle-boot.png")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`resattn serve` with HTTP on a port it picks and gRPC on a free port."""

    def __init__(self, *args, tls=None):
        self.log = os.path.join(WORK, f"server-{time.monotonic_ns()}.log")
        self.tls = tls
        for attempt in range(3):
            self.grpc_port = free_port()
            cmd = [BIN, "serve", "--host", "127.0.0.1", "--port", "0",
                   "--grpc-port", str(self.grpc_port), *args]
            if tls:
                cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                         stderr=open(self.log, "w"), text=True)
            line = self.proc.stdout.readline()
            if line.strip().isdigit():
                self.http_port = int(line)
                break
            self.proc.wait()
        else:
            raise AssertionError(f"server did not start: {open(self.log).read()}")
        self.wait_ready()

    def channel(self):
        target = f"127.0.0.1:{self.grpc_port}"
        if self.tls:
            creds = grpc.ssl_channel_credentials(open(self.tls[0], "rb").read())
            return grpc.secure_channel(target, creds)
        return grpc.insecure_channel(target)

    def wait_ready(self):
        scheme = "https" if self.tls else "http"
        ctx = None
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=self.tls[0])
        for _ in range(600 * SLOW):
            try:
                with urllib.request.urlopen(f"{scheme}://127.0.0.1:{self.http_port}/readyz",
                                            timeout=5, context=ctx) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {open(self.log).read()}")
            time.sleep(0.05)
        raise AssertionError("server never became ready")

    def http(self, method, path, body=None, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body,
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60 * SLOW) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metrics(self):
        return self.http("GET", "/metrics")[1].decode()

    def stop(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not exit after SIGTERM")
        assert rc == 0, f"server exited {rc}: {open(self.log).read()[-3000:]}"


def rpc(channel, name, request, response_cls, service=SERVICE, timeout=60, metadata=None):
    f = channel.unary_unary(f"/{service}/{name}",
                            request_serializer=lambda m: m if isinstance(m, bytes)
                            else m.SerializeToString(),
                            response_deserializer=response_cls.FromString)
    return f(request, timeout=timeout * SLOW, metadata=metadata)


def infer_stub(channel):
    """ModelInfer as a callable with .future() for concurrent calls."""
    return channel.unary_unary(f"/{SERVICE}/ModelInfer",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=pb.ModelInferResponse.FromString)


def expect_error(code, fn, *args, match=None, **kw):
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        if match:
            assert re.search(match, e.details() or ""), f"message {e.details()!r} lacks {match!r}"
        return e.details()
    raise AssertionError(f"expected {code}, the call succeeded")


def metric(text, prefix):
    total = None
    for line in text.splitlines():
        if line.startswith(prefix):
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


def infer_request(x, raw, model="", version="", outputs=(), params=None, id_="",
                  datatype="FP32", name="input"):
    r = pb.ModelInferRequest(model_name=model, model_version=version, id=id_)
    t = r.inputs.add(name=name, datatype=datatype, shape=list(x.shape))
    if raw:
        r.raw_input_contents.append(x.tobytes())
    elif datatype == "FP32":
        t.contents.fp32_contents.extend(x.ravel().tolist())
    elif datatype in ("UINT8", "UINT16", "UINT32"):
        t.contents.uint_contents.extend(x.ravel().tolist())
    elif datatype in ("INT8", "INT16", "INT32"):
        t.contents.int_contents.extend(x.ravel().tolist())
    elif datatype == "FP64":
        t.contents.fp64_contents.extend(x.ravel().tolist())
    for o in outputs:
        oname, oparams = o if isinstance(o, tuple) else (o, {})
        ot = r.outputs.add(name=oname)
        for k, v in oparams.items():
            set_param(ot.parameters[k], v)
    for k, v in (params or {}).items():
        set_param(r.parameters[k], v)
    return r


def set_param(p, v):
    if isinstance(v, bool):
        p.bool_param = v
    elif isinstance(v, int):
        p.int64_param = v
    else:
        p.string_param = v


def outputs_of(resp):
    """{name: numpy array or list of bytes}, from raw or typed contents."""
    out = {}
    for i, o in enumerate(resp.outputs):
        shape = list(o.shape)
        if resp.raw_output_contents:
            b = resp.raw_output_contents[i]
            if o.datatype == "BYTES":
                vals, off = [], 0
                while off < len(b):
                    (n,) = struct.unpack_from("<I", b, off)
                    vals.append(b[off + 4:off + 4 + n])
                    off += 4 + n
                out[o.name] = vals
            else:
                dt = {"FP32": np.float32, "INT64": np.int64}[o.datatype]
                out[o.name] = np.frombuffer(b, dt).reshape(shape)
        else:
            c = o.contents
            if o.datatype == "BYTES":
                out[o.name] = list(c.bytes_contents)
            elif o.datatype == "FP32":
                out[o.name] = np.array(c.fp32_contents, np.float32).reshape(shape)
            elif o.datatype == "INT64":
                out[o.name] = np.array(c.int64_contents, np.int64).reshape(shape)
    return out


def http_v2(server, model, x, outputs=None, params=None):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}
    if outputs:
        body["outputs"] = outputs
    if params:
        body["parameters"] = params
    st, b = server.http("POST", f"/v2/models/{model}/infer", json.dumps(body).encode(),
                        {"Content-Type": "application/json"})
    assert st == 200, (st, b[:300])
    return {o["name"]: o for o in json.loads(b)["outputs"]}


# Random-weight SE-ResNet-18s of tests/bench/bench_server_models.py: CIFAR size (3x32x32, 10
# classes, SE attention) and a 224x224 one (1000 classes, tens of ms per pass) for the load
# tests.
subprocess.check_call(["/usr/bin/python3",
                       os.path.join(ROOT, "tests", "bench", "bench_server_models.py"),
                       os.path.join(WORK, "models")], stdout=subprocess.DEVNULL)
CIFAR = os.path.join(WORK, "models", "cifar_se.safetensors")


def slow_model():
    return os.path.join(WORK, "models", "imagenet_se.safetensors")


# ---- the tests ----------------------------------------------------------------------------

def test_every_rpc(s):
    ch = s.channel()
    assert rpc(ch, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert rpc(ch, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    md = rpc(ch, "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    st, b = s.http("GET", "/v2")
    want = json.loads(b)
    assert (md.name, md.version, list(md.extensions)) == \
        (want["name"], want["version"], want["extensions"]), md
    for name in ("default", "cifar"):
        mm = rpc(ch, "ModelMetadata", pb.ModelMetadataRequest(name=name), pb.ModelMetadataResponse)
        want = json.loads(s.http("GET", f"/v2/models/{name}")[1])
        assert mm.name == want["name"] and mm.platform == want["platform"]
        assert list(mm.versions) == want["versions"]
        for got, exp in ((mm.inputs, want["inputs"]), (mm.outputs, want["outputs"])):
            assert [(t.name, t.datatype, list(t.shape)) for t in got] == \
                [(t["name"], t["datatype"], t["shape"]) for t in exp], (got, exp)
    assert rpc(ch, "ModelReady", pb.ModelReadyRequest(name="cifar"), pb.ModelReadyResponse).ready
    assert rpc(ch, "ModelReady", pb.ModelReadyRequest(name="cifar", version="1"),
               pb.ModelReadyResponse).ready
    expect_error(grpc.StatusCode.NOT_FOUND, rpc, ch, "ModelReady",
                 pb.ModelReadyRequest(name="nope"), pb.ModelReadyResponse, match="nope")
    expect_error(grpc.StatusCode.NOT_FOUND, rpc, ch, "ModelMetadata",
                 pb.ModelMetadataRequest(name="cifar", version="9"), pb.ModelMetadataResponse)
    h = rpc(ch, "Check", hpb.HealthCheckRequest(), hpb.HealthCheckResponse,
            service="grpc.health.v1.Health")
    assert h.status == hpb.HealthCheckResponse.SERVING
    h = rpc(ch, "Check", hpb.HealthCheckRequest(service=SERVICE), hpb.HealthCheckResponse,
            service="grpc.health.v1.Health")
    assert h.status == hpb.HealthCheckResponse.SERVING
    expect_error(grpc.StatusCode.NOT_FOUND, rpc, ch, "Check",
                 hpb.HealthCheckRequest(service="other.Service"), hpb.HealthCheckResponse,
                 service="grpc.health.v1.Health")
    expect_error(grpc.StatusCode.UNIMPLEMENTED, rpc, ch, "Watch", hpb.HealthCheckRequest(),
                 hpb.HealthCheckResponse, service="grpc.health.v1.Health")
    expect_error(grpc.StatusCode.UNIMPLEMENTED, rpc, ch, "RepositoryIndex",
                 pb.ServerLiveRequest(), pb.ServerLiveResponse, match="RepositoryIndex")


def test_typed_raw_and_http_parity(s):
    ch = s.channel()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    typed = rpc(ch, "ModelInfer", infer_request(x, False, "cifar", id_="req-7"),
                pb.ModelInferResponse)
    raw = rpc(ch, "ModelInfer", infer_request(x, True, "cifar"), pb.ModelInferResponse)
    assert typed.model_name == "cifar" and typed.model_version == "1" and typed.id == "req-7"
    assert raw.id == "" and len(raw.raw_output_contents) == len(raw.outputs) == 5
    assert not typed.raw_output_contents
    t, r = outputs_of(typed), outputs_of(raw)
    h = http_v2(s, "cifar", x)
    assert list(t) == list(r) == [o for o in h], (list(t), list(h))
    for name, o in h.items():
        grpc_out = [o2 for o2 in typed.outputs if o2.name == name][0]
        assert (grpc_out.datatype, list(grpc_out.shape)) == (o["datatype"], o["shape"])
        if o["datatype"] == "BYTES":
            assert [v.decode() for v in t[name]] == o["data"] == [v.decode() for v in r[name]]
        else:
            want = np.array(o["data"]).reshape(o["shape"])
            # the same forward pass: batching may change summation order only slightly
            np.testing.assert_allclose(t[name], want, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(r[name], want, rtol=1e-4, atol=1e-5)


def test_int_types_and_options(s):
    ch = s.channel()
    x = np.random.default_rng(2).integers(0, 256, (1, 3, 32, 32)).astype(np.uint8)
    a = outputs_of(rpc(ch, "ModelInfer", infer_request(x, True, "cifar", datatype="UINT8",
                                                         outputs=["logits"]), pb.ModelInferResponse))
    b = outputs_of(rpc(ch, "ModelInfer", infer_request(x, False, "cifar", datatype="UINT8",
                                                         outputs=["logits"]), pb.ModelInferResponse))
    c = outputs_of(rpc(ch, "ModelInfer", infer_request(x.astype(np.float32), False, "cifar",
                                                         outputs=["logits"]), pb.ModelInferResponse))
    assert list(a) == ["logits"]
    np.testing.assert_allclose(a["logits"], c["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["logits"], c["logits"], rtol=1e-5, atol=1e-6)
    bad = x.astype(np.int32)
    bad[0, 0, 0, 5] = 300
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, rpc, ch, "ModelInfer",
                 infer_request(bad, False, "cifar", datatype="UINT8"), pb.ModelInferResponse,
                 match=r"uint_contents\[5\].*UINT8")
    # classification and top_k, compared with the HTTP answer
    xf = x.astype(np.float32) / 255
    cls = [("probabilities", {"classification": 3}), "top_k_labels"]
    g = outputs_of(rpc(ch, "ModelInfer", infer_request(xf, False, "cifar", outputs=cls,
                                                         params={"top_k": 2}),
                       pb.ModelInferResponse))
    h = http_v2(s, "cifar", xf, outputs=[{"name": "probabilities",
                                          "parameters": {"classification": 3}},
                                         {"name": "top_k_labels"}], params={"top_k": 2})
    assert [v.decode() for v in g["top_k_labels"]] == h["top_k_labels"]["data"]
    assert len(g["probabilities"]) == 3
    for gv, hv in zip(g["probabilities"], h["probabilities"]["data"]):
        gs, hs = gv.decode().split(":"), hv.split(":")
        assert gs[1:] == hs[1:] and abs(float(gs[0]) - float(hs[0])) < 1e-5, (gv, hv)
    # attention: the summary output and a mask tensor, as on HTTP
    g = rpc(ch, "ModelInfer", infer_request(xf, True, "cifar",
                                            outputs=["attention_summary"]),
            pb.ModelInferResponse)
    go = outputs_of(g)
    h = http_v2(s, "cifar", xf, outputs=[{"name": "attention_summary"}])
    assert json.loads(go["attention_summary"][0]) == json.loads(h["attention_summary"]["data"][0])
    blocks = json.loads(h["attention_summary"]["data"][0])
    name = f"attention/{blocks[0]['block']}"  # e.g. attention/layer1.0: its SE channel mask
    g = outputs_of(rpc(ch, "ModelInfer", infer_request(xf, True, "cifar", outputs=[name]),
                       pb.ModelInferResponse))
    h = http_v2(s, "cifar", xf, outputs=[{"name": name}])
    assert sorted(g) == sorted(h) and len(h) >= 1, (sorted(g), sorted(h))
    for k, o in h.items():
        np.testing.assert_allclose(g[k].ravel(), np.array(o["data"]), rtol=1e-4, atol=1e-6)
    # an explicit version; an unknown one
    r = rpc(ch, "ModelInfer", infer_request(xf, True, "cifar", version="1", outputs=["logits"]),
            pb.ModelInferResponse)
    assert r.model_version == "1"
    expect_error(grpc.StatusCode.NOT_FOUND, rpc, ch, "ModelInfer",
                 infer_request(xf, True, "cifar", version="7"), pb.ModelInferResponse)


def test_images(s):
    ch = s.channel()
    png = open(EXAMPLE_PNG, "rb").read()
    typed = pb.ModelInferRequest(model_name="default")
    t = typed.inputs.add(name="image", datatype="BYTES", shape=[2])
    t.contents.bytes_contents.extend([png, png])
    g = outputs_of(rpc(ch, "ModelInfer", typed, pb.ModelInferResponse))
    raw = pb.ModelInferRequest(model_name="default")
    raw.inputs.add(name="image", datatype="BYTES", shape=[1])
    raw.raw_input_contents.append(struct.pack("<I", len(png)) + png)
    gr = outputs_of(rpc(ch, "ModelInfer", raw, pb.ModelInferResponse))
    import base64
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(png).decode()]}]}
    st, b = s.http("POST", "/v2/models/default/infer", json.dumps(body).encode(),
                   {"Content-Type": "application/json"})
    assert st == 200, b
    h = {o["name"]: o for o in json.loads(b)["outputs"]}
    assert g["top_k_labels"][0].decode() == gr["top_k_labels"][0].decode() == \
        h["top_k_labels"]["data"][0] == "Ankle boot", (g["top_k_labels"], h["top_k_labels"])
    np.testing.assert_allclose(gr["logits"][0], np.array(h["logits"]["data"]), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(g["logits"][1], g["logits"][0], rtol=1e-5, atol=1e-6)
    bad = pb.ModelInferRequest(model_name="default")
    bad.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"not a picture")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, rpc, ch, "ModelInfer", bad,
                 pb.ModelInferResponse)


def test_errors(s):
    ch = s.channel()
    x = np.zeros((1, 3, 32, 32), np.float32)
    IA = grpc.StatusCode.INVALID_ARGUMENT

    def infer(req, **kw):
        return rpc(ch, "ModelInfer", req, pb.ModelInferResponse, **kw)
    expect_error(grpc.StatusCode.NOT_FOUND, infer, infer_request(x, True, "nope"), match="nope")
    expect_error(IA, infer, pb.ModelInferRequest(model_name="cifar"), match="inputs")
    r = infer_request(x, True, "cifar")
    r.inputs[0].name = "pixels"
    expect_error(IA, infer, r, match="inputs\\[0\\].name 'pixels'")
    r = infer_request(x, True, "cifar")
    r.inputs[0].datatype = "FP8"
    expect_error(IA, infer, r, match="datatype 'FP8'")
    r = infer_request(x, True, "cifar")
    r.raw_input_contents[0] = r.raw_input_contents[0][:-4]
    expect_error(IA, infer, r, match="raw_input_contents\\[0\\] has 12284 bytes")
    r = infer_request(x, False, "cifar")
    del r.inputs[0].shape[:]
    r.inputs[0].shape.extend([1, 3, 16, 16])
    expect_error(IA, infer, r, match="shape")
    r = infer_request(x, False, "cifar")
    r.inputs[0].contents.fp32_contents[3] = float("nan")
    expect_error(IA, infer, r, match="element 3 is NaN")
    r = infer_request(x, True, "cifar")
    r.inputs[0].contents.fp32_contents.append(1.0)
    expect_error(IA, infer, r, match="both contents and raw_input_contents")
    expect_error(IA, infer, infer_request(x, True, "cifar", outputs=["colours"]),
                 match="outputs\\[0\\].name 'colours'")
    expect_error(IA, infer, infer_request(x, True, "cifar", params={"top_k": "five"}),
                 match="parameters.top_k")
    expect_error(IA, infer, infer_request(x, True, "cifar",
                                          outputs=[("top_k_labels", {"classification": 2})]),
                 match="classification")
    # the batch limit (--max-batch 8 here): too big a message for one request
    big = np.zeros((9, 3, 32, 32), np.float32)
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, infer, infer_request(big, True, "cifar"))
    text = s.metrics()
    assert metric(text, 'resattn_grpc_requests_total{endpoint="v2_infer",code="3"}') >= 10
    assert metric(text, 'resattn_grpc_requests_total{endpoint="v2_infer",code="5"}') >= 1
    assert metric(text, 'resattn_inference_requests_total{model="cifar",protocol="grpc",'
                  'code="400"}') >= 5


def test_limits_and_auth():
    s = Server("--model", f"cifar={CIFAR}", "--max-body-bytes", "20000", "--api-key", "s3cret",
               "--connection-timeout-s", "1")
    try:
        ch = s.channel()
        x = np.zeros((1, 3, 32, 32), np.float32)
        auth = [("authorization", "Bearer s3cret")]
        infer = lambda req, md=None: rpc(ch, "ModelInfer", req, pb.ModelInferResponse,  # noqa
                                         metadata=md)
        expect_error(grpc.StatusCode.UNAUTHENTICATED, infer, infer_request(x, True, "cifar"),
                     match="API key")
        expect_error(grpc.StatusCode.UNAUTHENTICATED, infer, infer_request(x, True, "cifar"),
                     [("authorization", "Bearer wrong")])
        assert outputs_of(infer(infer_request(x, True, "cifar"), auth))["logits"].shape == (1, 10)
        # health stays open without --auth-health, like HTTP's
        assert rpc(ch, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
        expect_error(grpc.StatusCode.UNAUTHENTICATED, rpc, ch, "ModelMetadata",
                     pb.ModelMetadataRequest(name="cifar"), pb.ModelMetadataResponse)
        big = np.zeros((2, 3, 32, 32), np.float32)  # 24 KB of tensor > 20000 bytes
        expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, infer, infer_request(big, True, "cifar"),
                     auth, match="limit of 20000 bytes")
        assert outputs_of(infer(infer_request(x, True, "cifar"), auth))["logits"].shape == (1, 10)
        # an idle connection is closed after --connection-timeout-s, as on HTTP
        idle = socket.create_connection(("127.0.0.1", s.grpc_port))
        idle.settimeout(10 * SLOW)
        t0 = time.monotonic()
        while idle.recv(4096):  # the server's SETTINGS, then end of file
            pass
        assert 0.9 < time.monotonic() - t0 < 8 * SLOW, time.monotonic() - t0
        idle.close()
        # so is one that stops half-way through a message
        import h2.config
        import h2.connection
        sock = socket.create_connection(("127.0.0.1", s.grpc_port))
        sock.settimeout(10 * SLOW)
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h.initiate_connection()
        h.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                           (":path", f"/{SERVICE}/ModelInfer"),
                           ("content-type", "application/grpc"),
                           ("authorization", "Bearer s3cret")])
        h.send_data(1, b"\x00\x00\x00\x10\x00partial")
        sock.sendall(h.data_to_send())
        t0 = time.monotonic()
        while sock.recv(4096):
            pass
        assert 0.9 < time.monotonic() - t0 < 8 * SLOW, time.monotonic() - t0
        sock.close()
        text = s.metrics()
        assert metric(text, 'resattn_requests_rejected_total{reason="unauthorized"}') >= 3
        assert metric(text, 'resattn_requests_rejected_total{reason="body_too_large"}') >= 1
    finally:
        s.stop()


def test_concurrent_calls_batch_with_http():
    s = Server("--model", f"cifar={CIFAR}", "--workers", "1", "--max-batch", "32",
               "--max-delay-ms", str(300 * SLOW), "--queue-capacity", "256")
    try:
        ch = s.channel()
        rng = np.random.default_rng(3)
        xs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(48)]
        stub = infer_stub(ch)
        # 32 gRPC calls at once (each its own image), plus 16 HTTP requests in the same window
        futures = [stub.future(infer_request(x, True, "cifar", outputs=["logits"]),
                               timeout=120 * SLOW) for x in xs[:32]]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            https = list(pool.map(lambda x: http_v2(s, "cifar", x, outputs=[{"name": "logits"}]),
                                  xs[32:]))
        results = [outputs_of(f.result())["logits"] for f in futures]
        for x, got in list(zip(xs[:32], results))[:4]:  # each call got its own image's answer
            alone = outputs_of(rpc(ch, "ModelInfer", infer_request(x, True, "cifar",
                                                                   outputs=["logits"]),
                                   pb.ModelInferResponse))["logits"]
            np.testing.assert_allclose(got, alone, rtol=1e-4, atol=1e-5)
        assert len(https) == 16
        text = s.metrics()
        passes = metric(text, 'resattn_batch_size_count{model="cifar"}')
        images = metric(text, 'resattn_batch_size_sum{model="cifar"}')
        le16 = metric(text, 'resattn_batch_size_bucket{model="cifar",le="16"}')
        assert images == 48 + 4, images
        assert passes < 48, f"48 concurrent requests took {passes} forward passes: no batching"
        # a pass of more than 16 images mixed gRPC calls with HTTP requests
        assert le16 < passes, "no batch of more than 16 images: HTTP and gRPC never batched " \
            "together"
        assert metric(text, 'resattn_inference_requests_total{model="cifar",protocol="grpc",'
                      'code="200"}') == 36
        assert metric(text, 'resattn_inference_requests_total{model="cifar",protocol="http",'
                      'code="200"}') == 16
        assert metric(text, 'resattn_request_duration_seconds_count{endpoint="v2_infer",'
                      'protocol="grpc"}') == 36
    finally:
        s.stop()


def test_queue_full_and_timeouts():
    model = slow_model()
    s = Server("--model", f"big={model}", "--workers", "1", "--blas-threads", "1",
               "--max-batch", "1", "--queue-capacity", "24", "--request-timeout-ms",
               str(60000 * SLOW))
    try:
        ch = s.channel()
        x = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
        stub = infer_stub(ch)
        req = infer_request(x, True, "big", outputs=["logits"])
        futures = [stub.future(req, timeout=120 * SLOW) for _ in range(40)]
        codes = {}
        for f in futures:
            try:
                f.result()
                c = grpc.StatusCode.OK
            except grpc.RpcError as e:
                c = e.code()
                if c == grpc.StatusCode.UNAVAILABLE:
                    assert "queue full" in e.details(), e.details()
            codes[c] = codes.get(c, 0) + 1
        assert codes.get(grpc.StatusCode.OK, 0) >= 1, codes
        assert codes.get(grpc.StatusCode.UNAVAILABLE, 0) >= 1, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        text = s.metrics()
        assert metric(text, 'resattn_requests_rejected_total{reason="queue_full"}') >= 1
        # a client deadline (grpc-timeout) shorter than the queue ahead of it: the server
        # gives up on the call too instead of computing it (gRPC status 4 in its metrics)
        before = metric(text, 'resattn_grpc_requests_total{endpoint="v2_infer",code="4"}') or 0
        # 16 passes of ~20 ms queued ahead of a call with a 100 ms deadline
        busy = [stub.future(req, timeout=120 * SLOW) for _ in range(16)]
        expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, stub, req, timeout=0.1)
        for f in busy:
            f.result()
        for _ in range(100):
            after = metric(s.metrics(),
                           'resattn_grpc_requests_total{endpoint="v2_infer",code="4"}') or 0
            if after > before:
                break
            time.sleep(0.05)
        assert after == before + 1, (before, after)
    finally:
        s.stop()
    # the server's own request timeout (1 ms): DEADLINE_EXCEEDED naming it
    s = Server("--model", f"big={model}", "--workers", "1", "--blas-threads", "1",
               "--max-batch", "1", "--request-timeout-ms", "1")
    try:
        ch = s.channel()
        stub = infer_stub(ch)
        futures = [stub.future(req, timeout=60 * SLOW) for _ in range(4)]
        seen = 0
        for f in futures:
            try:
                f.result()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
                assert "timed out after 1 ms" in e.details()
                seen += 1
        assert seen >= 1
    finally:
        s.stop()


def test_busy_port():
    """A taken --grpc-port fails at once, before any model loads, naming the flag (exit 2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([BIN, "serve", "--host", "127.0.0.1", "--port", "0",
                              "--grpc-port", str(port)], capture_output=True, text=True,
                             timeout=60 * SLOW)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in out.stderr, out.stderr
    assert "choose another --grpc-port" in out.stderr, out.stderr
    assert "classes, input" not in out.stderr, out.stderr  # no model was loaded


def make_cert():
    cert, key = os.path.join(WORK, "cert.pem"), os.path.join(WORK, "key.pem")
    if not os.path.exists(cert):
        subprocess.check_call(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                               "-subj", "/CN=127.0.0.1", "-addext",
                               "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key,
                               "-out", cert], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    return cert, key


def test_tls():
    s = Server("--model", f"cifar={CIFAR}", tls=make_cert())
    try:
        ch = s.channel()
        assert rpc(ch, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
        x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
        r = outputs_of(rpc(ch, "ModelInfer", infer_request(x, True, "cifar"),
                           pb.ModelInferResponse))
        assert r["logits"].shape == (1, 10)
        # plain HTTP/2 to the TLS port does not get an answer
        plain = grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}")
        expect_error(grpc.StatusCode.UNAVAILABLE, rpc, plain, "ServerLive",
                     pb.ServerLiveRequest(), pb.ServerLiveResponse, timeout=5)
    finally:
        s.stop()


def test_drain():
    model = slow_model()
    s = Server("--model", f"big={model}", "--workers", "1", "--blas-threads", "1",
               "--max-batch", "1", "--queue-capacity", "64")
    ch = s.channel()
    x = np.random.default_rng(6).standard_normal((1, 3, 224, 224)).astype(np.float32)
    stub = infer_stub(ch)
    req = infer_request(x, True, "big", outputs=["logits"])
    rpc(ch, "ModelInfer", req, pb.ModelInferResponse)  # warm
    futures = [stub.future(req, timeout=120 * SLOW) for _ in range(6)]
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    ok = 0
    for f in futures:
        r = f.result()  # every call in flight at the signal is answered
        assert outputs_of(r)["logits"].shape == (1, 1000)
        ok += 1
    rc = s.proc.wait(timeout=120 * SLOW)
    assert rc == 0, f"exit {rc}: {open(s.log).read()[-2000:]}"
    assert ok == 6
    # after the drain nobody listens
    late = grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}")
    expect_error(grpc.StatusCode.UNAVAILABLE, rpc, late, "ServerLive", pb.ServerLiveRequest(),
                 pb.ServerLiveResponse, timeout=5)


def test_drain_delay():
    """--drain-delay-ms: after SIGTERM, Health/Check and ServerReady say not serving at once
    (so a gRPC readiness probe takes the pod out) while inference calls, also on a new
    connection, are still answered until the delay ends; then the process exits 0."""
    s = Server("--drain-delay-ms", "3000")
    x = np.random.default_rng(8).standard_normal((1, 1, 28, 28)).astype(np.float32)
    req = infer_request(x, True, outputs=["logits"])
    ch = s.channel()
    rpc(ch, "ModelInfer", req, pb.ModelInferResponse)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    h = rpc(ch, "Check", hpb.HealthCheckRequest(), hpb.HealthCheckResponse,
            service="grpc.health.v1.Health")
    assert h.status == hpb.HealthCheckResponse.NOT_SERVING, h
    assert not rpc(ch, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    for c in (ch, s.channel()):  # the open connection and a new one
        r = rpc(c, "ModelInfer", req, pb.ModelInferResponse)
        assert outputs_of(r)["logits"].shape == (1, 10)
    assert time.monotonic() - t0 < 3, "the checks above must run inside the delay"
    rc = s.proc.wait(timeout=60 * SLOW)
    assert rc == 0, f"exit {rc}: {open(s.log).read()[-2000:]}"
    assert time.monotonic() - t0 >= 3, "exited before the drain delay ended"


def test_readme_client(s):
    """The README's Python client, as written but for the port (run from the checkout, the
    message classes on the path as its protoc command puts them)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("\n## gRPC\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "127.0.0.1:8001" in code
    code = code.replace("127.0.0.1:8001", f"127.0.0.1:{s.grpc_port}")
    out = subprocess.run(["/usr/bin/python3", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=WORK), timeout=120 * SLOW)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "b'Coat'", out.stdout
    probs = np.array([float(v) for v in re.findall(r"[-+0-9.e]+", " ".join(lines[1:]))])
    assert probs.size == 10 and abs(probs.sum() - 1) < 1e-4, out.stdout


# ---- bad input ----------------------------------------------------------------------------

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


BAD_MESSAGES = {
    # field 5 (inputs) declares 100 bytes, 3 follow
    "truncated": b"\x0a\x05cifar\x2a\x64\x0a\x01a",
    # field 1 (model_name, a string) sent as a varint
    "wrong_wire_type": b"\x08\x05",
    # a length of 2^62 for model_name
    "huge_length": b"\x0a" + varint(1 << 62) + b"abc",
    # raw_input_contents with a 4 GiB length prefix
    "huge_bytes": b"\x3a" + varint(1 << 32) + b"\x00" * 8,
    # shape with a packed varint array cut in the middle
    "cut_varint": b"\x2a\x06\x1a\x04\xff\xff\xff",
    "garbage": bytes(range(256)),
    # an InferParameter with an unknown oneof member only, and an unknown field 99
    "unknown_fields": b"\x0a\x05cifar" + varint(99 << 3 | 2) + b"\x02hi",
    # a nested tensor contents whose fp32 packed array length is not a multiple of 4
    "fp32_odd": b"\x0a\x05cifar\x2a\x0d\x0a\x05input\x2a\x04\x32\x02\x00\x00",
    "invalid_utf8_name": b"\x0a\x02\xff\xfe",
}


def test_bad_protobuf(s):
    ch = s.channel()
    for name, body in BAD_MESSAGES.items():
        try:
            rpc(ch, "ModelInfer", body, pb.ModelInferResponse)
            raise AssertionError(f"{name}: accepted")
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), \
                (name, e.code(), e.details())
    for rpc_name in ("ModelMetadata", "ModelReady"):
        for body in (b"\x0a\xff", b"\x08\x01\x12\x80"):
            expect_error(grpc.StatusCode.INVALID_ARGUMENT, rpc, ch, rpc_name, body,
                         pb.ModelReadyResponse)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, rpc, ch, "Check", b"\x0a\x80",
                 hpb.HealthCheckResponse, service="grpc.health.v1.Health")
    assert rpc(ch, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready


def h2_call(port, path, body, headers=()):
    """One call over raw HTTP/2 (python3-h2): (grpc-status, grpc-message, data, response
    headers), so the gRPC framing itself can be malformed."""
    import h2.config
    import h2.connection
    import h2.events
    sock = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    hdrs = [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers"), *headers]
    conn.send_headers(sid, hdrs, end_stream=not body)
    for off in range(0, len(body), 16384):  # the default frame size; < 64 KB in all
        conn.send_data(sid, body[off:off + 16384], end_stream=off + 16384 >= len(body))
    sock.sendall(conn.data_to_send())
    resp, data, done = {}, b"", False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                resp.update({k.decode(): v.decode() for k, v in ev.headers})
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return resp.get("grpc-status"), resp.get("grpc-message", ""), data, resp


def test_bad_framing(s):
    infer = f"/{SERVICE}/ModelInfer"
    msg = infer_request(np.zeros((1, 3, 32, 32), np.float32), True, "cifar").SerializeToString()
    frame = lambda m, flag=0: bytes([flag]) + struct.pack(">I", len(m)) + m  # noqa: E731
    st, _, data, _ = h2_call(s.grpc_port, infer, frame(msg))
    assert st == "0" and len(data) > 5, st  # the control: a well-formed call
    cases = {
        "empty body": (b"", "3", "no complete gRPC message prefix"),
        "short prefix": (b"\x00\x00\x00", "3", "no complete gRPC message prefix"),
        "length beyond body": (b"\x00" + struct.pack(">I", len(msg) + 10) + msg, "3",
                               "declares"),
        "trailing bytes": (frame(msg) + b"\x00\x00", "3", "declares"),
        "two messages": (frame(msg) + frame(msg), "3", "exactly one message"),
        "flag 7": (frame(msg, 7), "3", "compressed flag is 7"),
        "compressed without grpc-encoding": (frame(msg, 1), "13", "compressed"),
        "huge declared length": (b"\x00\xff\xff\xff\xff", "8", "exceeds the limit"),
    }
    for name, (body, want, text) in cases.items():
        st, m, _, _ = h2_call(s.grpc_port, infer, body)
        assert st == want, (name, st, m)
        assert text in urllib.request.unquote(m), (name, m)
    st, m, _, _ = h2_call(s.grpc_port, infer, frame(msg), [("grpc-encoding", "gzip")])
    assert st == "12" and "gzip" in m, (st, m)
    st, m, _, _ = h2_call(s.grpc_port, infer, frame(msg), [("grpc-timeout", "soon")])
    assert st == "3" and "grpc-timeout" in m, (st, m)
    st, m, _, hdr = h2_call(s.grpc_port, infer, frame(msg),
                            [("content-type", "application/json")])
    assert st == "3" and "content-type" in m, (st, m)
    # a percent-encoded grpc-message (an error naming a non-ASCII model)
    bad = pb.ModelInferRequest(model_name="modèle%")
    st, m, _, _ = h2_call(s.grpc_port, infer, frame(bad.SerializeToString()))
    assert st == "5" and "%C3%A8" in m and "%25" in m, (st, m)
    # still serving
    ch = s.channel()
    assert rpc(ch, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready


# ---- runner -------------------------------------------------------------------------------

def main():
    shared = ["test_every_rpc", "test_typed_raw_and_http_parity", "test_int_types_and_options",
              "test_images", "test_errors", "test_readme_client", "test_bad_protobuf",
              "test_bad_framing"]
    own = ["test_busy_port", "test_limits_and_auth", "test_concurrent_calls_batch_with_http",
           "test_queue_full_and_timeouts", "test_tls", "test_drain", "test_drain_delay"]
    names = [n for n in shared + own if not ONLY or n in ONLY]
    failed = []
    s = None
    if any(n in shared for n in names):
        s = Server("--model", "builtin", "--model", f"cifar={CIFAR}", "--max-batch", "8")
    try:
        for n in names:
            t0 = time.monotonic()
            try:
                globals()[n](s) if n in shared else globals()[n]()
                print(f"ok   {n} ({time.monotonic() - t0:.1f} s)", flush=True)
            except Exception:  # noqa: BLE001 - report every failure, run the rest
                failed.append(n)
                print(f"FAIL {n}\n{traceback.format_exc()}", flush=True)
    finally:
        if s:
            try:
                s.stop()
            except AssertionError as e:
                failed.append(f"server exit: {e}")
    print(f"{len(names) - len(failed)}/{len(names)} gRPC tests passed" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
