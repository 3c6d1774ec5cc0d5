"""The file-name subtype parser of brain_abnormal, on the real spellings (typos included)."""
import re

import pytest
import yaml

from fetal_detect import settings
from fetal_detect.data.splits import patient_of
from fetal_detect.gan.labels import source_id, subtype_of

NAMES = {
    "Patient00709_Plane3_1_of_3_png.rf.50723eb78ce5d18f8be593ff33f5692c.jpg": "normal",
    "vein-of-galen-40b2_png.rf.a7a1305e70256dcb108b6180f625d790.jpg": "vein-of-galen",
    "holoprosencephaly-17a_png.rf.192cddfe0b6470cdabc52dbe8e3a9239.jpg": "holoprosencephaly",
    "mild-ventriculomegaly-18b-1-_png.rf.0d60f104da7587d57c50e130ad1c9f89.jpg": "mild-ventriculomegaly",
    "mild-ventriculomegaly19b_png.rf.0d60f104da7587d57c50e130ad1c9f89.jpg": "mild-ventriculomegaly",
    "m-magna-29b_png.rf.cb59d9525b8108f60a99bd7026a7888d.jpg": "m-magna",
    "anold-chiari-maformation-26b_png.rf.9ea4853a8be1ac9906de289b0d410137.jpg": "anold-chiari-malformation",
    "hydracenphay_15j_png.rf.af04072946e21fc88dbf3bb46d7a6a5d.jpg": "hydracenphaly",
    "intracnanial-hemorrdge-22d_png.rf.77787732b2aff8a14736431a52680160.jpg": "intracranial-hemorrdge",
    "intracranial-tumor_32a_png.rf.2b27a6077827e5e448ea5660c6ece481.jpg": "intracranial-tumor",
    "cerebellah-hypoplasia_png.rf.2b27a6077827e5e448ea5660c6ece481.jpg": "cerebellah-hypoplasia",
    "arachnoid-cyst35a-image_png.rf.2b27a6077827e5e448ea5660c6ece481.jpg": "arachnoid-cyst",
    "encephalocele-4-32a_png.rf.2b27a6077827e5e448ea5660c6ece481.jpg": "encephalocele",
    "vein-of-galen_synthetic_0003.png": "vein-of-galen",
}


@pytest.mark.parametrize("name,subtype", NAMES.items())
def test_subtype_parser_handles_real_spellings(name, subtype):
    assert subtype_of(name) == subtype


def test_subtype_parser_rejects_names_without_subtype():
    with pytest.raises(ValueError):
        subtype_of("000_HC.png")


def test_roboflow_copies_share_one_source_and_registry_pattern_agrees():
    copies = ["cerebellah-hypoplasia_png.rf.%s.jpg" % h for h in ("aa11", "bb22", "cc33")]
    other = "cerebellah-hypoplasia_20c_png.rf.dd44.jpg"
    assert len({source_id(c) for c in copies}) == 1 and source_id(other) != source_id(copies[0])
    assert source_id("Patient00709_Plane3_1_of_3_png.rf.1.jpg") == source_id("Patient00709_Plane3_3_of_3_png.rf.2.jpg")
    entry = yaml.safe_load(settings.DATASETS_YAML.read_text())["brain_abnormal"]
    pattern = entry["split"]["patient_pattern"]
    patients = ["Patient00723_Plane3_2_of_4_png.rf.62ea.jpg", "Patient00723_Plane3_3_of_4_png.rf.c57c.jpg"]
    names = copies + [other] + patients + list(NAMES)[:-1]
    ours = {n: source_id(n) for n in names}
    theirs = {n: patient_of(n, pattern) for n in names}
    for a in names:  # the same partition into groups
        for b in names:
            assert (ours[a] == ours[b]) == (theirs[a].lower() == theirs[b].lower()), (a, b)
    assert re.compile(pattern)
