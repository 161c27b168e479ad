"""Text in tf.data: a `TextVectorization` adapted on the training split, saved as `vocab.txt`.

The vectorizer maps strings to int32 token ids in the input pipeline, so the model (and every
replica, and the TFLite conversion) sees integers only. For export,
`string_input_model(vectorizer, model)` wraps the two into one model that takes raw strings.

Token ids: 0 = padding, 1 = out of vocabulary, then one id per line of `vocab.txt` (from 2).
"""

import pathlib

import keras
import numpy as np

from mmkeras import features

VOCAB_FILE = "vocab.txt"


def vocab_file(feature=features.TEXT):
    """The vocabulary file of text feature `feature`: `vocab.txt` for `text`, else
    `vocab_<feature>.txt` (each text feature has its own vocabulary)."""
    return VOCAB_FILE if feature == features.TEXT else f"vocab_{feature}.txt"


def make_vectorizer(max_tokens, sequence_length, vocabulary=None, name="text_vectorizer"):
    """A `TextVectorization` (lower-case, strip punctuation, split on whitespace, int ids)."""
    return keras.layers.TextVectorization(
        max_tokens=int(max_tokens),
        output_mode="int",
        output_sequence_length=int(sequence_length),
        vocabulary=vocabulary,
        name=name,
    )


def adapt_vectorizer(texts, max_tokens, sequence_length, feature=features.TEXT):
    """A vectorizer adapted on `texts` (the training split; empty / masked texts left out)."""
    texts = [t for t in np.asarray(texts, dtype=str).tolist() if t.strip()]
    if not texts:
        raise ValueError(f"No non-empty training texts in '{feature}' to build a vocabulary "
                         "from.")
    vectorizer = make_vectorizer(max_tokens, sequence_length, name=_vectorizer_name(feature))
    vectorizer.adapt(np.array(texts, dtype=object))
    return vectorizer


def vocabulary(vectorizer):
    """The tokens of ids 2, 3, ... (no padding or OOV token)."""
    return [str(t) for t in vectorizer.get_vocabulary(include_special_tokens=False)]


def save_vocabulary(vectorizer, directory, feature=features.TEXT):
    """Writes `directory/vocab.txt` (`vocab_file(feature)`), one token a line (atomically);
    returns its path."""
    path = pathlib.Path(directory) / vocab_file(feature)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for token in vocabulary(vectorizer):
            f.write(token + "\n")
    tmp.replace(path)
    return path


def load_vectorizer(directory, max_tokens, sequence_length, feature=features.TEXT):
    """The vectorizer whose vocabulary is `directory/vocab.txt` (`vocab_file(feature)`; or
    the file itself)."""
    path = pathlib.Path(directory)
    if path.is_dir():
        path = path / vocab_file(feature)
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    return make_vectorizer(max_tokens, sequence_length, vocabulary=tokens,
                           name=_vectorizer_name(feature))


def _vectorizer_name(feature):
    return "text_vectorizer" if feature == features.TEXT else f"{feature}_vectorizer"


def string_input_model(vectorizer, model, text_key=features.TEXT, name=None):
    """Wraps `vectorizer` + `model` into one model whose `text_key` input is a string `(batch,)`.

    The other inputs of `model` pass through unchanged. The result saves to `.keras` (the
    vocabulary is part of the vectorizer's config) and exports with `model.export`.

    Example:
    ```python
    exportable = string_input_model(load_vectorizer(model_dir, 5000, 32), model)
    exportable({"text": tf.constant(["grinning face"]), ...})
    ```
    """
    inputs, feed = {}, {}
    for tensor in model.inputs:
        key = tensor.name.split(":")[0]
        if key == text_key:
            inputs[key] = keras.Input(shape=(), dtype="string", name=key)
            feed[key] = vectorizer(inputs[key])
        else:
            inputs[key] = keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=key)
            feed[key] = inputs[key]
    if text_key not in inputs:
        raise ValueError(f"The model has no input named '{text_key}'.")
    if len(model.inputs) == 1:
        outputs = model(feed[text_key])
    else:
        outputs = model(feed)
    return keras.Model(inputs, outputs, name=name or f"{model.name}_strings")


# A KerasHub preset's tokenizer (the `keras_hub` text encoder) instead of the vectorizer.

PRESET_TOKENIZER_DIR = "text_preprocessor"


def preset_preprocessor(preset, sequence_length):
    """The preset's text preprocessor (tokenizer + `[CLS] ... [SEP]` packing + padding to
    `sequence_length`), e.g. a `keras_hub` `BertTextClassifierPreprocessor`.

    `preset` is resolved by `mmkeras.encoders.keras_hub_presets.resolve_preset` (a
    directory, an installed offline preset's short name, or a KerasHub handle).
    """
    import keras_hub

    from mmkeras.encoders.keras_hub_presets import resolve_preset

    return keras_hub.models.TextClassifierPreprocessor.from_preset(
        resolve_preset(preset), sequence_length=int(sequence_length)
    )


def save_preset_preprocessor(preprocessor, directory):
    """Writes the preprocessor's config and tokenizer assets (vocabulary) to
    `directory/text_preprocessor/` (replacing an older copy atomically); returns that path.

    The model directory is then self-contained: loading needs neither the preset nor a network.
    """
    import shutil

    final = pathlib.Path(directory) / PRESET_TOKENIZER_DIR
    tmp = final.with_name(f".tmp-{PRESET_TOKENIZER_DIR}")
    if tmp.exists():
        shutil.rmtree(tmp)
    preprocessor.save_to_preset(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def load_preset_preprocessor(directory):
    """The preprocessor saved by `save_preset_preprocessor` in `directory` (a model
    directory, or its `text_preprocessor/` folder)."""
    import json

    import keras_hub  # noqa: F401  (registers the preprocessor and tokenizer classes)

    path = pathlib.Path(directory)
    if (path / PRESET_TOKENIZER_DIR).is_dir():
        path = path / PRESET_TOKENIZER_DIR
    config_file = path / "preprocessor.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"No saved text preprocessor: {config_file} does not exist.")
    preprocessor = keras.saving.deserialize_keras_object(json.loads(config_file.read_text()))
    preprocessor.load_preset_assets(str(path))
    return preprocessor


def preset_token_ids(preprocessor, texts):
    """Strings `(batch,)` -> int32 token ids `(batch, sequence_length)` (tf ops; runs in
    tf.data and inside serving signatures)."""
    import tensorflow as tf

    return tf.cast(preprocessor(texts)["token_ids"], tf.int32)
