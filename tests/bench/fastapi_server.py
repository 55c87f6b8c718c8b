#!/usr/bin/python3
"""The service a user would otherwise write: FastAPI + uvicorn + PyTorch serving the same
network on the same Open Inference Protocol (KServe v2) endpoint, for the side-by-side
numbers of tests/bench/bench_server.sh.

    /usr/bin/python3 tests/bench/fastapi_server.py --model-dir DIR [--port 8000] [--threads 2]

DIR holds cifar_se.pt (a state dict) and cifar_se.json (its resattn config), as written by
tests/bench/bench_server_models.py. Endpoints: GET /v2/health/ready and
POST /v2/models/{m}/infer with a v2 JSON body (flat or nested "data") or the v2 binary
extension (Inference-Header-Content-Length, FP32 input bytes after the JSON header);
answers v2 JSON logits. A plain `Request` handler (no pydantic model for the tensor, which
would be slower still) and torch.inference_mode(); one uvicorn worker process.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402

import resattn_torch  # noqa: E402


def load(model_dir):
    with open(os.path.join(model_dir, "cifar_se.json")) as f:
        cfg = json.load(f)
    model = resattn_torch.build_model(cfg)
    model.load_state_dict(torch.load(os.path.join(model_dir, "cifar_se.pt")))
    for m in model.modules():
        m._forward_hooks.clear()
    return cfg, model.eval()


def make_app(cfg, model):
    app = FastAPI()
    c, h, w = (cfg["input"][k] for k in ("channels", "height", "width"))

    @app.get("/v2/health/ready")
    async def ready():
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request):
        body = await request.body()
        hlen = request.headers.get("inference-header-content-length")
        head = json.loads(body[: int(hlen)] if hlen else body)
        inp = head["inputs"][0]
        shape = inp["shape"]
        if hlen:
            x = np.frombuffer(body[int(hlen):], dtype="<f4")
        else:
            x = np.asarray(inp["data"], dtype=np.float32)
        x = x.reshape([-1, c, h, w])
        if x.shape[0] * c * h * w != int(np.prod(shape)):
            return JSONResponse({"error": "shape and data disagree"}, status_code=400)
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        out = {"model_name": name, "outputs": [{"name": "logits", "datatype": "FP32",
                                                "shape": list(logits.shape),
                                                "data": logits.ravel().tolist()}]}
        if "id" in head:
            out["id"] = head["id"]
        return Response(json.dumps(out), media_type="application/json")

    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, model = load(a.model_dir)
    uvicorn.run(make_app(cfg, model), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
