"""Source-cue randomisation: the same anatomy under a random sector, text, gain, resolution and JPEG."""
import numpy as np

from fetal_detect.data.converters.base import Record
from fetal_detect.data.phantom import make_hc
from fetal_detect.data.source_aug import augmented_records, randomise_source


def test_randomised_copies_are_seeded_grey_frames_of_the_same_size_with_another_look():
    img = make_hc(0).image
    a, b = randomise_source(img, np.random.default_rng(1)), randomise_source(img, np.random.default_rng(1))
    c = randomise_source(img, np.random.default_rng(2))
    assert a.shape == img.shape and a.dtype == np.uint8 and (a == b).all()
    assert not (a == c).all() and not (a == img).all()
    assert ((img == 0) <= (a < 8)).mean() > 0.97  # black background stays black (no content invented)


def test_only_train_images_get_randomised_copies_with_their_label_and_patient():
    img = make_hc(1).image
    recs = [Record(f"r{i}", lambda: img, f"p{i}", label="trans-thalamic") for i in range(3)]
    extra = augmented_records(recs, ["train", "val", "train"], {"copies": 2, "seed": 0})
    assert [r.name for r in extra] == ["r0__src0", "r0__src1", "r2__src0", "r2__src1"]
    assert {r.patient_id for r in extra} == {"p0", "p2"} and {r.label for r in extra} == {"trans-thalamic"}
    assert extra[0].image().shape == img.shape and not (extra[0].image() == extra[1].image()).all()
