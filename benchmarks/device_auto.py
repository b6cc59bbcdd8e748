"""What `lnm.device: auto` costs a task on a node without a GPU: deciding the device now
(the GPU driver's device files, CUDA_VISIBLE_DEVICES) against asking torch, as it did
before (import torch, torch.cuda.is_available()). Each in a fresh process, medians of
--repeats runs, with the process's peak RSS.

    python benchmarks/device_auto.py
    python benchmarks/device_auto.py --smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE.parent / "workflow" / "scripts"

CHILD = """
import json, sys, time
sys.path.insert(0, {scripts!r}); sys.path.insert(0, {here!r})
from measure import peak_rss_mb
before = peak_rss_mb()
started = time.perf_counter()
if {how!r} == "now":
    from shardmap.devices import resolve_device
    device = resolve_device("auto", "lnm.device", "mapping tasks")
else:
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
seconds = time.perf_counter() - started
print(json.dumps({{"device": device, "seconds": seconds, "rss_added_mb": peak_rss_mb() - before,
                   "torch_imported": "torch" in sys.modules}}))
"""


def run(how):
    code = CHILD.format(scripts=str(SCRIPTS), here=str(HERE), how=how)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    runs = {"now": [], "before (torch asked)": []}
    for _ in range(args.repeats):
        for how in runs:  # in turn, so both see the same load
            runs[how].append(run("now" if how == "now" else "torch"))
    print("| lnm.device: auto, decided | device | seconds | RSS added MB | torch imported |")
    print("|---|---|---|---|---|")
    for how, results in runs.items():
        print(f"| {how} | {results[0]['device']} | {statistics.median(r['seconds'] for r in results):.4f} | "
              f"{statistics.median(r['rss_added_mb'] for r in results):.0f} | {results[0]['torch_imported']} |")


if __name__ == "__main__":
    main()
