"""Train quality_net on CPU, export it to ONNX and record the sha256 in its config.yaml.

    python -m tooling.quality_net.train --out models/quality_net

Run from the repository root (`models` is a package so that `pipelines` and `serving` import as in the
server). Seeded end to end: the same machine type and thread count give the same weights.
"""

import argparse
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.preprocess import PreprocessSpec, normalize
from serving.config.model_config import ModelConfig, load_model_config
from tooling.quality_net.card import write_card_section
from tooling.quality_net.dataset import (
    CACHE_SIZE,
    GROUP_NAMES,
    MODEL_DIR,
    PhotoJob,
    label_table,
    render_all,
    targets,
    training_spec,
    training_split,
    training_variants,
)

torch.set_num_threads(2)


def _conv(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    padding = 0 if kernel == stride else kernel // 2
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _spatial_std(t: torch.Tensor) -> torch.Tensor:
    # Two-pass (centre first): E[x^2] - E[x]^2 cancels catastrophically in float32 and then torch and onnxruntime,
    # which sum in different orders, disagree by more than 1e-4.
    centred = t - t.mean(dim=(2, 3), keepdim=True)
    return torch.sqrt((centred * centred).mean(dim=(2, 3)) + 1e-6)


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """Fixed whole-image statistics of the normalised RGB input (-1..1), IMAGE_STATISTICS per image: mean and spread
    of R, G, B, luma and two opponent-colour axes; mean chroma; the shares of near-black and near-white pixels; the
    mean luma gradient in four directions, their min/max ratio (directional blur) and the mean gradient at half
    resolution. Tone, colour and sharpness at a glance, independent of the image size."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    red_green, yellow_blue = r - g, 0.5 * (r + g) - b
    channels = torch.cat([r, g, b, luma, red_green, yellow_blue], dim=1)
    chroma = torch.sqrt(red_green * red_green + yellow_blue * yellow_blue + 1e-6).mean(dim=(2, 3))
    dark = torch.sigmoid((luma + 0.85) * -20.0).mean(dim=(2, 3))
    bright = torch.sigmoid((luma - 0.85) * 20.0).mean(dim=(2, 3))
    directions = torch.cat(
        [
            (luma[:, :, :, 1:] - luma[:, :, :, :-1]).abs().mean(dim=(2, 3)),
            (luma[:, :, 1:, :] - luma[:, :, :-1, :]).abs().mean(dim=(2, 3)),
            (luma[:, :, 1:, 1:] - luma[:, :, :-1, :-1]).abs().mean(dim=(2, 3)),
            (luma[:, :, 1:, :-1] - luma[:, :, :-1, 1:]).abs().mean(dim=(2, 3)),
        ],
        dim=1,
    )
    anisotropy = directions.amin(dim=1, keepdim=True) / (directions.amax(dim=1, keepdim=True) + 1e-4)
    half = F.avg_pool2d(luma, 2)
    coarse = (half[:, :, 1:, :] - half[:, :, :-1, :]).abs().mean(dim=(2, 3)) + (
        half[:, :, :, 1:] - half[:, :, :, :-1]
    ).abs().mean(dim=(2, 3))
    return torch.cat(
        [channels.mean(dim=(2, 3)), _spatial_std(channels), chroma, dark, bright, directions, anisotropy, coarse], dim=1
    )


IMAGE_STATISTICS = 21


class QualityNet(nn.Module):
    """Texture evidence from a small CNN, tone and colour from fixed image statistics, one shared head.

    A 4x4/4 patch stem keeps every pixel's detail (noise, blocks, blur) in its first features at a quarter of the
    cost of a full-resolution layer; four 3x3 stages reach 1/32 resolution. Spatial mean and standard deviation of
    the last features (both independent of the image size, so small training windows transfer to the served size)
    and the batch-normalised `image_statistics` feed a two-layer head: one logit per group plus one for the score.
    """

    def __init__(self, groups: int = len(GROUP_NAMES)):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, 32, 4, 4),  # 1/4
            *_conv(32, 32, 3, 1),
            *_conv(32, 64, 3, 2),  # 1/8
            *_conv(64, 96, 3, 2),  # 1/16
            *_conv(96, 128, 3, 2),  # 1/32
        )
        self.statistics = nn.BatchNorm1d(IMAGE_STATISTICS)
        self.head = nn.Sequential(
            nn.Linear(256 + IMAGE_STATISTICS, 128), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(128, groups + 1)
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        stats = self.statistics(image_statistics(x))
        return self.head(torch.cat([f.mean(dim=(2, 3)), _spatial_std(f), stats], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.logits(x)
        return torch.sigmoid(z[:, :-1]), torch.sigmoid(z[:, -1:])


@dataclass
class SampleCache:
    """Rendered CACHE_SIZE^2 uint8 pixels (unique per photo and variant) and, per sample, its row and targets."""

    pixels: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def build_cache(photos: list[Path], spec: PreprocessSpec, seed: int, tag: int, levels: int, clean: int) -> SampleCache:
    """Render every photo's variants once (2 worker processes); `tag` separates the seeds of train and validation."""
    plan_rng = np.random.default_rng([seed, tag])
    jobs = [
        PhotoJob(path, (seed, tag, i), training_spec(spec), tuple(training_variants(plan_rng, levels, clean)))
        for i, path in enumerate(photos)
    ]
    uniques = [list(dict.fromkeys(job.variants)) for job in jobs]
    side = training_spec(spec).output_size
    pixels = np.empty((sum(map(len, uniques)), *side, 3), np.uint8)  # preallocated: no 2x peak from concatenate
    rows, labels, masks, scores = [], [], [], []
    start, base = time.perf_counter(), 0
    for i, (job, unique, rendered) in enumerate(zip(jobs, uniques, render_all(jobs, workers=2), strict=True)):
        pixels[base : base + len(unique)] = rendered
        for variant in job.variants:
            label, mask, score = targets(variant.kind, variant.level)
            rows.append(base + unique.index(variant))
            labels.append(label)
            masks.append(mask)
            scores.append(score)
        base += len(unique)
        if (i + 1) % 50 == 0 or i + 1 == len(jobs):
            print(f"  rendered {i + 1}/{len(jobs)} photos ({time.perf_counter() - start:.0f} s)", flush=True)
    return SampleCache(pixels, np.array(rows), np.stack(labels), np.stack(masks), np.array(scores, np.float32))


def batch_tensor(
    cache: SampleCache, ids: np.ndarray, spec: PreprocessSpec, rng: np.random.Generator | None, size: int = 0
) -> torch.Tensor:
    """Crops (of the served size unless `size` is given), normalised by the served spec; the centre crop, or a
    random crop + flip when `rng` is given."""
    h, w = (size, size) if size else spec.output_size
    crops = []
    for row in cache.rows[ids]:
        if rng is None:
            top, left = (CACHE_SIZE - h) // 2, (CACHE_SIZE - w) // 2
        else:
            top, left = rng.integers(0, CACHE_SIZE - h + 1), rng.integers(0, CACHE_SIZE - w + 1)
        crop = cache.pixels[row, top : top + h, left : left + w]
        crops.append(crop[:, ::-1] if rng is not None and rng.random() < 0.5 else crop)
    return torch.from_numpy(normalize(np.stack(crops), spec))


def loss_terms(
    z: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    scores: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked multi-label BCE over the groups plus BCE of the score logit against its soft target."""
    groups = F.binary_cross_entropy_with_logits(z[:, :-1], labels, reduction="none", pos_weight=pos_weight)
    group_loss = (groups * masks).sum() / masks.sum().clamp(min=1.0)
    return group_loss + F.binary_cross_entropy_with_logits(z[:, -1], scores)


def _tensors(cache: SampleCache, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(cache.labels[ids]), torch.from_numpy(cache.masks[ids]), torch.from_numpy(cache.scores[ids])


def validate(model: QualityNet, cache: SampleCache, spec: PreprocessSpec) -> str:
    """Loss, macro F1 at 0.5 over counted labels, and mean |score error| on the validation photos."""
    model.eval()
    probs, losses = [], []
    with torch.no_grad():
        for start in range(0, len(cache), 128):
            ids = np.arange(start, min(start + 128, len(cache)))
            z = model.logits(batch_tensor(cache, ids, spec, None).contiguous(memory_format=torch.channels_last))
            labels, masks, scores = _tensors(cache, ids)
            losses.append(float(loss_terms(z, labels, masks, scores)) * len(ids))
            probs.append(torch.sigmoid(z).numpy())
    p = np.concatenate(probs)
    predicted, counted = p[:, :-1] >= 0.5, cache.masks > 0
    truth = cache.labels > 0.5
    f1s = []
    for g in range(len(GROUP_NAMES)):
        tp = np.sum(predicted[:, g] & truth[:, g] & counted[:, g])
        fp = np.sum(predicted[:, g] & ~truth[:, g] & counted[:, g])
        fn = np.sum(~predicted[:, g] & truth[:, g] & counted[:, g])
        f1s.append(2 * tp / max(1, 2 * tp + fp + fn))
    score_err = float(np.abs(p[:, -1] - cache.scores).mean())
    model.train()
    per_group = " ".join(f"{name}={f:.2f}" for name, f in zip(GROUP_NAMES, f1s, strict=True))
    return f"loss {sum(losses) / len(cache):.4f} macro-F1 {np.mean(f1s):.3f} |score err| {score_err:.3f} [{per_group}]"


def train(
    model: QualityNet, data: SampleCache, val: SampleCache, spec: PreprocessSpec, args: argparse.Namespace
) -> None:
    rng = np.random.default_rng([args.seed, 2])
    # Each group is positive in only 3-10% of the samples; weighting positives by sqrt(negatives / positives)
    # (at most 3) lifts recall at the 0.5 threshold without flattening precision.
    positives = (data.labels * data.masks).sum(axis=0)
    negatives = ((1.0 - data.labels) * data.masks).sum(axis=0)
    pos_weight = torch.from_numpy(np.clip(np.sqrt(negatives / np.maximum(positives, 1.0)), 1.0, 3.0).astype(np.float32))
    print(
        "positive weights: " + " ".join(f"{n}={w:.1f}" for n, w in zip(GROUP_NAMES, pos_weight.tolist(), strict=True))
    )
    steps_per_epoch = len(data) // args.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    # Every degradation covers the whole photo, so any window of it is a valid sample: the first epochs train on
    # small windows (about twice the samples per second), the last ones on the served size, which also settles the
    # max-pooling branch and BatchNorm statistics at that size.
    sizes = [args.crop] * (args.epochs - args.full_epochs) + [0] * args.full_epochs
    model.train()
    for epoch, size in enumerate(sizes):
        order = rng.permutation(len(data))
        start, running = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            ids = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = batch_tensor(data, ids, spec, rng, size).contiguous(memory_format=torch.channels_last)
            loss = loss_terms(model.logits(x), *_tensors(data, ids), pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            if (step + 1) % 25 == 0 or step + 1 == steps_per_epoch:
                rate = (step + 1) * args.batch_size / (time.perf_counter() - start)
                eta = (steps_per_epoch - step - 1) * args.batch_size / rate
                print(
                    f"  epoch {epoch + 1}/{args.epochs} ({size or spec.output_size[0]} px) step {step + 1}/"
                    f"{steps_per_epoch} loss {running:.4f} {rate:.0f} img/s, epoch ends in {eta:.0f} s",
                    flush=True,
                )
        if (epoch + 1) % 3 == 0 or epoch + 1 == len(sizes):
            print(f"epoch {epoch + 1} validation: {validate(model, val, spec)}", flush=True)


def export_onnx(model: QualityNet, path: Path, config: ModelConfig, probe: torch.Tensor) -> float:
    """Export with a dynamic batch axis 'N'; returns the largest |onnxruntime - torch| on `probe` (must be < 1e-4)."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    names = [o.name for o in config.outputs]
    torch.onnx.export(
        model,
        (probe[:2],),
        str(path),
        input_names=[config.input.name],
        output_names=names,
        dynamic_axes={config.input.name: {0: "N"}, **{n: {0: "N"} for n in names}},
        opset_version=17,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.numpy() for t in model(probe)]
    worst = 0.0
    for batch in (probe[:1], probe):
        got = session.run(names, {config.input.name: batch.numpy()})
        for want, have in zip(expected, got, strict=True):
            worst = max(worst, float(np.abs(want[: len(batch)] - have).max()))
    return worst


def record_sha256(config_path: Path, digest: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    updated, count = re.subn(r'(\n  sha256: )"?[0-9a-fA-F]+"?', rf"\g<1>{digest}", text)
    if count != 1:
        raise RuntimeError(f"{config_path}: expected one weights sha256 line, found {count}")
    config_path.write_text(updated, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=MODEL_DIR,
        help="folder for quality_net.onnx (its config.yaml "
        "gets the new sha256, its MODEL_CARD.md the training numbers)",
    )
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--full-epochs", type=int, default=1, help="last epochs on served-size crops")
    parser.add_argument("--crop", type=int, default=112, help="training window of the other epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--levels-per-kind", type=int, default=2, help="distinct levels of each kind per photo")
    parser.add_argument("--clean-copies", type=int, default=11, help="clean samples per photo (~25%% of samples)")
    parser.add_argument("--max-photos", type=int, default=None, help="first N training photos only (smoke runs)")
    parser.add_argument("--seed", type=int, default=20240)
    args = parser.parse_args()

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    config = load_model_config(MODEL_DIR / "config.yaml")
    spec = config.preprocess_spec()
    train_photos, val_photos = training_split(spec)
    train_photos = train_photos[: args.max_photos]
    print(f"photos: {len(train_photos)} train, {len(val_photos)} validation (held-out photos are not read)")
    data = build_cache(train_photos, spec, args.seed, 0, args.levels_per_kind, args.clean_copies)
    val = build_cache(val_photos, spec, args.seed, 1, 1, 4)
    prepared = time.perf_counter()
    print(
        f"{len(data)} training samples ({len(data.pixels)} unique, {data.pixels.nbytes / 2**30:.1f} GiB), "
        f"{len(val)} validation; prepared in {prepared - started:.0f} s",
        flush=True,
    )

    model = QualityNet().to(memory_format=torch.channels_last)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"QualityNet: {parameters} parameters")
    train(model, data, val, spec, args)
    trained = time.perf_counter()

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / config.weights.file
    staged = onnx_path.with_name(f".{onnx_path.name}.new")  # a running server or test never sees a half-written file
    probe = batch_tensor(val, np.arange(min(16, len(val))), spec, None)
    worst = export_onnx(model, staged, config, probe)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    os.replace(staged, onnx_path)
    if (args.out / "config.yaml").is_file():
        record_sha256(args.out / "config.yaml", digest)
    total = time.perf_counter() - started
    children = os.times().children_user + os.times().children_system  # the render workers, reaped by now
    summary = (
        f"| | |\n| --- | --- |\n"
        f"| training photos | {len(train_photos)} (validation: {len(val_photos)}) |\n"
        f"| training samples | {len(data)} per epoch ({len(data.pixels)} unique renders), {args.epochs} epochs "
        f"({args.epochs - args.full_epochs} on {args.crop} px windows, {args.full_epochs} on 224 px) |\n"
        f"| parameters | {parameters:,} |\n"
        f"| data preparation | {prepared - started:.0f} s |\n"
        f"| training | {trained - prepared:.0f} s |\n"
        f"| total wall time | {total / 60:.1f} min on a 2-core Xeon shared with other work "
        f"(CPU: {time.process_time() / 60:.1f} min training process + {children / 60:.1f} min render workers) |\n"
        f"| final validation | {validate(model, val, spec)} |\n"
        f"| ONNX | {onnx_path.name}, {onnx_path.stat().st_size / 1024:.0f} KiB, sha256 `{digest}` |\n"
        f"| max abs(onnxruntime - torch) | {worst:.1e} |\n"
        f"| command | `python -m tooling.quality_net.train --out {args.out}` (seed {args.seed}) |"
    )
    write_card_section(args.out / "MODEL_CARD.md", "training", summary)
    write_card_section(args.out / "MODEL_CARD.md", "labels", label_table())
    print(summary)
    if worst >= 1e-4:
        raise SystemExit(f"onnxruntime differs from torch by {worst:.2e} (must be < 1e-4)")


if __name__ == "__main__":
    main()
