"""Each modality alone vs all fused, on a user's own table, through `mmkeras train`.

    python -m benchmarks.own_data_table --data data/tuxpaint/tuxpaint.csv --target category \
        [--seeds 0 1 2] [--epochs 20] [--out runs/own_data_table] [--set KEY=VALUE ...]

The schema is inferred once (`mmkeras.data.schema`); every image / audio / video / text
column is then trained alone (the other media and text columns set to `ignore` with a
`--schema` override) and all together, for each seed, with the same command a user runs:
`python -m mmkeras train --data ... --target ... --seed S`. The seed sets both the
stratified split and the training seed, so the spread covers both. Test accuracy and macro-F1
come from each run's `report.json` (`test`). Rows whose kept columns are all empty stay in
the table with every modality missing (`data.empty_is_missing`), so every run scores the
same test rows of its split.

Prints a Markdown table (mean ± standard deviation over seeds) and writes `OUT/table.json`.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

import yaml

from mmkeras.data.schema import infer_schema

MEDIA = ("image", "audio", "video", "text")


def run(args, name, keep, columns, seed):
    model_dir = pathlib.Path(args.out) / f"{name}-s{seed}"
    report = model_dir / "report.json"
    if report.is_file():  # finished earlier: reuse (delete the directory to rerun)
        return json.loads(report.read_text())
    override = {"columns": {c: "ignore" for c in columns if c not in keep}}
    schema_path = pathlib.Path(args.out) / f"{name}.schema.yaml"
    schema_path.parent.mkdir(parents=True, exist_ok=True)
    schema_path.write_text(yaml.safe_dump(override))
    command = [sys.executable, "-m", "mmkeras", "train", "--data", args.data, "--target",
               args.target, "--model-dir", str(model_dir), "--seed", str(seed), "--schema",
               str(schema_path), "--set", "trainer.verbose=0",
               "--set", f"trainer.epochs={args.epochs}", *[a for s in args.set for a in ("--set", s)]]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads(report.read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/own_data_table")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    schema = infer_schema(args.data, target=args.target)
    roles = {c.name: c.role for c in schema.columns}
    media = [c for c, role in roles.items() if role in MEDIA]
    experiments = [(f"{c} ({roles[c]})", [c]) for c in media] + [("all fused", media)]
    rows = []
    for name, keep in experiments:
        slug = "all" if len(keep) > 1 else keep[0]
        tests = [run(args, slug, keep, media, s)["test"] for s in args.seeds]
        acc = [t["accuracy"] for t in tests]
        f1 = [t.get("macro_f1") for t in tests if t.get("macro_f1") is not None]
        rows.append({
            "experiment": name, "columns": keep, "seeds": args.seeds, "accuracy": acc,
            "macro_f1": f1, "test_rows": [t.get("examples") for t in tests],
        })

    def cell(values):
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    print(f"\n{pathlib.Path(args.data).name}, target `{args.target}`, seeds {args.seeds}, "
          f"{args.epochs} epochs\n")
    print("| columns | test accuracy | macro-F1 | test rows |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['experiment']} | {cell(r['accuracy'])} | {cell(r['macro_f1'])} | "
              f"{r['test_rows'][0]} |")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
