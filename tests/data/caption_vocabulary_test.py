"""The caption vocabulary: tokenisation, the token list, its file, encoding and decoding."""

import pytest

from mmkeras.data import caption_vocabulary as cv


def test_tokenize_vocabulary_and_encoding():
    assert cv.tokenize("flag: St. Lucia") == ["flag", ":", "st", ".", "lucia"]
    assert cv.tokenize("Woman’s hat, T-shirt") == [
        "woman", "’", "s", "hat", ",", "t", "-", "shirt"]
    vocab = cv.build_vocabulary(["flag: Peru", "flag: Chad", "red heart"], min_count=2)
    assert vocab == ["<pad>", "<unk>", "<start>", "<end>", ":", "flag"]
    inputs, targets = cv.encode_captions(["flag: Peru", "a b c d"], vocab, max_words=3)
    assert inputs.tolist() == [[2, 5, 4, 1], [2, 1, 1, 1]]
    assert targets.tolist() == [[5, 4, 1, 3], [1, 1, 1, 3]]  # cut to 3 words, then <end>
    assert cv.ids_to_tokens([5, 4, 1], vocab) == ["flag", ":", "<unk>"]
    assert cv.detokenize(["flag", ":", "st", ".", "lucia"]) == "flag: st. lucia"
    assert cv.detokenize(["t", "-", "shirt"]) == "t-shirt"


def test_vocabulary_file_round_trip_and_bad_file(tmp_path):
    vocab = cv.build_vocabulary(["flag: Peru", "grinning face", "flag: Chad"])
    path = cv.save_vocabulary(vocab, tmp_path)
    assert path == tmp_path / cv.VOCAB_FILE
    assert cv.load_vocabulary(tmp_path) == vocab == cv.load_vocabulary(path)
    assert not list(tmp_path.glob(".tmp-*"))
    bad = tmp_path / "bad.txt"
    bad.write_text("flag\n:\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt: the first lines must be <pad> <unk>"):
        cv.load_vocabulary(bad)
