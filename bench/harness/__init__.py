"""The benchmark harness: runs every server and workload in one go and records the figures.

Started by scripts/bench (which installs oha and the peer's venv and builds arbiter first).
Everything runs on this machine, on loopback, in one run:

1. The ceiling (bench/ceiling.py): ONNX Runtime alone in-process, shaped like the Arbiter under
   test (its workers x intra-op threads), at batch 1 and at its max batch size; plus one batch-1
   inference on all cores, and the Python peer's shape (cores processes x 1 thread).
2. For each repetition, each server in turn: start it and time the first 200; check its answers
   against the Python reference; warm it up; measure its memory at rest; drive each photo at each
   concurrency with oha for a fixed time while sampling memory; SIGKILL one worker and time the
   first 200 from its replacement; stop it. The points the targets compare have ONNX Runtime
   alone measured again just before and just after them ("beside"): on a shared machine, the
   speed of the cores drifts within minutes. Those are Arbiter with the 512x600 photo at 1 and
   8 clients (compared with ONNX Runtime alone), and each server at 8 clients on the 512x600 and
   the 12-megapixel photos (compared with each other, each as a share of the cores' speed then).

Servers: `arbiter` (its TCP socket), `arbiter+nginx` (arbiter on a unix socket behind an nginx
generated for the run on a free loopback port), `peer` (bench/peer: gunicorn + Flask +
onnxruntime + Pillow). Each server's processes are found as the descendants of the processes the
harness started; memory is summed over them: RSS from /proc/PID/status, PSS from
/proc/PID/smaps_rollup (which counts shared pages, such as mapped model weights, once in all).

Every process is started in its own session and stopped by its pid (process group) at the end,
whatever happens. Results go to OUT/results.json; bench/report turns them into the report.

Run as `python -m harness` with bench/ on the path (scripts/bench does). The modules, one idea
each: common (paths, photos, output), processes (started and stopped), usage (CPU and memory from
/proc), probes (plain HTTP), servers (the servers compared), lifecycle (start, answers, kill),
load (oha), metrics (Arbiter's /metrics), ceiling_runs (ONNX Runtime alone), trained (the
`--trained` run's model, answers and preprocessing yardsticks), machine (what ran where),
__main__ (the run itself).

`--trained`: the trained model's run instead (bench/harness/trained.py): the recipe families'
cost per image, then per repetition ONNX Runtime alone on the config's model and preprocessing
alone on its recipe, Arbiter on etc/efficientnet-lite0.toml at 1, 8 and 64 clients on the
512x600 and 12-megapixel photos (its answers checked against var/reference/MODEL.json), and the
seed's config at 8 clients on the same photos (`arbiter-seed`).
"""
