"""Which GPU the training loop picks, checked on CPU with torch's own device-index rule (no GPU needed)."""

from __future__ import annotations

import torch
from torch.cuda._utils import _get_device_index

from nuner_core.pretraining import train as loop
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.pretraining.distributed import Dist


def test_one_gpu_process_keeps_the_bare_cuda_device_and_a_ddp_rank_sets_its_own(monkeypatch):
    calls = []
    # torch's set_device turns its argument into an index first: a bare "cuda" raises ValueError there
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(_get_device_index(device)))
    cfg = PretrainConfig(device="cuda")
    assert loop.pick_device(cfg, Dist()) == torch.device("cuda") and calls == []
    assert loop.pick_device(cfg, Dist(rank=1, world=2, local_rank=1)) == torch.device("cuda", 1) and calls == [1]
    assert loop.pick_device(PretrainConfig(device="cpu"), Dist(rank=1, world=2, local_rank=1)) == torch.device("cpu") and calls == [1]
