"""Classify one example with an exported TFLite model, as an on-device client would.

    python -m serving.tflite_predict --model DIR/export/tflite/model.tflite \
        --image digit.png --audio seven.wav [--no-audio | --no-image] [--json]
    python -m serving.tflite_predict --model DIR/export/tflite/model.tflite \
        --file front=front.png --file back=back.png   # features named after their columns

prints the class id and the probabilities. Any variant works (`model.tflite`,
`model_f16.tflite`, `model_dynamic.tflite`, `model_int8.tflite`): all take float32 inputs
through the `serving_default` signature, called by name (LiteRT orders inputs its own way).

Files are decoded with PIL and `wave` (no TensorFlow), with the semantics of the training
pipeline (`mmkeras.data.pipeline`): an 8-bit image becomes float32 in [0, 1] (`/ 255`); a
16-bit PCM WAV's first channel becomes float32 `int16 / 32768`, centre-cropped or zero-padded
to the model's length. `--no-audio` / `--no-image` mark a modality missing (zeros, flag 0), as
the pipeline does. `--file NAME=PATH` gives the file of any image or audio input by its name
(`front`, `back`: a model with several image columns); an input of rank 3 per example is
decoded as an image, of rank 1 as a WAV; an input left out is missing. Grayscale 8-bit PNGs
(the dataset's files) decode exactly as in TensorFlow; colour images are converted with PIL's
`L` mode, which may differ from TensorFlow's grayscale conversion by one grey level.
"""

import argparse
import errno
import json
import pathlib
import sys
import wave


from mmkeras import errors
import numpy as np

IMAGE = "image"
AUDIO = "audio"
PRESENT_SUFFIX = "_present"


def fix_length(waveform, num_samples):
    """Centre-crops or zero-pads a 1-D waveform to `num_samples` (as the pipeline does)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    start = max((len(waveform) - num_samples) // 2, 0)
    waveform = waveform[start:start + num_samples]
    pad = num_samples - len(waveform)
    return np.pad(waveform, (pad // 2, pad - pad // 2))


def load_image(path, shape=(28, 28, 1)):
    """An image file -> float32 `shape` in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if shape[-1] == 1 and img.mode != "L":
            img = img.convert("L")
        elif shape[-1] == 3 and img.mode != "RGB":
            img = img.convert("RGB")
        array = np.asarray(img)
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {array.dtype}")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{path}: image has shape {array.shape}, the model takes {tuple(shape)}")
    return array.astype(np.float32) / 255.0


def load_wav(path, num_samples):
    """A 16-bit PCM WAV file -> float32 `(num_samples,)` from its first channel."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        channels = w.getnchannels()
        data = w.readframes(w.getnframes())
    samples = np.frombuffer(data, dtype="<i2")
    samples = samples[: len(samples) // channels * channels].reshape(-1, channels)[:, 0]
    return fix_length(samples.astype(np.float32) / 32768.0, num_samples)


def signature_runner(model_path, num_threads=None):
    """The `serving_default` signature runner of a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    if not pathlib.Path(model_path).is_file():
        raise FileNotFoundError(errno.ENOENT, "no such TFLite model", str(model_path))
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
    except ValueError as e:
        raise errors.UserError(f"{model_path}: not a TFLite model ({e})") from None
    return interpreter.get_signature_runner("serving_default")


def build_inputs(input_details, image=None, audio=None, files=None):
    """Model inputs (batch of one) from file paths; None marks a modality missing.

    Args:
        input_details: `runner.get_input_details()` (names and shapes of the inputs).
        image: path of an image file, or None.
        audio: path of a WAV file, or None.
        files: `{input name: path}` of other image / audio inputs (`front`, `back`): rank 3
            per example is an image, rank 1 a WAV.
    """
    given = {IMAGE: image, AUDIO: audio, **(files or {})}
    inputs = {}
    for name, detail in input_details.items():
        if name.endswith(PRESENT_SUFFIX):
            continue
        shape = tuple(int(d) for d in detail["shape_signature"][1:])
        path = given.get(name)
        if path is None:
            value, present = np.zeros(shape, detail.get("dtype", np.float32)), 0.0
        elif name == IMAGE or (name != AUDIO and len(shape) == 3):
            value, present = load_image(path, shape), 1.0
        elif name == AUDIO or len(shape) == 1:
            value, present = load_wav(path, shape[0]), 1.0
        else:
            raise ValueError(f"No file decoder for model input '{name}'.")
        inputs[name] = value[None]
        inputs[name + PRESENT_SUFFIX] = np.array([present], np.float32)
    unknown = [m for m, path in given.items() if path is not None and m not in input_details]
    if unknown:
        raise ValueError(f"The model has no input '{unknown[0]}'; it takes {sorted(input_details)}.")
    return inputs


def predict_outputs(model_path, image=None, audio=None, num_threads=None, files=None):
    """Every output of the model for one example given as file paths: `{name: array}` without
    the batch axis (`class_id` + `probabilities`, `multi_hot` + `probabilities` or `value`)."""
    runner = signature_runner(model_path, num_threads)
    return run_one(runner, build_inputs(runner.get_input_details(), image, audio, files))


def run_one(runner, inputs):
    """The runner's outputs for one example's `inputs`, without the batch axis."""
    return {name: np.asarray(value)[0] for name, value in runner(**inputs).items()}


def predict(model_path, image=None, audio=None, num_threads=None, files=None):
    """Returns `(class_id, probabilities)` for one example given as file paths (a classifier;
    `predict_outputs` answers any model)."""
    outputs = predict_outputs(model_path, image, audio, num_threads, files)
    if "class_id" not in outputs:
        raise ValueError(f"{model_path} is not a single-label classifier (its outputs are "
                         f"{sorted(outputs)}): use predict_outputs.")
    return int(outputs["class_id"]), outputs["probabilities"]


@errors.command_line
def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m serving.tflite_predict", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .tflite file")
    parser.add_argument("--image", help="PNG/JPEG file")
    parser.add_argument("--audio", help="16-bit PCM WAV file")
    parser.add_argument("--no-image", action="store_true", help="mark the image missing")
    parser.add_argument("--no-audio", action="store_true", help="mark the audio missing")
    parser.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                        help="the file of input NAME (e.g. front=front.png; repeatable)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    errors.add_flags(parser)
    args = parser.parse_args(argv)

    runner = signature_runner(args.model, args.threads)
    details = runner.get_input_details()
    image = None if args.no_image else args.image
    audio = None if args.no_audio else args.audio
    for m, path, off in ((IMAGE, args.image, args.no_image), (AUDIO, args.audio, args.no_audio)):
        if m in details and path is None and not off:
            parser.error(f"the model takes '{m}': give --{m} FILE or --no-{m}")
    files = {}
    for item in args.file:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--file takes NAME=PATH, got {item!r}")
        files[name] = path
    try:
        inputs = build_inputs(details, image, audio, files)
    except (ValueError, OSError, wave.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return errors.USER_ERROR_STATUS
    outputs = run_one(runner, inputs)
    if args.json:
        print(json.dumps({name: (value.round(6).tolist() if value.dtype.kind == "f"
                                 else value.tolist()) for name, value in outputs.items()}))
    else:  # class_id: 3 / probabilities: 0:0.0100 1:... / value: 4.2 / multi_hot: 0 1 ...
        for name, value in sorted(outputs.items()):
            if name.endswith("probabilities"):
                print(f"{name}: " + " ".join(f"{i}:{p:.4f}" for i, p in enumerate(value)))
            else:
                print(f"{name}: " + " ".join(str(v) for v in np.atleast_1d(value)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
