"""Image <-> text retrieval on OpenMoji: the text tower from scratch vs pretrained MiniLM.

    python -m benchmarks.pretrained_retrieval --out runs/pretrained_retrieval    # 3 seeds
    python -m benchmarks.pretrained_retrieval --out DIR --table-only             # finished runs

For each seed, `python -m training.train_retrieval` of `training/configs/openmoji/dual_encoder.yaml`
(text tower: TextVectorization + BiGRU from scratch) and `dual_encoder_minilm.yaml` (the same
recipe with all-MiniLM-L6-v2 frozen through the `keras_hub` encoder), with `trainer.seed` set to
the seed. Runs with a `report.json` are reused, so an interrupted benchmark continues. The
OpenMoji dataset is `python -m mmkeras.datasets.openmoji prepare`, found through `$MMKERAS_DATA`.

Reported per text tower (mean ± std over seeds): instance-level R@1, R@10 and median rank in
both directions (an emoji's own annotation among all test annotations, and back), class-level
R@1, k-means NMI of the text embeddings, epochs run (early stopping on the validation pair
loss) and training seconds per epoch. Writes `<out>/pretrained_retrieval.{md,json}`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNS = (("from scratch (BiGRU)", "dual_encoder"), ("MiniLM frozen", "dual_encoder_minilm"))
DIRECTIONS = ("image_to_text", "text_to_image")


def run(config, seed, out):
    model_dir = out / config / f"seed{seed}"
    if (model_dir / "report.json").is_file():
        return model_dir
    log = out / f"{config}-seed{seed}.log"
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, "-m", "training.train_retrieval", "--config",
             f"training/configs/openmoji/{config}.yaml", "--model-dir", str(model_dir),
             "--set", f"trainer.seed={seed}", "--set", "trainer.verbose=0"],
            cwd=REPO, env=dict(os.environ), stdout=f, stderr=subprocess.STDOUT, check=True,
        )
    return model_dir


def metrics(report):
    r = report["retrieval"]
    row = {}
    for d in DIRECTIONS:
        ours = r[d]["instance"]["ours"]
        row[f"{d} R@1"] = ours["R@1"]
        row[f"{d} R@10"] = ours["R@10"]
        row[f"{d} median rank"] = ours["median_rank"]
        row[f"{d} class R@1"] = r[d]["class"]["ours"]["R@1"]
    row["text NMI"] = report["clustering"]["text"]["ours"]["nmi"]
    row["epochs"] = report["epochs"]
    row["s/epoch"] = report["fit_seconds"] / max(report["epochs"], 1)
    return row


def table(out, seeds):
    rows, lines = {}, []
    for name, config in RUNS:
        reports = [json.loads((out / config / f"seed{s}" / "report.json").read_text())
                   for s in seeds if (out / config / f"seed{s}" / "report.json").is_file()]
        if reports:
            per_seed = [metrics(r) for r in reports]
            rows[name] = {k: [p[k] for p in per_seed] for k in per_seed[0]}
            rows[name]["random R@1"] = reports[0]["retrieval"]["image_to_text"]["instance"][
                "random"]["R@1"]
            rows[name]["test pairs"] = reports[0]["test_pairs"]
    header = ("| text tower | seeds | image→text R@1 | R@10 | median rank | text→image R@1 | R@10 "
              "| median rank | class R@1 (i→t / t→i) | text NMI | epochs | s/epoch |")
    lines += [header, "|" + "---|" * 12]

    def ms(values, digits=3):
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    for name, r in rows.items():
        i, t = "image_to_text", "text_to_image"
        lines.append(
            f"| {name} | {len(r['epochs'])} | {ms(r[f'{i} R@1'])} | {ms(r[f'{i} R@10'])} | "
            f"{ms(r[f'{i} median rank'], 0)} | {ms(r[f'{t} R@1'])} | {ms(r[f'{t} R@10'])} | "
            f"{ms(r[f'{t} median rank'], 0)} | {np.mean(r[f'{i} class R@1']):.3f} / "
            f"{np.mean(r[f'{t} class R@1']):.3f} | {ms(r['text NMI'])} | "
            f"{np.mean(r['epochs']):.0f} | {np.mean(r['s/epoch']):.1f} |")
    if rows:
        first = next(iter(rows.values()))
        lines.append(f"\n{first['test pairs']} test pairs; random instance R@1 "
                     f"{first['random R@1']:.3f}.")
    (out / "pretrained_retrieval.md").write_text("\n".join(lines) + "\n")
    (out / "pretrained_retrieval.json").write_text(json.dumps(rows, indent=1))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/pretrained_retrieval")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for seed in args.seeds:
            for _, config in RUNS:
                run(config, seed, out)
    print("\n".join(table(out, args.seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
