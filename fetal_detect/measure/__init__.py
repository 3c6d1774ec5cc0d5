"""Measurements from masks and boxes: geometry (ellipse fits), hc (HC/BPD/OFD, GA), nt (NT thickness)."""
