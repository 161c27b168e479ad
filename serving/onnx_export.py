"""SavedModel `serving_default` -> ONNX with tf2onnx (in a subprocess), failing loudly.

    python -m tf2onnx.convert --saved-model SRC --signature_def serving_default --opset 17 \
        --output DIR/export/onnx/model.onnx

tf2onnx can exit 0 after logging `ERROR - Unsupported ops: ...` (e.g. with
`--continue_on_error`), leaving a model that fails later or computes something else; its output
is therefore scanned and any error line raises `OnnxExportError` with those lines.

The log-mel front end: `keras.layers.MelSpectrogram` computes its STFT as `RFFT` followed by
`Real`/`Imag`, which tf2onnx 1.17 cannot convert ("only allows ComplexAbs as consumer"), and its
`ComplexAbs` path fails shape inference with a dynamic batch. When the model has such a layer,
the ONNX model is converted from a second, temporary SavedModel of the same model (same weights,
shared layers) in which the spectrogram is computed as a strided convolution with the windowed
DFT basis (`DftMelSpectrogram`): `Conv`, `Pad(reflect)`, `Sqrt` are plain ONNX ops. The numbers
agree with the FFT to ~5e-5 dB, and the exporter's parity check compares the ONNX model with the
Keras model on the whole test split. SavedModel and TFLite exports keep the original layer.

Input names of the ONNX graph are the signature's (`image`, `audio`, `image_present`, ...);
onnxruntime users should still map by name and strip a `:0` suffix if a converter added one.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from mmkeras import model_dir as model_dir_lib

OPSET = 17
_PROBLEM = re.compile(r" - ERROR - |Unsupported ops|is not supported|make_sure failure")


class OnnxExportError(RuntimeError):
    """tf2onnx failed or reported ops it could not convert."""


class DftMelSpectrogram(keras.layers.MelSpectrogram):
    """`keras.layers.MelSpectrogram` whose STFT is a convolution with the windowed DFT basis.

    Same frames (centred, reflect padding), window and magnitude as the Keras TF backend's
    `stft`, without complex tensors, so that tf2onnx converts it. Export-only: it is never
    saved in a `.keras` file.
    """

    def _dft_kernel(self):
        n_fft, n_win = self.fft_length, self.sequence_length
        n = np.arange(n_win)
        if self.window == "hann":
            window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_win)  # periodic, as Keras uses
        elif self.window == "hamming":
            window = 0.54 - 0.46 * np.cos(2 * np.pi * n / n_win)
        elif self.window is None:
            window = np.ones(n_win)
        else:
            window = np.asarray(self.window, dtype=np.float64)
        padded = np.zeros(n_fft)
        left = (n_fft - n_win) // 2
        padded[left:left + n_win] = window
        angle = 2 * np.pi * np.arange(n_fft)[:, None] * np.arange(n_fft // 2 + 1)[None, :] / n_fft
        basis = np.concatenate(
            [padded[:, None] * np.cos(angle), -padded[:, None] * np.sin(angle)], axis=1
        )
        return basis[:, None, :].astype(np.float32)  # (width, in_channels=1, 2 * bins)

    def _spectrogram(self, inputs):
        half = self.fft_length // 2
        x = tf.pad(inputs, [[0, 0]] * (len(inputs.shape) - 1) + [[half, half]], mode="REFLECT")
        y = tf.nn.conv1d(x[..., None], self._dft_kernel(), stride=self.sequence_stride,
                         padding="VALID")
        bins = half + 1
        real, imag = y[..., :bins], y[..., bins:]
        spec = tf.sqrt(real * real + imag * imag)
        return tf.pow(spec, self.mag_exp)


def _has_mel(model):
    return any(
        type(layer) is keras.layers.MelSpectrogram for layer in _all_layers(model)
    )


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def onnx_ready_model(model):
    """The model itself, or a clone sharing its layers with `DftMelSpectrogram` front ends."""
    if not _has_mel(model):
        return model

    def clone(layer):
        if type(layer) is keras.layers.MelSpectrogram:
            return DftMelSpectrogram.from_config(layer.get_config())
        return layer  # shared: same weights, no copy

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def tf2onnx_problems(output):
    """The lines of tf2onnx's output that report errors or unsupported ops."""
    return [line.strip() for line in output.splitlines() if _PROBLEM.search(line)]


def convert(savedmodel_dir, output_path, signature="serving_default", opset=OPSET,
            extra_args=(), timeout=900):
    """Runs tf2onnx on a SavedModel signature in a subprocess; raises `OnnxExportError`.

    Writes `output_path` atomically (temporary file, then rename) and only when tf2onnx
    exited 0 without reporting a problem. Returns the tf2onnx log (stdout + stderr).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    with model_dir_lib.atomic_file(output_path) as tmp:
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel_dir),
               "--tag", "serve", "--signature_def", signature, "--opset", str(opset),
               "--output", str(tmp), *extra_args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        log = result.stdout + result.stderr
        problems = tf2onnx_problems(log)
        if result.returncode != 0 or problems or not tmp.is_file():
            shown = problems or log.strip().splitlines()[-15:]
            raise OnnxExportError(
                f"tf2onnx failed on {savedmodel_dir} (signature {signature}, opset {opset}, "
                f"exit {result.returncode}):\n  " + "\n  ".join(shown)
            )
    return log


def export_onnx(model, savedmodel_dir, output_path, opset=OPSET):
    """Exports `serving_default` of `model` (exported at `savedmodel_dir`) to ONNX.

    Converts `savedmodel_dir` itself when tf2onnx can; otherwise (a log-mel front end) a
    temporary SavedModel of `onnx_ready_model(model)` next to `output_path`. Returns
    `(path, source)` where `source` names what was converted.
    """
    from serving.serving_module import SERVING_DEFAULT
    from serving.serving_module import build_archive

    output_path = pathlib.Path(output_path)
    ready = onnx_ready_model(model)
    if ready is model:
        convert(savedmodel_dir, output_path, opset=opset)
        return output_path, "savedmodel"
    staging = output_path.parent / f".tmp-savedmodel-{os.getpid()}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        build_archive(ready, signatures=(SERVING_DEFAULT,)).write_out(str(staging), verbose=False)
        convert(staging, output_path, opset=opset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_path, "savedmodel with DFT-convolution log-mel (tf2onnx cannot convert RFFT+Real/Imag)"


def session(path, threads=None):
    """An onnxruntime CPU session and a `run(inputs) -> {output: array}` function.

    Inputs are matched to the graph by name (a `:0` suffix on either side is ignored).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph_names = {i.name.split(":")[0]: i.name for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]

    def run(inputs):
        feed = {}
        for name, value in inputs.items():
            key = name.split(":")[0]
            if key not in graph_names:
                raise KeyError(f"ONNX model has no input '{key}'; it has {sorted(graph_names)}")
            feed[graph_names[key]] = np.asarray(value)
        return {name.split(":")[0]: value for name, value in zip(outputs, sess.run(outputs, feed))}

    return sess, run
