"""The experiment config of cross-modal training: the standard experiment + `cross_modal`.

`CrossModalExperimentConfig` extends `mmkeras.configs.ExperimentConfig` with one section, so
YAML files and `--set` overrides are checked as strictly as every other experiment's (an
unknown key is an error naming it), and the resolved config is written to the model directory.
"""

import dataclasses
import typing

from mmkeras.configs.experiment_config import ExperimentConfig
from mmkeras.configs.experiment_config import load_config


@dataclasses.dataclass
class CrossModalConfig:
    """How the two modalities are aligned and how the alignment is evaluated.

    Attributes:
        loss: `clip` (symmetric InfoNCE), `siglip` (pairwise sigmoid), `cca` (deep CCA) or
            `kernel_alignment` (1 - centred alignment of the two modalities' Gram matrices).
        kernel: the Gram matrices of `kernel_alignment`: `linear` or `rbf`.
        kernel_gamma: the RBF width (None: 1 / embedding_dim).
        scatter_alignment: weight of the subspace projection's scatter-alignment penalty on
            the dual encoder's embeddings (added to any pair loss; 0: off).
        positives: `pairs` (only the paired example is a positive: self-supervised) or
            `labels` (every same-class example is a positive: supervised contrastive).
        embedding_dim: size of the shared embedding.
        projection_units: hidden units of the MLP before each projection (empty: linear).
        projection_norm: `batch` (batch-normalise the projections: spreads the embeddings of
            ReLU encoders over the sphere; much faster contrastive training) or None.
        temperature: initial temperature (CLIP 0.07, SigLIP 0.1).
        learn_temperature: learn the temperature (`mmkeras.layers.LogitScale`).
        max_logit_scale: clip of the logit scale `1 / temperature`.
        logit_bias: initial learnable logit bias (SigLIP: -10; None: no bias).
        cca_regularization: covariance ridge of the CCA loss.
        cca_components: canonical correlations maximised by the CCA loss (None: all).
        eval_distinct_clips: evaluate retrieval on test pairs whose items are all distinct
            (the first pair of every distinct clip, image file or text: AV-MNIST reuses clips
            across pairs and a few OpenMoji annotations repeat; a repeated item would make its
            pairs' instance-level targets ambiguous).
        eval_cca_train_examples: training pairs embedded to fit the held-out linear CCA.
        eval_space: where test pairs are compared for retrieval and clustered: `embedding`
            (cosine of the model's embeddings, as the contrastive losses train them) or
            `canonical` (the canonical variates of a linear CCA fitted on training
            embeddings: whitened, each component scaled by its training correlation - the
            space deep CCA's objective defines). None: `canonical` for `loss: cca`,
            `embedding` otherwise.
        clustering_k: clusters of the k-means evaluation (None: the number of classes).
        reversal_scale: final lambda of the gradient reversal (task `invariance`).
        reversal_schedule: ramp lambda up with DANN's `2 / (1 + exp(-10 p)) - 1` over
            training progress `p` (else constant).
        discriminator_units: hidden units of the modality discriminator.
        code_dim: size of the shared code (task `shared_autoencoder`).
        modality_dropout: probability of hiding each modality from the shared autoencoder's
            encoder in training (one modality is always kept).
    """

    loss: str = "clip"
    kernel: str = "linear"
    kernel_gamma: typing.Optional[float] = None
    scatter_alignment: float = 0.0
    positives: str = "pairs"
    embedding_dim: int = 64
    projection_units: typing.List[int] = dataclasses.field(default_factory=list)
    projection_norm: typing.Optional[str] = "batch"
    temperature: float = 0.07
    learn_temperature: bool = True
    max_logit_scale: float = 100.0
    logit_bias: typing.Optional[float] = None
    cca_regularization: float = 1e-3
    cca_components: typing.Optional[int] = None
    eval_distinct_clips: bool = True
    eval_cca_train_examples: int = 2000
    eval_space: typing.Optional[str] = None
    clustering_k: typing.Optional[int] = None
    reversal_scale: float = 1.0
    reversal_schedule: bool = True
    discriminator_units: typing.List[int] = dataclasses.field(default_factory=lambda: [64])
    code_dim: int = 32
    modality_dropout: float = 0.5

    # Adversarial modality invariance (task `invariance`; see `reversal_scale` above):
    # adversary: `reversal` (DANN: the encoders get the discriminator's gradient reversed)
    #     or `confusion` (Tzeng et al. 2015: the encoders push the discriminator's prediction
    #     towards uniform) or `inverted` (towards the other modality: the non-saturating
    #     inverted-label loss); the discriminator itself always learns the true modalities.
    # probe_mlp_epochs: epochs of the post-hoc MLP modality probe (0: linear probe only).
    adversary: str = "reversal"
    probe_mlp_epochs: int = 30
    # discriminator_steps: discriminator updates per encoder/task update (on the batch's
    #     detached embeddings), with its own Adam at discriminator_learning_rate (None: the
    #     trainer's learning rate).
    # adversary_warmup_epochs: epochs with lambda = 0 before DANN's ramp starts (the task
    #     shapes the embedding first; the discriminator still learns).
    # embedding_norm: `layer` (per-modality LayerNorm), `shared_layer`, `l2` or `none`;
    #     shared_projection: one projection Dense for every encoder (see
    #     `build_modality_invariant_classifier`).
    # moment_matching: None, `cmd`, `linear_mmd` or `paired` (each image's embedding to its
    #     own audio's): a NON-adversarial alignment term on the embeddings
    #     (`mmkeras.losses.moment_matching_loss`), weight moment_weight (ramped like lambda),
    #     cmd_moments orders.
    discriminator_steps: int = 1
    discriminator_learning_rate: typing.Optional[float] = None
    adversary_warmup_epochs: float = 0.0
    embedding_norm: str = "layer"
    shared_projection: bool = False
    moment_matching: typing.Optional[str] = None
    moment_weight: float = 0.0
    cmd_moments: int = 5
    # discriminator_gradient_penalty: gamma of an R1-style penalty gamma/2 * E||grad_z
    #     logits||^2 on the discriminator (task invariance): keeps it smooth, so that its
    #     adversarial gradient stays bounded and informative instead of swamping the task.
    discriminator_gradient_penalty: float = 0.0

    # Shared-representation autoencoder (task `shared_autoencoder`; see `code_dim` and
    # `modality_dropout` above):
    # autoencoder_subsets: train on every non-empty subset of modalities every step (both,
    #     image only, audio only), each subset's code reconstructing EVERY modality
    #     (`subset_training_model`); False: the earlier training of the model itself with
    #     random `modality_dropout`.
    # autoencoder_alignment: None, `l2` or `infonce`: a label-free term pulling the
    #     single-modality codes of a pair together (`code_alignment_loss`; subset training
    #     only), weight autoencoder_alignment_weight, InfoNCE temperature
    #     autoencoder_alignment_temperature.
    # autoencoder_cross_weight: weight of the reconstruction of a modality from a subset that
    #     does not contain it (cross-modal), relative to 1 for the others.
    # autoencoder_normalize_losses: divide each modality's reconstruction losses by the
    #     variance of its training targets (the MSE of predicting their mean), estimated on
    #     the first autoencoder_normalize_batches training batches, so that each modality
    #     counts alike (AV-MNIST: image pixels 0.014, log-mel 0.24; False: raw MSEs).
    autoencoder_subsets: bool = True
    autoencoder_alignment: typing.Optional[str] = "l2"
    autoencoder_alignment_weight: float = 1.0
    autoencoder_alignment_temperature: float = 0.1
    autoencoder_cross_weight: float = 1.0
    autoencoder_normalize_losses: bool = True
    autoencoder_normalize_batches: int = 20


@dataclasses.dataclass
class CrossModalExperimentConfig(ExperimentConfig):
    """An `ExperimentConfig` with a `cross_modal` section."""

    name: str = "avmnist_dual_encoder"
    task: str = "retrieval"
    cross_modal: CrossModalConfig = dataclasses.field(default_factory=CrossModalConfig)


def load_cross_modal_config(path=None, overrides=()):
    """Defaults <- YAML file <- `key=value` overrides, checked strictly."""
    return load_config(path, overrides, base=CrossModalExperimentConfig())
