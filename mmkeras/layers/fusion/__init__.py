"""Fusion layers: one file per family on the `BaseFusion` base class.

To add a fusion method: write `<name>_fusion.py` with a `BaseFusion` subclass, import it here
and add it to `FUSION_LAYERS` (or `DECISION_FUSION_LAYERS`), and add one row to the case
table of `tests/layers/fusion/fusion_test.py`.

Every layer here exports to a SavedModel and converts to TFLite with builtin ops only
(`tf.lite.OpsSet.TFLITE_BUILTINS`); the family test checks LiteRT against Keras.
"""

from mmkeras.layers.fusion.attention_fusion import AttentionFusion
from mmkeras.layers.fusion.base_fusion import BaseFusion
from mmkeras.layers.fusion.bilinear_fusion import BilinearFusion
from mmkeras.layers.fusion.concat_fusion import ConcatFusion
from mmkeras.layers.fusion.cross_modal_attention_fusion import CrossModalAttentionFusion
from mmkeras.layers.fusion.decision_fusion import DecisionFusion
from mmkeras.layers.fusion.gated_fusion import GatedFusion
from mmkeras.layers.fusion.graph_fusion import GraphFusion
from mmkeras.layers.fusion.late_fusion import LateFusion
from mmkeras.layers.fusion.low_rank_tensor_fusion import LowRankTensorFusion
from mmkeras.layers.fusion.mean_fusion import MeanFusion
from mmkeras.layers.fusion.product_fusion import ProductFusion
from mmkeras.layers.fusion.stacking_fusion import StackingFusion
from mmkeras.layers.fusion.tensor_fusion import TensorFusion
from mmkeras.layers.fusion.transformer_fusion import TransformerFusion
from mmkeras.layers.fusion.weighted_sum_fusion import WeightedSumFusion

# Name -> class, used by model configs (`model.fusion.type`). Layers with
# `accepts_sequences` (cross-modal attention, transformer) take `(batch, steps, dim)` sequences
# or `(batch, dim)` pooled embeddings; `build_classifier` picks which by
# `model.fusion.args.token_source` (default: the pooled embeddings).
FUSION_LAYERS = {
    "concat": ConcatFusion,
    "mean": MeanFusion,
    "product": ProductFusion,
    "weighted_sum": WeightedSumFusion,
    "bilinear": BilinearFusion,
    "stacking": StackingFusion,
    "attention": AttentionFusion,
    "gated": GatedFusion,
    "tensor": TensorFusion,
    "low_rank_tensor": LowRankTensorFusion,
    "graph": GraphFusion,
    "cross_modal_attention": CrossModalAttentionFusion,
    "transformer": TransformerFusion,
}
# Decision-level combiners (`model.fusion.type` of late-fusion models).
DECISION_FUSION_LAYERS = {
    "late": LateFusion,
    "decision": DecisionFusion,
}
