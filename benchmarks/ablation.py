"""The objective ablation on the demo data, one command:

    python benchmarks/ablation.py [--max-steps 80] [--output benchmarks/RESULTS_ablation.md]

Each row fine-tunes the shipped demo checkpoint (fuscore/demo_model) with one objective on the same synthetic
training scenes (seed 7), for the same number of steps, and evaluates on the same held-out scenes (seed 1000003):
the full tripartite objective, the tripartite objective without each Thurstone term, DeQA-Score's objective,
Q-Align's one-hot objective, and scalar regression (a freshly initialised regression head, as EVAFusion-style reward
models use). All rows start from one checkpoint trained with the FuScore objective, so the table compares how each
objective fine-tunes it on CPU, not what each objective reaches from scratch (that needs a GPU: see
configs/demo_pretrain.yaml). Labels are synthetic, not human.
"""

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import trainer_fuscore  # noqa: E402

ROWS = (
    ("fuscore (KL + within + cross)", ["--objective", "fuscore"]),
    ("fuscore without within-pair term", ["--objective", "fuscore", "--lambda_within", "0"]),
    ("fuscore without cross-pair term", ["--objective", "fuscore", "--lambda_cross", "0"]),
    ("deqa (Gaussian from mos_std + fidelity)", ["--objective", "deqa"]),
    ("onehot (Q-Align)", ["--objective", "onehot"]),
    ("scalar (regression head, MSE)", ["--objective", "scalar"]),
)
METRICS = ("plcc", "srcc", "krcc", "srcc_within", "pairwise_accuracy_within")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=80)
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "RESULTS_ablation.md"))
    args = parser.parse_args()
    config = str(REPO_ROOT / "configs" / "demo.yaml")
    lines = ["| objective | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    start_metrics = None
    for label, extra in ROWS:
        output_dir = REPO_ROOT / "outputs" / "ablation" / extra[1]
        argv = ["--config", config, "--max_steps", str(args.max_steps), "--output_dir", str(output_dir),
                "--disable_tqdm", "true", *extra]
        model_args, data_args, training_args = trainer_fuscore.parse_arguments(argv)
        started = time.time()
        results = trainer_fuscore.run(model_args, data_args, training_args)
        if start_metrics is None:
            start_metrics = results["before"]
            lines.insert(2, "| (shipped checkpoint, no fine-tuning) | "
                         + " | ".join(f"{start_metrics[f'before_{m}']:.4f}" for m in METRICS) + " |")
        lines.append(f"| {label} | " + " | ".join(f"{results['after'][f'eval_{m}']:.4f}" for m in METRICS) + " |")
        print(f"{label}: {time.time() - started:.0f} s", flush=True)
    table = "\n".join(lines)
    print(table)
    header = (f"# Objective ablation on the demo data\n\n`python benchmarks/ablation.py --max-steps {args.max_steps}` "
              f"({time.strftime('%Y-%m-%d')}, CPU). Held-out synthetic scenes; labels are synthetic, not human.\n"
              "Every row fine-tunes the shipped demo checkpoint (itself trained with the FuScore objective) for the same "
              "steps on the same scenes.\n\n")
    Path(args.output).write_text(header + table + "\n")


if __name__ == "__main__":
    main()
