"""The Python package against the engine's fixtures and the `seqrec` command line: top-k,
batches, scores, candidates, sessions that move, RecBole .pth files, the text encoder,
train/evaluate, errors, and threads scoring with the GIL released."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import seqrec
from conftest import pth_writer, random_sasrec

BACKBONES = ["sasrec", "gru4rec", "nextitnet", "caser"]


def fixture_model(shared, name):
    return shared / "fixtures" / "recbole" / name / "model.safetensors"


@pytest.mark.parametrize("name", BACKBONES)
def test_topk_and_scores_match_the_cli_and_the_fixtures(shared, cli, name):
    path = fixture_model(shared, name)
    model = seqrec.Model.load(path)
    assert model.arch == name
    cases = json.loads((path.parent / "cases.json").read_text())
    for case in cases[:6]:
        hist = case["history"]
        user = case.get("user")
        items, scores = model.topk(hist, k=10, user=user)
        assert items.dtype == np.uint32 and scores.dtype == np.float32
        args = ["score", path, "--history", ",".join(map(str, hist)), "-k", "10", "--format", "json"]
        if user is not None:
            args += ["--user", user]
        want = json.loads(cli(*args))
        assert want["items"] == items.tolist()
        np.testing.assert_allclose(want["scores"], scores, rtol=1e-5, atol=1e-5)
        full = model.score(np.asarray(hist, dtype=np.uint32), user=user)
        ref = np.asarray(case["scores_first50"])
        scale = max(1.0, np.abs(ref).max())
        assert np.abs(full[:50] - ref).max() <= 2e-5 * scale


def test_batches_equal_single_requests(small_sasrec):
    model = seqrec.Model.load(small_sasrec)
    rng = np.random.default_rng(3)
    grid = rng.integers(1, model.n_items, size=(33, model.max_len), dtype=np.uint32)
    lengths = rng.integers(1, model.max_len + 1, size=33)
    for i, n in enumerate(lengths):
        grid[i, n:] = 0  # right-padded, as RecBole stores item_seq
    items, scores = model.topk_batch(grid, k=5, exclude_history=True)
    assert items.shape == (33, 5) and scores.shape == (33, 5)
    items2, _ = model.topk_batch([row[:n].tolist() for row, n in zip(grid, lengths)], k=5,
                                 exclude_history=True)
    items3, _ = model.topk_batch(grid, k=5, exclude_history=True, lengths=lengths.tolist())
    assert (items == items2).all() and (items == items3).all()
    for i, n in enumerate(lengths):
        one, one_scores = model.topk(grid[i, :n], k=5, exclude_history=True)
        assert one.tolist() == items[i].tolist()
        np.testing.assert_allclose(one_scores, scores[i], rtol=1e-5, atol=1e-6)


def test_candidates_knobs_and_exclusions(small_sasrec):
    model = seqrec.Model.load(small_sasrec)
    hist = [3, 9, 4, 11]
    full = model.score(hist)
    cand = np.array([7, 3, 50, 12], dtype=np.uint32)
    np.testing.assert_array_equal(model.score_candidates(hist, cand), full[cand])
    items, _ = model.topk(hist, k=20, exclude=[int(i) for i in model.topk(hist, k=3)[0]])
    assert len(set(items.tolist()) & set(model.topk(hist, k=3)[0].tolist())) == 0
    with pytest.raises(seqrec.InvalidInputError, match="unknown objective"):
        model.topk(hist, objectives={"alpha": 1.0})


def test_feedback_needs_an_actor_critic_head(small_sasrec):
    s = seqrec.Model.load(small_sasrec).session()
    s.push(3)
    with pytest.raises(seqrec.SeqrecError, match="actor-critic"):
        s.feedback(4, 1.0)
    assert s.history.tolist() == [3]


def test_sessions_continue_after_moving(small_sasrec, tmp_path):
    here = seqrec.Model.load(small_sasrec)
    there = seqrec.Model.load(small_sasrec)
    assert here.fingerprint == there.fingerprint
    s = here.session()
    rng = np.random.default_rng(5)
    moved = None
    history = []
    for step in range(2 * here.max_len + 3):
        item = int(rng.integers(1, here.n_items))
        history.append(item)
        s.push(item)
        if moved is not None:
            moved.push(item)
        moved = seqrec.Session.from_bytes(there, (moved or s).to_bytes())
        a, b = s.topk(5), moved.topk(5)
        assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
        np.testing.assert_array_equal(s.scores(), moved.scores())
        assert s.to_bytes() == moved.to_bytes()
        want, _ = here.topk(history, k=5)
        assert want.tolist() == a[0].tolist()
    assert len(moved) == len(history) and moved.history.tolist() == history
    blob = bytearray(moved.to_bytes())
    blob[len(blob) // 2] ^= 0x40
    with pytest.raises(seqrec.SessionStateError, match="checksum"):
        seqrec.Session.from_bytes(there, bytes(blob))
    other = seqrec.Model.load(random_sasrec(tmp_path / "other.safetensors", 60, 16, 2, 32, 8, seed=9))
    with pytest.raises(seqrec.InvalidInputError, match="another model"):
        seqrec.Session.from_bytes(other, moved.to_bytes())


def test_errors_carry_the_engines_message(small_sasrec, tmp_path):
    model = seqrec.Model.load(small_sasrec)
    with pytest.raises(seqrec.InvalidInputError, match="item id 0 at history position 1"):
        model.topk([3, 0, 5])
    with pytest.raises(seqrec.InvalidInputError, match="empty history"):
        model.topk([])
    with pytest.raises(seqrec.InvalidInputError, match="out of range"):
        model.topk([-1])
    with pytest.raises(seqrec.SeqrecError, match="device `cuda` is not available"):
        seqrec.Model.load(small_sasrec, device="cuda")
    with pytest.raises(seqrec.ModelFileError):
        seqrec.Model.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(small_sasrec.read_bytes()[:100])
    with pytest.raises(seqrec.ModelFileError, match="bad.safetensors"):
        seqrec.Model.load(bad)
    with pytest.raises(seqrec.InvalidInputError, match="unknown dtype"):
        seqrec.Model.load(small_sasrec, item_dtype="f8")
    assert seqrec.Model.load(small_sasrec, item_dtype="f16").item_dtype == "f16"


def test_recbole_pth_loads_converts_and_serves(shared, tmp_path):
    script = pth_writer()
    if script is None:
        pytest.skip("skipped: tests/pth/torch_save.py or python3 not found")
    src = fixture_model(shared, "sasrec")
    pth = tmp_path / "sasrec.pth"
    subprocess.run([sys.executable, script, src, pth], check=True)
    a, b = seqrec.Model.load(src), seqrec.Model.load(pth)
    assert a.fingerprint == b.fingerprint
    h = [5, 17, 400, 3]
    assert a.topk(h)[0].tolist() == b.topk(h)[0].tolist()
    summary = seqrec.convert_recbole(str(pth), str(tmp_path / "out.safetensors"))
    assert summary["architecture"] == "sasrec" and summary["n_items"] == 1000
    c = seqrec.Model.load(tmp_path / "out.safetensors")
    np.testing.assert_array_equal(c.score(h), a.score(h))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(pth.read_bytes()[:-50])
    with pytest.raises(seqrec.ModelFileError, match="PyTorch checkpoint"):
        seqrec.Model.load(broken)


def test_text_encoder_matches_the_cli(minilm, cli):
    enc = seqrec.TextEncoder.load(minilm)
    rows = enc.encode(["Toy Story", "GoldenEye"])
    assert rows.shape == (2, enc.dim) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    want = json.loads(cli("embed", "--model-dir", minilm, "--text", "Toy Story", "--text",
                          "GoldenEye", "--format", "json"))
    np.testing.assert_allclose(rows, np.asarray(want["embeddings"]), atol=1e-6)
    assert enc.encode("Toy Story").shape == (1, enc.dim)
    with pytest.raises(seqrec.InvalidInputError, match="text 1"):
        enc.encode(["Toy Story", ""])


def test_train_and_evaluate_mirror_the_cli(shared, cli, tmp_path):
    data = shared / "data" / "ml-100k"
    if not data.is_dir():
        pytest.skip("skipped: ml-100k not found in the shared folder")
    out = tmp_path / "m.safetensors"
    lines = seqrec.train(model="sasrec", data=str(data), out=str(out), epochs=1, hidden_size=16,
                         max_len=10, batch_size=512, seed=7)
    assert out.is_file() and lines
    model = seqrec.Model.load(out)
    assert model.arch == "sasrec" and model.max_len == 10
    got = seqrec.evaluate(str(out), data=str(data), metrics="hr@10,ndcg@10")
    want = json.loads(cli("eval", out, "--data", data, "--metrics", "hr@10,ndcg@10", "--format",
                          "json"))
    assert got == want
    with pytest.raises(seqrec.InvalidInputError):
        seqrec.train(model="sasrec", data=str(data), out=str(out), epochs=0)


def test_threads_score_with_the_gil_released(small_sasrec):
    model = seqrec.Model.load(small_sasrec)
    rng = np.random.default_rng(11)
    hists = [rng.integers(1, model.n_items, size=model.max_len, dtype=np.uint32) for _ in range(64)]
    want = [model.topk(h, k=5)[0].tolist() for h in hists]
    results = {}

    def work(t):
        results[t] = [model.topk(h, k=5)[0].tolist() for h in hists for _ in range(3)][::3]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[t] == want for t in range(4))
