"""fetal-detect: find and measure fetal anatomy in 2-D ultrasound."""
from fetal_detect import settings as _settings  # noqa: F401  (offline Ultralytics set-up on import)
from fetal_detect.errors import FetalDetectError

__version__ = "0.1.0"
__all__ = ["FetalDetectError", "__version__"]
