#!/usr/bin/env python3
"""Static INT8 quantization of a served model, calibrated on images preprocessed as Arbiter does.

Run with the set-up's venv python (onnxruntime's own quantization tool, no other package):

    var/venv/bin/python scripts/quantize.py etc/efficientnet-lite0.toml --out var/models/efficientnet-lite0-int8.onnx

It reads the model of CONFIG (`--model NAME` when the config has several `[[model]]` tables), runs
every calibration image through that model's own recipe (`[model.preprocess]`: resize, crop,
channels, normalization, layout and element type, exactly as Arbiter's worker does; the code is
`recipes.py`, the same the reference answers are computed with), quantizes the model with
`onnxruntime.quantization.quantize_static` and writes:

- OUT: the INT8 model (QDQ: QuantizeLinear/DequantizeLinear pairs around each quantized operator,
  which ONNX Runtime fuses into integer kernels at load). Serve it by pointing the model's `path`
  at it: nothing else in the config changes (same input, same recipe, same labels).
- OUT with `.json` for `.onnx` (or `--report FILE`): how its answers differ from the FP32
  model's, on the calibration images and on the held-apart ones, also printed.

Defaults, chosen by measurement on x86 CPUs with VNNI (docs/int8.md): U8 activations and S8
weights (U8S8), weights per output channel, MinMax calibration, QDQ format. The traps:

- S8 activations (`--activation s8`) run about 3x slower than U8 on x86: ONNX Runtime's x86 integer
  kernels are U8S8; S8S8 is converted on the fly. Use it only for a target that wants it.
- On an x86 CPU without VNNI (no avx512_vnni / avx_vnni / amx_int8 flag), U8S8 products are summed
  in 16 bits by the AVX2/AVX512BW instruction (vpmaddubsw) and can saturate: quantize with
  `--reduce-range` (7-bit weights), or serve with ONNX Runtime's `session.x64quantprecision`. The
  script warns when the CPU it runs on lacks VNNI and `--reduce-range` is off.
- Per-channel weights (on by default, `--per-tensor` to turn off) keep the accuracy of
  depthwise convolutions (EfficientNet, MobileNet), which per-tensor scales ruin.
- Operators without an integer kernel (Softmax, Resize, ...) stay FP32 between a
  DequantizeLinear and a QuantizeLinear; the report lists which operator types stay FP32.
- Calibration: MinMax (the default) over a few dozen to a few hundred images of the served
  distribution is enough for CNN classifiers; `--method entropy|percentile` clip outliers and may
  keep more top-1 answers on models with long-tailed activations, at a longer calibration. More
  images than a few hundred change little; too few (under ~20) leave ranges that real photos exceed.

Images: every image file directly in `--calibration DIR` (default `var/photos`; sub-folders such as
`bad/` are not read), sorted by name, each also mirrored left-right unless `--no-variants`, at most
`--images N` of them. Every `--hold-every`-th photo (default 4: a quarter) is held apart from
calibration and only measured, with its variants; `--held-out DIR` adds a folder of held-apart
photos instead. Files Pillow cannot decode are skipped and named.

The report, per set (calibration, held-apart): top-1 agreement and mean top-5 overlap, on all
images and on those where FP32 is confident (its softmax top-1 p >= 0.5); the max and mean absolute
output difference, against the FP32 outputs' standard deviation; for a threshold or sigmoid model
(the seed's), the share of images whose answer (the set of labels kept) is the same, and the share
of FP32 outputs within 0.3 of the threshold (where any change of arithmetic flips labels). Also the
time per image of each model in ONNX Runtime alone (2 threads, batch 1), on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
CONFIDENT = 0.5
NEAR_THRESHOLD = 0.3
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Node types that are quantization's own plumbing, not the model's arithmetic.
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def select_model(config: Path, name: str | None) -> dict:
    """The `[model]` table of CONFIG, or the `[[model]]` one named NAME (the only one without)."""
    toml = tomllib.loads(config.read_text())
    models = toml.get("model")
    if models is None:
        raise SystemExit(f"{config}: no [model] table")
    if isinstance(models, dict):
        models = [models]
    if name is not None:
        found = [m for m in models if m.get("name") == name]
        if not found:
            names = ", ".join(str(m.get("name")) for m in models)
            raise SystemExit(f"{config}: no model named {name!r} (there are: {names})")
        return found[0]
    if len(models) > 1:
        names = ", ".join(str(m.get("name")) for m in models)
        raise SystemExit(f"{config}: several models ({names}); say which with --model NAME")
    return models[0]


class Recipe:
    """A model's preprocessing, as Arbiter's worker does it (recipes.py), and its answer rule."""

    def __init__(self, model: dict, session: ort.InferenceSession):
        self.pre = model.get("preprocess", {})
        self.post = model.get("postprocess", {})
        self.threshold = float(model.get("threshold", 0.5))
        self.resize = recipes.resize_of(self.pre)
        inp = session.get_inputs()[0]
        size = self.pre.get("input_size")
        if size is None:
            shape = inp.shape[1:3] if self.pre.get("layout", "nchw") == "nhwc" else inp.shape[2:4]
            if not all(isinstance(d, int) for d in shape):
                raise SystemExit("the model's input size is symbolic: set input_size in "
                                 "[model.preprocess]")
            self.height, self.width = shape
        else:
            self.height, self.width = (size, size) if isinstance(size, int) else size
        self.input_name = inp.name

    def tensor(self, img: Image.Image) -> np.ndarray:
        """The model's input (a batch of one) for an RGB image."""
        rgb = recipes.apply(img, self.resize, self.width, self.height)
        return recipes.to_tensor(np.asarray(rgb, dtype=np.uint8), self.pre)

    @property
    def softmax_model(self) -> bool:
        return self.post.get("output", "threshold") == "softmax"

    def answer(self, outputs: np.ndarray) -> list[int]:
        """The classes Arbiter's answer keeps, in its order."""
        return recipes.answer(outputs, list(range(len(outputs))), self.threshold, self.post)


def image_files(folder: Path) -> list[Path]:
    """Every image file directly in FOLDER, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def tensors(files: list[Path], recipe: Recipe, variants: bool) -> tuple[list[str], list[np.ndarray]]:
    """Each file (and its mirror image, with variants) through the recipe, named; undecodable
    files skipped and said."""
    names, xs = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except Exception as e:  # noqa: BLE001 - a file Pillow refuses is no calibration image
            print(f"skipped {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        names.append(path.name)
        xs.append(recipe.tensor(rgb))
        if variants:
            names.append(path.name + ":mirrored")
            xs.append(recipe.tensor(ImageOps.mirror(rgb)))
    return names, xs


class Reader:
    """onnxruntime.quantization's CalibrationDataReader over preprocessed tensors, one at a time."""

    def __init__(self, input_name: str, xs: list[np.ndarray]):
        self.input_name = input_name
        self.items = iter(xs)

    def get_next(self) -> dict | None:
        x = next(self.items, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:  # the calibrator reads once
        pass


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_all(sess: ort.InferenceSession, input_name: str, xs: list[np.ndarray]) -> np.ndarray:
    return np.stack([sess.run(None, {input_name: x})[0][0] for x in xs]).astype(np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(fp32: np.ndarray, int8: np.ndarray, recipe: Recipe) -> dict:
    """How INT8's outputs differ from FP32's on one set of images (rows)."""
    n = len(fp32)
    if n == 0:
        return {"images": 0}
    top1 = fp32.argmax(axis=1) == int8.argmax(axis=1)
    k = min(5, fp32.shape[1])
    top_a = np.argsort(-fp32, axis=1)[:, :k]
    top_b = np.argsort(-int8, axis=1)[:, :k]
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b)])
    diff = np.abs(fp32 - int8)
    confident = softmax(fp32).max(axis=1) >= CONFIDENT
    report = {
        "images": n,
        "top1_agreement": float(top1.mean()),
        "top5_overlap": float(overlap.mean()),
        "confident_images": int(confident.sum()),
        "confident_top1_agreement": float(top1[confident].mean()) if confident.any() else None,
        "confident_top5_overlap": float(overlap[confident].mean()) if confident.any() else None,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "fp32_output_std": float(fp32.std()),
    }
    if not recipe.softmax_model:
        same = [recipe.answer(a) == recipe.answer(b) for a, b in zip(fp32, int8)]
        scores = 1 / (1 + np.exp(-fp32)) if recipe.post.get("output") == "sigmoid" else fp32
        report["answer_agreement"] = float(np.mean(same))
        report["fp32_outputs_near_threshold"] = float(
            (np.abs(scores - recipe.threshold) < NEAR_THRESHOLD).mean())
    return report


def fp32_operators(model: onnx.ModelProto) -> dict[str, int]:
    """The operator types that compute in float in a QDQ model: nodes none of whose inputs come
    from a DequantizeLinear (so no integer kernel replaces them), by type."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS or any(i in dq_outputs for i in node.input):
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def speed(path: Path, input_name: str, x: np.ndarray, threads: int, seconds: float) -> float:
    """Images per second of ONNX Runtime alone at batch 1 on THREADS threads."""
    sess = session(path, threads)
    for _ in range(3):
        sess.run(None, {input_name: x})
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds and n < 10_000:
        sess.run(None, {input_name: x})
        n += 1
    return n / elapsed


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def quantize(fp32_path: Path, out: Path, reader: Reader, args: argparse.Namespace) -> None:
    """Pre-processes (shape inference and ONNX Runtime's basic fusions, so BatchNorm folds into
    the convolutions before their weights are quantized), then quantizes statically."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as e:  # noqa: BLE001 - the model quantizes without it, less fused
            print(f"pre-processing skipped ({type(e).__name__}: {e})", file=sys.stderr)
            source = fp32_path
        quantize_static(
            str(source), str(out), reader,
            quant_format=QuantFormat.QDQ if args.format == "QDQ" else QuantFormat.QOperator,
            per_channel=not args.per_tensor,
            reduce_range=args.reduce_range,
            activation_type=types[args.activation],
            weight_type=QuantType.QInt8,
            calibrate_method=methods[args.method],
            extra_options={"ActivationSymmetric": args.activation == "s8"},
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="the Arbiter config naming the model")
    ap.add_argument("--model", help="which [[model]] (its name), when the config has several")
    ap.add_argument("--out", type=Path, required=True, help="the INT8 .onnx file to write")
    ap.add_argument("--report", type=Path, help="the JSON report (default: OUT with .json)")
    ap.add_argument("--calibration", type=Path, default=ROOT / "var/photos",
                    help="folder of calibration photos (default var/photos)")
    ap.add_argument("--images", type=int, default=0,
                    help="at most N calibration images, variants counted (default: all)")
    ap.add_argument("--held-out", type=Path,
                    help="folder of held-apart photos (default: every --hold-every-th photo)")
    ap.add_argument("--hold-every", type=int, default=4,
                    help="without --held-out, hold every Nth photo apart (0: none; default 4)")
    ap.add_argument("--no-variants", action="store_true",
                    help="do not add each photo mirrored left-right")
    ap.add_argument("--per-tensor", action="store_true",
                    help="one scale per weight tensor instead of per output channel")
    ap.add_argument("--per-channel", action="store_true",
                    help="per output channel weights (the default; kept for clarity)")
    ap.add_argument("--reduce-range", action="store_true",
                    help="7-bit weights, for x86 CPUs without VNNI (see the docstring)")
    ap.add_argument("--format", choices=["QDQ", "QOperator"], default="QDQ")
    ap.add_argument("--activation", choices=["u8", "s8"], default="u8",
                    help="activation type (u8: U8S8, the fast one on x86; s8: S8S8)")
    ap.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                    help="calibration method (default minmax)")
    ap.add_argument("--threads", type=int, default=2,
                    help="ONNX Runtime threads for the speed figure (default 2)")
    ap.add_argument("--speed-seconds", type=float, default=2.0,
                    help="seconds each model is timed (0: no timing)")
    args = ap.parse_args(argv)
    if args.per_tensor and args.per_channel:
        ap.error("--per-tensor and --per-channel contradict")

    config = args.config.resolve()
    model = select_model(config, args.model)
    fp32_path = (config.parent / model["path"]).resolve()
    if not fp32_path.is_file():
        raise SystemExit(f"the model file {fp32_path} does not exist")
    fp32 = session(fp32_path)
    recipe = Recipe(model, fp32)

    flags = cpu_flags()
    if args.activation == "s8":
        print("note: S8 activations run about 3x slower than U8 in ONNX Runtime on x86 CPUs",
              file=sys.stderr)
    if flags and "avx2" in flags and not flags & set(VNNI_FLAGS) and not args.reduce_range:
        print("warning: this CPU has no VNNI: U8S8 products can saturate in 16 bits; consider "
              "--reduce-range (see docs/int8.md)", file=sys.stderr)

    photos = image_files(args.calibration)
    if args.held_out is not None:
        calib_files, held_files = photos, image_files(args.held_out)
    elif args.hold_every > 0:
        calib_files = [p for i, p in enumerate(photos) if (i + 1) % args.hold_every]
        held_files = [p for i, p in enumerate(photos) if not (i + 1) % args.hold_every]
    else:
        calib_files, held_files = photos, []
    variants = not args.no_variants
    calib_names, calib_xs = tensors(calib_files, recipe, variants)
    if args.images > 0:
        calib_names, calib_xs = calib_names[: args.images], calib_xs[: args.images]
    held_names, held_xs = tensors(held_files, recipe, variants)
    if not calib_xs:
        raise SystemExit(f"no calibration image in {args.calibration}")
    if len(calib_xs) < 20:
        print(f"note: {len(calib_xs)} calibration images; ranges from fewer than ~20 may be "
              "exceeded by real photos", file=sys.stderr)

    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quantize(fp32_path, out, Reader(recipe.input_name, calib_xs), args)
    quantize_s = time.perf_counter() - started

    int8 = session(out)
    int8_name = int8.get_inputs()[0].name
    sets = {}
    for label, xs in (("calibration", calib_xs), ("held_apart", held_xs)):
        a = run_all(fp32, recipe.input_name, xs) if xs else np.zeros((0, 1))
        b = run_all(int8, int8_name, xs) if xs else np.zeros((0, 1))
        sets[label] = compare(a, b, recipe)
    speeds = {}
    if args.speed_seconds > 0:
        x = calib_xs[0]
        speeds = {
            "threads": args.threads,
            "fp32_img_per_s": speed(fp32_path, recipe.input_name, x, args.threads,
                                    args.speed_seconds),
            "int8_img_per_s": speed(out, int8_name, x, args.threads, args.speed_seconds),
        }
        speeds["ratio"] = speeds["int8_img_per_s"] / speeds["fp32_img_per_s"]
    report = {
        "config": str(args.config),
        "model": model.get("name"),
        "fp32": str(fp32_path),
        "int8": str(out),
        "settings": {
            "format": args.format,
            "activation": args.activation,
            "weights": "s8",
            "per_channel": not args.per_tensor,
            "reduce_range": args.reduce_range,
            "calibration_method": args.method,
            "calibration_images": len(calib_xs),
            "held_apart_images": len(held_xs),
            "variants": variants,
        },
        "cpu_vnni": sorted(flags & set(VNNI_FLAGS)),
        "onnxruntime": ort.__version__,
        "quantize_seconds": round(quantize_s, 1),
        "fp32_operators": fp32_operators(onnx.load(str(out), load_external_data=False)),
        "calibration_names": calib_names,
        "held_apart_names": held_names,
        **sets,
        "speed": speeds,
    }
    report_path = args.report or out.with_suffix(".json")
    tmp = report_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(report_path)
    print_report(report)
    print(f"wrote {out} and {report_path}")
    return 0


def print_report(r: dict) -> None:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    s = r["settings"]
    print(f"{r['model'] or r['fp32']}: INT8 {s['format']} "
          f"{'U8' if s['activation'] == 'u8' else 'S8'}S8, "
          f"{'per-channel' if s['per_channel'] else 'per-tensor'}, {s['calibration_method']} "
          f"on {s['calibration_images']} images{', reduce_range' if s['reduce_range'] else ''}")
    for label in ("calibration", "held_apart"):
        c = r[label]
        if not c["images"]:
            print(f"  {label}: no images")
            continue
        line = (f"  {label}: {c['images']} images, top-1 agreement {pct(c['top1_agreement'])}, "
                f"top-5 overlap {pct(c['top5_overlap'])}; where FP32 is confident "
                f"({c['confident_images']}): top-1 {pct(c['confident_top1_agreement'])}, "
                f"top-5 {pct(c['confident_top5_overlap'])}; |diff| max {c['max_abs_diff']:.4f} "
                f"mean {c['mean_abs_diff']:.4f} (FP32 outputs' std {c['fp32_output_std']:.4f})")
        if "answer_agreement" in c:
            line += (f"; same answer {pct(c['answer_agreement'])}, FP32 outputs within "
                     f"{NEAR_THRESHOLD} of the threshold {pct(c['fp32_outputs_near_threshold'])}")
        print(line)
    ops = ", ".join(f"{k} x{v}" for k, v in r["fp32_operators"].items()) or "none"
    print(f"  operators left in FP32: {ops}")
    if r["speed"]:
        sp = r["speed"]
        print(f"  ONNX Runtime alone, batch 1, {sp['threads']} threads: FP32 "
              f"{sp['fp32_img_per_s']:.1f} img/s, INT8 {sp['int8_img_per_s']:.1f} img/s "
              f"({sp['ratio']:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
