"""The checked manifest rows of an experiment, and the preprocessing fitted on them.

Every task that reads a dataset's manifest (classification, retrieval, invariance, the
shared autoencoder) starts from `load_data(config)`; tasks with their own data (AV sync,
captioning) build their own.
"""

import dataclasses
import pathlib
import typing

from mmkeras import features
from mmkeras.data import DataError
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data.preprocessing import Preprocessing
from mmkeras.data.sources import dataset_dir_for
from mmkeras.data.sources import dataset_info

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TrainingData:
    """The checked manifest rows of an experiment, and where they came from."""

    dataset_dir: pathlib.Path
    info: dict
    splits: dict
    modalities: list
    # Fitted on the train split (text vocabulary, tabular statistics); None if not needed.
    preprocessing: typing.Any = None

    def columns(self, split):
        return self.splits[split][0]

    def size(self, split):
        return len(self.columns(split)["label"])

    def dataset(self, split, data_config, **kwargs):
        """`make_dataset` over a split (`training=True` shuffles; see its other kwargs)."""
        kwargs.setdefault("preprocessing", self.preprocessing)
        return make_dataset(self.columns(split), data_config, self.modalities, **kwargs)

    def problems(self):
        """`{split: ManifestReport.as_dict()}`: what reading each split skipped or masked."""
        return {split: rep.as_dict() for split, (_, rep) in self.splits.items()}


def load_splits(config, dataset_dir):
    """Reads and checks the train/validation/test manifest rows: `{split: (columns, report)}`."""
    return {
        split: load_split(
            dataset_dir, split, config.data, config.model.modalities, config.model.num_classes,
            target=getattr(config.model, "target", "multiclass"),
        )
        for split in SPLITS
    }


def load_data(config, model_dir=None, reuse_preprocessing=False):
    """Finds (or prepares) the dataset and reads its checked splits.

    The text/tabular preprocessing is fitted on the train split, or, with
    `reuse_preprocessing`, loaded from `model_dir` (what training saved there).
    """
    dataset_dir = dataset_dir_for(config.data)
    splits = load_splits(config, dataset_dir)
    for split, (columns, rep) in splits.items():
        if rep.skipped or rep.masked or rep.unknown_split:
            print(f"[data] {split}: skipped {rep.skipped} rows, masked {rep.masked}, "
                  f"{rep.unknown_split} rows with an unknown split; "
                  f"first problems: {rep.problems[:3]}")
        if len(columns["label"]) == 0:
            raise DataError(f"The {split} split of {dataset_dir} has no usable rows.")
    modalities = sorted(config.model.modalities)
    preprocessing = None
    if features.needs_preprocessing(modalities, config.data.modality_types):
        if reuse_preprocessing:
            preprocessing = Preprocessing.load(
                model_dir, config.data, modalities, text_encoder=config.model.text_encoder
            )
        else:
            preprocessing = Preprocessing.fit(
                splits["train"][0], config.data, modalities,
                text_encoder=config.model.text_encoder,
            )
    return TrainingData(
        dataset_dir=pathlib.Path(dataset_dir),
        info=dataset_info(dataset_dir),
        splits=splits,
        modalities=modalities,
        preprocessing=preprocessing,
    )


def dataset_summary(data):
    """The `dataset` entry of a report."""
    info = data.info
    return {
        "dir": str(data.dataset_dir),
        "name": info.get("name"),
        "variant": info.get("variant"),
        "recipe_version": info.get("recipe_version"),
        "checksum": info.get("checksum"),
        "recipe": {k: v for k, v in info.get("recipe", {}).items() if not isinstance(v, (list, dict))},
    }
