"""Every task exports: a tiny model directory of each task (trained on real data slices by
`train_task_model_dir`), exported by `serving.export`, parity checked, and served by the local
server, which answers each of its signatures over REST and gRPC."""

import json
import shutil

import numpy as np
import pytest

from serving import export
from serving.client import GrpcClient
from serving.client import RestClient
from tests.serving.conftest import SERVED_TASKS
from tests.serving.conftest import start_server
from tests.serving.conftest import stop_server

pytestmark = pytest.mark.large

# task -> {signature: its outputs} (the tables of serving/tasks/*.py), and the signatures the
# TFLite file holds.
SIGNATURES = {
    "retrieval": {"embed_audio": ["embedding"], "embed_image": ["embedding"],
                  "similarity": ["logit", "similarity"]},
    "captioning": {"generate": ["caption", "length", "token_ids"],
                   "generate_ids": ["length", "token_ids"]},
    "av_sync": {"serving_default": ["offset_frames", "offset_logits", "offset_probabilities",
                                    "sync_logit", "sync_probability"]},
    "shared_autoencoder": {
        name: ["audio_reconstruction", "image_reconstruction", "shared_code"]
        for name in ("serving_default", "serve_audio_only", "serve_image_only")},
    "invariance": {
        "serving_default": ["audio_class_id", "audio_probabilities", "class_id",
                            "image_class_id", "image_probabilities", "probabilities"],
        "serve_audio_only": ["class_id", "embedding", "probabilities"],
        "serve_image_only": ["class_id", "embedding", "probabilities"]},
}
NOT_TFLITE = {"captioning": ["generate"]}


@pytest.mark.parametrize("task", SERVED_TASKS)
def test_export_writes_the_task_signatures_and_passes_parity(task, task_export):
    exported = task_export(task)
    report = exported.report
    assert report["task"] == task and report["passed"] and report["published"]
    assert report["formats"] == ["savedmodel", "tflite"]
    assert report["examples"] >= 4
    expected = SIGNATURES[task]
    checked = report["savedmodel"]["signatures"]
    assert {k: sorted(v["outputs"]) for k, v in checked.items()} == expected
    tflite = report["tflite"]["signatures"]
    assert sorted(tflite) == sorted(set(expected) - set(NOT_TFLITE.get(task, [])))
    assert sorted(report["tflite"]["not_converted"]) == NOT_TFLITE.get(task, [])
    for entries in (checked, tflite):
        for entry in entries.values():
            assert entry["passed"]
            for output in entry["outputs"].values():
                assert output.get("max_abs_diff", 0.0) <= 1e-4 or output.get("agreement") == 1.0
    assert (exported.model_dir / "export" / "tflite" / "model.tflite").is_file()
    assert (exported.version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()
    warmup = exported.warmup_inputs()
    assert sorted(warmup) == sorted(expected)
    outputs = {name: exported.expected(name, inputs) for name, inputs in warmup.items()}
    _check_task_outputs(task, exported, outputs, warmup)


def _check_task_outputs(task, exported, outputs, inputs):
    """What each task's outputs mean, on the warm-up file's real rows."""
    if task == "retrieval":
        a, b = outputs["embed_audio"]["embedding"], outputs["embed_image"]["embedding"]
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(outputs["similarity"]["similarity"], np.sum(a * b, axis=1),
                                   atol=1e-5)
    elif task == "captioning":
        vocab = (exported.model_dir / "caption_vocab.txt").read_text().splitlines()
        out = outputs["generate"]
        ids, length = out["token_ids"], out["length"]
        assert ids.shape == (len(length), 7)  # max_words + 1
        for row, n, caption in zip(ids, length, out["caption"]):
            assert (row[n:] == 0).all() and (row[:n] > 3).all()  # no pad/unk/start/end words
            words = [vocab[i] for i in row[:n]]
            assert caption.decode().replace(" ", "") == "".join(words)
        np.testing.assert_array_equal(outputs["generate_ids"]["token_ids"], ids)
    elif task == "av_sync":
        out = outputs["serving_default"]
        np.testing.assert_allclose(out["offset_probabilities"].sum(axis=1), 1.0, atol=1e-5)
        assert out["offset_logits"].shape[1] == 5  # max_offset 2
        np.testing.assert_array_equal(out["offset_frames"],
                                      out["offset_logits"].argmax(axis=1) - 2)
        np.testing.assert_allclose(out["sync_probability"],
                                   1 / (1 + np.exp(-out["sync_logit"])), atol=1e-6)
    elif task == "shared_autoencoder":
        both = outputs["serving_default"]
        image_only = outputs["serve_image_only"]
        assert both["image_reconstruction"].shape == inputs["serving_default"]["image"].shape
        assert 0.0 <= both["image_reconstruction"].min() <= both["image_reconstruction"].max() <= 1.0
        # The image-only code is the image's code alone: it differs from the code of both.
        assert np.abs(image_only["shared_code"] - both["shared_code"]).max() > 1e-4
    elif task == "invariance":
        out = outputs["serving_default"]
        np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(
            out["probabilities"], (out["image_probabilities"] + out["audio_probabilities"]) / 2,
            atol=1e-6)
        np.testing.assert_allclose(outputs["serve_image_only"]["probabilities"],
                                   out["image_probabilities"], atol=1e-6)


def test_text_retrieval_embeds_raw_strings_in_the_graph(task_export):
    """A text tower's `embed_text_strings` runs the model directory's tokenizer (`vocab.txt`)
    inside the SavedModel and gives `embed_text`'s embedding of the tf.data token ids."""
    exported = task_export("retrieval_text")
    report = exported.report
    assert report["passed"] and report["task"] == "retrieval"
    assert sorted(report["savedmodel"]["signatures"]) == [
        "embed_image", "embed_text", "embed_text_strings", "similarity"]
    assert sorted(report["tflite"]["signatures"]) == ["embed_image", "embed_text", "similarity"]
    assert list(report["tflite"]["not_converted"]) == ["embed_text_strings"]
    warmup = exported.warmup_inputs()
    strings = warmup["embed_text_strings"]["text"]
    assert strings.dtype == object and all(isinstance(s, bytes) and s for s in strings)
    np.testing.assert_allclose(
        exported.expected("embed_text_strings", {"text": strings})["embedding"],
        exported.expected("embed_text", warmup["embed_text"])["embedding"], atol=1e-6)


def test_options_a_task_does_not_support_exit_2(task_export, capsys):
    model_dir = task_export("retrieval").model_dir
    for flags, words in ((["--format", "onnx"], "ONNX export is for classification"),
                         (["--tflite-quant", "int8", "--format", "tflite"], "float32 TFLite only"),
                         (["--all-heads"], "--all-heads is for multi-task")):
        capsys.readouterr()
        assert export.main(["--model-dir", str(model_dir), *flags]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


@pytest.fixture(scope="module")
def task_server(task_export, tmp_path_factory):
    """One server over the exports of every task (each `<base>/<name>/1`)."""
    base = tmp_path_factory.mktemp("task_models")
    exports = {task: task_export(task) for task in SERVED_TASKS}
    for exported in exports.values():
        shutil.copytree(exported.version_dir, base / exported.name / "1")
    proc = start_server(["--model-base-path", str(base), "--rest-port", "0", "--grpc-port", "0",
                         "--poll-seconds", "0"], str(tmp_path_factory.mktemp("task_server_logs")))
    try:
        yield proc, exports
    finally:
        stop_server(proc.process)


@pytest.mark.parametrize("task", SERVED_TASKS)
def test_server_answers_every_signature_over_rest_and_grpc(task, task_server):
    proc, exports = task_server
    exported = exports[task]
    rest = RestClient("127.0.0.1", proc.rest_port, exported.name)
    signature_defs = rest.metadata()["metadata"]["signature_def"]["signature_def"]
    for name, outputs in SIGNATURES[task].items():
        assert sorted(signature_defs[name]["outputs"]) == outputs, name
    with GrpcClient("127.0.0.1", proc.grpc_port, exported.name) as grpc:
        assert sorted(grpc.metadata()["metadata"]["signature_def"]["signature_def"]) == sorted(
            signature_defs)
        for name, inputs in exported.warmup_inputs().items():
            expected = exported.expected(name, inputs)
            for client in (rest, grpc):
                got = client.predict(inputs, signature_name=name)
                assert sorted(got) == sorted(expected), (client, name)
                for output, want in expected.items():
                    have = np.asarray(got[output])
                    assert have.shape == want.shape, (client, name, output)
                    if want.dtype.kind == "f":
                        np.testing.assert_allclose(have, want, atol=1e-6, err_msg=f"{name} {output}")
                    else:
                        assert have.tolist() == want.tolist(), (client, name, output)
