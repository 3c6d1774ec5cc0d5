"""Offline guarantees: Ultralytics is configured never to download, and tests cannot reach the network."""
import os
import socket
from pathlib import Path

import pytest

from fetal_detect import settings


def test_ultralytics_is_configured_offline_inside_the_project():
    assert os.environ["YOLO_OFFLINE"] == "1"
    cfg = Path(os.environ["YOLO_CONFIG_DIR"])
    assert (cfg / "Arial.ttf").stat().st_size > 10_000  # no font download when plotting
    assert Path.home() not in cfg.parents or settings.RUNS_DIR in cfg.parents


def test_sockets_to_the_internet_are_blocked_during_tests():
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("github.com", 443)


def test_ultralytics_online_settings_are_off_after_import():
    settings.configure_ultralytics_offline()
    from ultralytics.utils import SETTINGS

    settings.disable_ultralytics_network()
    assert SETTINGS.get("sync") is False and SETTINGS.get("hub", False) is False
