#!/usr/bin/env python3
"""Check a running arbiter with Triton's own HTTP client: what `tritonclient[http]` users do.

    var/venv/bin/python scripts/triton_check.py --config etc/models.toml \\
        127.0.0.1:10086 resnet50 efficientnet-lite0:1 torchvision-classifier

With `tritonclient.http` only (no request built by hand), it checks that:

- the server is live and ready;
- `get_model_repository_index()` lists exactly the models given (MODEL, or MODEL:VERSION; a
  model given without a version is the config's highest version of that name, as the server
  picks it), each READY;
- for each model: `get_model_metadata` (one input, FP32 or UINT8, and one FP32 output, named as
  in the ONNX file), `get_model_config` (Triton's model config: the name, platform
  "onnxruntime_onnx", the input's and output's data types and dims as the metadata says them),
  `is_model_ready`, and `infer` on a batch of one (the metadata's shape, values from numpy's
  `default_rng(0)`) twice, once with the binary tensor extension and once in JSON: each output
  within 1e-4 of ONNX Runtime's own (this venv's `onnxruntime`, CPU) on the same ONNX file and
  the same tensor, the file taken from the arbiter config given with --config (its `[model]` or
  `[[model]]` tables; relative paths are relative to the config's folder);
- `load_model` on a configured model succeeds (it is loaded already), on an unknown one is
  refused with a 404;
- `unload_model` is refused with a 403 `InferenceServerException` whose message says how a model
  is removed (editing the config and `arbiter reload`); the message is printed.

Prints one line per check and a summary; exits 0 when every check passed, 1 when any failed,
2 on a usage error (a model the config does not have).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# The largest difference allowed between the server's outputs and ONNX Runtime's own: the same
# library on the same file and input, so the two agree to float32 rounding of the threads' sums.
TOLERANCE = 1e-4
# The config's defaults for a model entry that leaves them out (crates/config/src/defaults.rs).
DEFAULT_NAME = "resnet50"
DEFAULT_VERSION = "1"
DEFAULT_PATH = "../var/models/resnet50-voc20.onnx"
# A model name no config has, for the refused load.
UNKNOWN_MODEL = "no-such-model-in-this-arbiter"
NETWORK_TIMEOUT_S = 120.0


@dataclass
class Model:
    """One model of the arbiter's config."""

    name: str
    version: str
    path: Path
    # The config's preprocess.input_size as (height, width), when it gives one.
    input_size: tuple[int, int] | None


class Report:
    """The checks' outcomes, printed as they come."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, what: str, detail: str = "") -> None:
        self.passed += 1
        print(f"ok    {what}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, what: str, detail: str) -> None:
        self.failures.append(f"{what}: {detail}")
        print(f"FAIL  {what}: {detail}", flush=True)

    def check(self, what: str, condition: bool, detail: str) -> bool:
        (self.ok if condition else self.fail)(what, detail)
        return condition


def config_models(config: Path) -> list[Model]:
    """The models of an arbiter config, paths resolved against the config's folder."""
    with config.open("rb") as f:
        doc = tomllib.load(f)
    tables = doc.get("model", {})
    if isinstance(tables, dict):
        tables = [tables]
    base = config.resolve().parent
    models = []
    for t in tables:
        size = t.get("preprocess", {}).get("input_size")
        if isinstance(size, int):
            size = (size, size)
        elif isinstance(size, list):
            size = (int(size[0]), int(size[1]))
        models.append(Model(
            name=t.get("name", DEFAULT_NAME),
            version=str(t.get("version", DEFAULT_VERSION)),
            path=(base / t.get("path", DEFAULT_PATH)).resolve(),
            input_size=size,
        ))
    return models


def find_model(models: list[Model], spec: str) -> Model | None:
    """MODEL or MODEL:VERSION among `models`: that version, or the highest of that name."""
    name, _, version = spec.partition(":")
    named = [m for m in models if m.name == name]
    if version:
        return next((m for m in named if m.version == version), None)
    return max(named, key=lambda m: int(m.version), default=None)


def input_shape(meta_shape: list[int], model: Model, layout: str) -> list[int]:
    """The metadata's input shape for a batch of one: the batch's -1 is 1; a spatial -1 (a
    symbolic size the server does not resolve) comes from the config's input_size."""
    shape = [1] + [int(d) for d in meta_shape[1:]]
    if any(d < 0 for d in shape) and model.input_size is not None and len(shape) == 4:
        h, w = model.input_size
        spatial = (2, 3) if layout == "FORMAT_NCHW" else (1, 2)
        for axis, size in zip(spatial, (h, w)):
            if shape[axis] < 0:
                shape[axis] = size
    return shape


def check_model(client: httpclient.InferenceServerClient, model: Model, report: Report) -> None:
    """Metadata, config, readiness and two infers of one model, against ONNX Runtime."""
    label = f"{model.name}:{model.version}"
    try:
        meta = client.get_model_metadata(model.name, model.version)
    except InferenceServerException as e:
        report.fail(f"{label} metadata", str(e))
        return
    inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
    if not report.check(
        f"{label} metadata",
        meta.get("name") == model.name and model.version in meta.get("versions", [])
        and len(inputs) == 1 and len(outputs) == 1
        and inputs[0].get("datatype") in ("FP32", "UINT8") and outputs[0].get("datatype") == "FP32",
        f"{inputs} -> {outputs}" if len(inputs) == 1 else str(meta),
    ):
        return
    meta_in, meta_out = inputs[0], outputs[0]

    try:
        config = client.get_model_config(model.name, model.version)
    except InferenceServerException as e:
        report.fail(f"{label} config", str(e))
        config = {}
    if config:
        c_in = (config.get("input") or [{}])[0]
        c_out = (config.get("output") or [{}])[0]
        report.check(
            f"{label} config",
            config.get("name") == model.name
            and config.get("platform") == "onnxruntime_onnx"
            and c_in.get("name") == meta_in["name"]
            and c_in.get("data_type") == f"TYPE_{meta_in['datatype']}"
            and [int(d) for d in c_in.get("dims", [])] == list(meta_in["shape"][1:])
            and c_out.get("name") == meta_out["name"]
            and c_out.get("data_type") == "TYPE_FP32"
            and [int(d) for d in c_out.get("dims", [])] == list(meta_out["shape"][1:]),
            f"platform {config.get('platform')}, max_batch_size {config.get('max_batch_size')}, "
            f"input {c_in.get('data_type')} {c_in.get('dims')}, "
            f"output {c_out.get('data_type')} {c_out.get('dims')}",
        )
    layout = config.get("input", [{}])[0].get("format", "FORMAT_NCHW") if config else "FORMAT_NCHW"

    try:
        ready = client.is_model_ready(model.name, model.version)
        report.check(f"{label} ready", ready, "READY" if ready else "not ready")
    except InferenceServerException as e:
        report.fail(f"{label} ready", str(e))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    onnx_in, onnx_out = session.get_inputs()[0].name, session.get_outputs()[0].name
    if not report.check(
        f"{label} names", (meta_in["name"], meta_out["name"]) == (onnx_in, onnx_out),
        f"server {meta_in['name']} -> {meta_out['name']}, "
        f"{model.path.name} {onnx_in} -> {onnx_out}",
    ):
        return
    shape = input_shape(meta_in["shape"], model, layout)
    if any(d < 0 for d in shape):
        report.fail(f"{label} infer", f"the input shape {meta_in['shape']} has an unknown size")
        return
    rng = np.random.default_rng(0)
    if meta_in["datatype"] == "UINT8":
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        x = rng.random(shape, dtype=np.float32)
    expected = session.run([onnx_out], {onnx_in: x})[0]

    for binary in (True, False):
        how = "binary" if binary else "JSON"
        tensor = httpclient.InferInput(meta_in["name"], shape, meta_in["datatype"])
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput(meta_out["name"], binary_data=binary)]
        try:
            result = client.infer(model.name, [tensor], model_version=model.version,
                                  outputs=wanted)
        except InferenceServerException as e:
            report.fail(f"{label} infer ({how})", str(e))
            continue
        got = result.as_numpy(meta_out["name"])
        if got is None or got.shape != expected.shape:
            report.fail(f"{label} infer ({how})",
                        f"output shape {None if got is None else got.shape}, "
                        f"ONNX Runtime's {expected.shape}")
            continue
        diff = float(np.max(np.abs(got.astype(np.float32) - expected)))
        report.check(f"{label} infer ({how})", diff < TOLERANCE,
                     f"input {meta_in['datatype']} {shape}, output {list(got.shape)}, "
                     f"max |server - onnxruntime| = {diff:.3g} (under {TOLERANCE:g})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("etc/arbiter.toml"),
                        help="the arbiter's config, for the models' ONNX files")
    parser.add_argument("url", help="the arbiter's address, HOST:PORT (http:// optional)")
    parser.add_argument("models", nargs="+", metavar="MODEL[:VERSION]")
    args = parser.parse_args()

    configured = config_models(args.config)
    models = []
    for spec in args.models:
        model = find_model(configured, spec)
        if model is None:
            have = ", ".join(f"{m.name}:{m.version}" for m in configured)
            parser.error(f"{args.config} has no model {spec} (it has {have})")
        models.append(model)

    url = args.url.removeprefix("http://")
    report = Report()
    client = httpclient.InferenceServerClient(
        url, connection_timeout=NETWORK_TIMEOUT_S, network_timeout=NETWORK_TIMEOUT_S)
    try:
        report.check("server live", client.is_server_live(), url)
        report.check("server ready", client.is_server_ready(), url)

        try:
            index = client.get_model_repository_index()
            listed = sorted((m.get("name"), str(m.get("version")), m.get("state")) for m in index)
            want = sorted((m.name, m.version, "READY") for m in models)
            report.check("repository index", listed == want,
                         ", ".join(f"{n}:{v} {s}" for n, v, s in listed)
                         + ("" if listed == want else f" (expected {want})"))
        except InferenceServerException as e:
            report.fail("repository index", str(e))

        for model in models:
            check_model(client, model, report)

        first = models[0]
        try:
            client.load_model(first.name)
            report.ok("load_model", f"{first.name}: loaded (already)")
        except InferenceServerException as e:
            report.fail("load_model", f"{first.name}: {e}")
        try:
            client.load_model(UNKNOWN_MODEL)
            report.fail("load_model (unknown)", f"{UNKNOWN_MODEL} was accepted")
        except InferenceServerException as e:
            report.check("load_model (unknown)", e.status() == "404", f"refused: {e}")
        try:
            client.unload_model(first.name)
            report.fail("unload_model", f"{first.name} was unloaded, not refused")
        except InferenceServerException as e:
            # Refused as a bad request, saying how a model is removed.
            report.check("unload_model", e.status() == "403" and "reload" in e.message(),
                         f"refused: {e}")
    except InferenceServerException as e:
        report.fail("server", str(e))
    finally:
        client.close()

    total = report.passed + len(report.failures)
    if report.failures:
        print(f"triton_check: {len(report.failures)} of {total} checks failed:")
        for f in report.failures:
            print(f"  {f}")
        return 1
    print(f"triton_check: all {total} checks passed on {len(models)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
