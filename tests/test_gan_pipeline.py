"""GAN end to end on a tiny generated Roboflow-style export: train + resume, sample, augment, KID."""
import json

import cv2
import numpy as np
import pytest
import yaml

from fetal_detect import settings
from fetal_detect.data import registry

SUBTYPES = {"normal": 6, "vein-of-galen": 2, "mild-ventriculomegaly": 4}


def _export(root):
    """Roboflow YOLOv8 layout, 3 augmented copies per source image, subtype in the file name."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("names: ['abnormal', 'normal']\nnc: 2\n")
    for sub, n_src in SUBTYPES.items():
        for i in range(n_src):
            stem = f"Patient{i:05d}_Plane3_1_of_1" if sub == "normal" else f"{sub}-{10 + i}a"
            for j in range(3):
                split = "train"
                img = np.clip(rng.normal(60, 20, (48, 48)), 0, 255).astype(np.uint8)
                cv2.circle(img, (24, 24), 14 + 3 * (sub != "normal"), 200, 2)
                name = f"{stem}_png.rf.{i:02d}ab{j:02d}"
                (root / split / "images").mkdir(parents=True, exist_ok=True)
                (root / split / "labels").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / split / "images" / f"{name}.jpg"), img)
                (root / split / "labels" / f"{name}.txt").write_text(f"{int(sub == 'normal')} 0.5 0.5 0.7 0.7\n")


@pytest.fixture(scope="module")
def gan_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    _export(root / "export")
    split = {"patient_pattern": r"^(Patient\d+|[^.]+?(?=(?:_png|_jpe?g)?\.rf\.))", "val": 0.25, "test": 0.25, "seed": 0}
    entry = {"source": {"path": str(root / "export")}, "layout": "roboflow-yolov8", "names": ["abnormal", "normal"],
             "split": split}
    reg = {"fx": entry, "fx_aug": {**entry, "synthetic": {"generator": str(root / "gen.pt"), "per_class": 3,
                                                          "classes": ["vein-of-galen"]}}}
    (root / "datasets.yaml").write_text(yaml.safe_dump(reg))
    mp = pytest.MonkeyPatch()
    mp.setattr(settings, "DATASETS_YAML", root / "datasets.yaml")
    from fetal_detect.gan.train import train

    res = train(data="fx", epochs=1, imgsz=32, batch=4, name="t", save_every=1, sample_every=2)
    (root / "gen.pt").write_bytes(res.weights.read_bytes())
    yield root, res
    mp.undo()


def test_train_writes_checkpoint_samples_and_resumes(gan_env):
    from fetal_detect.gan.train import train

    _, res = gan_env
    assert res.task == "gan" and res.weights.exists() and res.metrics["iterations"] >= 1
    assert list((res.run_dir / "samples").glob("iter_*.png"))
    assert json.loads((res.weights.parent / "best.json").read_text())["names"] == sorted(SUBTYPES)
    first = res.metrics["iterations"]
    again = train(data="fx", epochs=2, imgsz=32, batch=4, name="t")  # resumes from last.pt
    import torch

    assert torch.load(res.run_dir / "weights" / "last.pt", weights_only=False)["iteration"] == 2 * first
    assert again.metrics["iterations"] == 2 * first


def test_sample_writes_images_and_yolo_labels(gan_env, tmp_path):
    from fetal_detect.cli import main

    root, _ = gan_env
    assert main(["gan", "sample", "--weights", str(root / "gen.pt"), "--class", "vein-of-galen", "--n", "3",
                 "--out", str(tmp_path)]) == 0
    imgs = sorted((tmp_path / "images").glob("*.png"))
    assert len(imgs) == 3 and cv2.imread(str(imgs[0]), cv2.IMREAD_GRAYSCALE).shape == (32, 32)
    cls, *box = (tmp_path / "labels" / f"{imgs[0].stem}.txt").read_text().split()
    assert cls == "0" and np.allclose([float(v) for v in box], [0.5, 0.5, 0.7, 0.7], atol=1e-3)  # abnormal, mean box
    assert (tmp_path / "classes.txt").read_text().split() == ["abnormal", "normal"]
    assert main(["gan", "sample", "--weights", str(root / "gen.pt"), "--class", "nope", "--n", "1",
                 "--out", str(tmp_path)]) == 2


def test_augmentation_adds_synthetic_to_train_only(gan_env):
    base = registry.prepare("fx", "detect")
    aug = registry.prepare("fx_aug", "detect")
    syn = [f for f in aug.manifest["files"] if f.get("synthetic")]
    assert len(syn) == 3 and {f["split"] for f in syn} == {"train"}
    assert aug.manifest["counts"]["train"]["synthetic"] == 3
    assert all(aug.manifest["counts"][s]["synthetic"] == 0 for s in ("val", "test") if s in aug.manifest["counts"])
    real = lambda m: sorted((f["name"], f["split"]) for f in m["files"] if not f.get("synthetic"))  # noqa: E731
    assert real(aug.manifest) == real(base.manifest)  # same real images, same split
    for s in ("val", "test"):
        assert not [p for p in (aug.root / "images" / s).glob("*") if "synthetic" in p.name]
    assert (aug.root / "labels" / "train" / f"{syn[0]['name'].rsplit('.', 1)[0]}.txt").read_text().startswith("0 ")


def test_kid_is_near_zero_on_identical_sets_and_positive_on_different():
    from fetal_detect.gan.quality import kid, nearest

    rng = np.random.default_rng(0)
    a = rng.normal(size=(256, 16))
    shifted = kid(a, rng.normal(0.5, 1, size=(256, 16)))
    assert abs(kid(a, a.copy())) < 0.1 * shifted  # unbiased estimator: ~0, off by O(1/m), not exactly 0
    assert abs(kid(a, rng.normal(size=(256, 16)))) < 0.1 * shifted
    assert kid(a[:1], a) is None
    imgs = rng.integers(0, 255, (5, 32, 32), dtype=np.uint8)
    idx, dist = nearest(imgs, imgs[::-1])
    assert (idx == [4, 3, 2, 1, 0]).all() and np.allclose(dist, 0, atol=1e-2)


def test_plane_classifier_features_are_one_256_vector_per_gray_image():
    from fetal_detect.gan.quality import plane_features

    imgs = np.random.default_rng(0).integers(0, 255, (6, 40, 40), dtype=np.uint8)
    feats = plane_features(None, px=64)(imgs)  # random backbone here; the shipped plane-cls.pt in `gan quality`
    assert feats.shape == (6, 256) and np.isfinite(feats).all()


def test_projected_discriminator_trains_its_heads_and_keeps_its_features_frozen():
    import torch

    from fetal_detect.gan.model import ProjectedDiscriminator

    d = ProjectedDiscriminator(n_classes=3, features=None).train()
    assert not d.backbone.training  # frozen BatchNorm statistics even in train mode
    frozen = {k: v.clone() for k, v in d.backbone.state_dict().items()}
    heads = [q.clone() for q in d.heads.parameters()]
    opt = torch.optim.Adam([q for q in d.parameters() if q.requires_grad], lr=1e-2)
    x = torch.rand(4, 1, 64, 64, requires_grad=True) * 2 - 1
    out = d(x, torch.tensor([0, 1, 2, 0]))
    assert out.shape == (4,)
    out.mean().backward()
    opt.step()
    assert all(torch.equal(frozen[k], v) for k, v in d.backbone.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(heads, d.heads.parameters()))


def test_mode_seeking_term_rewards_different_images_for_different_noise():
    import torch

    from fetal_detect.gan.train import mode_seeking

    z1, z2 = torch.zeros(2, 8), torch.ones(2, 8)
    same = mode_seeking(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), z1, z2)
    apart = mode_seeking(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4), z1, z2)
    assert apart < 2 < same


def test_checkpoint_of_the_first_dcgan_design_resumes_with_its_own_architecture(gan_env, monkeypatch):
    import torch

    from fetal_detect.gan import train as gtrain

    monkeypatch.setattr(settings, "DATASETS_YAML", gan_env[0] / "datasets.yaml")
    monkeypatch.setattr(gtrain, "DEFAULTS", {**gtrain.DEFAULTS, "base": 8, "cap": 128, **gtrain.LEGACY})
    res = gtrain.train(data="fx", epochs=1, imgsz=32, batch=4, name="legacy")
    last = res.run_dir / "weights" / "last.pt"
    ck = torch.load(last, weights_only=False)
    for key in ("d_arch", "ms_weight", "features"):  # written before these existed
        ck["cfg"].pop(key)
    torch.save(ck, last)
    monkeypatch.undo()
    monkeypatch.setattr(settings, "DATASETS_YAML", gan_env[0] / "datasets.yaml")
    again = gtrain.train(data="fx", epochs=2, imgsz=32, batch=4, name="legacy")
    assert again.metrics["iterations"] == 2 * res.metrics["iterations"]
    assert gtrain.load_generator(again.weights)[1]["cfg"]["d_arch"] == "dcgan"


def test_gan_train_command_takes_the_projected_feature_network_and_refuses_a_missing_one(gan_env, monkeypatch, capsys):
    from fetal_detect.cli import main

    monkeypatch.setattr(settings, "DATASETS_YAML", gan_env[0] / "datasets.yaml")
    assert main(["gan", "train", "--data", "fx", "--epochs", "1", "--imgsz", "32", "--batch", "4",
                 "--name", "cli", "--d-arch", "projected", "--features", "random", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["iterations"] >= 1
    assert main(["gan", "train", "--data", "fx", "--epochs", "1", "--imgsz", "32", "--batch", "4",
                 "--name", "cli-missing", "--d-arch", "projected", "--features", str(gan_env[0] / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_recon_discriminator_rebuilds_real_images_from_its_8px_features():
    import torch

    from fetal_detect.gan.model import ReconDiscriminator

    d = ReconDiscriminator(n_classes=3, imgsz=32, base=8, cap=32)
    logits, rec = d(torch.rand(2, 1, 32, 32) * 2 - 1, torch.tensor([0, 2]), recon=True)
    assert logits.shape == (2,) and rec.shape == (2, 1, d.RECON_PX, d.RECON_PX)
    torch.manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(4, 1, 4, 4) * 2 - 1, size=32, mode="bilinear")  # smooth
    target = torch.nn.functional.interpolate(x, size=d.RECON_PX)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    errors = []
    for _ in range(15):
        err = torch.nn.functional.mse_loss(d(x, torch.tensor([0, 1, 2, 0]), recon=True)[1], target)
        opt.zero_grad(), err.backward(), opt.step()
        errors.append(err.item())
    assert errors[-1] < 0.5 * errors[0], errors


def test_quality_refuses_a_generator_other_than_the_one_that_made_the_synthetic_images(gan_env, monkeypatch):
    from fetal_detect.errors import FetalDetectError
    from fetal_detect.gan.ablation import run

    root, res = gan_env
    monkeypatch.setattr(settings, "DATASETS_YAML", root / "datasets.yaml")
    with pytest.raises(FetalDetectError, match="synthetic.generator"):
        run("fx", "fx_aug", weights=res.weights, out=root / "q")


def test_gan_kid_compares_generators_on_the_same_real_images(gan_env, monkeypatch, capsys, tmp_path):
    from fetal_detect.cli import main

    root, _ = gan_env
    monkeypatch.setattr(settings, "DATASETS_YAML", root / "datasets.yaml")
    out = tmp_path / "kid.json"
    assert main(["gan", "kid", "--data", "fx", "--weights", str(root / "gen.pt"), "--features", "random",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())["generators"][str(root / "gen.pt")]
    assert r["overall"]["kid_gen_vs_train"] is not None and set(r["per_class"]) == set(SUBTYPES)
    assert main(["gan", "kid", "--data", "fx", "--weights", str(root / "gen.pt"), "--features", str(tmp_path / "no.pt")]) == 2
