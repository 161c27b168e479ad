"""TFLite conversion (builtin ops only; float32, float16, dynamic range, int8) and LiteRT runners.

Every tensor signature of the SavedModel (`serving_default` and the `serve_<m..>_only` ones)
goes into one `.tflite` file; int8 calibrates each signature on the representative examples
and keeps the log-mel front end in float (see `float_layer_names`).
"""

from mmkeras import model_dir as model_dir_lib
from serving import examples

TFLITE_QUANT = ("float32", "float16", "dynamic", "int8")

# quantization -> (file name, parity.json key)
TFLITE_VARIANTS = {
    "float32": ("model.tflite", "tflite"),
    "float16": ("model_f16.tflite", "tflite_f16"),
    "dynamic": ("model_dynamic.tflite", "tflite_dynamic"),
    "int8": ("model_int8.tflite", "tflite_int8"),
}

REPRESENTATIVE_EXAMPLES = 200


def representative_dataset(config, count=REPRESENTATIVE_EXAMPLES, preprocessing=None):
    """A function yielding the first `count` training examples one by one (int8 calibration)."""
    columns = examples.rows(config, "train", count)
    x = examples.pipeline_inputs(columns, config, sorted(config.model.modalities), preprocessing)
    one_by_one = [{k: v[i:i + 1].numpy() for k, v in x.items()}
                  for i in range(len(columns["label"]))]

    def generate():
        yield from one_by_one

    return generate


def float_layer_names(model):
    """Layers kept in float in the int8 model: the log-mel front ends (`MelSpectrogram`) and
    the waveform front end before them (`SpeechTrimming`, `LoudnessNormalization`).

    Quantizing a spectrogram before its log maps the quiet bins (most of the dB range) to
    zero: with them in int8, top-1 agreement with Keras fell to 0.62 on AV-MNIST. The
    waveform front end thresholds an energy envelope in dB and divides by a level: in int8
    its cut point moved and a tiny speech-recipe early-fusion model's agreement fell to 0.35.
    """
    import keras

    from mmkeras.layers import LoudnessNormalization
    from mmkeras.layers import SpeechTrimming

    def walk(layer):
        for sub in getattr(layer, "layers", []):
            yield sub
            yield from walk(sub)

    kinds = (keras.layers.MelSpectrogram, SpeechTrimming, LoudnessNormalization)
    return sorted({l.name for l in walk(model) if isinstance(l, kinds)})


def _tensor_names_in_layers(flatbuffer, layer_names):
    """Names of the tensors of a float TFLite model that belong to the named Keras layers."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    if not layer_names:
        return []
    scope = re.compile(r"(^|/)(" + "|".join(re.escape(n) for n in layer_names) + r")(_\d+)?/")
    interpreter = Interpreter(model_content=flatbuffer)
    names = set()
    for index in range(len(interpreter.get_signature_list())):  # one subgraph per signature
        details = interpreter.get_tensor_details(subgraph_index=index)
        names |= {d["name"] for d in details if scope.search(d["name"])}
    return sorted(names)


def _per_signature(representative, flatbuffer):
    """The representative examples fed to every signature of a float TFLite model, as the
    `(signature_key, inputs)` pairs the converter calibrates a multi-signature model with."""
    from ai_edge_litert.interpreter import Interpreter

    inputs = {key: sig["inputs"]
              for key, sig in Interpreter(model_content=flatbuffer).get_signature_list().items()}

    def generate():
        for example in representative():
            for key, names in inputs.items():
                yield key, {name: example[name] for name in names}

    return generate


def export_tflite(savedmodel_dir, path, quant="float32", representative=None, float_layers=(),
                  signatures=("serving_default",)):
    """Converts SavedModel signatures to one builtin-ops TFLite model, quantized as asked.

    Args:
        savedmodel_dir: a SavedModel version directory.
        path: the `.tflite` file to write (atomically).
        quant: `float32`, `float16` (float16 weights), `dynamic` (int8 weights, dynamic-range
            activations) or `int8` (integer kernels, float32 I/O; needs `representative`).
        representative: a generator function of `{input_name: array}` (batch 1) for `int8`.
        float_layers: for `int8`, Keras layer names whose ops stay float (selective
            quantization with `tf.lite.experimental.QuantizationDebugger`'s denylist); every
            other op with an int8 kernel is quantized.
        signatures: the SavedModel signatures to convert (they share the weights); int8
            calibrates each of them on the representative examples.
    """
    import tensorflow as tf

    if quant not in TFLITE_QUANT:
        raise ValueError(f"Unknown TFLite quantization '{quant}'; choose from {TFLITE_QUANT}.")

    def converter():
        c = tf.lite.TFLiteConverter.from_saved_model(
            str(savedmodel_dir), signature_keys=list(signatures)
        )
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return c

    c = converter()
    if quant == "float16":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs a representative dataset.")
        float_model = converter().convert()
        float_nodes = _tensor_names_in_layers(float_model, float_layers)
        representative = _per_signature(representative, float_model)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        if not float_nodes:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            c.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS
            ]
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=c,
                debug_dataset=representative,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=float_nodes
                ),
            )
            return model_dir_lib.write_bytes(path, debugger.get_nondebug_quantized_model())
    return model_dir_lib.write_bytes(path, c.convert())


def tflite_runner(path, num_threads=None):
    """`run(inputs) -> {output: array}` over the `serving_default` signature of a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner("serving_default")
    return lambda x: runner(**x)
