"""What every part of the harness shares: where the repository's files are, the photos a run
posts, and its two outputs (progress on stderr, figures on stdout)."""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
# The photos a run posts, under var/photos (narrowed in place by --photos).
PHOTOS = ["grace_hopper.jpg", "chelsea.png", "big_12mp.jpg"]
# The photo used for start, kill and warm-up probes.
PROBE_PHOTO = "grace_hopper.jpg"
# What a phone sends: the peer comparison's second photo.
BIG_PHOTO = "big_12mp.jpg"


def log(msg):
    """Progress on stderr, so stdout carries only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def say(msg=""):
    """A figure line on stdout (the report is made of the same figures)."""
    print(msg, flush=True)
