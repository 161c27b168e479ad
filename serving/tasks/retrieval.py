"""Retrieval (a `DualEncoder`): one embedding signature per modality and a pair-score signature.

| signature        | inputs                          | outputs                                        |
|------------------|---------------------------------|------------------------------------------------|
| `embed_<m>`      | `<m>` [B, ...] (the encoder's)  | `embedding` f32 [B, D], unit L2 norm           |
| `embed_text_strings` | `text` string [B] (a text   | `embedding`: `embed_text` of the tokenizer's   |
|                  | tower only: raw text)           |   ids (TF string ops: not in TFLite)           |
| `similarity`     | both modalities, [B, ...] each  | `similarity` f32 [B]: cosine of pair i's two   |
|                  |                                 | embeddings; `logit` f32 [B]: the trained logit |
|                  |                                 | (`logit_scale * cosine + logit_bias`; SigLIP's |
|                  |                                 | sigmoid of it is a match probability)          |

`similarity` scores row i of one modality against row i of the other (per pair), not every
row against every row: the server validates and batches requests on a shared leading batch
dimension (`serving/validation.py`, `serving/batching.py`), and a `[B, B]` matrix would mix
concurrent clients' rows in a merged batch. For a query against a gallery, embed both sides
with `embed_<m>` (unit vectors) and take dot products: those are the same cosines.

The embeddings are always L2-normalised (for a deep-CCA model, whose training output is not
normalised, this is the cosine of its raw outputs; its canonical-space projection is not part
of the graph). Every signature but `embed_text_strings` converts to TFLite with builtin ops. A
text tower's `embed_text` takes token ids (`text` int32), as the classification export's
`serving_default` does; `embed_text_strings` runs the model directory's tokenizer
(`vocab.txt` or a `keras_hub` preset's `text_preprocessor/`) inside the graph.
"""

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.losses.contrastive_loss import l2_normalize
from mmkeras.models.dual_encoder import embedding_key
from serving import text_signature
from serving.tasks import base

EMBEDDING = "embedding"
EMBED_TEXT_STRINGS = "embed_text_strings"
_RAW_TEXT = "raw_text"  # the check rows' key of the raw strings
SIMILARITY = "similarity"
LOGIT = "logit"


def embed_signature_name(modality):
    return f"embed_{modality}"


class RetrievalServing(base.TaskServing):
    task = "retrieval"

    def __init__(self, config, model, model_dir):
        super().__init__(config, model, model_dir)
        self.preprocessing = text_signature.load_preprocessing(model_dir, config)
        self.tokenizer = None
        if features.TEXT in model.modalities and text_signature.text_only(self.preprocessing):
            self.tokenizer = (self.preprocessing.text_preprocessor
                              or self.preprocessing.vectorizer)

    def resources(self):
        return [] if self.tokenizer is None else [self.tokenizer]

    def _specs(self):
        return {m: base.input_spec(self.model.encoders[m].inputs[0], m)
                for m in self.model.modalities}

    def _embed(self, modality, x):
        model = self.model
        z = model.encoders[modality](x, training=False)
        for layer in model.projections[modality]:
            z = layer(z, training=False) if model.projection_norm else layer(z)
        return l2_normalize(tf.cast(z, tf.float32))

    def endpoints(self):
        specs = self._specs()
        endpoints = []
        for m in self.model.modalities:
            def embed(inputs, m=m):
                return {EMBEDDING: self._embed(m, inputs[m])}

            endpoints.append(base.Endpoint(embed_signature_name(m), embed, {m: specs[m]}))

        if self.tokenizer is not None:
            def embed_strings(inputs):
                ids = self.preprocessing.text_ids(inputs[features.TEXT])
                return {EMBEDDING: self._embed(features.TEXT, ids)}

            endpoints.append(base.Endpoint(
                EMBED_TEXT_STRINGS, embed_strings,
                {features.TEXT: tf.TensorSpec([None], tf.string, name=features.TEXT)},
                tflite=False, why_not_tflite="the tokenizer runs TensorFlow string ops",
                row_keys={features.TEXT: _RAW_TEXT}))

        def similarity(inputs):
            a, b = (self._embed(m, inputs[m]) for m in self.model.modalities)
            cosine = tf.reduce_sum(a * b, axis=-1)
            scale = self.model.logit_scale
            return {SIMILARITY: cosine,
                    LOGIT: cosine * tf.cast(scale.scale(), tf.float32)
                    + tf.cast(scale.bias(), tf.float32)}

        endpoints.append(base.Endpoint(SIMILARITY, similarity, specs))
        return endpoints

    def check_rows(self, count=base.CHECK_EXAMPLES):
        rows = base.manifest_rows(self.config, count, preprocessing=self.preprocessing)
        result = {m: rows[m] for m in self.model.modalities}
        if self.tokenizer is not None:
            raw = base.manifest_rows(self.config, count, modalities=[features.TEXT])
            result[_RAW_TEXT] = raw[features.TEXT]
        return result

    def reference(self, rows):
        out = self.model({m: rows[m] for m in self.model.modalities}, training=False)
        embeddings = {}
        for m in self.model.modalities:
            z = np.asarray(out[embedding_key(m)], np.float64)
            embeddings[m] = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-6)
        a, b = (embeddings[m] for m in self.model.modalities)
        cosine = np.sum(a * b, axis=-1)
        scale = self.model.logit_scale
        reference = {embed_signature_name(m): {EMBEDDING: embeddings[m]}
                     for m in self.model.modalities}
        if self.tokenizer is not None:
            reference[EMBED_TEXT_STRINGS] = reference[embed_signature_name(features.TEXT)]
        reference[SIMILARITY] = {
            SIMILARITY: cosine,
            LOGIT: cosine * float(np.asarray(scale.scale())) + float(np.asarray(scale.bias())),
        }
        return reference
