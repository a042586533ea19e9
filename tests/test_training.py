"""Models, training and evaluation on the real URFD skeletons (small runs; full runs are benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the [export] extra")

from appliance.features.skeleton_map import MapSpec  # noqa: E402
from appliance.models.metrics import auroc  # noqa: E402
from export.datasets import mocap_split, render_sequences, urfd_split  # noqa: E402
from export.evaluate import evaluate, score_windows  # noqa: E402
from export.models import LSTMVAE, ModelConfig, build_model  # noqa: E402
from export.train import (  # noqa: E402
    TrainConfig,
    load_checkpoint,
    normal_window_index,
    save_checkpoint,
    train_model,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason=f"real data not found at {DATA}")


@pytest.fixture(scope="module")
def urfd():
    split = urfd_split(DATA)
    return split, render_sequences(split.train), render_sequences(split.val), render_sequences(split.test)


@needs_data
def test_urfd_split_is_by_video_and_test_holds_every_third_video(urfd):
    split, *_ = urfd
    names = lambda seqs: {s.name for s in seqs}  # noqa: E731
    assert names(split.test) == {f"fall-{n:02d}" for n in range(3, 31, 3)}
    assert names(split.val) == {"fall-07", "fall-14", "fall-22", "fall-29"}
    assert len(split.train) == 16
    assert not names(split.train) & names(split.test) and not names(split.val) & names(split.test)


@needs_data
def test_mocap_split_keeps_clips_apart_and_uses_walks_as_the_only_normal_class():
    split = mocap_split(DATA)
    train = {s.name for s in split.train}
    assert train.isdisjoint(s.name for s in split.test) and train.isdisjoint(s.name for s in split.val)
    assert all(s.meta["action"].startswith("walk") and (s.labels == 0).all() for s in split.train)
    actions = {s.meta["action"] for s in split.test if s.labels[0] > 0}
    assert actions == {"run", "dash", "kick", "punch", "slash"}
    assert len(split.train) == 48 and sum(len(s) for s in split.train) == 11459


@needs_data
def test_lstm_vae_trains_only_on_windows_that_are_entirely_normal(urfd):
    _, train, _, _ = urfd
    index = normal_window_index(train, 30)
    for seq, start in index:
        assert (train[seq].labels[start : start + 30] == 0).all()
    # fall-01 is upright for its first 78 frames: windows 0..48
    first = train[0]
    assert first.name == "fall-01"
    assert sorted(index[index[:, 0] == 0, 1].tolist()) == list(range(49))


def test_streaming_scores_equal_scoring_each_window_whole():
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="lstm_vae")).eval()
    rng = np.random.default_rng(0)
    maps = (rng.random((40, 28, 28)) > 0.9).astype(np.uint8)
    cached = score_windows(model, maps)  # each frame encoded once, reused by 30 windows
    windows = torch.from_numpy(np.stack([maps[i : i + 30] for i in range(11)]).astype(np.float32))
    np.testing.assert_allclose(cached, model.score(windows).numpy(), rtol=1e-5)


def test_model_shapes_and_separable_frame_encoder():
    cfg = ModelConfig(model_type="lstm_vae")
    model = LSTMVAE(cfg).eval()
    x = torch.zeros(2, 30, 28, 28)
    logits, mu, logvar = model(x)
    assert logits.shape == (2, 30, 28, 28) and mu.shape == (2, 16) and logvar.shape == (2, 16)
    assert model.encode_frames(x).shape == (2, 30, cfg.frame_features)
    assert model.sequence.encoder_lstm.hidden_size == 300
    for kind in ("ae", "vae"):
        m = build_model(ModelConfig(model_type=kind)).eval()
        assert m.score(torch.zeros(5, 28, 28)).shape == (5,)


@needs_data
def test_lstm_vae_loss_falls_and_it_separates_falls_from_upright_frames(urfd, tmp_path):
    split, train, val, test = urfd
    result = train_model(
        ModelConfig(model_type="lstm_vae"), TrainConfig(epochs=8), train, val, progress=False
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    ev = evaluate(result.model, "LSTM-VAE", test, split.classes)
    metrics = ev.metrics()
    assert metrics["frames"] == sum(len(s.maps) for s in test) == 965
    assert metrics["auroc"] > 0.7  # measured 0.80 after 30 epochs; chance is 0.5
    assert metrics["auroc_per_class"]["lying"] > metrics["auroc_per_class"]["falling"]

    # a checkpoint reloads to the very same scores
    path = save_checkpoint(tmp_path / "m.pt", result, MapSpec())
    model, ckpt = load_checkpoint(path)
    assert ckpt["data_summary"]["sample_kind"] == "windows" and ckpt["model_config"]["latent_dim"] == 16
    np.testing.assert_allclose(
        score_windows(model, test[0].maps), score_windows(result.model, test[0].maps), rtol=1e-6
    )


@needs_data
def test_frame_autoencoder_baseline_learns_upright_posture(urfd):
    split, train, _, test = urfd
    result = train_model(ModelConfig(model_type="ae"), TrainConfig(epochs=10), train, progress=False)
    s, y = evaluate(result.model, "AE", test, split.classes).pooled()
    assert result.data_summary["samples"] == sum(int((t.labels == 0).sum()) for t in train)
    assert auroc(s, y > 0) > 0.7  # measured 0.83 after 30 epochs
