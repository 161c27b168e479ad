"""Raw strings into a text model's SavedModel: the `serve_text` signature.

A text model takes int32 token ids (`text`, or one input per text feature: `title`,
`description`), made in tf.data by the tokenizer saved in the model directory: the
`TextVectorization` of `vocab.txt` (`vocab_<feature>.txt`), or a `keras_hub` encoder's preset
tokenizer in `text_preprocessor/` (`mmkeras.data.preprocessing.Preprocessing`). Export keeps
`serving_default` on token ids (what Keras, TFLite and ONNX see) and adds `serve_text`, which
takes the same inputs except the text ones, strings `[B]`, and runs the tokenizers inside the graph,
so clients send raw text. The preset tokenizers (WordPiece, SentencePiece, BPE) use
tensorflow-text ops: loading the SavedModel in Python needs `import tensorflow_text` (done by
`keras_hub`), and the server must have those ops linked in.
"""

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.data.preprocessing import Preprocessing
from mmkeras.models import heads as model_heads
from serving import serving_module as sm
from serving.serving_module import outputs_agree

SERVE_TEXT = "serve_text"


def load_preprocessing(model_dir, config):
    """The model directory's fitted `Preprocessing` (None when the model needs none)."""
    modalities = sorted(config.model.modalities)
    if not features.needs_preprocessing(modalities, config.data.modality_types):
        return None
    return Preprocessing.load(
        model_dir, config.data, modalities, text_encoder=config.model.text_encoder
    )


def text_only(preprocessing):
    """`preprocessing` when it tokenizes text (the `serve_text` signature applies), else None."""
    if preprocessing is None:
        return None
    if not preprocessing.tokenizers() or not preprocessing.text_features:
        return None
    return preprocessing


def text_input_specs(model, names=(features.TEXT,)):
    """`serving_default`'s inputs with each text feature of `names` as a string `[B]`."""
    specs = sm.input_specs(model)
    for name in names:
        if name not in specs:
            raise ValueError(f"The model has no '{name}' input: {sorted(specs)}.")
        specs[name] = tf.TensorSpec([None], tf.string, name=name)
    return specs


def add_text_endpoint(archive, model, preprocessing):
    """Adds `serve_text` to `archive` (a `keras.export.ExportArchive` tracking `model`): every
    text feature (`preprocessing.text_features`) a string, tokenized by its own tokenizer."""
    for tokenizer in preprocessing.tokenizers():
        archive.track(tokenizer)
    heads = sm.head_names(model)
    target = model_heads.target_of_model(model)
    names = list(preprocessing.text_features)

    def serve_text(inputs):
        x = dict(inputs)
        for name in names:
            x[name] = preprocessing.text_ids(x[name], name)
        outputs = model(x, training=False)
        if not isinstance(outputs, dict):
            outputs = {features.PROBABILITIES: outputs}
        result = {}
        for head in heads:
            result.update(sm.head_outputs(head, outputs[head], target))
        return result

    archive.add_endpoint(SERVE_TEXT, serve_text,
                         input_signature=[text_input_specs(model, names)])
    return archive


def check_text_signature(savedmodel_dir, raw_inputs, id_inputs, tolerance):
    """`serve_text` on raw strings vs `serving_default` on the tf.data token ids of the same
    rows: max |probability difference| and identical class ids."""
    signatures = tf.saved_model.load(str(savedmodel_dir)).signatures
    reference = signatures[sm.SERVING_DEFAULT](**id_inputs)
    out = signatures[SERVE_TEXT](**raw_inputs)
    diff, same = outputs_agree(out, reference)
    return {
        "signature": SERVE_TEXT, "examples": int(len(next(iter(out.values())))),
        "max_abs_diff_vs_serving_default": diff, "tolerance": tolerance,
        "passed": bool(diff <= tolerance and same),
    }
