"""Saliency and Grad-CAM++ (tf-keras-vis) on one modality of a multi-input classifier.

tf-keras-vis finds a CAM layer by its output tensor in the graph of the model it is given, and
feeds that model a list of inputs. The classifiers built by `mmkeras.models` nest each encoder
as a model of its own (`image_encoder`), so its convolutions are not in the outer graph:
`flatten_model` rebuilds the classifier with every nested functional model inlined (its
layers cloned, named `<encoder>_<layer>`, weights copied), taking a list of inputs in the
order of `model.inputs`.
"""

import keras
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.models import heads


def _clone_layer(layer, name, linear):
    config = layer.get_config()
    config["name"] = name
    if linear and config.get("activation") == "softmax":
        config["activation"] = "linear"
    return layer.__class__.from_config(config)


def flatten_model(model, linear_output=True):
    """A functional copy of `model` with nested functional models inlined.

    Args:
        model: a functional `keras.Model` (dict or list inputs).
        linear_output: replace the softmax of the output Dense (`logits_softmax`) by a linear
            activation, so that the output is logits.

    Returns:
        A `keras.Model` taking a list of inputs in the order of `model.inputs` (same names)
        and returning `model`'s output. Its layers are new objects holding copies of the
        weights: changing them does not change `model`.
    """
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name) for t in model.inputs]

    def run(functional, tensors, prefix):
        def operation_fn(operation):
            if isinstance(operation, keras.Model) and hasattr(operation, "_run_through_graph"):
                return lambda x, *args, **kwargs: run(operation, x, f"{prefix}{operation.name}_")
            clone = _clone_layer(
                operation, f"{prefix}{operation.name}",
                # the builder's output Dense, made linear so that scores are logits
                linear_output and not prefix and operation.name == heads.OUTPUT_DENSE,
            )

            def call(*args, **kwargs):
                outputs = clone(*args, **kwargs)
                clone.set_weights(operation.get_weights())
                return outputs

            return call

        return functional._run_through_graph(tensors, operation_fn=operation_fn)

    outputs = run(model, inputs, "")
    return keras.Model(inputs, outputs, name=f"{model.name}_flat")


def last_conv_layer(flat_model, prefix):
    """The name of the last convolution whose name starts with `prefix` (e.g. `image_encoder_`)."""
    convs = [
        layer.name for layer in flat_model.layers
        if layer.name.startswith(prefix) and isinstance(
            layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
        )
    ]
    if not convs:
        raise ValueError(f"No convolution named '{prefix}*' in {flat_model.name}.")
    return convs[-1]


def seed_inputs(flat_model, example):
    """The list of input arrays of `flat_model` from a feature dict (batch dimension kept)."""
    return [np.asarray(example[t.name], dtype="float32") for t in flat_model.inputs]


def _resize(maps, size):
    maps = np.asarray(maps, dtype="float32")[..., None]
    resized = tf.image.resize(maps, size, method="bilinear").numpy()[..., 0]
    low = resized.min(axis=(1, 2), keepdims=True)
    high = resized.max(axis=(1, 2), keepdims=True)
    return (resized - low) / np.maximum(high - low, 1e-12)


def image_saliency(flat_model, example, target, modality=features.IMAGE, smooth_samples=0):
    """Vanilla (or SmoothGrad) saliency of `modality` for class `target`: `(batch, H, W)` in [0, 1]."""
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    names = [t.name for t in flat_model.inputs]
    saliency = Saliency(flat_model, clone=False)
    # Presence flags only gate (`where`): no gradient reaches them, hence ZERO below.
    maps = saliency(CategoricalScore([target]), seed_inputs(flat_model, example),
                    smooth_samples=smooth_samples, keepdims=True,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
    image_map = np.max(np.asarray(maps[names.index(modality)]), axis=-1)  # over channels
    return _resize(image_map, image_map.shape[1:3])


def image_gradcam_plus_plus(flat_model, example, target, modality=features.IMAGE,
                            layer_name=None):
    """Grad-CAM++ of `modality`'s last convolution for class `target`.

    The CAM is computed at the convolution's resolution (`expand_cam=False`: tf-keras-vis would
    otherwise resize it to every input, the audio and flags included) and resized here,
    bilinearly, to the image's height and width.

    Returns:
        `(cam, layer_name)`: cam `(batch, H, W)` in [0, 1].
    """
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    layer_name = layer_name or last_conv_layer(flat_model, f"{modality}_encoder_")
    image_shape = flat_model.get_layer(modality).output.shape[1:3]
    gradcam = GradcamPlusPlus(flat_model, clone=False)
    cam = gradcam(CategoricalScore([target]), seed_inputs(flat_model, example),
                  penultimate_layer=layer_name, seek_penultimate_conv_layer=False,
                  expand_cam=False, normalize_cam=False,
                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return _resize(np.asarray(cam), tuple(image_shape)), layer_name
