"""One entry point from the typed configs to an encoder of any modality."""

from mmkeras import features
from mmkeras.encoders.audio_cnn_encoder import audio_cnn_encoder
from mmkeras.encoders.image_application_encoder import image_application_encoder
from mmkeras.encoders.image_cnn_encoder import image_cnn_encoder
from mmkeras.encoders.image_resnet_encoder import image_resnet_encoder
from mmkeras.encoders.keras_hub_encoder import keras_hub_image_encoder
from mmkeras.encoders.keras_hub_encoder import keras_hub_text_encoder
from mmkeras.encoders.tabular_encoder import tabular_encoder
from mmkeras.encoders.text_encoder import text_encoder
from mmkeras.encoders.timeseries_encoder import timeseries_encoder
from mmkeras.encoders.video_encoder import video_encoder

MODALITIES = (
    features.IMAGE, features.AUDIO, features.TEXT, features.VIDEO, features.TABULAR,
    features.TIMESERIES,
)


def _hub_args(c):
    """The `keras_hub` fields of an encoder config, as keyword arguments of its builder."""
    return dict(
        pooling=c.pooling, embedding_dim=c.embedding_dim, trainable=c.trainable,
        trainable_blocks=c.trainable_blocks, lora_rank=c.lora_rank, dropout=c.dropout,
    )


def encoder_from_config(modality, model_config, data_config=None, return_sequence=False):
    """Builds the encoder of feature `modality` from `model_config.<type>_encoder` and the
    data shapes in `data_config` (defaults of `DataConfig` when None).

    The type is `features.modality_type(modality, data_config.modality_types)`: a feature
    named after its type (`image`) is that type; `title` declared `text` gets a text encoder
    with the settings of `model.text_encoder` and weights of its own. The encoder takes the
    input `modality` and is named `<modality>_encoder` (its layers are scoped inside it), so
    two encoders of one type never clash.
    """
    if data_config is None:
        from mmkeras.configs import DataConfig

        data_config = DataConfig()
    kind = features.modality_type(modality, getattr(data_config, "modality_types", None))
    seq = dict(return_sequence=return_sequence, input_name=modality, name=f"{modality}_encoder")
    if kind == features.IMAGE:
        c = model_config.image_encoder
        shape = tuple(data_config.image_shape)
        if c.type == "cnn":
            return image_cnn_encoder(shape, c.filters, c.embedding_dim, c.dropout, **seq)
        if c.type == "resnet":
            return image_resnet_encoder(
                shape, c.filters, c.blocks_per_stage, c.embedding_dim, c.dropout, **seq
            )
        if c.type == "application":
            return image_application_encoder(
                c.backbone, shape, weights=c.weights, trainable_backbone=c.trainable_backbone,
                embedding_dim=c.embedding_dim, dropout=c.dropout, **seq,
            )
        if c.type == "keras_hub":
            return keras_hub_image_encoder(c.preset, shape, **_hub_args(c), **seq)
        raise ValueError(
            f"Unknown image encoder type {c.type!r}: use cnn, resnet, application or keras_hub."
        )
    if kind == features.AUDIO:
        c = model_config.audio_encoder
        spec_augment = None
        if c.freq_masks or c.time_masks:
            spec_augment = dict(
                freq_masks=c.freq_masks, freq_mask_width=c.freq_mask_width,
                time_masks=c.time_masks, time_mask_width=c.time_mask_width,
            )
        return audio_cnn_encoder(
            num_samples=data_config.audio_samples, sample_rate=c.sample_rate,
            fft_length=c.fft_length, sequence_stride=c.sequence_stride,
            num_mel_bins=c.num_mel_bins, filters=c.filters, embedding_dim=c.embedding_dim,
            dropout=c.dropout, features_type=c.features, num_mfcc=c.num_mfcc,
            spec_augment=spec_augment, loudness=c.loudness, trim_silence=c.trim_silence,
            trim_window=c.trim_window, trim_threshold_db=c.trim_threshold_db,
            trim_length=c.trim_length,
            gain_db=(-c.augment_gain_db, c.augment_gain_db) if c.augment_gain_db else None,
            time_shift=int(round(c.augment_shift * c.sample_rate)),
            silence_padding=int(round(c.augment_silence * c.sample_rate)),
            speed=c.augment_speed, **seq,
        )
    if kind == features.TEXT:
        c = model_config.text_encoder
        if c.type == "keras_hub":
            return keras_hub_text_encoder(
                c.preset, data_config.text_sequence_length, **_hub_args(c), **seq
            )
        return text_encoder(
            data_config.text_max_tokens, data_config.text_sequence_length, c.type,
            token_dim=c.token_dim, units=c.units, num_layers=c.num_layers,
            num_heads=c.num_heads, embedding_dim=c.embedding_dim, dropout=c.dropout, **seq,
        )
    if kind == features.VIDEO:
        c = model_config.video_encoder
        shape = (data_config.video_frames, *data_config.video_shape)
        return video_encoder(shape, c.type, c.filters, c.units, c.embedding_dim, c.dropout, **seq)
    if kind == features.TABULAR:
        if return_sequence:
            raise ValueError("The tabular encoder has no token sequence.")
        c = model_config.tabular_encoder
        return tabular_encoder(
            len(data_config.tabular_numeric), len(data_config.tabular_categorical),
            data_config.tabular_categorical_bins, c.category_dim, c.units, c.embedding_dim,
            c.dropout, input_name=modality, name=f"{modality}_encoder",
        )
    if kind == features.TIMESERIES:
        c = model_config.timeseries_encoder
        shape = (data_config.timeseries_steps, data_config.timeseries_channels)
        return timeseries_encoder(
            shape, c.type, c.filters, c.units, c.embedding_dim, c.dropout, **seq
        )
    raise ValueError(f"No encoder for modality '{modality}'. Known: {', '.join(MODALITIES)}.")
