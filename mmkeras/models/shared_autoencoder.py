"""A shared-representation multimodal autoencoder (Ngiam et al., 2011, "bimodal deep AE").

Each modality is encoded and mapped to a code of one shared size; the shared code is the mean
of the codes of the modalities that are present (`MeanFusion` with presence flags). Decoders
reconstruct EVERY modality from the shared code, so a code computed from one modality alone
must also reconstruct the other (cross-modal reconstruction). In training, `ModalityDropout`
hides modalities at random (never all), so the model learns to reconstruct both modalities
from both, from the image alone and from the audio alone; at inference the presence flags
choose which modalities feed the code.

Random modality dropout alone does not make the code shared: the encoders put each modality's
code in its own region and a decoder learns to output the training mean for the other region.
`subset_training_model` builds a second model on the same weights for "joint-multimodal"
training (as in MVAE/MMVAE-style subset training): every step, the code of EVERY non-empty
subset of modalities (both, image only, audio only) reconstructs EVERY modality, and an
optional alignment term (`code_alignment_loss`: L2 or symmetric InfoNCE) pulls the
single-modality codes of a pair together, so codes from either modality live in one space.
"""

import itertools

import keras
from keras import ops

from mmkeras import features
from mmkeras.layers.fusion.mean_fusion import MeanFusion
from mmkeras.layers.modality_dropout import ModalityDropout

CODE = "shared_code"


def reconstruction_key(modality):
    return f"{modality}_reconstruction"


def _image_decoder(code_dim, shape, name):
    h, w, c = shape
    if h % 4 or w % 4:
        raise ValueError(f"The image decoder needs height and width divisible by 4, got {shape}.")
    code = keras.Input((code_dim,))
    x = keras.layers.Dense((h // 4) * (w // 4) * 32, activation="relu")(code)
    x = keras.layers.Reshape((h // 4, w // 4, 32))(x)
    x = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(c, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(code, x, name=name)


def _vector_decoder(code_dim, size, hidden, name):
    code = keras.Input((code_dim,))
    x = keras.layers.Dense(hidden, activation="relu")(code)
    return keras.Model(code, keras.layers.Dense(size)(x), name=name)


def build_shared_autoencoder(encoders, targets, code_dim=32, modality_dropout=0.5, hidden=256, name="shared_autoencoder"):
    """Builds the autoencoder.

    Args:
        encoders: a dict of modality name to encoder model (`keras.Input(name=<m>)` ->
            `(batch, d_m)`).
        targets: a dict of modality name to the shape of its reconstruction target: an image
            shape `(h, w, c)` (decoded by transposed convolutions, sigmoid output) or `(size,)`
            for a feature vector (e.g. a flattened, standardised log-mel spectrogram; decoded
            by an MLP, linear output).
        code_dim: size of the shared code.
        modality_dropout: in training, probability of hiding each modality from the encoder
            (one present modality is always kept); 0 disables it.
        hidden: hidden units of the vector decoders.
        name: the model's name.

    Returns:
        A functional model with inputs `{m, m_present}` and outputs
        `{"<m>_reconstruction"}` for every modality; the code is its layer `shared_code`
        (read it with `code_model`).
    """
    modalities = sorted(encoders)
    inputs, codes, presence = {}, {}, {}
    for m in modalities:
        encoder = encoders[m]
        x = keras.Input(shape=encoder.input_shape[1:], name=m)
        flag = keras.Input(shape=(), name=features.presence_key(m))
        inputs[m], inputs[features.presence_key(m)] = x, flag
        codes[m] = keras.layers.Dense(code_dim, name=f"{m}_code")(encoder(x))
        presence[m] = flag
    if modality_dropout:
        presence = ModalityDropout({m: modality_dropout for m in modalities}, name="modality_dropout")(presence)
    code = MeanFusion(name=CODE)(codes, presence=presence)
    outputs = {}
    for m in modalities:
        shape = tuple(targets[m])
        decoder = (
            _image_decoder(code_dim, shape, f"{m}_decoder") if len(shape) == 3
            else _vector_decoder(code_dim, shape[0], hidden, f"{m}_decoder")
        )
        outputs[reconstruction_key(m)] = keras.layers.Identity(name=reconstruction_key(m))(decoder(code))
    return keras.Model(inputs, outputs, name=name)


def code_model(model):
    """A model sharing `model`'s weights that outputs the shared code."""
    return keras.Model(model.inputs, model.get_layer(CODE).output, name=f"{model.name}_code")


def code_alignment_loss(a, b, method="infonce", temperature=0.1):
    """Per-example alignment loss between two modalities' codes of the same pairs.

    Args:
        a, b: `(batch, d)` codes; row `i` of both comes from pair `i`.
        method: `l2`: `|a_i - b_i|^2 / v`, with `v` the batch's mean squared distance of
            a code to the batch mean code `c` of both modalities,
            `v = (mean_j |a_j - c|^2 + mean_j |b_j - c|^2) / 2`: a squared distance relative to
            the codes' spread, so shrinking the codes does not lower it (2 for independent
            codes of equal spread, 0 for equal codes); `infonce`: CLIP's symmetric InfoNCE,
            `0.5 * [-log softmax_j(a_i.b_j / t)_i - log softmax_j(b_i.a_j / t)_i]`, on the
            codes centred on the batch mean of both modalities' codes `c` and unit-normalised
            (`a_i <- (a_i - c) / |a_i - c|`), the other rows of the batch being the negatives
            (scale-free; label-free).
        temperature: `t` of `infonce`.

    Returns:
        A `(batch,)` tensor; its mean is the loss.
    """
    if method not in ("l2", "infonce"):
        raise ValueError(f"Unknown alignment method {method!r}: expected 'l2' or 'infonce'.")
    # The batch's mean code over both modalities (one shift for both, so an offset between
    # the modalities still costs).
    centre = 0.5 * (ops.mean(a, axis=0, keepdims=True) + ops.mean(b, axis=0, keepdims=True))
    if method == "l2":
        spread = 0.5 * (ops.mean(ops.sum(ops.square(a - centre), axis=-1)) + ops.mean(ops.sum(ops.square(b - centre), axis=-1)))
        return ops.sum(ops.square(a - b), axis=-1) / (spread + 1e-6)
    # Codes from ReLU features sit in a narrow cone, where the cosines are all close to 1 and
    # InfoNCE hardly moves them: centre them first.
    a = ops.normalize(a - centre, axis=-1)
    b = ops.normalize(b - centre, axis=-1)
    logits = ops.matmul(a, ops.transpose(b)) / temperature
    diagonal = ops.diagonal(logits)
    a_to_b = ops.logsumexp(logits, axis=1) - diagonal
    b_to_a = ops.logsumexp(logits, axis=0) - diagonal
    return 0.5 * (a_to_b + b_to_a)


def subset_key(subset):
    """Name of a subset of modalities: its sorted names joined by `_`."""
    return "_".join(sorted(subset))


def subset_reconstruction_key(modality, subset):
    return f"{modality}_from_{subset_key(subset)}"


ALIGNMENT = "code_alignment"


def subset_training_model(model, alignment=None, temperature=0.1, name=None):
    """A model on `model`'s weights that decodes every modality from every subset's code.

    For modalities `M` (those `model` reconstructs), inputs `{m}` (no presence flags) and
    outputs `"<m>_from_<subset>"` for every modality `m` and every non-empty subset of `M`
    (e.g. `audio_from_image`, `image_from_audio_image`): the decoder of `m` applied to the
    mean of the subset's codes, which is exactly the code `model` computes when only that
    subset is present. Train it with each output's target the modality's target; then
    cross-modal reconstruction is trained on every example every step, not only on the
    examples modality dropout happens to hide.

    Args:
        model: a model from `build_shared_autoencoder`.
        alignment: None, `l2` or `infonce`: add an output `code_alignment`, the per-example
            `code_alignment_loss` between the single-modality codes (averaged over pairs of
            modalities); train it with a loss that returns `y_pred` (`alignment_loss`).
        temperature: the InfoNCE temperature.
        name: the model's name (default `<model.name>_subsets`).
    """
    modalities = sorted(
        k[: -len("_reconstruction")] for k in model.output_names if k.endswith("_reconstruction")
    )
    inputs, codes = {}, {}
    for m in modalities:
        source = model.get_layer(m).output
        coder = keras.Model(source, model.get_layer(f"{m}_code").output, name=f"{m}_coder")
        inputs[m] = keras.Input(shape=source.shape[1:], name=m)
        codes[m] = coder(inputs[m])
    outputs = {}
    for size in range(1, len(modalities) + 1):
        for subset in itertools.combinations(modalities, size):
            code = codes[subset[0]] if size == 1 else keras.layers.Average(name=f"code_{subset_key(subset)}")([codes[m] for m in subset])
            for m in modalities:
                key = subset_reconstruction_key(m, subset)
                outputs[key] = keras.layers.Identity(name=key)(model.get_layer(f"{m}_decoder")(code))
    if alignment:
        pairs = list(itertools.combinations(modalities, 2))
        if not pairs:
            raise ValueError("Code alignment needs at least two modalities.")
        terms = [code_alignment_loss(codes[a], codes[b], alignment, temperature) for a, b in pairs]
        outputs[ALIGNMENT] = keras.layers.Identity(name=ALIGNMENT)(sum(terms) / len(terms))
    return keras.Model(inputs, outputs, name=name or f"{model.name}_subsets")


@keras.saving.register_keras_serializable(package="mmkeras")
def alignment_loss(y_true, y_pred):
    """The loss of the `code_alignment` output: the output itself (`y_true` is ignored).

    Registered, so a compiled subset training model (a best checkpoint) loads from `.keras`.
    """
    return ops.reshape(y_pred, (-1,))
