"""Outlier exposure in training: the loss term and the background batches (its effect on real data:
test_predict, whose model is trained with background genomes and must leave the reference unassigned)."""

import numpy as np
import torch

from bertgeom.model import build_model, trim_batch
from bertgeom.tokens import KmerTokenizer
from bertgeom.train import load_split, make_optimizer, outlier_batches, train_step
from test_train import CLASSES, make_config, make_tokens


def test_loss_adds_cross_entropy_to_uniform(tmp_path):
    """With a zero learning rate the returned loss equals CE(batch) + w * mean(logsumexp - mean logit) of the outliers."""
    make_tokens(tmp_path / "tokens")
    config = make_config(lr=1e-3)
    torch.manual_seed(0)
    model = build_model(config["model"], CLASSES, KmerTokenizer.load(tmp_path / "tokens"), seed=0).eval()
    split = load_split(tmp_path / "tokens" / "train.parquet", len(CLASSES))
    ids, mask = trim_batch(split.ids[:4], split.n_tokens[:4])
    out_ids, out_mask = trim_batch(split.ids[4:7], split.n_tokens[4:7])
    with torch.no_grad():
        logits, out = (
            model(input_ids=ids, attention_mask=mask).logits,
            model(input_ids=out_ids, attention_mask=out_mask).logits,
        )
    uniform = (torch.logsumexp(out, 1) - out.mean(1)).mean()
    want = torch.nn.functional.cross_entropy(logits, split.labels[:4]) + 0.5 * uniform
    optimizer = make_optimizer(model, config["train"])
    frozen = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)
    loss, _ = train_step(
        model, optimizer, frozen, ids, mask, split.labels[:4], 1.0, torch.device("cpu"), False, (out_ids, out_mask), 0.5
    )
    assert abs(loss.item() - want.item()) < 1e-6
    assert uniform.item() > np.log(len(CLASSES)) - 1e-6  # CE to uniform >= log C, equal only at uniform


def test_outlier_batches_are_fixed_by_seed_and_epoch(tmp_path):
    make_tokens(tmp_path / "tokens")
    background = load_split(tmp_path / "tokens" / "test.parquet", len(CLASSES), labelled=False)
    first = outlier_batches(background, 5, 3, seed=1, epoch=2)
    assert [b.tolist() for b in first] == [b.tolist() for b in outlier_batches(background, 5, 3, seed=1, epoch=2)]
    assert all(len(set(b)) == 3 for b in first) and outlier_batches(None, 4, 3, 1, 2) == [None] * 4
