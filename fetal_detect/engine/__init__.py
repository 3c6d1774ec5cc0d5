"""Engines: training (Ultralytics and the GAN loop)."""
