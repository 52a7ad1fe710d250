"""VMTL's ELBO terms (tf_mtvib.vmtl) against independent NumPy computations on fixed tensors."""
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tf_mtvib import vmtl  # noqa: E402

RNG = np.random.default_rng(7)


def _np_log_softmax(a, axis=-1):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


def _np_kl(mq, vq, mp, vp, jitter=1e-6):
    vq, vp = vq + jitter, vp + jitter
    return 0.5 * np.sum(np.log(vp / vq) - 1 + vq / vp + (mp - mq) ** 2 / vp, axis=-1)


def test_gumbel_softmax_weights_with_fixed_noise():
    pi = np.array([0.3, -1.0, 0.5], np.float32)
    g = np.array([0.1, 0.7, -0.2], np.float32)
    for tau in (1.0, 0.5):
        a = (_np_log_softmax(pi) + g) / tau
        expected = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        got = vmtl.gumbel_softmax_weights(pi, tau, noise=g).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert got.sum() == pytest.approx(1.0, abs=1e-6)
    # without fixed noise: weights on the simplex, and a lower temperature sharpens them on average
    draws = {tau: np.stack([vmtl.gumbel_softmax_weights(pi, tau, seed=None).numpy() for _ in range(200)])
             for tau in (1.0, 0.1)}
    for d in draws.values():
        np.testing.assert_allclose(d.sum(axis=1), 1.0, atol=1e-5)
    assert draws[0.1].max(axis=1).mean() > draws[1.0].max(axis=1).mean()


def test_weighted_sum_prior_and_its_closed_form_kl_for_w_and_z():
    alpha = np.array([0.2, 0.5, 0.3], np.float32)
    # w: the other tasks' classifier posteriors, (T-1, classes, d)
    mw, vw = RNG.normal(size=(3, 4, 6)).astype(np.float32), RNG.uniform(0.01, 0.5, (3, 4, 6)).astype(np.float32)
    mean, var = vmtl.weighted_sum_prior(alpha, mw, vw)
    np.testing.assert_allclose(mean.numpy(), np.einsum("i,icd->cd", alpha, mw), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), np.einsum("i,icd->cd", alpha ** 2, vw), rtol=1e-5)
    mq, vq = RNG.normal(size=(4, 6)).astype(np.float32), RNG.uniform(0.01, 0.5, (4, 6)).astype(np.float32)
    kl_w = vmtl.kl_diag_gaussian(mq, vq, mean, var).numpy()      # one KL per classifier row
    np.testing.assert_allclose(kl_w, _np_kl(mq, vq, np.einsum("i,icd->cd", alpha, mw),
                                            np.einsum("i,icd->cd", alpha ** 2, vw)), rtol=1e-4)
    # z: per example, the other tasks' encoder outputs on the cross-attended inputs, (T-1, B, d)
    mz, vz = RNG.normal(size=(3, 5, 6)).astype(np.float32), RNG.uniform(0.01, 0.5, (3, 5, 6)).astype(np.float32)
    qm, qv = RNG.normal(size=(5, 6)).astype(np.float32), RNG.uniform(0.01, 0.5, (5, 6)).astype(np.float32)
    pm, pv = vmtl.weighted_sum_prior(alpha, mz, vz)
    np.testing.assert_allclose(vmtl.kl_diag_gaussian(qm, qv, pm, pv).numpy(),
                               _np_kl(qm, qv, np.einsum("i,ibd->bd", alpha, mz), np.einsum("i,ibd->bd", alpha ** 2, vz)),
                               rtol=1e-4)
    # KL(q || q) = 0 and KL > 0 otherwise
    assert np.allclose(vmtl.kl_diag_gaussian(qm, qv, qm, qv).numpy(), 0.0, atol=1e-5)
    assert (kl_w > 0).all()


def test_kl_to_the_mixture_density_by_monte_carlo_with_fixed_noise():
    alpha = np.array([0.6, 0.4], np.float32)
    mp = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    vp = RNG.uniform(0.2, 1.0, (2, 3, 4)).astype(np.float32)
    mq = RNG.normal(size=(3, 4)).astype(np.float32)
    vq = RNG.uniform(0.2, 1.0, (3, 4)).astype(np.float32)
    noise = RNG.normal(size=(50, 3, 4)).astype(np.float32)
    got = vmtl.kl_to_mixture(mq, vq, alpha, mp, vp, noise).numpy()
    j = 1e-6
    z = mq + np.sqrt(vq + j) * noise                                          # (S, B, d)

    def log_n(x, m, v):
        return np.sum(-0.5 * (np.log(2 * np.pi * v) + (x - m) ** 2 / v), axis=-1)

    expected = np.zeros(3)
    for s in range(50):
        log_q = log_n(z[s], mq, vq + j)
        p = sum(alpha[i] * np.exp(log_n(z[s], mp[i], vp[i] + j)) for i in range(2))
        expected += (log_q - np.log(p)) / 50
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # one component with weight 1: the estimate converges on the closed form
    many = RNG.normal(size=(20000, 3, 4)).astype(np.float32)
    one = vmtl.kl_to_mixture(mq, vq, np.array([1.0], np.float32), mp[:1], vp[:1], many).numpy()
    np.testing.assert_allclose(one, _np_kl(mq, vq, mp[0], vp[0]), rtol=0.05, atol=0.05)


def test_kl_to_the_mixture_with_weights_per_row_and_zero_weights():
    mp = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    vp = RNG.uniform(0.2, 1.0, (3, 4, 5)).astype(np.float32)
    mq = RNG.normal(size=(4, 5)).astype(np.float32)
    vq = RNG.uniform(0.2, 1.0, (4, 5)).astype(np.float32)
    noise = RNG.normal(size=(30, 4, 5)).astype(np.float32)
    rows = np.array([[0.0, 0.7, 0.3], [0.5, 0.0, 0.5], [0.2, 0.8, 0.0], [0.0, 1.0, 0.0]], np.float32)  # (B, C)
    got = vmtl.kl_to_mixture(mq, vq, rows.T, mp, vp, noise).numpy()                   # weights (C, B)
    for b in range(4):
        keep = np.flatnonzero(rows[b])          # a zero weight drops its component out
        alone = vmtl.kl_to_mixture(mq[b], vq[b], rows[b, keep], mp[keep, b], vp[keep, b], noise[:, b]).numpy()
        np.testing.assert_allclose(got[b], alone, rtol=1e-5, atol=1e-5)


def test_temperature_annealing_follows_the_code_rule():
    def np_schedule(iters, tasks, per_task_step=True):
        tau, counter, it = 1.0, 1, 1
        for _ in range(iters * tasks):         # the code's counters: one task step at a time
            counter += 1
            if counter % tasks == 0:
                it += 1
            if it % 1000 == 0:
                tau = max(tau * math.exp(-3e-5 * it), 0.5)
        return tau
    # the code's counters start at 1, so a milestone's decays land in the iteration before it; between
    # milestones the two agree exactly
    for iters in (500, 1500, 2500, 3500, 15000):
        for tasks in (2, 4):
            assert float(vmtl.annealed_temperature(iters, tasks)) == pytest.approx(np_schedule(iters, tasks), rel=1e-12)
    tau = lambda *a, **k: float(vmtl.annealed_temperature(*a, **k))
    assert tau(999, 4) == 1.0
    assert tau(1000, 4) == pytest.approx(math.exp(-4 * 0.03))
    assert tau(2000, 4) == pytest.approx(math.exp(-4 * 0.03 - 4 * 0.06))
    assert tau(3000, 4) == 0.5 and tau(15000, 4) == 0.5
    assert tau(2000, 4, per_task_step=False) == pytest.approx(math.exp(-0.03 - 0.06))
    # an integer tensor (the layer's counter) gives the same values
    assert float(vmtl.annealed_temperature(tf.constant(2000, tf.int64), 4)) == tau(2000, 4)


def test_kl_weights_of_the_code_and_of_the_elbo():
    eta, beta = vmtl.code_kl_weights(0, 4)
    assert eta == 1e-7 and float(beta) == 0.0
    assert float(vmtl.code_kl_weights(15000, 4)[1]) == pytest.approx(6e-3)
    assert float(vmtl.code_kl_weights(19, 4)[1]) == pytest.approx(4e-6)
    assert float(vmtl.code_kl_weights(tf.constant(19, tf.int64), 4)[1]) == pytest.approx(4e-6)
    assert vmtl.kl_weights("code", 19, 4, 50)[0] == 1e-7
    assert float(vmtl.kl_weights("elbo", 19, 4, 50)[1]) == 0.02
    with pytest.raises(ValueError, match="kl weights"):
        vmtl.kl_weights("paper", 0, 4, 50)
    assert vmtl.elbo_kl_weights(50) == (1.0, 0.02)
    with pytest.raises(ValueError, match="at least one"):
        vmtl.elbo_kl_weights(0)


def test_sampled_likelihood_against_numpy():
    L, B, d, C = 4, 3, 5, 6
    labels = np.array([0, 5, 2])
    zm, zv = RNG.normal(size=(B, d)).astype(np.float32), RNG.uniform(0.01, 0.3, (B, d)).astype(np.float32)
    wm, wv = RNG.normal(size=(C, d)).astype(np.float32), RNG.uniform(0.01, 0.3, (C, d)).astype(np.float32)
    ez = RNG.normal(size=(L, B, d)).astype(np.float32)
    el = RNG.normal(size=(L, B, C)).astype(np.float32)
    got = vmtl.sampled_log_likelihood(labels, zm, zv, wm, wv, ez, el).numpy()
    z = zm + np.sqrt(zv) * ez
    logits = z @ wm.T + np.sqrt((z ** 2) @ wv.T) * el
    expected = _np_log_softmax(logits)[:, np.arange(B), labels].mean(axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # the local reparameterisation has the moments of one weight draw per row: E = z mu^T, Var = z^2 sigma^2^T
    many = RNG.normal(size=(40000, 1, C)).astype(np.float32)
    draws = vmtl.local_reparameterised_logits(np.repeat(z[:1, :1], 40000, 0), wm, wv, many).numpy()[:, 0]
    w = wm[None] + np.sqrt(wv)[None] * RNG.normal(size=(40000, C, d))
    direct = np.einsum("ncd,d->nc", w, z[0, 0])
    np.testing.assert_allclose(draws.mean(0), direct.mean(0), atol=0.05)
    np.testing.assert_allclose(draws.std(0), direct.std(0), rtol=0.05)


def test_bayes_linear_moments_and_entropy_ratio():
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    wm, wv = RNG.normal(size=(4, 2)).astype(np.float32), RNG.uniform(0.01, 0.1, (4, 2)).astype(np.float32)
    bm, bv = RNG.normal(size=(2,)).astype(np.float32), RNG.uniform(0.01, 0.1, (2,)).astype(np.float32)
    m, v = vmtl.bayes_linear_moments(x, wm, wv, bm, bv)
    np.testing.assert_allclose(m.numpy(), x @ wm + bm, rtol=1e-5)
    np.testing.assert_allclose(v.numpy(), (x ** 2) @ wv + bv, rtol=1e-5)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.99, 0.01]], np.float32)
    labels = np.array([0, 1, 0, 0])                  # wrong: row 1; right: rows 0, 2, 3 (a tie goes to class 0)
    h = -np.sum(probs * np.log(probs), axis=1)
    assert vmtl.entropy_ratio(probs, labels) == pytest.approx(h[1] / h[[0, 2, 3]].mean(), rel=1e-5)
    assert math.isnan(vmtl.entropy_ratio(probs, np.array([0, 0, 0, 0])))
    np.testing.assert_allclose(vmtl.predictive_entropy(np.array([[1.0, 0.0]])).numpy(), [0.0])
