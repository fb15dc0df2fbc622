"""The batch order is a pure function of (seed, epoch, rank): what exact resume relies on."""

from __future__ import annotations

import torch
from lorabooth.trainer.data import BatchOrder, DreamBoothData, MicroBatches, load_image


def test_processes_split_each_epoch_without_overlap():
    orders = [BatchOrder(num_samples=8, batch_size=2, num_processes=2, rank=r, seed=3) for r in range(2)]
    assert orders[0].batches_per_epoch == 2
    seen = [i for o in orders for batch in o.epoch_batches(epoch=1) for i in batch]
    assert sorted(seen) == list(range(8))  # every sample once per epoch, split between processes
    assert orders[0].permutation(0).tolist() != orders[0].permutation(1).tolist()  # reshuffled per epoch


def test_order_is_reproducible_and_skippable():
    a = BatchOrder(num_samples=5, batch_size=2, num_processes=1, rank=0, seed=11)
    b = BatchOrder(num_samples=5, batch_size=2, num_processes=1, rank=0, seed=11)
    full = list(a.epoch_batches(epoch=4))
    assert full == list(b.epoch_batches(epoch=4))
    assert list(a.epoch_batches(epoch=4, start=1)) == full[1:]
    assert all(len(batch) == 2 for batch in full)  # the last batch wraps around to stay full
    assert BatchOrder(5, 2, 1, 0, seed=12).permutation(4).tolist() != a.permutation(4).tolist()


def test_micro_batches_pair_instances_with_class_images(instance_dir, tmp_path):
    from lorabooth.trainer.testing import write_instance_images

    class_dir = write_instance_images(tmp_path / "class", count=5, size=36, seed=1)
    instances = sorted(instance_dir.glob("*.png"))
    data = DreamBoothData(instances, sorted(class_dir.glob("*.png")), resolution=32, center_crop=False, seed=0)
    assert len(data) == 5  # max(instances, class images), as in the diffusers example
    order = BatchOrder(len(data), batch_size=2, num_processes=1, rank=0, seed=0)
    stream = MicroBatches(data, order, with_prior=True, start=0, end=6)
    batch = stream[4]
    assert batch["pixel_values"].shape == (4, 3, 32, 32)  # 2 instance + 2 class images
    assert batch["is_prior"].tolist() == [False, False, True, True]
    resumed = MicroBatches(data, order, with_prior=True, start=3, end=6)
    assert torch.equal(resumed[1]["pixel_values"], batch["pixel_values"])  # same crops after a resume


def test_load_image_range_and_crops(tmp_path):
    from PIL import Image

    path = tmp_path / "wide.png"  # crops only move along the long side of a non-square image
    Image.fromarray(torch.randint(0, 255, (24, 64, 3), dtype=torch.uint8).numpy()).save(path)
    centre = load_image(path, 32, center_crop=True, crop_seed=0)
    assert centre.shape == (3, 32, 32) and centre.min() >= -1 and centre.max() <= 1
    crops = {load_image(path, 16, center_crop=False, crop_seed=s).sum().item() for s in range(6)}
    assert len(crops) > 1  # random crops differ with the seed...
    assert torch.equal(load_image(path, 16, center_crop=False, crop_seed=5),
                       load_image(path, 16, center_crop=False, crop_seed=5))  # ...and repeat with it
