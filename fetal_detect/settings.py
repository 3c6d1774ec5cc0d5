"""Paths and the offline Ultralytics set-up, done once when the package is imported.

Everything the toolkit writes lives under the project home (the repo root in a checkout, else the
current folder, or ``$FETAL_DETECT_HOME``): ``runs/`` for outputs, ``runs/datasets`` for converted
datasets (moved with ``$FETAL_DETECT_CACHE``), ``runs/.ultralytics`` for Ultralytics' settings.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _find_home() -> Path:
    env = os.environ.get("FETAL_DETECT_HOME")
    if env:
        return Path(env).resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "datasets.yaml").exists() and (checkout / "pyproject.toml").exists():
        return checkout
    return Path.cwd().resolve()


HOME = _find_home()
RUNS_DIR = Path(os.environ.get("FETAL_DETECT_RUNS", HOME / "runs"))
CACHE_DIR = Path(os.environ.get("FETAL_DETECT_CACHE", RUNS_DIR / "datasets"))
WEIGHTS_DIR = Path(os.environ.get("FETAL_DETECT_WEIGHTS", HOME / "weights"))
DATASETS_YAML = Path(os.environ.get("FETAL_DETECT_DATASETS", HOME / "datasets.yaml"))
if not DATASETS_YAML.exists():  # an installed package still finds its bundled registry
    DATASETS_YAML = PACKAGE_DIR / "cfg" / "datasets.yaml"
SHARED_DATA = Path(os.environ.get("FETAL_DETECT_SHARED", HOME.parent / "shared" / "data"))
ULTRALYTICS_DIR = RUNS_DIR / ".ultralytics"


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named packages (absent ones left out), for sidecars and benchmarks."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in names:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def configure_ultralytics_offline() -> None:
    """Make Ultralytics work with no network: no weight, font or dataset downloads, no update checks.

    Must run before ``ultralytics`` is imported; importing :mod:`fetal_detect` does it.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_AUTOINSTALL"] = "False"  # never pip-install anything at run time (codecs, exporters)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ULTRALYTICS_DIR))
    os.environ.setdefault("YOLO_VERBOSE", os.environ.get("YOLO_VERBOSE", "True"))
    os.environ.setdefault("MPLCONFIGDIR", str(ULTRALYTICS_DIR / "matplotlib"))
    cfg = Path(os.environ["YOLO_CONFIG_DIR"])
    try:
        cfg.mkdir(parents=True, exist_ok=True)
        for font in ("Arial.ttf", "Arial.Unicode.ttf"):
            if not (cfg / font).exists():
                src = _dejavu_font()
                if src:
                    shutil.copyfile(src, cfg / font)
    except OSError:  # read-only home: Ultralytics falls back, offline flag still holds
        pass


def _dejavu_font() -> Path | None:
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return p if p.exists() else None
    except ImportError:
        return None


def disable_ultralytics_network() -> None:
    """Turn off Ultralytics' own online settings (sync, hub, update checks) and its auto-install after import."""
    import ultralytics.utils
    import ultralytics.utils.checks
    from ultralytics.utils import SETTINGS

    ultralytics.utils.AUTOINSTALL = ultralytics.utils.checks.AUTOINSTALL = False  # even if imported before us

    want = {"sync": False, "hub": False, "clearml": False, "comet": False, "dvc": False,
            "mlflow": False, "neptune": False, "raytune": False, "tensorboard": False, "wandb": False}
    todo = {k: v for k, v in want.items() if k in SETTINGS and SETTINGS.get(k) != v}
    if todo:
        SETTINGS.update(todo)


def import_ultralytics():
    """THE way to import Ultralytics here: offline set-up first, the package, then its network settings off.

    Returns the ``ultralytics`` module (``import_ultralytics().YOLO``); every caller goes through this.
    """
    configure_ultralytics_offline()
    import ultralytics

    disable_ultralytics_network()
    return ultralytics


def cuda_available() -> bool:
    """THE GPU probe: torch is installed and sees a CUDA device (False without torch, never an import error)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def torch_device() -> str:
    """Ultralytics' device string for the fastest local device: ``"0"`` (first GPU) or ``"cpu"``."""
    return "0" if cuda_available() else "cpu"


configure_ultralytics_offline()
