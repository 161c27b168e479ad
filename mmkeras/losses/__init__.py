"""Losses: cross-modal (contrastive CLIP, SigLIP; deep CCA, kernel alignment, moment matching)
and classification (label smoothing from integer labels)."""

from mmkeras.losses.cca_loss import CCALoss
from mmkeras.losses.cca_loss import canonical_correlations
from mmkeras.losses.clip_loss import CLIPLoss
from mmkeras.losses.contrastive_loss import ContrastiveLoss
from mmkeras.losses.distributed import cross_replica_concat
from mmkeras.losses.kernel_alignment_loss import KernelAlignmentLoss
from mmkeras.losses.kernel_alignment_loss import PairKernelAlignmentLoss
from mmkeras.losses.kernel_alignment_loss import kernel_alignment
from mmkeras.losses.label_smoothing_loss import SparseLabelSmoothingCrossentropy
from mmkeras.losses.siglip_loss import SigLIPLoss
from mmkeras.losses.moment_matching_loss import central_moment_discrepancy
from mmkeras.losses.moment_matching_loss import linear_mmd
from mmkeras.losses.moment_matching_loss import moment_matching_loss

PAIR_LOSSES = {
    "clip": CLIPLoss, "siglip": SigLIPLoss, "cca": CCALoss,
    "kernel_alignment": PairKernelAlignmentLoss,
}
