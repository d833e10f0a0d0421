"""Vision data: held-out validation, low-data and long-tailed subsets, the epoch-seeded sampler."""

import numpy as np
import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.vision.data import EpochSeededSampler, load_vision_data, long_tailed_subset


def test_validation_is_held_out_and_fixed_by_seed():
    a = load_vision_data("synthetic", synthetic_size=400, val_size=100, seed=0)
    b = load_vision_data("synthetic", synthetic_size=400, val_size=100, seed=0, per_class=5)
    assert a.val_x.shape[0] == 100 and a.train_x.shape[0] == 300
    assert torch.equal(a.val_x, b.val_x)  # the same validation images for every setting
    assert a.in_channels == 1 and a.n_classes == 10
    assert len(a.mean) == 1 and a.std[0] > 0


def test_per_class_subset():
    d = load_vision_data("synthetic", synthetic_size=400, val_size=50, per_class=7, seed=3)
    assert torch.bincount(d.train_y, minlength=10).tolist() == [7] * 10


def test_long_tailed_profile():
    y = np.repeat(np.arange(10), 100)
    keep = long_tailed_subset(y, 100.0, np.random.default_rng(0))
    counts = np.bincount(y[keep], minlength=10).tolist()
    assert counts[0] == 100 and counts[-1] == 1
    assert counts == sorted(counts, reverse=True)
    assert counts[5] == round(100 * 100 ** (-5 / 9))


def test_sampler_order_depends_on_seed_and_epoch_only():
    s = EpochSeededSampler(10, seed=1)
    s.set_epoch(2)
    first = list(s)
    s2 = EpochSeededSampler(10, seed=1)
    s2.set_epoch(2)
    assert first == list(s2) and sorted(first) == list(range(10))
    s2.set_epoch(3)
    assert list(s2) != first


def test_unknown_dataset_and_missing_folder():
    with pytest.raises(ConfigError, match="Valid names"):
        load_vision_data("imagenet")
    with pytest.raises(ConfigError, match="data.path"):
        load_vision_data("imagefolder")


def test_colour_transform_on_grey_images_fails_early(tmp_path):
    from selfsup.errors import InputError
    from selfsup.vision.train import train

    with pytest.raises(InputError, match="rotation"):
        train(None, ["data.name=synthetic", "data.synthetic_size=64", "sla.transform=color_perm",
                     "model.backbone=resnet8", f"run_root={tmp_path}", "trainer.progress=false"])


def test_resumable_loader_goes_on_with_the_next_batch():
    import torch
    from torch.utils.data import TensorDataset

    from selfsup.vision.data import ResumableLoader

    ds = TensorDataset(torch.arange(20))

    def loader():
        return ResumableLoader(ds, batch_size=4, sampler=EpochSeededSampler(20, seed=3),
                               drop_last=True)

    a = loader()
    a.sampler.set_epoch(1)
    whole = [b[0].tolist() for b in a]
    assert len(whole) == 5 and a.state_dict() == {"epoch": 1, "served": 5}
    it = iter(a)
    first_two = [next(it)[0].tolist() for _ in range(2)]
    state = a.state_dict()
    assert first_two == whole[:2] and state == {"epoch": 1, "served": 2}
    b = loader()
    b.load_state_dict(state)
    assert [x[0].tolist() for x in b] == whole[2:]
    assert b.state_dict() == {"epoch": 1, "served": 5}
    assert len([x for x in b]) == 5  # the skip applies to one pass only
    c = loader()
    c.load_state_dict({"epoch": 1, "served": 5})  # a finished epoch is not resumed into
    c.sampler.set_epoch(2)
    assert len(list(c)) == 5
