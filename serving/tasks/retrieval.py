"""Retrieval (a `DualEncoder`): one embedding signature per modality and a pair-score signature.

| signature        | inputs                          | outputs                                        |
|------------------|---------------------------------|------------------------------------------------|
| `embed_<m>`      | `<m>` [B, ...] (the encoder's)  | `embedding` f32 [B, D], unit L2 norm           |
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
of the graph). Every signature converts to TFLite with builtin ops. A text tower takes token ids
(`text` int32, made by the model directory's tokenizer), as in the classification export.
"""

import numpy as np
import tensorflow as tf

from mmkeras.losses.contrastive_loss import l2_normalize
from mmkeras.models.dual_encoder import embedding_key
from serving.tasks import base

EMBEDDING = "embedding"
SIMILARITY = "similarity"
LOGIT = "logit"


def embed_signature_name(modality):
    return f"embed_{modality}"


class RetrievalServing(base.TaskServing):
    task = "retrieval"

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
        from serving import text_signature

        preprocessing = text_signature.load_preprocessing(self.model_dir, self.config)
        rows = base.manifest_rows(self.config, count, preprocessing=preprocessing)
        return {m: rows[m] for m in self.model.modalities}

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
        reference[SIMILARITY] = {
            SIMILARITY: cosine,
            LOGIT: cosine * float(np.asarray(scale.scale())) + float(np.asarray(scale.bias())),
        }
        return reference
