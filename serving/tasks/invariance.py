"""Modality invariance (`build_modality_invariant_classifier`): its classifier.

The model classifies every modality's shared embedding with one task head; the modality
discriminator is training machinery and is not served.

| signature         | inputs                         | outputs                                    |
|-------------------|--------------------------------|--------------------------------------------|
| `serve_<m>_only`  | `<m>` (the encoder's input)    | `probabilities` f32 [B, classes] (the task |
|                   |                                |   head on `m`'s embedding), `class_id` i64 |
|                   |                                |   [B], `embedding` f32 [B, D] (the shared  |
|                   |                                |   embedding)                               |
| `serving_default` | every modality                 | `<m>_probabilities`, `<m>_class_id` per    |
|                   |                                |   modality, and `probabilities` / `class_id`|
|                   |                                |   of their mean (the shared head averaged  |
|                   |                                |   over the modalities given)               |

The model has no presence flags (each modality is classified alone), so a client with one
modality calls its `serve_<m>_only`. Every signature converts to TFLite with builtin ops.
"""

import keras
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.models.modality_invariant_classifier import class_key
from mmkeras.models.modality_invariant_classifier import embedding_key
from serving import serving_module as sm
from serving.errors import DEFAULT_SIGNATURE
from serving.tasks import base


class InvarianceServing(base.TaskServing):
    task = "invariance"

    def __init__(self, config, model, model_dir):
        super().__init__(config, model, model_dir)
        self.modalities = sorted(t.name for t in model.inputs)
        self.specs = {t.name: base.input_spec(t, t.name) for t in model.inputs}
        inputs = dict(zip([t.name for t in model.inputs], model.inputs))
        self.heads = {
            m: keras.Model(inputs[m], {
                features.PROBABILITIES: model.get_layer(class_key(m)).output,
                features.EMBEDDING: model.get_layer(embedding_key(m)).output,
            }, name=f"{model.name}_{m}")
            for m in self.modalities
        }

    def endpoints(self):
        def head(m, x):
            out = self.heads[m](x, training=False)
            probabilities = tf.cast(out[features.PROBABILITIES], tf.float32)
            return {features.PROBABILITIES: probabilities,
                    features.CLASS_ID: tf.argmax(probabilities, axis=-1),
                    features.EMBEDDING: tf.cast(out[features.EMBEDDING], tf.float32)}

        def serve(inputs):
            result, total = {}, 0.0
            for m in self.modalities:
                probabilities = head(m, inputs[m])[features.PROBABILITIES]
                result[f"{m}_{features.PROBABILITIES}"] = probabilities
                result[f"{m}_{features.CLASS_ID}"] = tf.argmax(probabilities, axis=-1)
                total += probabilities
            mean = total / len(self.modalities)
            result[features.PROBABILITIES] = mean
            result[features.CLASS_ID] = tf.argmax(mean, axis=-1)
            return result

        endpoints = [base.Endpoint(DEFAULT_SIGNATURE, serve, dict(self.specs))]
        for m in self.modalities:
            endpoints.append(base.Endpoint(
                sm.subset_signature_name([m]), lambda inputs, m=m: head(m, inputs[m]),
                {m: self.specs[m]}))
        return endpoints

    def check_rows(self, count=base.CHECK_EXAMPLES):
        rows = base.manifest_rows(self.config, count)
        return {m: rows[m] for m in self.modalities}

    def reference(self, rows):
        """The full model's `<m>_class` outputs and shared embeddings (Keras), argmax in numpy."""
        out = self.model(rows, training=False)
        embeddings = {m: np.asarray(self.heads[m](rows[m], training=False)[features.EMBEDDING])
                      for m in self.modalities}
        reference, default = {}, {}
        probabilities = {m: np.asarray(out[class_key(m)], np.float64) for m in self.modalities}
        for m, p in probabilities.items():
            reference[sm.subset_signature_name([m])] = {
                features.PROBABILITIES: p, features.CLASS_ID: p.argmax(-1),
                features.EMBEDDING: embeddings[m]}
            default[f"{m}_{features.PROBABILITIES}"] = p
            default[f"{m}_{features.CLASS_ID}"] = p.argmax(-1)
        mean = sum(probabilities.values()) / len(probabilities)
        default[features.PROBABILITIES] = mean
        default[features.CLASS_ID] = mean.argmax(-1)
        reference[DEFAULT_SIGNATURE] = default
        return reference
