"""The trained model's run (`--trained`): the model a config serves, the answers its Python
reference expects, and the two yardsticks beside Arbiter's req/s that are not ONNX Runtime:
preprocessing alone (the Rust `preprocess` program of bench/, the config's recipe on every core)
and the cost per image of each recipe family (the same program's `--recipes` table).

With a model as cheap as EfficientNet-Lite0, the decode and resize of a photo cost as much as
the inference or more: the report sets Arbiter's req/s beside min(ONNX Runtime alone,
preprocessing alone), measured in the same run on the same cores.
"""

import json
import subprocess
import tomllib
from pathlib import Path

from .common import ROOT, VAR, say

# What the trained run measures unless told otherwise.
TRAINED_CONFIG = ROOT / "etc" / "efficientnet-lite0.toml"
TRAINED_PHOTOS = ["grace_hopper.jpg", "big_12mp.jpg"]
TRAINED_CONCURRENCIES = [1, 8, 64]
SEED_CONFIG = ROOT / "etc" / "arbiter.toml"
# A score in an answer may differ from the reference's (written with 7 decimals) by this much.
SCORE_TOLERANCE = 1e-5


def model_of(config_path, text):
    """(model path, (height, width) or None) of a config's [model]: the path relative to the
    config's folder, and `model.preprocess.input_size` where the config gives one."""
    doc = tomllib.loads(text)
    model = doc.get("model", {})
    path = (Path(config_path).resolve().parent / model.get("path", "../var/models/resnet50-voc20.onnx")).resolve()
    size = model.get("preprocess", {}).get("input_size")
    if isinstance(size, int):
        size = (size, size)
    return path, (tuple(size) if size else None)


def without_recipe(text):
    """A config's text without its [model.preprocess] and [model.postprocess] tables, for a
    binary from before them (their defaults are the seed's recipe)."""
    from .servers import toml_dump

    doc = tomllib.loads(text)
    for table in ("preprocess", "postprocess"):
        doc.get("model", {}).pop(table, None)
    return toml_dump(doc)


def ceiling_args(model, size):
    """The model arguments of bench/ceiling.py."""
    return ["--model", str(model)] + (["--size", f"{size[0]},{size[1]}"] if size else [])


def softmax_reference(model, text, photos):
    """{photo: expected answer} from var/reference/<model>.json (the Python reference of the
    set-up: Pillow + numpy + ONNX Runtime on the same recipe), for a config whose postprocess is
    softmax top-k; None when the config is not one or there is no such file."""
    post = tomllib.loads(text).get("model", {}).get("postprocess", {})
    ref_file = VAR / "reference" / f"{Path(model).stem}.json"
    if post.get("output") != "softmax" or not ref_file.exists():
        return None
    ref = json.loads(ref_file.read_text())
    k = int(post.get("top_k", 1))
    out = {}
    for photo in photos:
        top = ref["photos"].get(photo, {}).get("top5")
        if top is None or k > len(top):
            continue
        answer = {"result": [name for _, name, _ in top[:k]], "status": 1}
        if post.get("scores"):
            answer["classes"] = [{"index": i, "label": name, "score": score} for i, name, score in top[:k]]
        out[photo] = answer
    return out


def same_answer(got, want):
    """Whether an answer is the reference's: the same names in the same order, and each score
    within SCORE_TOLERANCE of the reference's."""
    if not isinstance(got, dict) or not isinstance(want, dict):
        return got == want
    if got.get("result") != want.get("result") or got.get("status") != want.get("status"):
        return False
    if "classes" not in want:
        return "classes" not in got
    got_classes, want_classes = got.get("classes") or [], want["classes"]
    return len(got_classes) == len(want_classes) and all(
        g.get("index") == w["index"] and g.get("label") == w["label"]
        and isinstance(g.get("score"), (int, float)) and abs(g["score"] - w["score"]) <= SCORE_TOLERANCE
        for g, w in zip(got_classes, want_classes)
    )


def run_json_lines(cmd, log_file, timeout):
    """Runs one of the Rust programs; the JSON objects it printed, one a line."""
    with open(log_file, "ab") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}; see {log_file}")
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]


def preprocess_alone(binary, config, photos, seconds, threads, rep, quiet, out_dir, beside=None):
    """Images per second of the config's preprocessing alone on `threads` threads, per photo;
    `beside` ((server, photo, clients), "before"/"after") tags one measured beside a point."""
    results = []
    for photo in photos:
        waited, load = quiet.wait([])
        found = run_json_lines(
            [str(binary), "--throughput", f"{seconds:g}", "--config", str(config),
             "--threads", str(threads), "--json", str(VAR / "photos" / photo)],
            out_dir / "preprocess.log", timeout=seconds + 120,
        )
        tag = ""
        for r in found:
            r.update(rep=rep, quiet_wait_s=waited, other_load_before=load)
            if beside:
                (server, _, c), when = beside
                r.update(server=server, concurrency=c, when=when)
                tag = f" ({server} c={c} {when})"
            say(f"preprocessing alone{tag} {r['photo']:<17} threads={r['threads']} rep={rep}: {r['images_per_s']:.1f} img/s")
        results += found
    return results


def recipe_table(binary, photos, runs, quiet, out_dir):
    """Decode + resize and normalize per image, best and median of `runs`, per recipe family
    and photo (the seed's first)."""
    quiet.wait([])
    rows = run_json_lines(
        [str(binary), "--recipes", "-n", str(runs), "--json"] + [str(VAR / "photos" / p) for p in photos],
        out_dir / "preprocess.log", timeout=600,
    )
    for r in rows:
        say(
            f"recipe {r['photo']:<17} {r['recipe'][:48]:<48} decode+resize {r['decode_resize_ms_best']:.3f} / "
            f"{r['decode_resize_ms_median']:.3f} ms, normalize {r['normalize_ms_best']:.3f} ms"
        )
    return rows
