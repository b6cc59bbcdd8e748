"""CPA: how much a training depends on its thread count (cpa.threads), measured.

The demo's screen and model settings (config/config.yaml) are trained once per thread count
in a fresh process, each thread count twice: the same count gives the same bytes, and
another count gives other weights, because PyTorch's reductions add in another order on
another number of threads and the difference grows over the epochs. The table reports,
against the first one-thread training, the largest difference of a trained parameter, the
largest and median difference of the latents of all cells, and the median top-20-DEG R^2
of the held-out groups (cpa_evaluate's). The workflow does not retrain when cpa.threads
changes (config/README.md, "What a change reruns").

    python benchmarks/cpa_training_threads.py              # docs/reliability.md
    python benchmarks/cpa_training_threads.py --smoke      # tiny sizes, for a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

CHILD = r"""
import json, sys
import numpy as np, torch
threads, screen, out, settings = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(threads)
from shardmap.cpa.tasks.train import train_model
from shardmap.cpa.model_folder import load_model
import anndata as ad
train_model(screen, settings, out, out + "/splits.tsv", accelerator="cpu")
def tensors(state, prefix=""):
    for key, value in state.items():
        if isinstance(value, dict):
            yield from tensors(value, prefix + key + "/")
        elif torch.is_tensor(value) and value.is_floating_point() and "running_" not in key:
            yield prefix + key, value.numpy().astype(np.float64)  # trained parameters, not batch-norm statistics
state = torch.load(out + "/model.pt", map_location="cpu", weights_only=False)["model_state_dict"]
weights = dict(tensors(state))
adata = ad.read_h5ad(screen)
latent = load_model(out, adata).get_latent_representation()["z"]
from shardmap.cpa.tasks.evaluate import evaluate
rows = evaluate(out, screen, settings, out + "/splits.tsv", out + "/metrics.tsv")
deg20 = np.median([row["r2_mean_deg20"] for row in rows])
np.savez(out + "/result.npz", latent=latent, deg20=deg20, **{"w:" + k: v for k, v in weights.items()})
"""


def settings(smoke):
    import yaml

    cpa = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())["cpa"]
    keys = {key: cpa.get(key) for key in ("perturbation_key", "dosage_key", "control_group", "covariate_keys",
                                          "holdout", "model", "train")}
    keys.update({"layer": None, "split_key": None, "batch_key": None, "smiles_key": None})
    keys["train"] = {k: v for k, v in keys["train"].items() if k not in ("accelerator", "num_workers")}
    if smoke:
        keys["train"]["max_epochs"] = 3
    return keys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import numpy as np

    from shardmap.cpa.simulate import simulate_screen

    folder = Path(tempfile.mkdtemp(prefix="cpa-threads-"))
    cells, genes = (1500, 60) if args.smoke else (6000, 200)  # the demo's screen: demo.cpa_cells, cpa_genes
    screen = simulate_screen(n_cells=cells, n_genes=genes, seed=0)
    del screen.uns["truth"]
    screen.write_h5ad(folder / "screen.h5ad")
    config = json.dumps(settings(args.smoke))
    results = {}
    for threads in args.threads:
        for repeat in range(2):
            out = folder / f"t{threads}-{repeat}"
            out.mkdir()
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"),
                   **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                       "OPENBLAS_NUM_THREADS")}}
            child = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(folder / "screen.h5ad"), str(out),
                                    config], env=env, capture_output=True, text=True)
            if child.returncode:
                sys.exit(child.stderr[-3000:])
            results[(threads, repeat)] = dict(np.load(out / "result.npz"))
    base = results[(args.threads[0], 0)]
    rows = []
    for (threads, repeat), result in results.items():
        weight = max(float(np.abs(result[k] - base[k]).max()) for k in base if k.startswith("w:"))
        latent = float(np.abs(result["latent"] - base["latent"]).max())
        typical = float(np.median(np.abs(result["latent"] - base["latent"])))
        rows.append({"threads": threads, "repeat": repeat, "max_parameter_difference": weight,
                     "max_latent_difference": latent, "median_latent_difference": typical,
                     "latent_scale": float(np.abs(base["latent"]).max()),
                     "median_r2_mean_deg20": float(result["deg20"])})
    print("| threads | repeat | largest parameter difference | latent difference: largest, median (latents up to) "
          "| median top-20-DEG R^2 of the held-out groups |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['threads']} | {row['repeat']} | {row['max_parameter_difference']:.3g} | "
              f"{row['max_latent_difference']:.3g}, {row['median_latent_difference']:.3g} ({row['latent_scale']:.3g}) | "
              f"{row['median_r2_mean_deg20']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
