"""State fitted on the training split and applied in tf.data: text vocabulary, tabular stats.

`Preprocessing.fit(train_columns, data_config, modalities)` adapts what the configured
modalities need; `save(model_dir)` writes `vocab.txt` (text; `vocab_<name>.txt` for each other
text feature) and `tabular.json` (numeric mean
and standard deviation, category vocabularies), and `load(model_dir, ...)` restores them, so
evaluation and export use exactly the training-time mapping. With a `keras_hub` text encoder
(`text_encoder=` its config), the preset's tokenizer replaces the vectorizer: nothing is
adapted, and `save` writes its config and vocabulary to `text_preprocessor/`.
"""

import json
import pathlib

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.data import text as text_lib

TABULAR_FILE = "tabular.json"


class Preprocessing:
    """Fitted preprocessing of the text and tabular modalities (either may be absent).

    Every text feature (`text`, or the features `data.modality_types` declares text: `title`,
    `description`) has its own vectorizer, adapted on its own training column and saved as
    `text_lib.vocab_file(name)` (`vocab.txt` for `text`, `vocab_<name>.txt` otherwise).

    Args:
        vectorizer: the `TextVectorization` of the `text` feature, or None.
        tabular: dict with `numeric` (names), `mean`, `std`, `categorical` (names),
            `vocabularies` (one token list per categorical column, id = position + 1,
            0 = unknown) - or None.
        text_preprocessor: a KerasHub text preprocessor (the `keras_hub` text encoder's
            tokenizer) or None; used instead of the vectorizers, for every text feature (a
            preset's tokenizer is fitted on nothing, so the features share it).
        vectorizers: `{text feature: TextVectorization}` (with `vectorizer`: `text`'s).
        text_features: the text features (default: the vectorizers' names, or `text` with a
            `text_preprocessor`).
    """

    def __init__(self, vectorizer=None, tabular=None, text_preprocessor=None, vectorizers=None,
                 text_features=None):
        self.vectorizers = dict(vectorizers or {})
        if vectorizer is not None:
            self.vectorizers[features.TEXT] = vectorizer
        self.tabular = tabular
        self.text_preprocessor = text_preprocessor
        if text_features is None:
            text_features = sorted(self.vectorizers) or (
                [features.TEXT] if text_preprocessor is not None else [])
        self.text_features = list(text_features)
        self._tables = None

    @property
    def vectorizer(self):
        """The vectorizer of `text` (or of the only text feature); None without one."""
        if features.TEXT in self.vectorizers:
            return self.vectorizers[features.TEXT]
        return next(iter(self.vectorizers.values()), None)

    def tokenizers(self):
        """The tokenizer layers (the preset preprocessor, or one vectorizer per feature)."""
        if self.text_preprocessor is not None:
            return [self.text_preprocessor]
        return [self.vectorizers[name] for name in sorted(self.vectorizers)]

    @classmethod
    def fit(cls, train_columns, data_config, modalities, text_encoder=None):
        """Fits on the training split's columns (rows with the modality present only).

        `text_encoder`: the model's `TextEncoderConfig`; type `keras_hub` takes its preset's
        tokenizer instead of adapting a vectorizer.
        """
        types = getattr(data_config, "modality_types", None)
        texts = features.of_type(sorted(modalities), features.TEXT, types)
        vectorizers, tabular, text_preprocessor = {}, None, None
        if texts and _uses_preset(text_encoder):
            text_preprocessor = text_lib.preset_preprocessor(
                text_encoder.preset, data_config.text_sequence_length
            )
        else:
            for name in texts:
                present = train_columns[features.presence_key(name)] > 0
                vectorizers[name] = text_lib.adapt_vectorizer(
                    train_columns[name][present], data_config.text_max_tokens,
                    data_config.text_sequence_length, feature=name,
                )
        if features.TABULAR in modalities:
            present = train_columns[features.presence_key(features.TABULAR)] > 0
            numbers = train_columns[features.TABULAR][present].astype(np.float64)
            mean = numbers.mean(axis=0) if len(numbers) else np.zeros(numbers.shape[1])
            std = numbers.std(axis=0) if len(numbers) else np.ones(numbers.shape[1])
            categories = train_columns["tabular_categories"][present]
            bins = _bins(data_config)
            vocabularies = []
            for j in range(categories.shape[1]):
                values, counts = np.unique(categories[:, j], return_counts=True)
                order = np.lexsort((values, -counts))  # most frequent first, ties by name
                vocabularies.append([str(values[i]) for i in order[: bins - 1]])
            tabular = {
                "numeric": list(data_config.tabular_numeric),
                "mean": [float(v) for v in mean],
                "std": [float(v) if v > 1e-12 else 1.0 for v in std],
                "categorical": list(data_config.tabular_categorical),
                "vocabularies": vocabularies,
            }
        return cls(tabular=tabular, text_preprocessor=text_preprocessor,
                   vectorizers=vectorizers, text_features=texts)

    def save(self, directory):
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, vectorizer in self.vectorizers.items():
            text_lib.save_vocabulary(vectorizer, directory, feature=name)
        if self.text_preprocessor is not None:
            text_lib.save_preset_preprocessor(self.text_preprocessor, directory)
        if self.tabular is not None:
            path = directory / TABULAR_FILE
            model_dir_lib.write_text(path, json.dumps(self.tabular, indent=1) + "\n")

    @classmethod
    def load(cls, directory, data_config, modalities, text_encoder=None):
        """Restores what `save` wrote. The text tokenizer is the saved preset preprocessor
        when `text_encoder` is a `keras_hub` config (or, without a config, when the directory
        has one), else each text feature's vectorizer (`vocab.txt`, `vocab_<name>.txt`)."""
        directory = pathlib.Path(directory)
        types = getattr(data_config, "modality_types", None)
        texts = features.of_type(sorted(modalities), features.TEXT, types)
        vectorizers, tabular, text_preprocessor = {}, None, None
        saved_preset = (directory / text_lib.PRESET_TOKENIZER_DIR).is_dir()
        if texts and (_uses_preset(text_encoder) or (text_encoder is None and saved_preset)):
            text_preprocessor = text_lib.load_preset_preprocessor(directory)
        else:
            for name in texts:
                vectorizers[name] = text_lib.load_vectorizer(
                    directory, data_config.text_max_tokens, data_config.text_sequence_length,
                    feature=name,
                )
        if features.TABULAR in modalities:
            tabular = json.loads((directory / TABULAR_FILE).read_text())
        return cls(tabular=tabular, text_preprocessor=text_preprocessor,
                   vectorizers=vectorizers, text_features=texts)

    def lookup_tables(self):
        """The categorical columns' lookup tables (made on first use; a serving export makes
        them eagerly so that its graph can hold them)."""
        return self._lookup_tables()

    def _lookup_tables(self):
        if self._tables is None:
            with tf.init_scope():  # eagerly, even when first called in a tf.data map trace:
                self._tables = self._make_tables()  # every later map and graph reuses them
        return self._tables

    def _make_tables(self):
        tables = []
        for vocab in self.tabular["vocabularies"]:
            keys = tf.constant(vocab or ["\0"], tf.string)
            ids = tf.range(1, len(vocab or ["\0"]) + 1, dtype=tf.int64)
            init = tf.lookup.KeyValueTensorInitializer(keys, ids)
            tables.append(tf.lookup.StaticHashTable(init, default_value=0))
        return tables

    def tabular_vector(self, numbers, categories):
        """`(..., n_numeric)` floats + `(..., n_categorical)` strings -> one float vector.

        A NaN number is missing and imputed with the column's `fill` value (tabular.json;
        default its training mean, so it normalises to 0). The serving signatures call this
        same function on raw table cells (`serving/raw_inputs.py`)."""
        mean = tf.constant(self.tabular["mean"], tf.float32)
        std = tf.constant(self.tabular["std"], tf.float32)
        fill = tf.constant(self.tabular.get("fill", self.tabular["mean"]), tf.float32)
        numbers = tf.cast(numbers, tf.float32)
        numbers = tf.where(tf.math.is_nan(numbers), fill + tf.zeros_like(numbers), numbers)
        parts = [(numbers - mean) / std]
        for j, table in enumerate(self._lookup_tables()):
            parts.append(tf.cast(table.lookup(categories[..., j : j + 1]), tf.float32))
        return tf.concat(parts, axis=-1)

    def text_ids(self, texts, name=None):
        """Strings `(batch,)` of text feature `name` (default: `text`, or the only one) ->
        int32 token ids `(batch, text_sequence_length)`: the preset tokenizer or the
        feature's vectorizer (tf ops: tf.data and serving signatures call this)."""
        if self.text_preprocessor is not None:
            return text_lib.preset_token_ids(self.text_preprocessor, texts)
        if name is None:
            vectorizer = self.vectorizer
        elif name in self.vectorizers:
            vectorizer = self.vectorizers[name]
        else:
            raise ValueError(f"No tokenizer for text feature '{name}'; the model directory has "
                             f"{sorted(self.vectorizers)}.")
        return tf.cast(vectorizer(texts), tf.int32)

    def apply(self, x):
        """Maps a (batched) feature dict: each text feature's strings -> ids; tabular -> one
        vector."""
        x = dict(x)
        for name in self.text_features:
            if name in x and (self.vectorizers or self.text_preprocessor is not None):
                x[name] = self.text_ids(x[name], name)
        if self.tabular is not None and features.TABULAR in x:
            categories = x.pop("tabular_categories")
            x[features.TABULAR] = self.tabular_vector(x[features.TABULAR], categories)
        return x


def _uses_preset(text_encoder):
    return text_encoder is not None and getattr(text_encoder, "type", None) == "keras_hub"


def _bins(data_config):
    return int(data_config.tabular_categorical_bins)
