"""The run: the ceiling, then each server in turn, for each repetition; see the package's doc."""

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import time
import tomllib
from pathlib import Path

from .ceiling_runs import beside_shapes, ceiling, ceiling_shapes, fastest_arbiter_shape, measure_beside
from .common import PHOTOS, PROBE_PHOTO, ROOT, VAR, log, say
from .lifecycle import check_answers, kill_worker, time_to_first_200
from .load import run_oha
from .machine import machine, versions
from .metrics import metrics_delta, metrics_snapshot
from .processes import cleanup, tree
from .servers import Arbiter, ArbiterNginx, Peer
from .trained import (
    SEED_CONFIG, TRAINED_CONCURRENCIES, TRAINED_CONFIG, TRAINED_PHOTOS, ceiling_args, model_of,
    preprocess_alone, recipe_table, same_answer, softmax_reference, without_recipe,
)
from .usage import Quiet, memory, settle


def fmt_run(r):
    """One line for a measured point."""
    codes = ",".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
    errs = sum(r["errors"].values())
    p = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    return (
        f"{r['server']:<14} {r['photo']:<17} c={r['concurrency']:<3} rep={r['rep']}: "
        f"{r['rps']:6.2f} req/s  p50 {p(r['p50_ms'])} p90 {p(r['p90_ms'])} p99 {p(r['p99_ms'])} ms  "
        f"status {codes or '-'}  errors {errs}  aborted {r['aborted_at_deadline']}  "
        f"RSS {r['peak_rss'] / 2**20:.0f} MiB PSS {r['peak_pss'] / 2**20:.0f} MiB  "
        f"other load {r['cpu']['other_cores']:.2f} cores"
    )


def main():
    """Runs the benchmark; exits non-zero when a server did not answer."""
    parser = argparse.ArgumentParser(prog="python -m harness", description="Arbiter's benchmark harness (run by scripts/bench).")
    parser.add_argument("--arbiter", required=True, help="the arbiter binary")
    parser.add_argument("--oha", required=True, help="the oha binary")
    parser.add_argument("--config", help="arbiter config to benchmark (default: etc/arbiter.toml; with --trained, etc/efficientnet-lite0.toml)")
    parser.add_argument("--out", required=True, help="run directory (results.json, logs)")
    parser.add_argument("--mode", default="full", choices=["full", "smoke"])
    parser.add_argument("--duration", type=float, help="seconds per load point")
    parser.add_argument("--reps", type=int, help="repetitions")
    parser.add_argument("--concurrency", help="comma-separated client counts")
    parser.add_argument("--servers", help="comma-separated servers (default: arbiter,arbiter+nginx,arbiter-fast-jpeg,peer; with --trained, arbiter,arbiter-seed)")
    parser.add_argument(
        "--trained", action="store_true",
        help="the trained model's run: its config's Arbiter at 1, 8 and 64 clients on the 512x600 and 12 MP photos, "
        "beside ONNX Runtime alone and preprocessing alone, the seed's config at 8 clients, and the recipe families' "
        "cost per image (needs --preprocess)",
    )
    parser.add_argument("--preprocess", help="bench/'s preprocess program (release build), for --trained")
    parser.add_argument(
        "--before",
        help="an arbiter binary built from an earlier commit: with --trained, it serves the seed's config at 8 clients "
        "too (arbiter-before, its [model.*] recipe tables left out, as the seed's defaults), beside arbiter-seed",
    )
    parser.add_argument("--photos", help="comma-separated photos under var/photos (default: all three)")
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="seconds per point to wait for a quiet machine")
    parser.add_argument("--quiet-budget", type=float, default=300.0, help="seconds in all to wait for a quiet machine")
    args = parser.parse_args()
    trained = args.trained
    if trained and not args.preprocess:
        parser.error("--trained needs --preprocess")
    args.config = args.config or str(TRAINED_CONFIG if trained else ROOT / "etc" / "arbiter.toml")
    explicit_servers = bool(args.servers)
    args.servers = args.servers or (
        ("arbiter,arbiter-seed" + (",arbiter-before" if args.before else "")) if trained
        else "arbiter,arbiter+nginx,arbiter-fast-jpeg,peer"
    )
    if args.photos or trained:
        PHOTOS[:] = [p for p in args.photos.split(",") if p] if args.photos else TRAINED_PHOTOS

    smoke = args.mode == "smoke"
    duration = args.duration or (1.0 if smoke else 10.0)
    reps = args.reps or (1 if smoke or trained else 5)
    concurrencies = [int(c) for c in (args.concurrency or ("1,8" if smoke else "1,8,64")).split(",")]
    if trained and not args.concurrency and not smoke:
        concurrencies = TRAINED_CONCURRENCIES
    warmup = 0.5 if smoke else 3.0
    ceiling_seconds = 1.0 if smoke else 5.0
    quiet = Quiet(per_point=0.0 if smoke else args.quiet_wait, budget=0.0 if smoke else args.quiet_budget)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    # The binary and the config are taken once, at the start: others may rebuild or edit them
    # while the run goes on.
    base = (args.config, Path(args.config).read_text())
    # ONNX Runtime alone runs the model the config serves; the peer serves the seed's.
    model, size = model_of(*base)
    yardstick = ceiling_args(model, size)
    names = [s for s in args.servers.split(",") if s]
    seed_model = VAR / "models" / "resnet50-voc20.onnx"
    if model != seed_model.resolve() and "peer" in names and not explicit_servers:
        # The peer serves the seed's model: beside another model it would compare nothing.
        names.remove("peer")
    labels = ROOT / "etc" / "class_name.json"
    venv = Path(sys.executable).parent.parent
    manifest = json.loads((VAR / "reference" / "manifest.json").read_text())
    seed_reference = {i["file"]: i["prediction"] for i in manifest["images"] if i["file"] in PHOTOS}
    # A softmax model's answers are its own Python reference's (var/reference/MODEL.json); a
    # model other than the seed's without one has its answers unchecked.
    reference = softmax_reference(model, base[1], PHOTOS)
    if reference is None:
        reference = seed_reference if model == seed_model.resolve() else {}
    # At bf16 the outputs are FP32's within rounding, not equal: on the seed's random weights a
    # label near the 0.5 threshold may flip (crates/infer/tests/bf16.rs checks the outputs).
    bf16 = tomllib.loads(base[1]).get("model", {}).get("precision") == "bf16"
    if bf16:
        reference = {}
    # What fast_jpeg must answer: Python's after Pillow's draft (the same for small photos); the
    # set-up writes it for the seed's model only.
    reference_draft = {
        i["file"]: i.get("draft_prediction", i["prediction"]) for i in manifest["images"] if i["file"] in PHOTOS
    } if model == seed_model.resolve() and not bf16 else {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    wall0 = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    binary = out_dir / "arbiter.bin"
    shutil.copy2(args.arbiter, binary)
    preprocess_bin = None
    if args.preprocess:
        preprocess_bin = out_dir / "preprocess.bin"
        shutil.copy2(args.preprocess, preprocess_bin)
    seed_base = (str(SEED_CONFIG), SEED_CONFIG.read_text())
    before_binary = None
    if args.before:
        before_binary = out_dir / "arbiter-before.bin"
        shutil.copy2(args.before, before_binary)
    seed_photos = [p for p in PHOTOS if p in TRAINED_PHOTOS] or list(PHOTOS)
    servers = {
        "arbiter": lambda: Arbiter(binary, base, out_dir, cores),
        "arbiter+nginx": lambda: ArbiterNginx(binary, base, out_dir, cores),
        "arbiter-fast-jpeg": lambda: Arbiter(binary, base, out_dir, cores, fast_jpeg=True),
        "peer": lambda: Peer(venv, out_dir, cores, seed_model, labels),
        # The seed's config beside the trained run: its recipe's speed on the same cores.
        "arbiter-seed": lambda: Arbiter(
            binary, seed_base, out_dir, cores, name="arbiter-seed", concurrencies=[8], photos=seed_photos
        ),
        # The same with a binary from before the recipes, which knows no [model.preprocess].
        "arbiter-before": lambda: Arbiter(
            before_binary, (seed_base[0], without_recipe(seed_base[1])), out_dir, cores,
            name="arbiter-before", concurrencies=[8], photos=seed_photos,
        ),
    }
    probe_arbiter = Arbiter(binary, base, out_dir, cores)
    results = {
        "meta": {
            "mode": args.mode,
            "trained": trained,
            "model": str(model),
            "started": started.isoformat(timespec="seconds"),
            "duration_s": duration,
            "reps": reps,
            "concurrencies": concurrencies,
            "photos": PHOTOS,
            "servers": names,
            "warmup_s": warmup,
            "ceiling_seconds": ceiling_seconds,
            "machine": machine(),
            "versions": versions(args.arbiter, args.oha),
            # The earlier binary, by its file name (name it after its commit).
            "before": Path(args.before).name if args.before else None,
            "arbiter_config": args.config,
            "arbiter_settings": probe_arbiter.settings,
            "peer_settings": {"workers": cores, "threads": 1, "worker_class": "sync"},
            "oha_command": (
                f"oha -z {duration:g}s -c C -t 120s --no-tui --output-format json -m POST "
                f"-F image=@var/photos/PHOTO http://127.0.0.1:PORT/model_predict"
                + (" --wait-ongoing-requests-after-deadline" if smoke else "")
            ),
        },
        "ceiling": [],
        "beside": [],
        "runs": [],
        "starts": [],
        "kills": [],
        "answers": [],
        "stages": [],
        "preprocess": [],
        "recipes": [],
    }
    failures = []

    def save():
        results["meta"]["wall_s"] = time.monotonic() - wall0
        results["meta"]["quiet_waited_s"] = quiet.waited
        results["meta"]["quiet"] = {"per_point_s": quiet.per_point, "budget_s": quiet.budget, "threshold_cores": quiet.threshold}
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))

    try:
        shapes = ceiling_shapes(probe_arbiter, cores)
        if any(n.startswith("arbiter") for n in names):
            # One start before the measured ones, not recorded as such: it builds whatever the
            # arbiter caches on its first start (the prepared weights), as a deployment would.
            server = Arbiter(binary, base, out_dir / "priming", cores)
            try:
                first = time_to_first_200(server, server.port, limit=300.0)
            finally:
                server.stop()
            results["meta"]["priming_start_s"] = first
            say(f"priming start of arbiter (fills its caches; not in the figures): {first if first is None else f'{first:.2f} s'}")
        if trained:
            say("== recipe families: decode + resize and normalize per image")
            results["recipes"] = recipe_table(preprocess_bin, PHOTOS, 3 if smoke else 20, quiet, out_dir)
            save()
        for rep in range(1, reps + 1):
            say(f"== ceiling: ONNX Runtime alone ({ceiling_seconds:g} s per point), repetition {rep}/{reps}")
            results["ceiling"] += ceiling(yardstick, shapes, ceiling_seconds, rep, quiet, out_dir)
            if trained:
                say(f"== preprocessing alone on {cores} threads ({ceiling_seconds:g} s per photo)")
                results["preprocess"] += preprocess_alone(
                    preprocess_bin, args.config, PHOTOS, ceiling_seconds, cores, rep, quiet, out_dir
                )
            save()
            for name in names:
                server = servers[name]()
                port = server.port
                say(f"== {name}, repetition {rep}/{reps}")
                try:
                    first = time_to_first_200(server, port, limit=120.0)
                    if first is None:
                        failures.append(f"{name}: no 200 after its start (exited, or 120 s passed; see its log)")
                        say(f"{name:<14} start: no 200 (exited, or 120 s passed)")
                        continue
                    time.sleep(0.5)
                    photos = getattr(server, "photos", PHOTOS)
                    fast = getattr(server, "fast_jpeg", False)
                    # The peer and the seed's configs serve the seed's model whatever --config says.
                    if name in ("peer", "arbiter-seed", "arbiter-before"):
                        expected = seed_reference
                    else:
                        expected = reference_draft if fast else reference
                    if not expected:
                        why = "served at bf16" if bf16 else f"no Python reference for {model.name}"
                        say(f"{name:<14} answers not checked: {why}")
                    answers = check_answers(port, expected, photos, same_answer) if expected else {}
                    results["answers"].append({"server": name, "rep": rep, "match": answers})
                    for photo, good in answers.items():
                        if not good:
                            failures.append(f"{name}: wrong answer for {photo}")
                    # Warm-up (not recorded), then memory at rest.
                    run_oha(args.oha, port, PROBE_PHOTO, 2, warmup, server.roots(), out_dir / "warmup.json")
                    settle(server.roots())
                    rss, pss, nproc = memory(tree(server.roots()))
                    results["starts"].append(
                        {"server": name, "rep": rep, "seconds": first, "idle_rss": rss, "idle_pss": pss, "processes": nproc}
                    )
                    say(
                        f"{name:<14} start to first 200: {first:.2f} s; at rest: {nproc} processes, "
                        f"RSS {rss / 2**20:.0f} MiB, PSS {pss / 2**20:.0f} MiB"
                    )
                    for photo in photos:
                        for c in getattr(server, "concurrencies", concurrencies):
                            # ONNX Runtime alone just before and just after the points the
                            # targets compare (beside_shapes says which), on the same cores.
                            beside = beside_shapes(name, photo, c, shapes, results["ceiling"], rep, smoke)
                            point = (name, photo, c)
                            # The trained model's every point has both yardsticks beside it.
                            yardsticks = trained and name == "arbiter"
                            if yardsticks:
                                beside = fastest_arbiter_shape(shapes, results["ceiling"], rep)
                            results["beside"] += measure_beside(yardstick, beside, ceiling_seconds, rep, quiet, out_dir, point, "before")
                            if yardsticks:
                                results["preprocess"] += preprocess_alone(
                                    preprocess_bin, args.config, [photo], ceiling_seconds, cores, rep, quiet, out_dir,
                                    beside=(point, "before"),
                                )
                            waited, load = quiet.wait(server.roots())
                            before = metrics_snapshot(server.metrics_port())
                            tag = f"{name.replace('+', '-')}-{photo.split('.')[0]}-c{c}-r{rep}"
                            r = run_oha(
                                args.oha, port, photo, c, duration, server.roots(),
                                out_dir / f"oha-{tag}.json", wait_ongoing=smoke,
                            )
                            after = metrics_snapshot(server.metrics_port())
                            r.update(server=name, photo=photo, concurrency=c, rep=rep,
                                     quiet_wait_s=waited, other_load_before=load)
                            results["runs"].append(r)
                            stages = metrics_delta(before, after)
                            if stages:
                                results["stages"].append(
                                    {"server": name, "photo": photo, "concurrency": c, "rep": rep, "stages": stages}
                                )
                            say(fmt_run(r))
                            results["beside"] += measure_beside(yardstick, beside, ceiling_seconds, rep, quiet, out_dir, point, "after")
                            if yardsticks:
                                results["preprocess"] += preprocess_alone(
                                    preprocess_bin, args.config, [photo], ceiling_seconds, cores, rep, quiet, out_dir,
                                    beside=(point, "after"),
                                )
                            if r["ok"] == 0:
                                failures.append(f"{name}: no 200 for {photo} at {c} clients")
                            if any(k.startswith("5") and k != "503" for k in r["statuses"]):
                                failures.append(f"{name}: 5xx other than 503 for {photo} at {c} clients")
                            settle(server.roots())
                            save()
                    k = kill_worker(server, port)
                    k.update(server=name, rep=rep)
                    results["kills"].append(k)
                    if k["seconds"] is None:
                        failures.append(f"{name}: no 200 from a replacement within 60 s of a worker's SIGKILL")
                        say(f"{name:<14} SIGKILL of a worker: no 200 from its replacement ({k})")
                    else:
                        say(
                            f"{name:<14} SIGKILL of a worker to the first 200 from its replacement: "
                            f"{k['seconds']:.2f} s; failed requests meanwhile: {k['failed']} "
                            f"({k['clients']} clients)"
                        )
                finally:
                    server.stop()
                save()
    except KeyboardInterrupt as e:
        failures.append(f"interrupted: {e}")
        log(f"interrupted: {e}")
    finally:
        cleanup()
        results["meta"]["failures"] = failures
        results["meta"]["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        save()
    for f in failures:
        say(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
