"""Tux Paint's stamps as a CSV of images, captions and sounds: your own data, the way a user has it.

Debian's `tuxpaint-stamps-default` (GPL-2) holds about 900 clip-art stamps in 16 top-level
category folders. Each stamp `NAME` may have:

- `NAME.png` (some stamps have only an `NAME.svg`: their image cell stays empty),
- `NAME.txt`, whose first line is an English caption (then `xx.utf8=...` translations),
- `NAME.ogg`, a sound effect (most stamps have none),

so many rows lack a modality, as real tables do. This script downloads the package with the
ordinary Debian client, unpacks it and writes one CSV row per stamp:

    stamp_id,image,caption,sound,category
    animals/birds/cardinal,stamps/animals/birds/cardinal.png,A cardinal.,stamps/animals/birds/cardinal.ogg,animals

Paths are relative to the CSV's folder. It also writes `new_stamps.csv`: 40 of those rows
(seeded) without their category, as new unlabelled rows for `mmkeras predict`. Then:

    python examples/tuxpaint_to_csv.py --out data/tuxpaint
    mmkeras train --data data/tuxpaint/tuxpaint.csv --target category --model-dir runs/tuxpaint

Needs `apt-get` and `dpkg-deb` (Debian / Ubuntu); `--deb FILE` uses a .deb already downloaded.
"""

import argparse
import csv
import hashlib
import json
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile

PACKAGE = "tuxpaint-stamps-default"
NEW_STAMPS = "new_stamps.csv"  # unlabelled rows for `mmkeras predict`
NEW_STAMPS_ROWS = 40
STAMPS = "usr/share/tuxpaint/stamps"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Download and unpack.


def download(folder):
    """`apt-get download` the package into `folder`; returns the .deb's path."""
    subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, check=True)
    debs = sorted(pathlib.Path(folder).glob(f"{PACKAGE}_*.deb"))
    if not debs:
        sys.exit(f"error: apt-get download left no {PACKAGE}_*.deb in {folder}")
    return debs[-1]


def unpack(deb, out):
    """Extracts the stamps folder of `deb` to `out/stamps`; returns it."""
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        stamps = out / "stamps"
        if stamps.exists():
            shutil.rmtree(stamps)
        shutil.move(str(pathlib.Path(tmp) / STAMPS), stamps)
    return stamps


# ---------------------------------------------------------------------------------------------
# One row per stamp.


def caption(txt):
    """The first line of a stamp's `.txt` (its English description), or ""."""
    if not txt.is_file():
        return ""
    lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def stamp_rows(stamps, out):
    names = set()
    for path in stamps.rglob("*"):
        if path.suffix.lower() in (".png", ".svg", ".txt") and "_desc" not in path.stem:
            names.add(path.with_suffix(""))
    rows = []
    for name in sorted(names):
        png, ogg = name.with_suffix(".png"), name.with_suffix(".ogg")
        text = caption(name.with_suffix(".txt"))
        if not png.is_file() and not text:
            continue  # an SVG without a caption: nothing this table can hold
        relative = name.relative_to(stamps)
        rows.append({
            "stamp_id": relative.as_posix(),
            "image": png.relative_to(out).as_posix() if png.is_file() else "",
            "caption": text,
            "sound": ogg.relative_to(out).as_posix() if ogg.is_file() else "",
            "category": relative.parts[0],
        })
    return rows


def write_new_stamps(rows, path, count=NEW_STAMPS_ROWS, seed=0):
    """`count` rows (seeded choice) without their `category`: what a user's new, unlabelled
    rows look like, for `mmkeras predict`. They are stamps of the table too (the package has
    no others), so their predictions are not a test score."""
    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(count, len(rows))))
    fields = [k for k in rows[0] if k != "category"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: rows[i][k] for k in fields} for i in chosen)
    return len(chosen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/tuxpaint", help="output folder")
    parser.add_argument("--deb", default=None, help="an already downloaded .deb")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    deb = pathlib.Path(args.deb) if args.deb else download(out)
    stamps = unpack(deb, out)
    rows = stamp_rows(stamps, out)
    table = out / "tuxpaint.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    new_rows = write_new_stamps(rows, out / NEW_STAMPS)
    source = {"package": PACKAGE, "deb": deb.name, "deb_sha256": sha256(deb),
              "license": "GPL-2", "rows": len(rows), "csv_sha256": sha256(table),
              "new_stamps_rows": new_rows}
    (out / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
    counts = {k: sum(bool(r[k]) for r in rows) for k in ("image", "caption", "sound")}
    print(f"{table}: {len(rows)} stamps; with image {counts['image']}, caption "
          f"{counts['caption']}, sound {counts['sound']}; "
          f"{len({r['category'] for r in rows})} categories; source {deb.name} "
          f"(sha256 {source['deb_sha256'][:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
