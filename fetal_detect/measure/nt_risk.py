"""NT risk note: the 3.5 mm flag and, with a CRL, the centile against the Snijders 1998 normal range."""
from __future__ import annotations

import math

from fetal_detect.errors import FetalDetectError

RISK_THRESHOLD_MM = 3.5  # NT >= 3.5 mm (about the 99th centile at 11-13+6 weeks): referral regardless of CRL

# Snijders RJM, Noble P, Sebire N, Souka A, Nicolaides KH. UK multicentre project on assessment of
# risk of trisomy 21 by maternal age and fetal nuchal-translucency thickness at 10-14 weeks of
# gestation. Lancet 1998;352:343-346: in 95,476 normal pregnancies the median and 95th centile of NT
# were 1.2 and 2.1 mm at CRL 38 mm and 1.9 and 2.7 mm at CRL 84 mm. We interpolate both linearly in
# CRL and assume NT is log-normal at each CRL (sigma from the median-to-95th ratio): an
# approximation of the published normal range, reliable near the median and the 95th centile and
# increasingly rough in the far tails (the 99th centile is ~3.5 mm at every CRL, hence the flag).
SNIJDERS_1998 = {"crl_mm": (38.0, 84.0), "median_mm": (1.2, 1.9), "p95_mm": (2.1, 2.7)}
NT_REFERENCE = "Snijders et al., Lancet 1998;352:343-6 (median and 95th centile vs CRL, log-normal interpolation)"


def nt_reference(crl_mm: float) -> tuple[float, float]:
    """(median_mm, 95th centile mm) of NT in normal pregnancies at ``crl_mm`` (38-84 mm)."""
    (c0, c1), (m0, m1), (p0, p1) = SNIJDERS_1998["crl_mm"], SNIJDERS_1998["median_mm"], SNIJDERS_1998["p95_mm"]
    f = (crl_mm - c0) / (c1 - c0)
    return m0 + f * (m1 - m0), p0 + f * (p1 - p0)


def nt_centile(nt_mm: float, crl_mm: float) -> dict:
    """Centile of ``nt_mm`` for ``crl_mm`` against :data:`SNIJDERS_1998`; raises outside 38-84 mm CRL."""
    lo, hi = SNIJDERS_1998["crl_mm"]
    if not (math.isfinite(crl_mm) and lo <= crl_mm <= hi):
        raise FetalDetectError(f"--crl-mm {crl_mm:g} is outside the reference range {lo:g}-{hi:g} mm "
                               "(about 11 to 13+6 weeks)")
    med, p95 = nt_reference(crl_mm)
    sigma = math.log(p95 / med) / 1.6448536
    z = (math.log(nt_mm) - math.log(med)) / sigma if nt_mm > 0 else -math.inf
    centile = 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))
    return {"crl_mm": crl_mm, "nt_median_mm": round(med, 2), "nt_p95_mm": round(p95, 2),
            "nt_centile": round(centile, 1), "above_p95": nt_mm > p95, "reference": NT_REFERENCE}


def risk_note(nt_mm: float | None, crl_mm: float | None = None) -> dict:
    """``nt_ge_3_5mm`` flag and, with a CRL, the centile; never a number without a pixel size."""
    if nt_mm is None:
        return {"flag": None, "note": "NT in mm unknown (no pixel size): no risk statement"}
    out = {"flag": bool(nt_mm >= RISK_THRESHOLD_MM), "threshold_mm": RISK_THRESHOLD_MM,
           "note": (f"NT >= {RISK_THRESHOLD_MM} mm: increased NT, offer further assessment" if nt_mm >= RISK_THRESHOLD_MM
                    else f"NT below {RISK_THRESHOLD_MM} mm")}
    if crl_mm is not None:
        out.update(nt_centile(nt_mm, crl_mm))
    out["disclaimer"] = "screening aid only; the risk itself needs maternal age and serum markers (FMF algorithm)"
    return out
