"""The Python peer: the seed's Flask service, on onnxruntime instead of torch.

This is what a careful Python team would deploy from the seed's article: the same route
(`POST /model_predict`, multipart field `image`), the same preprocessing (Pillow's
`resize((224, 224), BILINEAR)`, which is what torchvision's `Resize([224, 224])` does to a PIL
image, then `ToTensor` and `Normalize`), the same `thresh_sort` with threshold 0.5 and the same
JSON answer. Two fair changes from the article: the model runs in ONNX Runtime (the same file
and the same ONNX Runtime version as Arbiter) rather than torch, and the image is converted to
RGB first (the article's code crashes on grayscale or RGBA images).

Tuning (see bench/peer/gunicorn.conf.py): gunicorn sync workers = cores, each with one ONNX
Runtime intra-op thread, the model loaded in each worker after the fork.

Environment: PEER_MODEL (the .onnx file), PEER_LABELS (class_name.json), PEER_THREADS (ONNX
Runtime intra-op threads per worker, default 1).

One addition for the benchmark only: the answer carries `X-Worker-Pid`, so the harness can tell
when a replacement worker (after a SIGKILL) answers its first request.
"""

import json
import os

import numpy as np
import onnxruntime as ort
from flask import Flask, request
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def thresh_sort(x, thresh):
    """The seed's: indices of the outputs above thresh, by ascending output."""
    (idx,) = np.where(x > thresh)
    return idx[np.argsort(x[idx])]


def init_model():
    """One ONNX Runtime session with PEER_THREADS intra-op threads (default 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "1"))
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        os.environ["PEER_MODEL"], options, providers=["CPUExecutionProvider"]
    )


def preprocess(file):
    """Image -> [1, 3, 224, 224] float32, as Resize([224, 224]) + ToTensor + Normalize do."""
    img = Image.open(file).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x.transpose(2, 0, 1) - MEAN) / STD
    return x[np.newaxis].astype(np.float32)


app = Flask(__name__)
app.config["model"] = init_model()
app.config["input"] = app.config["model"].get_inputs()[0].name
with open(os.environ["PEER_LABELS"], "r", encoding="utf-8") as f:
    app.config["name"] = json.load(f)


@app.route("/model_predict", methods=["POST"])
def make_prediction():
    """The seed's route: multipart field `image` in, {"result": ..., "status": ...} out."""
    file_data = request.files.get("image")
    img_trans = preprocess(file_data)
    output = app.config["model"].run(None, {app.config["input"]: img_trans})[0]
    output = output[0].ravel()
    labels = thresh_sort(output, 0.5)
    if len(labels) == 0:
        label_array = "No Categories"
        status = 0
    else:
        label_array = [app.config["name"][str(i)] for i in labels]
        status = 1
    return (
        json.dumps({"result": label_array, "status": status}),
        200,
        {"Content-Type": "application/json", "X-Worker-Pid": str(os.getpid())},
    )
