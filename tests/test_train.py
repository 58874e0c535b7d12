"""Training: one step learns, batches trim without changing outputs, determinism, kill-and-resume,
pretrained initialisation. Everything on a tiny model and a small token set built here."""

import logging
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from snakemake.utils import validate
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizer

import bertgeom.train as train_mod
from bertgeom import io
from bertgeom.model import build_model, load_model, trim_batch
from bertgeom.tokens import KmerTokenizer, build_vocab, decode_kmers, load_base_vocab
from bertgeom.train import batch_order, load_split, make_optimizer, train_seed, train_step

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b", "c"]
MAX_LENGTH = 24


class Killed(Exception):
    """Stands for the job being killed."""


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def make_config(**train) -> dict:
    """The validated config (schema defaults filled) for the tiny preset and CLASSES."""
    config = {
        "classes": list(CLASSES),
        "model": {"preset": "tiny"},
        "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, **train},
    }
    validate(config, str(ROOT / "config" / "config.schema.yaml"))
    return config


def fit_config(config: dict, seed: int, tokens: Path, out_dir: Path, ckpt_dir: Path) -> dict:
    """train_seed as the train rule calls it, from a whole validated config."""
    return train_seed(
        tokens / "train.parquet", tokens / "val.parquet", tokens, out_dir, ckpt_dir,
        config["classes"], config["model"], config["train"], seed,
    )  # fmt: skip


def make_tokens(
    directory: Path, sizes=(48, 12, 12), tokenizer: KmerTokenizer | None = None, seed: int = 0
) -> KmerTokenizer:
    """A tokenizer and train/val/test parquets in the tokens format; every third token is a
    class-specific k-mer, the rest is noise; lengths vary so batches get trimmed."""
    rng = np.random.default_rng(seed)
    if tokenizer is None:
        kmers = decode_kmers(rng.choice(4**12, 40, replace=False).astype(np.uint32), 12).tolist()
        tokenizer = KmerTokenizer(build_vocab(kmers), 12, 9, MAX_LENGTH)
    tokenizer.save(directory)
    first_kmer = min(v for t, v in tokenizer.vocab.items() if len(t) == 12)
    for name, n in zip(("train", "val", "test"), sizes):
        labels = np.arange(n) % len(CLASSES)
        n_tokens = rng.integers(MAX_LENGTH - 8, MAX_LENGTH + 1, n).astype(np.int32)
        ids = np.full((n, MAX_LENGTH), tokenizer.pad_id, np.int32)
        for i, (label, length) in enumerate(zip(labels, n_tokens)):
            ids[i, 1 : length - 1] = rng.integers(first_kmer + len(CLASSES), len(tokenizer), length - 2)
            ids[i, 2 : length - 1 : 3] = first_kmer + label
            ids[i, [0, length - 1]] = tokenizer.cls_id, tokenizer.sep_id
        table = pa.table(
            {
                "seq_id": [f"{name}-{i:03d}" for i in range(n)],
                "label": pa.array(labels, pa.int16()),
                "input_ids": io.fixed_size_list(ids, pa.int32()),
                "n_tokens": pa.array(n_tokens, pa.int32()),
            }
        )
        io.write_parquet(table, directory / f"{name}.parquet")
    return tokenizer


@pytest.fixture
def tokens(tmp_path) -> Path:
    make_tokens(tmp_path / "tokens")
    return tmp_path / "tokens"


def loss_on(model, ids, mask, labels) -> float:
    model.eval()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels).item()


def test_one_step_changes_weights_and_reduces_loss(tokens):
    config = make_config()
    model = build_model(config["model"], CLASSES, KmerTokenizer.load(tokens), seed=0)
    split = load_split(tokens / "train.parquet", len(CLASSES))
    ids, mask = trim_batch(split.ids[:8], split.n_tokens[:8])
    labels = split.labels[:8]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = loss_on(model, ids, mask, labels)
    optimizer = make_optimizer(model, config["train"])
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model.train()
    loss, grad_norm = train_step(model, optimizer, constant, ids, mask, labels, 1.0, torch.device("cpu"), False)
    assert loss.item() > 0 and 0 < grad_norm.item()
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "classifier.weight" in changed and "bert.encoder.layer.0.attention.self.query.weight" in changed
    assert loss_on(model, ids, mask, labels) < loss0


def test_trim_batch_changes_no_output(tokens):
    """Dropping PAD columns beyond the longest real sequence leaves the logits as they were."""
    model = build_model(make_config()["model"], CLASSES, KmerTokenizer.load(tokens), seed=0).eval()
    split = load_split(tokens / "train.parquet", len(CLASSES))
    short = split.n_tokens < MAX_LENGTH - 2
    padded, n_tokens = split.ids[short], split.n_tokens[short]
    ids, mask = trim_batch(padded, n_tokens)
    assert ids.shape[1] == int(n_tokens.max()) < MAX_LENGTH - 2
    assert mask.sum(1).tolist() == n_tokens.tolist()
    full_mask = (torch.arange(MAX_LENGTH)[None, :] < n_tokens[:, None]).long()
    with torch.no_grad():
        trimmed = model(input_ids=ids, attention_mask=mask).logits
        full = model(input_ids=padded.long(), attention_mask=full_mask).logits
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
    assert trim_batch(padded, n_tokens, multiple=8)[0].shape[1] % 8 == 0


def test_batch_order_is_a_fixed_permutation():
    batches = batch_order(21, 4, seed=3, epoch=1)
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 1]
    assert sorted(np.concatenate(batches).tolist()) == list(range(21))
    again = np.concatenate(batch_order(21, 4, seed=3, epoch=1))
    assert np.array_equal(np.concatenate(batches), again)
    assert not np.array_equal(again, np.concatenate(batch_order(21, 4, seed=3, epoch=2)))
    assert not np.array_equal(again, np.concatenate(batch_order(21, 4, seed=4, epoch=1)))


def test_same_seed_gives_identical_weights(tokens, tmp_path):
    config = make_config()
    hashes = []
    for run, seed in [("a", 0), ("b", 0), ("c", 1)]:
        info = fit_config(config, seed, tokens, tmp_path / run, tmp_path / f"ckpt-{run}")
        hashes.append(io.sha256_file(tmp_path / run / "model.safetensors"))
        assert not (tmp_path / f"ckpt-{run}").exists()  # checkpoints go once the model is saved
    assert hashes[0] == hashes[1] != hashes[2]
    assert info["seed"] == 1 and info["versions"]["torch"] == version("torch")
    model = load_model(tmp_path / "a", attn_implementation="eager")  # as the activations stage loads it
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config._attn_implementation == "eager"
    assert KmerTokenizer.load(tmp_path / "a").vocab == KmerTokenizer.load(tokens).vocab
    log = (tmp_path / "a" / "train_log.csv").read_text().splitlines()
    assert log[0].split(",") == train_mod.LOG_COLUMNS and len(log) == 1 + 2 * 6  # 48 / 8 = 6 steps per epoch


def test_the_loop_learns_the_signal(tokens, tmp_path):
    info = fit_config(make_config(epochs=8, lr=1e-2), 0, tokens, tmp_path / "m", tmp_path / "ckpt")
    assert info["epochs"][-1]["val_accuracy"] == 1.0
    assert info["epochs"][-1]["val_loss"] < info["epochs"][0]["val_loss"]


def test_kill_and_resume_equals_uninterrupted(tokens, tmp_path, monkeypatch):
    config = make_config(epochs=3)
    fit_config(config, 0, tokens, tmp_path / "whole", tmp_path / "ckpt-whole")

    real_step, calls, kill_at = train_mod.train_step, [], [6 + 3]  # 6 steps per epoch: 3rd step of epoch 2

    def dies_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) in kill_at:
            raise Killed("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", dies_in_epoch_2)
    with pytest.raises(Killed):
        fit_config(config, 0, tokens, tmp_path / "resumed", tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch1.json", "epoch1.safetensors"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    calls.clear()
    kill_at.clear()
    info = fit_config(config, 0, tokens, tmp_path / "resumed", tmp_path / "ckpt")
    assert info["resumed_from_epoch"] == 1 and len(calls) == 2 * 6  # only epochs 2 and 3 were run
    assert io.sha256_file(tmp_path / "resumed" / "model.safetensors") == io.sha256_file(
        tmp_path / "whole" / "model.safetensors"
    )
    whole = np.loadtxt(tmp_path / "whole" / "train_log.csv", delimiter=",", skiprows=1, usecols=(0, 2, 3, 4))
    resumed = np.loadtxt(tmp_path / "resumed" / "train_log.csv", delimiter=",", skiprows=1, usecols=(0, 2, 3, 4))
    assert np.array_equal(whole, resumed)  # step, loss, lr, grad_norm of every step


def test_checkpoint_of_another_config_is_not_resumed(tokens, tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise Killed("killed")

    original = train_mod.save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        killed()

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        fit_config(make_config(), 0, tokens, tmp_path / "m", tmp_path / "ckpt")
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    info = fit_config(make_config(lr=1e-3), 0, tokens, tmp_path / "m", tmp_path / "ckpt")
    assert info["resumed_from_epoch"] == 0 and info["steps"] == 12


def write_pretrained(directory: Path) -> BertForMaskedLM:
    """A tiny 'pretrained' BERT with its own WordPiece vocabulary ([PAD] = 0, [UNK] = 100 as in bert-base)."""
    words = [f"[unused{i}]" for i in range(99)]
    vocab = ["[PAD]", *words, "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "virus", "spike", "##s"]
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False).save_pretrained(directory)
    torch.manual_seed(123)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertForMaskedLM(config)
    model.save_pretrained(directory)
    return model


def test_pretrained_init_extends_vocabulary_keeping_rows(tmp_path):
    base = write_pretrained(tmp_path / "pretrained")
    vocab, specials = load_base_vocab(tmp_path / "pretrained")
    kmers = decode_kmers(np.arange(30, dtype=np.uint32) * 7919, 12).tolist()
    tokenizer = KmerTokenizer(build_vocab(kmers, vocab), 12, 9, MAX_LENGTH, specials)
    assert len(tokenizer) == len(vocab) + 30
    model_cfg = {"init": "pretrained", "pretrained": str(tmp_path / "pretrained")}
    model = build_model(model_cfg, CLASSES, tokenizer, seed=0)
    rows = model.bert.embeddings.word_embeddings.weight.detach()
    original = base.bert.embeddings.word_embeddings.weight.detach()
    assert model.config.vocab_size == rows.shape[0] == len(tokenizer)
    assert torch.equal(rows[: len(vocab)], original)  # every original row kept as it was
    assert torch.isfinite(rows[len(vocab) :]).all() and rows[len(vocab) :].std() > 0
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, base.bert.encoder.layer[1].output.dense.weight)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}

    # End to end: tokens built on the pretrained vocabulary train and reload.
    make_tokens(tmp_path / "tokens", tokenizer=tokenizer)
    config = make_config(epochs=1)
    config["model"] = model_cfg
    fit_config(config, 0, tmp_path / "tokens", tmp_path / "m", tmp_path / "ckpt")
    trained = BertForSequenceClassification.from_pretrained(tmp_path / "m")
    assert trained.config.vocab_size == len(tokenizer)

    # Tokens built from scratch (their own ids) cannot be used with the checkpoint.
    scratch = KmerTokenizer(build_vocab(kmers), 12, 9, MAX_LENGTH)
    with pytest.raises(ValueError, match="does not keep the vocabulary"):
        build_model(model_cfg, CLASSES, scratch, seed=0)


def test_bad_inputs_are_clear_errors(tokens, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokens file not found"):
        load_split(tmp_path / "missing.parquet", 3)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        load_split(tokens / "train.parquet", 2)
    with pytest.raises(FileNotFoundError, match="cannot load a BERT checkpoint"):
        build_model(
            {"init": "pretrained", "pretrained": str(tmp_path / "nowhere")}, CLASSES, KmerTokenizer.load(tokens), 0
        )


def test_damaged_checkpoint_is_discarded_for_the_one_before(tokens, tmp_path, monkeypatch, caplog):
    """Killed between writing epoch 2's checkpoint and deleting epoch 1's, with epoch 2's JSON then cut
    short: training resumes from epoch 1, the damaged files are deleted, the result is unchanged."""
    config = make_config(epochs=3)
    fit_config(config, 0, tokens, tmp_path / "whole", tmp_path / "ckpt-whole")
    original, saved = train_mod.save_checkpoint, tmp_path / "epoch1-copy"

    def save_then_die(ckpt_dir, epoch, *args, **kwargs):
        original(ckpt_dir, epoch, *args, **kwargs)
        if epoch == 1:
            shutil.copytree(ckpt_dir, saved)
        if epoch == 2:
            raise Killed("killed")

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        fit_config(config, 0, tokens, tmp_path / "m", tmp_path / "ckpt")
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    for path in saved.iterdir():
        shutil.copy(path, tmp_path / "ckpt")
    latest = tmp_path / "ckpt" / "epoch2.json"
    latest.write_text(latest.read_text()[:100])
    caplog.set_level(logging.WARNING)
    info = fit_config(config, 0, tokens, tmp_path / "m", tmp_path / "ckpt")
    assert info["resumed_from_epoch"] == 1
    assert f"{latest}: unreadable" in caplog.text and "discarded" in caplog.text
    assert io.sha256_file(tmp_path / "m" / "model.safetensors") == io.sha256_file(tmp_path / "whole" / "model.safetensors")


def test_select_device_names_the_setting(monkeypatch):
    """One device picker (bertgeom.model.select_device) for training, evaluation, the dump and predict."""
    from bertgeom.model import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu", "config train.device") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"config activations\.device: 'cuda' requested but torch sees no CUDA device"):
        select_device("cuda", "config activations.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
