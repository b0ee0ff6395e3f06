"""A training job's features come from the backbone version it took, whatever is promoted meanwhile (model review):
each image ran through whatever version was served at that moment, and the features of a version promoted during
the job were cached under the job's version's key, reused by later jobs against it. Two versions of a tiny
embedding model whose features differ in sign; the second promoted after the first chunk of images."""

import asyncio
import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from serving.model_control import apply_policy_unlocked, load_model
from serving.model_versions import VersionPolicy, write_policy
from serving.training import features as features_module
from serving.training.dataset import LabelledImage
from serving.training.features import FeatureCache, embed_images
from tests.unit import tiny_models
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit


def _embedding_version(root: Path, repository: Path, version: str, scale: float) -> None:
    versioned_copy(repository / "tiny", root, version)
    digest = tiny_models._save(
        tiny_models.classifier_graph(scale=scale, output="embedding"), root / version / "model.onnx"
    )
    config = yaml.safe_load((root / version / "config.yaml").read_text())
    config["outputs"][0]["name"], config["weights"]["sha256"] = "embedding", digest
    (root / version / "config.yaml").write_text(yaml.safe_dump(config))


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(out, "JPEG")
    return out.getvalue()


def test_features_come_from_the_version_the_job_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features_module, "READ_CHUNK", 1)  # one image a chunk: the promotion lands between them
    service, settings = tiny_local_service(Path(tempfile.mkdtemp()))
    root = settings.trained_models / "emb"
    _embedding_version(root, settings.model_repository, "1", 0.5)  # positive features
    _embedding_version(root, settings.model_repository, "2", -3.0)  # negative
    write_policy(root, VersionPolicy(policy="specific", versions=["1"]))
    photos = {f"{i}.jpg": _jpeg((200, 30 + 40 * i, 90)) for i in range(3)}
    images = [LabelledImage(name, "x", name) for name in photos]

    async def scenario() -> FeatureCache:
        await load_model(service, "emb")
        backbone = service.served_entry("emb")  # the job takes version 1
        cache = FeatureCache(settings.cache_dir, backbone)

        async def promote_version_2_once(done: int) -> None:
            if done == 1:
                async with service.model_lock:
                    await apply_policy_unlocked(service, "emb", root, VersionPolicy(policy="specific", versions=["2"]))

        read = lambda chunk: [photos[image.name] for image in chunk]  # noqa: E731
        result = await embed_images(service, backbone, images, cache, read, progress=promote_version_2_once)
        assert not result.errors and service.served_entry("emb").version == "2"
        return cache

    cache = asyncio.run(scenario())
    stored = [cache.get(hashlib.sha256(data).hexdigest()) for data in photos.values()]
    assert all(feature is not None and float(np.sum(feature)) > 0 for feature in stored), stored  # v2's after before
