"""What a TFLite client needs beside `model.tflite` to turn raw inputs into its tensors.

LiteRT's builtin ops have no string lookup or tokenizer, so the TFLite model takes what
`serving_default` takes (token ids, the normalised tabular vector, decoded pixels and
waveforms), and the export writes the fitted preprocessing next to it:

    DIR/export/tflite/assets/inputs.json         the raw inputs (`serving/raw_inputs.py`'s
                                                 `describe`) and how each becomes a tensor
    DIR/export/tflite/assets/vocab.txt           a TextVectorization model's vocabulary
                                                 (`vocab_<feature>.txt`: another text
                                                 feature's; `inputs.json` names each one)
    DIR/export/tflite/assets/text_preprocessor/  a keras_hub preset's tokenizer (config + vocab)
    DIR/export/tflite/assets/tabular.json        numeric mean / std / fill, category vocabularies

The client step is `serving.client.tflite_inputs(assets_dir, raw_values)`: the `serve_raw`
inputs of a batch (strings, numbers with NaN for missing, category strings, image / WAV
bytes, flags) -> the TFLite `serving_default` inputs, in numpy (and keras_hub for a preset
tokenizer). The export checks it: the TFLite model on its output against Keras on the
training pipeline's tensors (`parity.json`: `tflite_client_step`).
"""

import pathlib
import shutil

from mmkeras import model_dir as model_dir_lib
from mmkeras.data import preprocessing as preprocessing_lib
from mmkeras.data import text as text_lib
from serving import raw_inputs

ASSETS_DIR = "assets"
INPUTS_FILE = "inputs.json"
# TextVectorization's settings in `mmkeras.data.text.make_vectorizer`.
STANDARDIZE = "lower_and_strip_punctuation"
SPLIT = "whitespace"


def write_assets(tflite_dir, model_dir, config, raw, specs):
    """Writes `tflite_dir/assets/` for the raw features `raw` of a model directory; returns
    its path (None when the model has no raw form)."""
    if raw is None:
        return None
    model_dir = pathlib.Path(model_dir)
    out = pathlib.Path(tflite_dir) / ASSETS_DIR
    out.mkdir(parents=True, exist_ok=True)
    description = raw_inputs.describe(raw)
    kinds = {f.kind for f in raw}
    tensors = {}
    for f in raw:
        if f.kind == raw_inputs.PRESENCE:
            continue
        entry = tensors.setdefault(f.modality, {"kind": f.kind, "shape": list(specs[f.modality].shape[1:]),
                                                "dtype": specs[f.modality].dtype.name})
        if f.kind in (raw_inputs.NUMERIC, raw_inputs.CATEGORICAL):
            entry["kind"] = "tabular"
    if raw_inputs.TEXT in kinds:
        preset = model_dir / text_lib.PRESET_TOKENIZER_DIR
        if preset.is_dir():  # a preset's tokenizer is fitted on nothing: one for every feature
            target = out / text_lib.PRESET_TOKENIZER_DIR
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(preset, target)
        for f in raw:
            if f.kind != raw_inputs.TEXT:
                continue
            if preset.is_dir():
                text = {"tokenizer": "keras_hub", "path": text_lib.PRESET_TOKENIZER_DIR}
            else:  # each text feature's own vocabulary
                vocab = text_lib.vocab_file(f.modality)
                shutil.copyfile(model_dir / vocab, out / vocab)
                text = {"tokenizer": "text_vectorization", "vocabulary": vocab,
                        "standardize": STANDARDIZE, "split": SPLIT, "padding_id": 0,
                        "oov_id": 1, "first_token_id": 2}
            text["sequence_length"] = int(config.data.text_sequence_length)
            tensors[f.modality]["text"] = text
    if kinds & {raw_inputs.NUMERIC, raw_inputs.CATEGORICAL}:
        shutil.copyfile(model_dir / preprocessing_lib.TABULAR_FILE,
                        out / preprocessing_lib.TABULAR_FILE)
        for f in raw:
            if f.kind in (raw_inputs.NUMERIC, raw_inputs.CATEGORICAL):
                tensors[f.modality]["tabular"] = preprocessing_lib.TABULAR_FILE
    description["tensors"] = tensors
    model_dir_lib.write_json(out / INPUTS_FILE, description)
    return out
