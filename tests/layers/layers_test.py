"""Every public non-fusion layer through the shared `run_layer_test` checks (tests/test_case.py).

The fusion family has its own parameterized test (tests/layers/fusion/fusion_test.py); the
behaviour of each layer (closed-form values, masks, schedules) is tested beside it in the other
files of this folder. This file makes sure none is left without the common checks: config and
registered-name round trip, eager and symbolic calls, `.keras` round trip, a training step and
mixed precision.
"""

import dataclasses

import numpy as np
import pytest

from mmkeras import layers
from mmkeras.api_export import PUBLIC_API
from tests.test_case import run_layer_test

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    cls: type
    init_kwargs: dict
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    call_kwargs: dict = dataclasses.field(default_factory=dict)
    expected_output_shape: object = None
    trainable: int = None
    non_trainable: int = None
    training: bool = True
    name: str = ""

    @property
    def id(self):
        return self.name or self.cls.__name__


_flags = {"audio": np.array([1, 1, 0, 1], "float32"), "image": np.array([1, 0, 1, 1], "float32")}
_video = _normal(2, 5, 4)
_audio_padded = np.concatenate([_normal(2, 1, 4), _video, _normal(2, 1, 4)], axis=1)

CASES = [
    Case(layers.ModalityDropout, {"rates": {"audio": 0.5, "image": 0.5}, "seed": 1}, (_flags,),
         expected_output_shape=[(4,), (4,)], trainable=0, training=False),
    Case(layers.ModalityImputation, {"method": "learned"},
         ({"audio": _normal(4, 3), "image": _normal(4, 5)},), kwargs={"presence": _flags},
         expected_output_shape=[(4, 3), (4, 5)], trainable=2, name="ModalityImputation_learned"),
    Case(layers.ModalityImputation, {"method": "mean", "momentum": 0.5},
         ({"audio": _normal(4, 3), "image": _normal(4, 5)},), kwargs={"presence": _flags},
         expected_output_shape=[(4, 3), (4, 5)], trainable=0, non_trainable=2, training=False,
         name="ModalityImputation_mean"),
    Case(layers.AttentionPooling, {"units": 8}, (_normal(2, 5, 6),),
         expected_output_shape=(2, 6)),
    Case(layers.LoudnessNormalization, {"target": 0.2, "mode": "peak"}, (_normal(2, 64),),
         expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.SpeechTrimming, {"window": 8, "threshold_db": -20.0, "align": "center"},
         (_normal(2, 64),), expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.SpeechTrimming, {"window": 8, "threshold_db": -20.0, "output_length": 40},
         (_normal(2, 64),), expected_output_shape=(2, 40), trainable=0, training=False,
         name="SpeechTrimming_output_length"),
    Case(layers.RandomGain, {"min_db": -6.0, "max_db": 6.0, "seed": 1}, (_normal(2, 64),),
         expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.RandomTimeShift, {"max_shift": 8, "seed": 1}, (_normal(2, 64),),
         expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.RandomSilencePadding, {"max_padding": 16, "seed": 1}, (_normal(2, 64),),
         expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.RandomSpeed, {"max_change": 0.1, "seed": 1}, (_normal(2, 64),),
         expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.RandomSpeed, {"max_change": 0.1, "interpolation": "linear", "seed": 1},
         (_normal(2, 64),), expected_output_shape=(2, 64), trainable=0, training=False),
    Case(layers.TokenIdInputs, {"pad_token_id": 0}, (np.array([[101, 7, 102, 0], [101, 102, 0, 0]],
                                                              "int32"),),
         expected_output_shape=[(2, 4), (2, 4), (2, 4)], trainable=0, training=False),
    Case(layers.SequencePooling, {"mode": "mean"}, (_normal(2, 4, 3),),
         kwargs={"padding_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 1]], "int32")},
         expected_output_shape=(2, 3), trainable=0, training=False),
    Case(layers.SequencePooling, {"mode": "cls"}, (_normal(2, 4, 3),),
         expected_output_shape=(2, 3), trainable=0, training=False, name="SequencePooling_cls"),
    Case(layers.MFCC, {"num_mfcc": 5}, (np.abs(_normal(2, 12, 7)),),
         expected_output_shape=(2, 5, 7), trainable=0, training=False),
    Case(layers.PositionEmbedding, {"sequence_length": 5}, (_normal(2, 5, 4),),
         expected_output_shape=(2, 5, 4), trainable=1),
    Case(layers.SpecAugment, {"freq_masks": 1, "freq_mask_width": 2, "time_masks": 1,
                              "time_mask_width": 2}, (_normal(2, 8, 10),),
         expected_output_shape=(2, 8, 10), trainable=0, training=False),
    Case(layers.TabularFeatures, {"num_numeric": 2, "num_categorical": 1, "categorical_bins": 5,
                                  "category_dim": 3},
         (np.array([[0.1, -1.0, 4.0], [0.3, 0.2, 1.0]], "float32"),),
         expected_output_shape=(2, 5), trainable=1),
    Case(layers.TransformerEncoderBlock, {"num_heads": 2, "intermediate_dim": 8, "dropout": 0.0},
         (_normal(2, 6, 4),), expected_output_shape=(2, 6, 4)),
    Case(layers.TransformerDecoderBlock, {"num_heads": 2, "intermediate_dim": 8, "dropout": 0.0},
         (_normal(2, 5, 4), _normal(2, 7, 4)), expected_output_shape=(2, 5, 4)),
    Case(layers.GradientReversal, {"scale": 0.5}, (_normal(2, 3),),
         expected_output_shape=(2, 3), trainable=0, training=False),
    Case(layers.AdversarialDiscriminator, {"num_domains": 2, "units": (8,)}, (_normal(4, 3),),
         expected_output_shape=(4, 2), trainable=4),
    Case(layers.AdversarialDiscriminator,
         {"num_domains": 2, "units": (8,), "adversary": "confusion"}, (_normal(4, 3),),
         expected_output_shape=[(4, 2), (4, 2)], trainable=4,
         name="AdversarialDiscriminator_confusion"),
    Case(layers.LogitScale, {"temperature": 0.1, "bias": -10.0}, (_normal(3, 3),),
         expected_output_shape=(3, 3), trainable=2),
    Case(layers.LinearKernel, {}, (_normal(3, 4), _normal(5, 4)), expected_output_shape=(3, 5),
         trainable=0, training=False),
    Case(layers.PolynomialKernel, {"degree": 2, "gamma": 0.5}, (_normal(3, 4), _normal(5, 4)),
         expected_output_shape=(3, 5), trainable=0, training=False),
    Case(layers.RBFKernel, {"gamma": 0.5, "trainable_gamma": True},
         (_normal(3, 4), _normal(5, 4)), expected_output_shape=(3, 5), trainable=1),
    Case(layers.SubspaceProjection, {"units": 2, "regularization": 0.1},
         ({"audio": _normal(4, 3), "image": _normal(4, 5)},),
         expected_output_shape=[(4, 2), (4, 2)], trainable=2),
    Case(layers.SyncOffsetScores, {"max_offset": 1, "temperature": 1.0}, (_video, _audio_padded),
         expected_output_shape=[(2, 3), (2,)], trainable=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_layer(case, tmp_path):
    run_layer_test(
        case.cls,
        case.init_kwargs,
        args=case.args,
        kwargs=case.kwargs,
        call_kwargs=case.call_kwargs,
        expected_output_shape=case.expected_output_shape,
        expected_num_trainable_weights=case.trainable,
        expected_num_non_trainable_weights=case.non_trainable,
        run_training_check=case.training,
        tmp_path=tmp_path,
    )


def test_every_public_layer_has_a_case():
    """A new public layer must be added to CASES (or to the fusion family test)."""
    covered = {case.cls for case in CASES}
    fusion = {
        *layers.FUSION_LAYERS.values(), *layers.DECISION_FUSION_LAYERS.values(), layers.BaseFusion
    }
    public = {
        cls for path, cls in PUBLIC_API.items()
        if path.startswith("mmkeras.layers.") and isinstance(cls, type)
    }
    missing = sorted(cls.__name__ for cls in public - covered - fusion)
    assert not missing, f"public layers without a run_layer_test case: {missing}"
