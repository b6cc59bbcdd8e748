"""The demo's CPA training time with its settings since issue 27 (the autoencoder
updated on every minibatch, ``adv_steps: 1``, for 50 epochs) against the settings before
it (``adv_steps`` 3: one autoencoder update per two adversary updates, 60 epochs), side
by side on the demo's screen, one thread, alternating runs; medians over ``--repeats``.

    python benchmarks/cpa_training_time.py --repeats 3
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

import torch  # noqa: E402
import yaml  # noqa: E402

from shardmap.cpa.simulate import DEMO_SCREEN, simulate_screen  # noqa: E402
from shardmap.cpa.tasks.train import train_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the demo's cpa.threads
    config = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "config" / "config.yaml"))["cpa"]
    cfg = {key: config[key] for key in ("perturbation_key", "dosage_key", "control_group", "covariate_keys",
                                        "holdout", "model", "train")}
    cfg["split_key"] = None
    settings = {"adv_steps 3, 60 epochs (before)": (3, 60),
                "demo: adv_steps 1, 50 epochs": (cfg["train"]["plan"]["adv_steps"], cfg["train"]["max_epochs"])}
    times = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "screen.h5ad"
        screen = simulate_screen(n_cells=6000, n_genes=200, seed=0, **DEMO_SCREEN)
        del screen.uns["truth"]
        screen.write_h5ad(path)
        for repeat in range(args.repeats):
            for name, (steps, epochs) in settings.items():
                run = {**cfg, "train": {**cfg["train"], "max_epochs": epochs,
                                        "plan": {**cfg["train"]["plan"], "adv_steps": steps}}}
                out = Path(folder) / f"{steps}_{epochs}_{repeat}"
                start = time.perf_counter()
                train_model(path, run, out / "model", out / "splits.tsv", accelerator="cpu")
                times[name].append(time.perf_counter() - start)
                print(f"{name}, run {repeat + 1}: {times[name][-1]:.1f} s", flush=True)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.1f} s over {len(values)} runs "
              f"({', '.join(f'{v:.1f}' for v in values)})")
    before, after = (statistics.median(v) for v in times.values())
    print(f"ratio (demo / before): {after / before:.2f}")


if __name__ == "__main__":
    main()
