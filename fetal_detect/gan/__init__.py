"""A small class-conditional GAN that adds training images for rare anomaly classes (docs/gan.md).

``labels`` (file-name subtype parser), ``model`` (generator, projection discriminator),
``diffaug`` (DiffAugment), ``train`` (loop, checkpoints, resume), ``sample`` (images + YOLO labels,
registry hook), ``quality`` (KID, memorisation), ``ablation`` (with vs without synthetic images).
"""
