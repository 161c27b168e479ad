"""Pretrained KerasHub backbones as mmkeras encoders (text and image; no audio yet).

The backbone comes from a preset: a local directory in KerasHub or Hugging Face format, a short
name of an offline preset shipped by an installed package (`all-minilm-l6-v2`, see
`mmkeras.encoders.keras_hub_presets`), or a KerasHub handle (downloaded when online). Its
weights are copied into the built model, so a saved `model.keras` needs the preset no more.

- Text: the input (named after the feature key) is int32 token ids `(batch, sequence_length)`
  made by the preset's tokenizer in tf.data (`mmkeras.data.text`); the padding mask is derived
  inside the model (`ids != pad id`), so tf.data, every replica and TFLite see integers only.
- Image: the input is float pixels in [0, 1]; when the preset has an image converter, its
  resize / scale / offset are rebuilt from core Keras layers inside the model.

Pooling: `cls` (first token), `mean` (mean over the padding mask; over all positions for
images), `pooled` (the backbone's own `pooled_output`). The pooled vector is projected to
`embedding_dim` (linear). `return_sequence=True` adds the projected token sequence (a feature
map is flattened to tokens) for the attention fusions.

Training the backbone: `trainable` is `frozen` (weights fixed, dropout and normalisation in
inference mode), `full`, or `last_n_blocks` (the last `trainable_blocks` numbered blocks, e.g.
BERT's `transformer_layer_<i>`, and what follows them); `lora_rank` adds LoRA adapters
(`backbone.enable_lora`): the backbone then trains only the adapters (and the biases of the
layers they adapt, e.g. BERT's query and value projections).
"""

import collections
import pathlib
import re

import keras

from mmkeras import features
from mmkeras.encoders.encoder_utils import encoder_outputs
from mmkeras.encoders.encoder_utils import feature_map_tokens
from mmkeras.encoders.keras_hub_presets import resolve_preset
from mmkeras.layers.sequence_pooling import SequencePooling
from mmkeras.layers.token_inputs import TokenIdInputs

POOLING = ("cls", "mean", "pooled")
TRAINABLE = ("frozen", "full", "last_n_blocks")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as e:  # pragma: no cover - pinned in requirements.txt
        raise ImportError(
            "The keras_hub encoder needs keras-hub: pip install keras-hub==0.31.0 "
            "tensorflow-text==2.17.0 safetensors"
        ) from e
    return keras_hub


def load_backbone(preset, dtype=None):
    """`keras_hub.models.Backbone.from_preset` on the resolved preset (see `resolve_preset`).

    `dtype` defaults to the global dtype policy (so `mixed_float16` applies to the backbone).
    """
    keras_hub = _keras_hub()
    dtype = dtype or keras.config.dtype_policy().name
    return keras_hub.models.Backbone.from_preset(resolve_preset(preset), dtype=dtype)


def _direct_sublayers(layer):
    subs = layer.layers if isinstance(layer, keras.Model) else getattr(layer, "_layers", [])
    return [s for s in subs if isinstance(s, keras.layers.Layer) and not isinstance(s, keras.layers.InputLayer)]


def _walk(layer):
    for sub in _direct_sublayers(layer):
        yield sub
        yield from _walk(sub)


def numbered_blocks(backbone):
    """The backbone's repeated blocks in order: the largest family of (nested) layers named
    `<prefix>_<i>` (e.g. BERT's `transformer_layer_0..5`); empty when there is none."""
    families = collections.defaultdict(dict)
    for layer in _walk(backbone):
        match = re.fullmatch(r"(.*\D)_?(\d+)", layer.name)
        if match and layer.weights:
            families[match.group(1)][int(match.group(2))] = layer
    if not families:
        return []
    best = max(families.values(), key=len)
    return [best[i] for i in sorted(best)] if len(best) > 1 else []


def _contains(layer, targets):
    return any(id(sub) in targets for sub in _walk(layer))


def _train_from(layer, kept):
    """Makes the `kept` blocks, and the layers after the first kept one at each level, trainable;
    everything else frozen."""
    if id(layer) in kept:
        layer.trainable = True
        return
    subs = _direct_sublayers(layer)
    if not _contains(layer, kept):
        layer.trainable = False
        return
    layer.trainable = True
    after = False
    for sub in subs:
        if id(sub) in kept or _contains(sub, kept):
            after = True
            _train_from(sub, kept)
        elif after:
            sub.trainable = True
        else:
            sub.trainable = False
    # Weights owned by this layer itself (not by a sublayer) stay trainable with it.


def set_trainable(backbone, trainable="full", trainable_blocks=2, lora_rank=None):
    """Applies the training policy to `backbone` (see the module docstring)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}.")
    if trainable == "frozen":
        backbone.trainable = False
    elif trainable == "full":
        backbone.trainable = True
    else:
        blocks = numbered_blocks(backbone)
        if not blocks:
            raise ValueError(
                f"trainable: last_n_blocks needs numbered blocks; {type(backbone).__name__} has none: "
                "use frozen, full or lora_rank."
            )
        n = int(trainable_blocks)
        if not 1 <= n <= len(blocks):
            raise ValueError(f"trainable_blocks must be in [1, {len(blocks)}], got {trainable_blocks}.")
        _train_from(backbone, {id(b) for b in blocks[-n:]})
    if lora_rank:
        backbone.enable_lora(int(lora_rank))
    return backbone


def _freeze_unused_pooler(backbone, pooling):
    """Freezes the backbone's pooler (BERT's `pooled_dense`) when its output is not used, so
    it gets no (missing) gradients."""
    if pooling == "pooled":
        return
    for layer in _direct_sublayers(backbone):
        if layer.name in ("pooled_dense", "pooler"):
            layer.trainable = False


def _backbone_outputs(outputs):
    """`(sequence or feature map, pooled or None)` of a backbone's output."""
    if isinstance(outputs, dict):
        sequence = outputs.get("sequence_output")
        if sequence is None:
            sequence = next(v for k, v in outputs.items() if k != "pooled_output")
        return sequence, outputs.get("pooled_output")
    return outputs, None


def _pool(sequence, pooled, pooling, padding_mask=None):
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}.")
    if pooling == "pooled":
        if pooled is None:
            raise ValueError("pooling: pooled needs a backbone with a pooled_output; use cls or mean.")
        return pooled
    if len(sequence.shape) == 4:  # a feature map
        if pooling == "cls":
            raise ValueError("pooling: cls needs a token sequence; this backbone gives a feature map: use mean.")
        return keras.layers.GlobalAveragePooling2D(name="pool")(sequence)
    return SequencePooling(pooling, name="pool")(sequence, padding_mask=padding_mask)


def _head(pooled, tokens, embedding_dim, dropout, return_sequence):
    x = keras.layers.Dropout(dropout, name="dropout")(pooled)
    embedding = keras.layers.Dense(embedding_dim, name="embedding")(x)
    return encoder_outputs(embedding, tokens, embedding_dim, return_sequence)


def preset_pad_token_id(preset):
    """The padding id of the preset's tokenizer."""
    tokenizer = _keras_hub().tokenizers.Tokenizer.from_preset(resolve_preset(preset))
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def keras_hub_text_encoder(
    preset,
    sequence_length=32,
    pooling="mean",
    embedding_dim=64,
    trainable="full",
    trainable_blocks=2,
    lora_rank=None,
    dropout=0.1,
    input_name=features.TEXT,
    name="text_encoder",
    return_sequence=False,
    backbone=None,
    pad_token_id=None,
):
    """A KerasHub text backbone over int32 token ids `(batch, sequence_length)`.

    Args:
        preset: a KerasHub preset directory, short name or handle (`resolve_preset`).
        sequence_length: token ids per text (the tokenizer pads / truncates to it).
        pooling: `cls`, `mean` (over the padding mask) or `pooled`.
        embedding_dim: size of the output embedding (a linear projection).
        trainable: `frozen`, `full` or `last_n_blocks`.
        trainable_blocks: blocks trained with `last_n_blocks`.
        lora_rank: LoRA rank (None: no LoRA).
        dropout: dropout before the projection.
        input_name: name of the `keras.Input` (the feature key).
        name: name of the returned model.
        return_sequence: also output the projected token sequence.
        backbone: an already loaded backbone (default: loaded from `preset`).
        pad_token_id: the padding id (default: the preset tokenizer's; 0 without a preset).

    Returns:
        A functional `keras.Model` mapping token ids to `(batch, embedding_dim)`.

    Example:
    ```python
    import numpy as np
    encoder = keras_hub_text_encoder("all-minilm-l6-v2", 8, trainable="frozen", embedding_dim=16)
    encoder(np.array([[101, 7592, 102, 0, 0, 0, 0, 0]], "int32")).shape  # (1, 16)
    ```
    """
    backbone = backbone or load_backbone(preset)
    set_trainable(backbone, trainable, trainable_blocks, lora_rank)
    _freeze_unused_pooler(backbone, pooling)
    names = set(backbone.input) if isinstance(backbone.input, dict) else {"token_ids"}
    ids = keras.Input(shape=(sequence_length,), dtype="int32", name=input_name)
    if pad_token_id is None:
        pad_token_id = preset_pad_token_id(preset) if preset else 0
    derived = TokenIdInputs(pad_token_id, segment_ids="segment_ids" in names,
                            name="backbone_inputs")(ids)
    backbone_inputs = {k: v for k, v in derived.items() if k in names}
    if not isinstance(backbone.input, dict):
        backbone_inputs = backbone_inputs["token_ids"]
    outputs = backbone(backbone_inputs, training=False if trainable == "frozen" else None)
    sequence, pooled = _backbone_outputs(outputs)
    pooled = _pool(sequence, pooled, pooling, derived["padding_mask"])
    outputs = _head(pooled, sequence, embedding_dim, dropout, return_sequence)
    return keras.Model(ids, outputs, name=name)


def image_converter_config(preset):
    """The preset's image converter settings (`image_size`, `scale`, `offset`), or None."""
    keras_hub = _keras_hub()
    resolved = resolve_preset(preset)
    local = pathlib.Path(resolved)
    if local.is_dir() and not (local / "image_converter.json").is_file():
        return None
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(resolved)
    except (ValueError, FileNotFoundError):
        return None
    return {"image_size": converter.image_size, "scale": converter.scale, "offset": converter.offset}


def _convert_pixels(x, converter):
    """[0, 1] pixels -> what the preset expects: the converter's resize, then `x * 255 * scale
    + offset` (converters take 0-255 pixels)."""
    if converter is None:
        return x
    size = converter["image_size"]
    if size is not None and tuple(size) != tuple(x.shape[1:3]):
        x = keras.layers.Resizing(*size, name="resize")(x)
    scale = converter["scale"] if converter["scale"] is not None else 1.0
    offset = converter["offset"] if converter["offset"] is not None else 0.0
    if isinstance(scale, (list, tuple)) or isinstance(offset, (list, tuple)):
        scale = [float(s) * 255.0 for s in (scale if isinstance(scale, (list, tuple)) else [scale] * 3)]
        offset = [float(o) for o in (offset if isinstance(offset, (list, tuple)) else [offset] * 3)]
        # x * s + o == (x - mean) / sqrt(var) with mean = -o / s, var = 1 / s^2.
        return keras.layers.Normalization(
            mean=[-o / s for s, o in zip(scale, offset)], variance=[1.0 / (s * s) for s in scale],
            name="preset_pixels",
        )(x)
    return keras.layers.Rescaling(float(scale) * 255.0, offset=float(offset), name="preset_pixels")(x)


def keras_hub_image_encoder(
    preset,
    input_shape=(32, 32, 3),
    pooling="mean",
    embedding_dim=64,
    trainable="full",
    trainable_blocks=2,
    lora_rank=None,
    dropout=0.1,
    input_name=features.IMAGE,
    name="image_encoder",
    return_sequence=False,
    backbone=None,
):
    """A KerasHub image backbone (ViT, ResNet, ...) over float pixels `(batch, *input_shape)`
    in [0, 1]; grayscale is repeated to three channels. Arguments as `keras_hub_text_encoder`.

    Example:
    ```python
    import numpy as np, keras_hub
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32)
    encoder = keras_hub_image_encoder(None, (16, 16, 3), "cls", 4, backbone=backbone)
    encoder(np.zeros((1, 16, 16, 3), "float32")).shape  # (1, 4)
    ```
    """
    backbone = backbone or load_backbone(preset)
    set_trainable(backbone, trainable, trainable_blocks, lora_rank)
    _freeze_unused_pooler(backbone, pooling)
    converter = image_converter_config(preset) if preset else None
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = inputs
    if input_shape[-1] == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = _convert_pixels(x, converter)
    if isinstance(backbone.input, dict):
        x = {next(iter(backbone.input)): x}
    outputs = backbone(x, training=False if trainable == "frozen" else None)
    sequence, pooled = _backbone_outputs(outputs)
    pooled = _pool(sequence, pooled, pooling)
    tokens = None
    if return_sequence:
        tokens = feature_map_tokens(sequence) if len(sequence.shape) == 4 else sequence
    outputs = _head(pooled, tokens, embedding_dim, dropout, return_sequence)
    return keras.Model(inputs, outputs, name=name)
