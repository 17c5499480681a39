"""gunicorn settings of the Python peer, tuned fairly for a CPU-bound model on this machine.

- Sync workers, one per core: each request is CPU-bound (decode, resize, inference), so more
  workers than cores only adds context switches, and async workers (gevent) gain nothing.
- One ONNX Runtime intra-op thread per worker (PEER_THREADS, read by app.py): workers x threads
  = cores. The seed's `-w 4 -k gevent` with torch's default threads oversubscribes the cores
  (SPEC section 4 gives what it measured).
- The app (and so the model) is loaded in each worker after the fork (no preload_app): an ONNX
  Runtime session does not survive a fork.
- Everything else is gunicorn's default (backlog 2048, timeout 30 s, no keep-alive for sync
  workers).

Environment: PEER_BIND (default 127.0.0.1:10087), PEER_WORKERS (default: the cores).
"""

import os

bind = os.environ.get("PEER_BIND", "127.0.0.1:10087")
workers = int(os.environ.get("PEER_WORKERS", "0")) or os.cpu_count() or 1
worker_class = "sync"
preload_app = False
# gunicorn 27's control socket would be made under $HOME; the benchmark does not use it.
control_socket_disable = True
