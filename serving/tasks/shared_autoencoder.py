"""Shared autoencoder (`build_shared_autoencoder`): the shared code and every reconstruction.

| signature          | inputs                                  | outputs                           |
|--------------------|-----------------------------------------|-----------------------------------|
| `serving_default`  | `image` f32 [B,28,28,1], `audio` f32    | `shared_code` f32 [B, code_dim]:  |
|                    | [B,N], `<m>_present` f32 [B] (0: left   |   mean of the present modalities' |
|                    | out of the code)                        |   codes;                          |
|                    |                                         | `<m>_reconstruction` for every    |
|                    |                                         |   modality: `image` f32           |
|                    |                                         |   [B,28,28,1] in [0, 1], `audio`  |
|                    |                                         |   f32 [B, mel frames * bins]: the |
|                    |                                         |   log-mel spectrogram standardised|
|                    |                                         |   per clip, flattened (training's |
|                    |                                         |   target)                         |
| `serve_<m>_only`   | the data inputs of modality `m` only    | the same: the code from `m` alone |
|                    |                                         |   and the cross-modal             |
|                    |                                         |   reconstructions                 |

`serve_<m..>_only` set every other modality missing inside the graph (zeros, flag 0), as the
classification export's signatures of the same name (`serving/serving_module.py`). Every
signature converts to TFLite with builtin ops.
"""

import keras
import numpy as np

from mmkeras import features
from mmkeras.models.shared_autoencoder import CODE
from serving import parity
from serving import serving_module as sm
from serving.errors import DEFAULT_SIGNATURE
from serving.tasks import base


class SharedAutoencoderServing(base.TaskServing):
    task = "shared_autoencoder"

    def __init__(self, config, model, model_dir):
        super().__init__(config, model, model_dir)
        outputs = dict(model.output)
        outputs[CODE] = model.get_layer(CODE).output
        self.served = keras.Model(model.inputs, outputs, name=f"{model.name}_served")

    def endpoints(self):
        specs = sm.input_specs(self.served)

        def serve(inputs):
            return dict(self.served(inputs, training=False))

        endpoints = [base.Endpoint(DEFAULT_SIGNATURE, serve, specs)]
        for name, subset in sm.modality_subsets(self.served).items():
            def serve_subset(inputs, subset=subset):
                return serve(sm.complete_inputs(inputs, specs, subset))

            endpoints.append(base.Endpoint(name, serve_subset, {m: specs[m] for m in subset}))
        return endpoints

    def check_rows(self, count=base.CHECK_EXAMPLES):
        return base.manifest_rows(self.config, count)

    def reference(self, rows):
        specs = sm.input_specs(self.served)
        x = {k: rows[k] for k in specs}
        reference = {DEFAULT_SIGNATURE: self._keras(x)}
        for name, subset in sm.modality_subsets(self.served).items():
            reference[name] = self._keras(parity.subset_reference_inputs(x, subset))
        return reference

    def _keras(self, x):
        out = self.served(x, training=False)
        return {k: np.asarray(v) for k, v in out.items()}
