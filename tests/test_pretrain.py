"""Masked-LM pre-training: windows, masking, the loss, determinism, kill-and-resume, the init
checkpoint, the saved directory. Tiny preset, token sets built here (test_train.make_tokens)."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_train import Killed, make_tokens
from transformers import BertForMaskedLM, BertForSequenceClassification, get_linear_schedule_with_warmup

import bertgeom.pretrain as pretrain_mod
from bertgeom import io
from bertgeom.pretrain import (
    LOG_COLUMNS,
    check_settings,
    init_model,
    kmer_ids,
    make_batch,
    make_scheduler,
    mlm_loss,
    pretrain_seed,
    state_digest,
)
from bertgeom.tokens import KmerTokenizer, build_vocab, decode_kmers
from bertgeom.train import Split, load_split

SETTINGS = dict(steps=6, batch_size=4, window=10, mask_rate=0.2, checkpoint_every=2, log_every=3, lr=3e-3)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tokens(tmp_path):
    make_tokens(tmp_path / "tokens")
    return tmp_path / "tokens"


def corpus(n: int = 50, max_length: int = 200, lengths=(40, 150), seed: int = 0) -> tuple[Split, KmerTokenizer]:
    """Rows of distinct random k-mer ids (so a window can be located in its source row), 400 k-mers."""
    rng = np.random.default_rng(seed)
    kmers = decode_kmers(rng.choice(4**12, 400, replace=False).astype(np.uint32), 12).tolist()
    tokenizer = KmerTokenizer(build_vocab(kmers), 12, 9, max_length)
    n_tokens = rng.integers(*lengths, n)
    ids = np.full((n, max_length), tokenizer.pad_id, np.int32)
    for i, length in enumerate(n_tokens):
        ids[i, 1 : length - 1] = rng.choice(np.arange(5, len(tokenizer)), length - 2, replace=False)
        ids[i, [0, length - 1]] = tokenizer.cls_id, tokenizer.sep_id
    split = Split(torch.from_numpy(ids), torch.from_numpy(n_tokens), torch.zeros(n, dtype=torch.int64), [""] * n)
    return split, tokenizer


def write_corpus(split: Split, tokenizer: KmerTokenizer, directory) -> None:
    """The split as a tokens directory (train.parquet + tokenizer files)."""
    tokenizer.save(directory)
    table = pa.table(
        {
            "seq_id": [f"s{i}" for i in range(len(split))],
            "label": pa.array(np.zeros(len(split)), pa.int16()),
            "input_ids": io.fixed_size_list(split.ids.numpy(), pa.int32()),
            "n_tokens": pa.array(split.n_tokens.numpy(), pa.int32()),
        }
    )
    io.write_parquet(table, directory / "train.parquet")


def masked_runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a bool vector."""
    edges = np.diff(np.r_[0, row.astype(int), 0])
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


@pytest.mark.parametrize("span", [1, 3])
def test_masking_rate_spans_specials_and_labels(span):
    split, tokenizer = corpus()
    settings = check_settings(dict(window=60, batch_size=64, mask_rate=0.24, span=span), tokenizer.max_length)
    originals, inputs, masked = [], [], []
    for step in range(1, 31):
        batch = make_batch(split, tokenizer, settings, seed=0, step=step)
        labels, real = batch["labels"].numpy(), batch["attention_mask"].numpy().astype(bool)
        # what the batch was before masking: the labels where masked, the inputs elsewhere
        ids = np.where(labels != -100, labels, batch["input_ids"].numpy())
        is_masked = labels != -100
        n_kmers = real.sum(1) - 2
        special = np.isin(ids, [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id])
        assert not (is_masked & special).any()  # [CLS], [SEP], [PAD] never masked
        assert (ids[:, 0] == tokenizer.cls_id).all() and (
            ids[np.arange(len(ids)), n_kmers + 1] == tokenizer.sep_id
        ).all()
        assert np.array_equal(batch["input_ids"].numpy()[~is_masked], ids[~is_masked])  # unmasked tokens untouched
        for row, n in zip(is_masked, n_kmers):
            runs = masked_runs(row)
            assert set(runs) == {span}  # contiguous spans of exactly `span`, separated by unmasked tokens
            assert len(runs) == max(1, round(0.24 * n / span))
            assert abs(row.sum() / n - 0.24) <= span / n  # the rate, up to rounding to whole spans
        originals.append(ids[is_masked])
        inputs.append(batch["input_ids"].numpy()[is_masked])
        masked.append(is_masked.sum())
    originals, inputs = np.concatenate(originals), np.concatenate(inputs)
    as_mask = np.mean(inputs == tokenizer.mask_id)
    kept = np.mean(inputs == originals)
    random = np.mean((inputs != tokenizer.mask_id) & (inputs != originals))
    tolerance = 4 * np.sqrt(0.16 / len(inputs))  # 4 binomial standard deviations
    assert abs(as_mask - 0.8) < tolerance and abs(kept - 0.1) < tolerance and abs(random - 0.1) < tolerance
    assert set(inputs[(inputs != tokenizer.mask_id) & (inputs != originals)]) <= set(kmer_ids(tokenizer).tolist())


def test_windows_are_crops_at_random_offsets_covering_every_position():
    split, tokenizer = corpus()
    settings = check_settings(dict(window=60, batch_size=64), tokenizer.max_length)
    seen = np.zeros(tokenizer.max_length, dtype=bool)
    for step in range(1, 21):
        batch = make_batch(split, tokenizer, settings, seed=3, step=step)
        labels = batch["labels"].numpy()
        ids = np.where(labels != -100, labels, batch["input_ids"].numpy())
        real = batch["attention_mask"].numpy().astype(bool)
        positions = batch["position_ids"].numpy()
        for row, mask, pos in zip(ids, real, positions):
            n = mask.sum()
            kmers = row[1 : n - 1]
            source, start = np.nonzero(split.ids.numpy() == kmers[0])
            crops = [split.ids[i, j : j + n - 2].numpy() for i, j in zip(source, start)]
            assert any(np.array_equal(crop, kmers) for crop in crops)  # a contiguous crop of a train row
            assert np.array_equal(pos[:n], pos[0] + np.arange(n)) and pos[n - 1] < tokenizer.max_length
            seen[pos[:n]] = True
    assert seen.all()  # every position embedding is trained


def test_batches_depend_on_seed_and_step_only():
    split, tokenizer = corpus()
    settings = check_settings(dict(window=40, batch_size=8), tokenizer.max_length)
    a = make_batch(split, tokenizer, settings, seed=1, step=5)
    b = make_batch(split, tokenizer, settings, seed=1, step=5)
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels", "position_ids", "attention_mask"))
    assert not torch.equal(a["labels"], make_batch(split, tokenizer, settings, seed=1, step=6)["labels"])
    assert not torch.equal(a["labels"], make_batch(split, tokenizer, settings, seed=2, step=5)["labels"])


def test_loss_equals_transformers_masked_lm_loss():
    split, tokenizer = corpus()
    settings = check_settings(dict(window=40, batch_size=8, mask_rate=0.3), tokenizer.max_length)
    batch = make_batch(split, tokenizer, settings, seed=0, step=1)
    model = init_model("tiny", tokenizer, seed=0).eval()
    with torch.no_grad():
        loss, correct, masked = mlm_loss(model, batch, torch.device("cpu"))
        reference = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "labels")})
    torch.testing.assert_close(loss, reference.loss)
    where = batch["labels"] != -100
    assert masked.item() == where.sum().item()
    assert correct.item() == (reference.logits.argmax(-1)[where] == batch["labels"][where]).sum().item()


def learning_rates(scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_schedule_warms_up_holds_and_decays():
    def optimizer():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)

    settings = check_settings(dict(steps=100, warmup_ratio=0.1, decay_ratio=0.3), 512)
    rates = learning_rates(make_scheduler(optimizer(), settings), 100)
    assert rates[0] == 0 and rates[10:70] == [1e-3] * 60 and rates[70] == 1e-3
    assert np.allclose(np.diff(rates[70:]), -1e-3 / 30) and rates[-1] == pytest.approx(1e-3 / 30)
    usual = check_settings(dict(steps=100, warmup_ratio=0.1, decay_ratio=0.9), 512)  # linear warm-up/decay
    linear = get_linear_schedule_with_warmup(optimizer(), 10, 100)
    assert np.allclose(learning_rates(make_scheduler(optimizer(), usual), 100), learning_rates(linear, 100))


def test_same_seed_identical_weights_and_saved_directory_loads(tokens, tmp_path):
    hashes = []
    for run, seed in [("a", 0), ("b", 0), ("c", 1)]:
        info = pretrain_seed(
            tokens / "train.parquet", tokens, tmp_path / run, tmp_path / f"ck{run}", "tiny", SETTINGS, seed
        )
        hashes.append(io.sha256_file(tmp_path / run / "model.safetensors"))
        assert not (tmp_path / f"ck{run}").exists()
    assert hashes[0] == hashes[1] != hashes[2]
    log = (tmp_path / "a" / "pretrain_log.csv").read_text().splitlines()
    assert log[0].split(",") == LOG_COLUMNS and len(log) == 1 + SETTINGS["steps"]

    tokenizer = KmerTokenizer.load(tmp_path / "a")
    assert tokenizer.vocab == KmerTokenizer.load(tokens).vocab
    masked_lm = BertForMaskedLM.from_pretrained(tmp_path / "a")
    # the init checkpoint: the pre-training started from exactly the weights init_model builds
    assert info["init_digest"] == state_digest(init_model("tiny", tokenizer, seed=1))
    assert state_digest(masked_lm) != state_digest(init_model("tiny", tokenizer, seed=0))  # and it learned
    classifier = BertForSequenceClassification.from_pretrained(tmp_path / "a", num_labels=3)
    assert classifier.classifier.out_features == 3
    for name, weight in masked_lm.bert.state_dict().items():  # the encoder is carried over unchanged
        assert torch.equal(classifier.bert.state_dict()[name], weight), name


def test_kill_and_resume_equals_uninterrupted(tokens, tmp_path, monkeypatch):
    train = tokens / "train.parquet"
    pretrain_seed(train, tokens, tmp_path / "whole", tmp_path / "ck-whole", "tiny", SETTINGS, 0)

    real_step, calls = pretrain_mod.mlm_step, []

    def dies_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise Killed("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pretrain_mod, "mlm_step", dies_at_step_5)
    with pytest.raises(Killed):
        pretrain_seed(train, tokens, tmp_path / "resumed", tmp_path / "ck", "tiny", SETTINGS, 0)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step4.json", "step4.safetensors"]
    calls.clear()
    info = pretrain_seed(train, tokens, tmp_path / "resumed", tmp_path / "ck", "tiny", SETTINGS, 0)
    assert info["resumed_from_step"] == 4 and len(calls) == 2
    assert io.sha256_file(tmp_path / "resumed" / "model.safetensors") == io.sha256_file(
        tmp_path / "whole" / "model.safetensors"
    )
    whole = np.loadtxt(tmp_path / "whole" / "pretrain_log.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2, 4, 5))
    resumed = np.loadtxt(tmp_path / "resumed" / "pretrain_log.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2, 4, 5))
    assert np.array_equal(whole, resumed)  # step, loss, accuracy, lr, grad_norm of every step
    assert info["init_digest"] == state_digest(init_model("tiny", KmerTokenizer.load(tokens), seed=0))


def test_pretraining_lowers_the_masked_loss(tmp_path):
    """Copies of one sequence of 58 distinct k-mers: the loss starts near log(vocabulary) and falls
    by more than 1 nat within 80 steps."""
    split, tokenizer = corpus(n=1, max_length=64, lengths=(60, 61))
    copies = Split(split.ids.repeat(40, 1), split.n_tokens.repeat(40), torch.zeros(40, dtype=torch.int64), [""] * 40)
    write_corpus(copies, tokenizer, tmp_path / "tokens")
    settings = dict(steps=80, batch_size=16, window=24, mask_rate=0.15, lr=3e-3, log_every=40)
    pretrain_seed(
        tmp_path / "tokens" / "train.parquet", tmp_path / "tokens", tmp_path / "m", tmp_path / "ck", "tiny", settings, 0
    )
    loss = np.loadtxt(tmp_path / "m" / "pretrain_log.csv", delimiter=",", skiprows=1, usecols=1)
    assert abs(loss[:5].mean() - np.log(len(tokenizer))) < 0.5
    assert loss[-10:].mean() < loss[:10].mean() - 1


@pytest.mark.parametrize(
    "settings, key",
    [
        (dict(mask_rate=0.0), "mask_rate"),
        (dict(mask_rate=1.0), "mask_rate"),
        (dict(mask_rate=0.6, span=1), "mask_rate"),
        (dict(span=9, window=10), "span"),
        (dict(window=513), "window"),
        (dict(steps=0), "steps"),
        (dict(mask_token=0.9, random_token=0.2), "random_token"),
        (dict(masking="spans"), "unknown"),
        (dict(warmup_ratio=0.5, decay_ratio=0.6), "decay_ratio"),
    ],
)
def test_bad_settings_are_one_line_errors(settings, key):
    with pytest.raises(ValueError, match=key):
        check_settings(settings, 512)


def test_load_split_without_classes_skips_the_label_check(tokens):
    assert len(load_split(tokens / "train.parquet", None)) == 48
