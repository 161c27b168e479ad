"""The pair loss of a dual encoder, from its `cross_modal` config section."""

from mmkeras.configs import ConfigError
from mmkeras.losses.cca_loss import CCALoss
from mmkeras.losses.clip_loss import CLIPLoss
from mmkeras.losses.kernel_alignment_loss import PairKernelAlignmentLoss
from mmkeras.losses.siglip_loss import SigLIPLoss

SIGLIP_INITIAL_BIAS = -10.0


def make_pair_loss(cross_modal, modalities):
    """The configured pair loss (`cross_modal.loss`: clip, siglip, cca or kernel_alignment),
    reading the dual
    encoder's `<modality>_embedding` outputs of `modalities`."""
    keys = [f"{m}_embedding" for m in modalities]
    if cross_modal.loss == "clip":
        return CLIPLoss(
            temperature=cross_modal.temperature, positives=cross_modal.positives,
            embedding_keys=keys,
        )
    if cross_modal.loss == "siglip":
        return SigLIPLoss(
            temperature=cross_modal.temperature,
            bias=cross_modal.logit_bias if cross_modal.logit_bias is not None else SIGLIP_INITIAL_BIAS,
            positives=cross_modal.positives, embedding_keys=keys,
        )
    if cross_modal.loss == "cca":
        return CCALoss(
            num_components=cross_modal.cca_components,
            regularization=cross_modal.cca_regularization, embedding_keys=keys,
        )
    if cross_modal.loss == "kernel_alignment":
        return PairKernelAlignmentLoss(
            embedding_keys=keys, kernel=cross_modal.kernel, gamma=cross_modal.kernel_gamma,
        )
    raise ConfigError(
        f"Unknown cross_modal.loss '{cross_modal.loss}'. Known: clip, siglip, cca, "
        "kernel_alignment."
    )
