"""A small class-conditional GAN that adds training images for rare anomaly classes (docs/gan.md).

``labels`` (file-name subtype parser), ``model`` (generator, projection discriminator),
``diffaug`` (DiffAugment), ``train`` (loop, checkpoints, resume), ``sample`` (images + YOLO labels,
registry hook), ``quality`` (KID, memorisation), ``ablation`` (with vs without synthetic images).
"""
from fetal_detect.data.registry import register_record_hook


def _synthetic_records(options: dict, kind: str) -> list:
    from fetal_detect.gan.sample import synthetic_records  # torch only when a dataset asks for GAN images

    return synthetic_records(options, kind)


register_record_hook("synthetic", _synthetic_records)
