"""The INT8 and BF16 run (`scripts/bench --int8`): each INT8 model of the set-up, and the seed's
model at `precision = "bf16"`, served by Arbiter and run by ONNX Runtime alone, beside ONNX
Runtime alone on its FP32 model, in one run.

For each (FP32 config, served file, precision) of MODELS: ONNX Runtime alone on the FP32 model (bench/ceiling.py,
1 process, 2 threads, batch 1 and 8), then the harness's trained run (`python -m harness --trained`)
on a copy of the config whose model `path` and `precision` are the served ones (Arbiter at 1, 8 and 64 clients on the
512 x 600 photo, ONNX Runtime alone on the INT8 file in the server's shapes and beside each point,
preprocessing alone), then the FP32 ceiling again (shared cores drift). Writes OUT/int8.json and
OUT/int8.md: req/s and the ratios against ONNX Runtime alone on FP32 (the best of before and after,
batch 1 or 8) and on the served file (the harness's ceilings just before and after the 8-client
point, the better), and the issue's targets at 8 clients, met or not. Every figure is the
machine's at the time: on shared cores, read the harness's "other load" beside each.

Run: scripts/bench --int8 [--smoke] (the published figures: docs/int8.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
sys.path.insert(0, str(ROOT / "bench"))
from harness.servers import toml_dump  # noqa: E402

# (name, FP32 config, the file served (an INT8 file made by scripts/setup, or None: the config's
# own), the precision served at)
MODELS = [
    ("seed ResNet50 INT8", "etc/arbiter.toml", "var/models/resnet50-voc20-int8.onnx", "fp32"),
    ("EfficientNet-Lite0 INT8", "etc/efficientnet-lite0.toml", "var/models/efficientnet-lite0-int8.onnx", "fp32"),
    ("seed ResNet50 BF16", "etc/arbiter.toml", None, "bf16"),
]
TARGET_BF16 = 1.8  # BF16 served at 8 clients, against ONNX Runtime alone on FP32
PHOTO = "grace_hopper.jpg"  # 512 x 600
TARGET_VS_FP32 = 3.0  # the seed's ResNet50 in INT8 at 8 clients, against ONNX Runtime alone on FP32
TARGET_VS_INT8 = 0.9  # against ONNX Runtime alone on the same INT8 file


def served_config(config: Path, model_file: Path, precision: str, out: Path) -> Path:
    """A copy of CONFIG serving MODEL_FILE at PRECISION, every relative path made absolute."""
    doc = tomllib.loads(config.read_text())
    base = config.resolve().parent

    def absolute(table: dict, key: str) -> None:
        if isinstance(table.get(key), str):
            table[key] = str((base / table[key]).resolve())

    for section, key in (("server", "pidfile"), ("server", "control_socket"), ("log", "file"),
                         ("model", "cache_dir")):
        absolute(doc.get(section, {}), key)
    model = doc["model"]
    for key in ("labels", "runtime_library", "openvino_library", "cache_dir"):
        absolute(model, key)
    model["path"] = str(model_file.resolve())
    model["precision"] = precision
    # A run folder of its own for the pidfile and socket, so a running arbiter is left alone.
    server = doc.setdefault("server", {})
    server["pidfile"] = str(out / "arbiter.pid")
    server["control_socket"] = str(out / "arbiter.sock")
    path = out / f"{out.name}.toml"
    path.write_text(toml_dump(doc))
    return path


def ceiling(model: Path, batch: int, seconds: float, out: Path) -> float:
    """Images per second of ONNX Runtime alone: 1 process, 2 threads, batch BATCH."""
    dest = out / f"fp32-{model.stem}-b{batch}-{len(list(out.glob('fp32-*')))}.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "ceiling.py"), "--model", str(model),
                    "--threads", "2", "--batch", str(batch), "--seconds", str(seconds),
                    "--out", str(dest)], check=True, timeout=seconds + 300)
    return json.loads(dest.read_text())["images_per_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arbiter", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--preprocess", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--smoke", action="store_true", help="short points, to check the run works")
    ap.add_argument("--quiet-budget", type=float, default=60.0)
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds = 1.0 if args.smoke else 5.0
    rows = []
    for name, config, served_file, precision in MODELS:
        config = ROOT / config
        fp32 = (config.parent / tomllib.loads(config.read_text())["model"]["path"]).resolve()
        served_file = ROOT / served_file if served_file else fp32
        if not served_file.is_file():
            raise SystemExit(f"{served_file} is missing: run scripts/setup")
        run_dir = out / f"{served_file.stem}-{precision}"
        run_dir.mkdir(exist_ok=True)
        cfg = served_config(config, served_file, precision, run_dir)
        fp32_alone = {b: [ceiling(fp32, b, seconds, run_dir)] for b in (1, 8)}
        cmd = [sys.executable, "-m", "harness", "--trained", "--mode", "smoke" if args.smoke else "full",
               "--arbiter", args.arbiter, "--oha", args.oha, "--preprocess", args.preprocess,
               "--config", str(cfg), "--servers", "arbiter", "--photos", PHOTO,
               "--concurrency", "1,8,64", "--out", str(run_dir),
               "--quiet-budget", str(args.quiet_budget)]
        code = subprocess.run(cmd, check=False, cwd=ROOT).returncode
        for b in (1, 8):
            fp32_alone[b].append(ceiling(fp32, b, seconds, run_dir))
        results = json.loads((run_dir / "results.json").read_text())
        # ONNX Runtime alone on the served file just before and after the 8-client point (the
        # shared cores' speed drifts within minutes), else the run's best.
        beside8 = [c["images_per_s"] for c in results.get("beside", [])
                   if c.get("concurrency") == 8 and c.get("photo", PHOTO) == PHOTO]
        int8_alone = max(beside8 or [c["images_per_s"] for c in results["ceiling"]] or [0.0])
        fp32_best = max(max(v) for v in fp32_alone.values())
        served = {}
        for r in results["runs"]:
            if r.get("server") == "arbiter" and r.get("photo") == PHOTO:
                served[r["concurrency"]] = max(served.get(r["concurrency"], 0.0), r["rps"])
        # A worker that does not pass `precision` on would serve FP32 under the BF16 name: the
        # worker's log says what it loaded.
        logs = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*.log"))
        really = precision != "bf16" or "bf16 (OpenVINO)" in logs
        rows.append({
            "model": name, "fp32": str(fp32), "served": str(served_file), "precision": precision,
            "served_at_precision": really, "harness_exit": code,
            "fp32_alone": {f"batch{b}": v for b, v in fp32_alone.items()},
            "fp32_alone_best": fp32_best, "int8_alone_best": int8_alone,
            "req_per_s": served,
            "vs_fp32_alone": {c: rps / fp32_best for c, rps in served.items()},
            "vs_int8_alone": {c: rps / int8_alone for c, rps in served.items()} if int8_alone else {},
        })
    (out / "int8.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| served | ONNX Runtime alone on FP32 (img/s, best of b1/b8) | ONNX Runtime alone on the served file | "
             "Arbiter req/s at 1 / 8 / 64 clients | at 8: x FP32 alone | at 8: x the file alone |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["req_per_s"]
        at = " / ".join(f"{s.get(c, 0):.1f}" for c in (1, 8, 64))
        v32, v8 = r["vs_fp32_alone"].get(8, 0), r["vs_int8_alone"].get(8, 0)
        name = r["model"] + ("" if r["served_at_precision"] else " (NOT served at bf16: the worker did not pass precision)")
        lines.append(f"| {name} | {r['fp32_alone_best']:.1f} | {r['int8_alone_best']:.1f} | {at} | "
                     f"{v32:.2f} | {v8:.2f} |")
    seed, bf16 = rows[0], rows[2]
    lines += ["", f"Targets at 8 clients, seed ResNet50 INT8: >= {TARGET_VS_FP32}x ONNX Runtime alone on FP32: "
              f"{'met' if seed['vs_fp32_alone'].get(8, 0) >= TARGET_VS_FP32 else 'not met'} "
              f"({seed['vs_fp32_alone'].get(8, 0):.2f}x); >= {TARGET_VS_INT8}x ONNX Runtime alone on INT8: "
              f"{'met' if seed['vs_int8_alone'].get(8, 0) >= TARGET_VS_INT8 else 'not met'} "
              f"({seed['vs_int8_alone'].get(8, 0):.2f}x). BF16 served >= {TARGET_BF16}x ONNX Runtime alone on "
              f"FP32: {'met' if bf16['served_at_precision'] and bf16['vs_fp32_alone'].get(8, 0) >= TARGET_BF16 else 'not met'} "
              f"({bf16['vs_fp32_alone'].get(8, 0):.2f}x{'' if bf16['served_at_precision'] else ', not served at bf16'})."]
    (out / "int8.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return max(r["harness_exit"] for r in rows)


if __name__ == "__main__":
    sys.exit(main())
