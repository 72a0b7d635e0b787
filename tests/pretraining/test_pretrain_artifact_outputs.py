"""``read_outputs``: a pretrain manifest's ``encoders`` must name directories inside the artifact.

A manifest can come from a bucket, and whoever can write the bucket chooses its fields: an
encoder directory such as ``../elsewhere`` or ``/abs/path`` would make the evaluation, the
tagger and the server load a model from anywhere on the worker's disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nuner_core.dual_encoder.pretrain_artifact import read_outputs
from nuner_core.stage_api import StageError


def _artifact(root: Path, encoders: dict[str, str]) -> Path:
    art = root / "pretrain" / "k1"
    for where in (art / "text_encoder", root / "elsewhere" / "text_encoder"):
        where.mkdir(parents=True)
        (where / "config.json").write_text("{}")
    (art / "manifest.json").write_text(json.dumps({"key": "k1", "base_model": "pypi:x", "encoders": encoders}))
    return art


def test_encoders_inside_the_artifact_are_read(tmp_path):
    art = _artifact(tmp_path, {"nuner": "text_encoder"})
    assert read_outputs(art).text_encoders == {"nuner": art / "text_encoder"}


@pytest.mark.parametrize("rel", ["../../elsewhere/text_encoder", "{root}/elsewhere/text_encoder", "text_encoder/../../../elsewhere/text_encoder"])
def test_an_encoder_outside_the_artifact_is_refused(tmp_path, rel):
    art = _artifact(tmp_path, {"nuner": rel.format(root=tmp_path)})
    with pytest.raises(StageError, match=r"manifest.json: encoder 'nuner': .* is not a file name inside"):
        read_outputs(art)
