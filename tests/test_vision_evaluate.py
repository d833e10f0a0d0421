"""Frozen-feature evaluation: feature extraction, kNN, the L-BFGS linear probe, few-shot."""

import math

import pytest
import torch
from torch import nn

from selfsup.errors import InputError
from selfsup.vision.evaluate import (
    confidence_interval95,
    default_l2_grid,
    extract_features,
    extract_features_from_loader,
    few_shot_eval,
    fit_logistic_regression,
    knn_evaluate,
    knn_predict,
    knn_votes,
    linear_probe,
    logistic_objective,
    mean_per_class_accuracy,
    sample_tasks,
    stratified_split,
    top1_accuracy,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: one thread is fastest and does not fight other jobs for the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _clusters(n_per_class, n_classes, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * 5.0
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


# ---------------------------------------------------------------- features and metrics


class _Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Dropout(0.9), nn.BatchNorm1d(5))

    def forward(self, x):
        return self.net(x)


def test_extract_features_centre_view_eval_mode_and_batching():
    torch.manual_seed(0)
    enc = _Enc().train()
    imgs = torch.randint(0, 256, (10, 3, 2, 2), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    f = extract_features(enc, imgs, mean, std, batch_size=3)
    assert f.shape == (10, 5) and f.dtype == torch.float32
    assert enc.training  # mode given back
    enc.eval()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = enc((imgs.float() / 255 - m) / s)
    torch.testing.assert_close(f, expected)
    # float images in [0, 1] give the same; batch size does not matter
    torch.testing.assert_close(extract_features(enc, imgs.float() / 255, mean, std), expected)
    loader = [(imgs[:4], torch.arange(4)), (imgs[4:], torch.arange(4, 10))]
    f2, y2 = extract_features_from_loader(enc, loader, mean, std)
    torch.testing.assert_close(f2, expected)
    assert y2.tolist() == list(range(10))
    with pytest.raises(InputError):
        extract_features(enc, imgs, (0.5, 0.5), std)


def test_accuracy_metrics_on_imbalanced_example():
    y = torch.tensor([0] * 8 + [1] * 2)
    pred = torch.zeros(10, dtype=torch.long)
    assert top1_accuracy(pred, y) == pytest.approx(0.8)
    assert mean_per_class_accuracy(pred, y) == pytest.approx(0.5)  # (8/8 + 0/2) / 2
    # class 2 never occurs in y: left out of the mean even when predicted
    pred2 = torch.tensor([0] * 6 + [2] * 2 + [1, 2])
    assert mean_per_class_accuracy(pred2, y, num_classes=3) == pytest.approx((6 / 8 + 1 / 2) / 2)


# ---------------------------------------------------------------- kNN


def test_knn_votes_match_hand_computation():
    # unit vectors already (normalisation is a no-op), labels 0 1 1 0
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[2.0, 0.0]])  # normalised to (1, 0): sims 1, 0.8, 0, -1
    for t in (0.07, 0.5, 10.0):
        votes = knn_votes(bank, labels, query, k=3, temperature=t).double()
        # the three nearest: sim 1 (class 0), 0.8 and 0 (class 1)
        hand = torch.tensor(
            [[math.exp(1 / t), math.exp(0.8 / t) + math.exp(0.0)]], dtype=torch.float64
        )
        torch.testing.assert_close(votes * math.exp(1 / t), hand, rtol=1e-5, atol=0)
    # a low temperature trusts the single nearest neighbour, a high one counts heads
    assert knn_predict(bank, labels, query, k=3, temperature=0.07).item() == 0
    assert knn_predict(bank, labels, query, k=3, temperature=10.0).item() == 1
    # k larger than the bank uses the whole bank: class 0 gains exp(-1/T)
    v = knn_votes(bank, labels, query, k=50, temperature=0.5).double() * math.exp(2)
    assert v[0, 0].item() == pytest.approx(math.exp(2) + math.exp(-2))


def test_knn_ties_go_to_smallest_class_and_chunking_is_invisible():
    q = torch.tensor([[1.0, 1.0]])
    for labels in ([1, 0], [0, 1]):  # equal votes whichever bank row holds which class
        bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        assert knn_predict(bank, torch.tensor(labels), q, k=2).item() == 0
    f, y = _clusters(20, 4, 8, 3.0, seed=1)
    qf, qy = _clusters(10, 4, 8, 3.0, seed=2)
    a = knn_evaluate(f, y, qf, qy, k=5, chunk_size=3)
    b = knn_evaluate(f, y, qf, qy, k=5)
    assert torch.equal(a["predictions"], b["predictions"])
    # brute force over all pairs at once
    fn, qn = nn.functional.normalize(f, dim=1), nn.functional.normalize(qf, dim=1)
    sim, idx = (qn @ fn.T).topk(5, dim=1)
    votes = torch.zeros(len(qf), 4).scatter_add_(1, y[idx], torch.exp(sim / 0.07))
    assert torch.equal(votes.argmax(1), a["predictions"])
    assert a["top1"] == pytest.approx((votes.argmax(1) == qy).float().mean().item())
    assert a["mean_per_class"] is not None


# ---------------------------------------------------------------- logistic regression


def _symmetric_optimum(l2):
    # x = +1 (class 1), x = -1 (class 0): W = [-a, a], b = 0 with l2 * a = sigmoid(-2 a)
    lo, hi = 0.0, 10.0
    for _ in range(200):
        a = (lo + hi) / 2
        if l2 * a - 1 / (1 + math.exp(2 * a)) > 0:
            hi = a
        else:
            lo = a
    return a


def test_logistic_fit_reaches_known_optimum():
    x = torch.tensor([[1.0], [-1.0]])
    y = torch.tensor([1, 0])
    for l2 in (0.1, 1.0, 10.0):
        m = fit_logistic_regression(x, y, l2)
        a = _symmetric_optimum(l2)
        torch.testing.assert_close(m.weight, torch.tensor([[-a, a]], dtype=torch.float64))
        torch.testing.assert_close(m.bias, torch.zeros(2, dtype=torch.float64))
        assert m.converged and m.weight.dtype == torch.float64


def test_logistic_fit_gradient_vanishes_and_separable_is_perfect():
    x, y = _clusters(15, 3, 4, 1.0, seed=3)
    g = torch.Generator().manual_seed(4)
    y_noisy = torch.where(torch.rand(len(y), generator=g) < 0.2, (y + 1) % 3, y)
    for l2 in (1e-3, 0.1, 10.0, 1e4):
        m = fit_logistic_regression(x, y_noisy, l2)
        w = m.weight.clone().requires_grad_(True)
        b = m.bias.clone().requires_grad_(True)
        loss = logistic_objective(w, b, x.double(), y_noisy, l2)
        gw, gb = torch.autograd.grad(loss, [w, b])
        assert max(gw.abs().max().item(), gb.abs().max().item()) < 1e-5
        assert abs(m.bias.sum().item()) < 1e-9  # the centred bias
    # well separated clusters, weak penalty: every training point right
    m = fit_logistic_regression(x, y, 1e-4)
    assert torch.equal(m.predict(x), y)


def test_batched_fit_equals_separate_fits():
    xs, ys = [], []
    for s in range(3):
        x, y = _clusters(4, 3, 5, 4.0, seed=10 + s)
        xs.append(x)
        ys.append(y)
    tight = dict(tol=1e-8, tol_change=0.0)
    batched = fit_logistic_regression(torch.stack(xs), torch.stack(ys), 0.05, **tight)
    assert batched.converged and batched.weight.shape == (3, 5, 3)
    for t in range(3):
        one = fit_logistic_regression(xs[t], ys[t], 0.05, **tight)
        assert one.converged
        torch.testing.assert_close(batched.weight[t], one.weight, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(batched.bias[t], one.bias, atol=1e-6, rtol=1e-6)
        assert torch.equal(batched.predict(torch.stack(xs))[t], one.predict(xs[t]))


# ---------------------------------------------------------------- the probe


def test_stratified_split_keeps_every_class_and_is_seeded():
    y = torch.tensor([0] * 10 + [1] * 3 + [2] * 1)
    tr, va = stratified_split(y, 0.2, seed=0)
    assert sorted(tr.tolist() + va.tolist()) == list(range(14))
    assert torch.bincount(y[va], minlength=3).tolist() == [2, 1, 0]
    assert torch.equal(va, stratified_split(y, 0.2, seed=0)[1])
    assert not torch.equal(va, stratified_split(y, 0.2, seed=1)[1])


def test_default_grid():
    g = default_l2_grid()
    assert len(g) == 45 and g[0] == pytest.approx(1e-6) and g[-1] == pytest.approx(1e5)
    assert g[1] / g[0] == pytest.approx(10 ** (11 / 44))


def test_probe_picks_best_val_and_ties_go_to_largest_l2():
    x, y = _clusters(30, 3, 6, 1.0, seed=5)
    x, y = torch.cat([x, x[:30] + 0.1]), torch.cat([y, y[:30]])  # class 0 twice as common
    vx, vy = _clusters(10, 3, 6, 1.0, seed=5)  # same centres
    tx, ty = _clusters(10, 3, 6, 1.0, seed=5)
    grid = [1e-4, 1e-2, 1.0, 1e5]
    r = linear_probe(x, y, vx, vy, tx, ty, grid=grid)
    acc = r["val_top1_per_l2"]
    best = max(acc)
    assert r["l2_index"] == max(i for i, a in enumerate(acc) if a == best)
    assert r["l2"] == grid[r["l2_index"]]
    # the clusters are easy: several values tie at 1.0 and the largest of them wins; at 1e5
    # the bias (log class frequencies) outweighs the tiny weights: always class 0, 1/3 right
    assert best == 1.0 and acc[-1] < 0.5 and r["l2"] == 1.0
    assert r["top1"] == 1.0 and r["mean_per_class"] == 1.0 and r["refit_converged"]


def test_probe_prefers_more_penalty_on_small_noisy_data():
    def data(n, noise, seed):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
        x = torch.randn(n, 40, generator=g)
        y = (x @ w).argmax(1)
        flip = torch.rand(n, generator=g) < noise
        return x, torch.where(flip, 1 - y, y)

    big = linear_probe(*data(2000, 0.0, 1), *data(500, 0.0, 2), *data(500, 0.0, 3), n_grid=12)
    small = linear_probe(*data(30, 0.3, 4), *data(500, 0.0, 5), *data(500, 0.0, 6), n_grid=12)
    assert small["l2"] > big["l2"]


def test_probe_without_val_is_deterministic():
    x, y = _clusters(20, 3, 6, 6.0, seed=7)
    tx, ty = _clusters(10, 3, 6, 6.0, seed=8)
    kw = dict(grid=[1e-3, 1e-1, 10.0], seed=3)
    a = linear_probe(x, y, None, None, tx, ty, **kw)
    b = linear_probe(x, y, None, None, tx, ty, **kw)
    assert a["n_val"] == 12 and a["n_train"] == 48
    assert a["val_top1_per_l2"] == b["val_top1_per_l2"] and a["top1"] == b["top1"]
    assert torch.equal(a["test_predictions"], b["test_predictions"])
    with pytest.raises(InputError):
        linear_probe(x, y, x, None, tx, ty)


# ---------------------------------------------------------------- few-shot


def test_confidence_interval_formula():
    mean, ci = confidence_interval95(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert mean == 0.5 and ci == pytest.approx(1.96 * 0.5 / 2)
    assert confidence_interval95(torch.tensor([0.7]))[1] == 0.0


def test_sample_tasks_shapes_and_seed():
    y = torch.arange(6).repeat_interleave(7)
    s, q = sample_tasks(y, n_way=3, k_shot=2, n_query=5, n_tasks=4, seed=1)
    assert s.shape == (4, 6) and q.shape == (4, 15)
    for t in range(4):
        sy, qy = y[s[t]].view(3, 2), y[q[t]].view(3, 5)
        assert (sy == sy[:, :1]).all() and (qy == sy[:, :1]).all()  # class-major
        assert len(set(sy[:, 0].tolist())) == 3
        assert len(set(s[t].tolist()) | set(q[t].tolist())) == 21  # no sample twice
    s2, _ = sample_tasks(y, n_way=3, k_shot=2, n_query=5, n_tasks=4, seed=1)
    assert torch.equal(s, s2)
    with pytest.raises(InputError):
        sample_tasks(y, n_way=3, k_shot=2, n_query=6, n_tasks=1)  # needs 8 per class


def test_few_shot_separated_clusters_are_solved():
    f, y = _clusters(20, 8, 16, 0.5, seed=9)
    r = few_shot_eval(f, y, n_way=5, k_shot=1, n_query=15, n_tasks=50, seed=0)
    assert r["mean"] == 1.0 and r["ci95"] == 0.0 and r["all_converged"]
    assert r["l2"] == pytest.approx(1 / 5)


def test_few_shot_random_features_give_chance_and_are_deterministic():
    g = torch.Generator().manual_seed(11)
    f = torch.randn(400, 16, generator=g)
    y = torch.arange(10).repeat_interleave(40)
    kw = dict(n_way=5, k_shot=5, n_query=15, n_tasks=200, seed=0)
    r = few_shot_eval(f, y, task_batch=64, **kw)
    assert abs(r["mean"] - 0.2) < 3 * r["ci95"] + 0.01
    assert r["ci95"] == pytest.approx(1.96 * r["accuracies"].std(unbiased=False) / math.sqrt(200))
    again = few_shot_eval(f, y, task_batch=64, **kw)
    assert torch.equal(r["accuracies"], again["accuracies"])
    other = few_shot_eval(f, y, task_batch=64, **{**kw, "seed": 1})
    assert not torch.equal(r["accuracies"], other["accuracies"])
    # the tasks do not depend on how they are batched for the solver
    rebatched = few_shot_eval(f, y, task_batch=200, preprocess="standardize", **kw)
    std = few_shot_eval(f, y, task_batch=64, preprocess="standardize", **kw)
    assert torch.allclose(rebatched["accuracies"], std["accuracies"])
