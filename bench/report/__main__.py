"""The report's command line: results.json in, the markdown and the plots out."""

import argparse
import json
from pathlib import Path

from . import __doc__ as DOC
from .markdown import render
from .plots import plots
from .results import Results
from .trained import render_trained


def main():
    """Reads results.json, writes the markdown and the plots, prints the markdown."""
    parser = argparse.ArgumentParser(prog="python -m report", description=DOC.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--md", required=True, help="the markdown file to write")
    parser.add_argument("--plots", required=True, help="folder for the PNG plots")
    args = parser.parse_args()
    res = Results(json.loads(Path(args.results).read_text()))
    md = Path(args.md)
    plot_dir = Path(args.plots)
    if res.meta.get("trained"):
        # The trained model's run has tables only.
        text = render_trained(res)
    else:
        plots(res, plot_dir)
        try:
            rel = plot_dir.resolve().relative_to(md.resolve().parent).as_posix()
        except ValueError:
            rel = plot_dir.resolve().as_posix()
        text = render(res, rel)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
