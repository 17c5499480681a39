"""The ceiling: images per second of ONNX Runtime alone, in-process, with no HTTP and no decoding.

Runs `procs` processes at once, each with `sessions` sessions of `threads` intra-op threads run
side by side from as many Python threads (the shape of the server being compared: Arbiter's
workers x threads, or its lanes: one single-thread session per thread), feeds each session a
constant batch of `batch` images for `seconds` after a warm-up, and prints one JSON object:

    {"images_per_s": ..., "batch_ms_p50": ..., "batches": ..., ...}

It uses the Python binding of the same ONNX Runtime release (1.32.0) that Arbiter loads, with
the same session settings (graph optimization level ALL, intra-op spinning on: both ONNX
Runtime's defaults); the input is a constant batch in the model's own shape and element type
(`--size H,W` where its height and width are symbolic). Python adds a few microseconds per call, small beside one inference of
this model (docs/benchmarks.md has the measured times).
"""

import argparse
import json
import multiprocessing as mp
import statistics
import time

import numpy as np


def model_input(session, batch, size):
    """A constant batch for the model's one input, in its shape and element type: the batch
    axis is `batch`, a symbolic height and width are `size` (height, width), in the layout the
    model's shape shows (the axis of length 3 is the channels); and the input's name."""
    info = session.get_inputs()[0]
    dims = list(info.shape)
    if len(dims) != 4:
        raise SystemExit(f"ceiling.py: the model's input {info.name} is {dims}, not an image batch")
    channels_last = dims[3] == 3 and dims[1] != 3
    spatial = [2, 3] if not channels_last else [1, 2]
    shape = [batch] + dims[1:]
    for axis, side in zip(spatial, size or (None, None)):
        if not isinstance(shape[axis], int):
            if side is None:
                raise SystemExit(f"ceiling.py: the model's input {info.name} is {dims}: give --size H,W")
            shape[axis] = side
    rng = np.random.default_rng(0)
    if info.type == "tensor(uint8)":
        return rng.integers(0, 256, size=shape, dtype=np.uint8), info.name
    if info.type != "tensor(float)":
        raise SystemExit(f"ceiling.py: the model's input {info.name} is {info.type}, not float or uint8")
    return rng.standard_normal(shape, dtype=np.float32), info.name


def worker(model, threads, batch, seconds, sessions, size, barrier, out):
    """One process: load, warm up, wait for the others, then count batches for `seconds` on each
    session (from its own thread: ONNX Runtime releases the GIL while it runs)."""
    import threading

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    loaded = [ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]) for _ in range(sessions)]
    x, name = model_input(loaded[0], batch, size)
    for session in loaded:
        for _ in range(3):
            session.run(None, {name: x})
    barrier.wait()
    times = [[] for _ in loaded]
    start = time.perf_counter()
    end = start + seconds

    def loop(session, mine):
        while True:
            t0 = time.perf_counter()
            session.run(None, {name: x})
            t1 = time.perf_counter()
            mine.append(t1 - t0)
            if t1 >= end:
                break

    threads_ = [threading.Thread(target=loop, args=(s, t)) for s, t in zip(loaded, times)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    out.put({"elapsed": time.perf_counter() - start, "times": [t for mine in times for t in mine]})


def main():
    """Parses the arguments, runs the processes, prints the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=1, help="sessions per process, run side by side")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    parser.add_argument("--size", help="H,W for a model whose height and width are symbolic")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(",")) if args.size else None

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(args.procs)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(args.model, args.threads, args.batch, args.seconds, args.sessions, size, barrier, out),
        )
        for _ in range(args.procs)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    images = sum(len(r["times"]) * args.batch / r["elapsed"] for r in results)
    all_times = [t for r in results for t in r["times"]]
    text = json.dumps(
        {
            "procs": args.procs,
            "sessions": args.sessions,
            "threads": args.threads,
            "batch": args.batch,
            "seconds": args.seconds,
            "batches": len(all_times),
            "model": args.model,
            "images_per_s": images,
            "batch_ms_p50": statistics.median(all_times) * 1000,
            "batch_ms_min": min(all_times) * 1000,
        }
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
