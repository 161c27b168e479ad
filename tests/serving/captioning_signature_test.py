"""The captioning `generate` signature's in-graph greedy decoding against the library's Python
`greedy_decode`, on an untrained tiny `Captioner` whose `<end>` logit is pushed up by steps
(until a caption stops mid-way), so empty, mid-length and full-length captions all occur."""

import numpy as np
import tensorflow as tf

from mmkeras.encoders.image_cnn_encoder import image_cnn_encoder
from mmkeras.models.captioner import Captioner
from mmkeras.models.captioner import greedy_decode
from serving.tasks import captioning

VOCABULARY = ["<pad>", "<unk>", "<start>", "<end>", "flag", ":", "red", "heart", "face", "-"]


def test_generate_matches_greedy_decode_for_every_caption_length(tmp_path):
    (tmp_path / captioning.VOCAB_FILE).write_text("".join(f"{t}\n" for t in VOCABULARY))
    encoder = image_cnn_encoder((8, 8, 3), (4,), 8, return_sequence=True)
    model = Captioner(encoder, vocabulary_size=len(VOCABULARY), sequence_length=5,
                      hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, dropout=0.0)
    serving = captioning.CaptioningServing(None, model, tmp_path)
    generate = {e.name: tf.function(e.fn) for e in serving.endpoints()}[captioning.GENERATE]
    images = np.random.default_rng(0).random((12, 8, 8, 3)).astype("float32")
    bias = model.logits.bias
    lengths = set()
    for end_bias in (-100.0, 100.0, *np.linspace(-1.0, 3.0, 33)):
        values = np.zeros(len(VOCABULARY), "float32")
        values[model.end_id] = end_bias
        bias.assign(values)
        got = {k: v.numpy() for k, v in generate({"image": tf.constant(images)}).items()}
        want = greedy_decode(model, images)
        assert got["length"].tolist() == [len(c) for c in want], end_bias
        for row, length, caption, expected in zip(got["token_ids"], got["length"],
                                                  got["caption"], want):
            assert row[:length].tolist() == expected and not row[length:].any()
            assert caption.decode() == captioning.detokenize([VOCABULARY[i] for i in expected])
        lengths |= set(got["length"].tolist())
        if lengths & {1, 2, 3, 4}:
            break
    assert 0 in lengths and 5 in lengths and lengths & {1, 2, 3, 4}, lengths
