"""An own-data table with image, text and tabular columns, made from the real OpenMoji slice.

`write_own_data(openmoji_dir, out)` writes `out/manifest.csv` as a user's CSV would look:
the emoji's image path and its annotation (text), plus two numeric columns measured from the
real data (`brightness`: the image's mean grey level; `words`: the annotation's word count)
and one categorical column (`block`: the code point's first three hex digits, `1F3`, `1F6`,
...). Some cells are empty: a NaN `brightness` in train rows and in one test row (the
manifest reader masks that row's tabular modality, counted under `bad_input: mask`).
"""

import csv
import pathlib

import numpy as np
from PIL import Image

COLUMNS = ("id", "split", "label", "image", "text", "brightness", "words", "block")
NUMERIC = ("brightness", "words")
CATEGORICAL = ("block",)
EMPTY_EVERY = 9  # every 9th row has no brightness


def write_own_data(openmoji_dir, out):
    openmoji_dir, out = pathlib.Path(openmoji_dir), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(openmoji_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for i, row in enumerate(rows):
            image = openmoji_dir / row["image"]
            with Image.open(image) as img:
                brightness = float(np.asarray(img.convert("L"), np.float32).mean())
            writer.writerow({
                "id": row["id"], "split": row["split"], "label": row["label"],
                "image": str(image), "text": row["text"],
                "brightness": "" if i % EMPTY_EVERY == 4 else f"{brightness:.3f}",
                "words": len(row["text"].split()), "block": row["id"][:3],
            })
    return out


def overrides(data_dir):
    """Config overrides (on `training/configs/openmoji/early_fusion.yaml`) for a tiny
    image + text + tabular model of the table."""
    return [
        f"data.data_dir={data_dir}", "data.modalities=[image,text,tabular]",
        "model.modalities=[image,text,tabular]", "model.name=own_data_fusion",
        f"data.tabular_numeric=[{','.join(NUMERIC)}]",
        f"data.tabular_categorical=[{','.join(CATEGORICAL)}]",
        "data.tabular_categorical_bins=8", "data.bad_input={tabular: mask}",
        "data.image_shape=[16,16,3]",
        "model.tabular_encoder.units=[8]", "model.tabular_encoder.embedding_dim=8",
        "model.tabular_encoder.category_dim=4",
    ]
