"""The ceiling: images per second of ONNX Runtime alone, in-process, with no HTTP and no decoding.

Runs `procs` processes at once, each with `sessions` sessions of `threads` intra-op threads run
side by side from as many Python threads (the shape of the server being compared: Arbiter's
workers x threads, or its lanes: one single-thread session per thread), feeds each session a
constant batch of `batch` images for `seconds` after a warm-up, and prints one JSON object:

    {"images_per_s": ..., "batch_ms_p50": ..., "batches": ..., ...}

It uses the Python binding of the same ONNX Runtime release (1.32.0) that Arbiter loads, with
the same session settings (graph optimization level ALL, intra-op spinning on: both ONNX
Runtime's defaults); Python adds a few microseconds per call, small beside one inference of
this model (docs/benchmarks.md has the measured times).
"""

import argparse
import json
import multiprocessing as mp
import statistics
import time

import numpy as np


def worker(model, threads, batch, seconds, sessions, barrier, out):
    """One process: load, warm up, wait for the others, then count batches for `seconds` on each
    session (from its own thread: ONNX Runtime releases the GIL while it runs)."""
    import threading

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    loaded = [ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]) for _ in range(sessions)]
    name = loaded[0].get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
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
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(args.procs)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(args.model, args.threads, args.batch, args.seconds, args.sessions, barrier, out),
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
