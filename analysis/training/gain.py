"""GAIN, Generative Adversarial Imputation Nets (Yoon, Jordon and van der Schaar, ICML 2018),
in numpy: small enough that neither training nor inference needs a deep-learning framework.

As in the paper and its reference code:

* values are min-max scaled to [0, 1] per feature (training minimum and maximum);
* the **generator** G takes the vector with missing entries replaced by uniform noise in
  [0, 0.01] and the mask M (1 = observed), and outputs a full vector (two ReLU layers of width
  d, sigmoid output); the imputation keeps observed values and takes G's for the others;
* the **discriminator** D takes the imputed vector and a hint H = B * M (B ~ Bernoulli(hint
  rate)), and outputs per feature the probability that it was observed;
* D minimises -mean(M log D + (1 - M) log(1 - D)); G minimises -mean((1 - M) log D) +
  alpha x (reconstruction MSE of the observed entries); both with Adam.

Training data may be complete: each mini-batch draws its own mask (missing completely at
random at ``miss_rate``), which is how GAIN is trained when no missingness is recorded.
Gradients are written out by hand (:class:`_Mlp`) and checked against finite differences by the
tests.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["Gain", "GainSettings"]

Array = npt.NDArray[np.float64]
_EPS = 1e-8


@dataclass(frozen=True)
class GainSettings:
    """Hyper-parameters (the paper's defaults for batch size, hint rate and alpha)."""

    batch_size: int = 64
    hint_rate: float = 0.9
    alpha: float = 100.0
    iterations: int = 3000
    learning_rate: float = 1e-3
    miss_rate: float = 0.2


def _relu(x: Array) -> Array:
    return np.maximum(x, 0.0)


def _sigmoid(x: Array) -> Array:
    out: Array = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


@dataclass
class _Mlp:
    """in -> ReLU(h) -> ReLU(h) -> sigmoid(out), Xavier-initialised, with Adam state."""

    weights: list[Array]
    biases: list[Array]
    _moments: list[tuple[Array, Array]] = field(default_factory=list)
    _step: int = 0

    @classmethod
    def create(cls, sizes: list[int], rng: np.random.Generator) -> _Mlp:
        weights = [
            rng.normal(0.0, np.sqrt(2.0 / (a + b)), (a, b)) for a, b in itertools.pairwise(sizes)
        ]
        biases = [np.zeros(b) for b in sizes[1:]]
        return cls(weights, biases)

    def forward(self, x: Array) -> tuple[Array, list[Array]]:
        """Output and the activations each layer saw (for :meth:`backward`)."""
        seen = [x]
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = h @ w + b
            h = _sigmoid(z) if i == len(self.weights) - 1 else _relu(z)
            seen.append(h)
        return h, seen

    def backward(self, seen: list[Array], grad_out: Array) -> tuple[list[Array], Array]:
        """Gradients of the weights then the biases (as :meth:`parameters` lists them) and of
        the input, given dLoss/dOutput; ``seen[i]`` is what layer *i* took as input."""
        layers = len(self.weights)
        weight_grads: list[Array] = [np.empty(0)] * layers
        bias_grads: list[Array] = [np.empty(0)] * layers
        out = seen[-1]
        delta = grad_out * out * (1.0 - out)  # through the sigmoid
        grad_in = delta
        for i in range(layers - 1, -1, -1):
            weight_grads[i] = seen[i].T @ delta
            bias_grads[i] = delta.sum(axis=0)
            grad_in = delta @ self.weights[i].T
            if i > 0:
                delta = grad_in * (seen[i] > 0)  # through the ReLU
        return [*weight_grads, *bias_grads], grad_in

    def parameters(self) -> list[Array]:
        return [*self.weights, *self.biases]

    def adam(self, grads: list[Array], lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
        params = self.parameters()
        if not self._moments:
            self._moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self._step += 1
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            m, v = self._moments[k]
            m[:] = b1 * m + (1 - b1) * g
            v[:] = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**self._step)
            v_hat = v / (1 - b2**self._step)
            p[...] = p - lr * m_hat / (np.sqrt(v_hat) + 1e-8)


@dataclass
class Gain:
    """A GAIN imputer: :meth:`fit` on training vectors, :meth:`transform` vectors with NaNs."""

    settings: GainSettings = field(default_factory=GainSettings)
    seed: int = 0
    low: Array | None = None
    span: Array | None = None
    generator: _Mlp | None = None
    losses: list[tuple[float, float]] = field(default_factory=list)

    def _scale(self, x: Array) -> Array:
        assert self.low is not None and self.span is not None
        return (x - self.low) / self.span

    def fit(self, data: Array) -> Gain:
        """Train on *data* (rows of vectors; NaN entries count as missing)."""
        s = self.settings
        rng = np.random.default_rng(self.seed)
        self.low = np.nanmin(data, axis=0)
        self.span = np.nanmax(data, axis=0) - self.low + _EPS
        scaled = np.nan_to_num(self._scale(data))
        observed = ~np.isnan(data)
        n, d = scaled.shape
        gen = _Mlp.create([2 * d, d, d, d], rng)
        disc = _Mlp.create([2 * d, d, d, d], rng)
        for _ in range(s.iterations):
            rows = rng.integers(0, n, size=min(s.batch_size, n))
            x = scaled[rows]
            m = (observed[rows] & (rng.uniform(size=x.shape) >= s.miss_rate)).astype(np.float64)
            z = rng.uniform(0.0, 0.01, size=x.shape)
            h = m * (rng.uniform(size=x.shape) < s.hint_rate)
            x_tilde = m * x + (1 - m) * z
            g_out, g_seen = gen.forward(np.hstack([x_tilde, m]))
            x_hat = m * x + (1 - m) * g_out
            # discriminator step
            d_out, d_seen = disc.forward(np.hstack([x_hat, h]))
            loss_d = -np.mean(m * np.log(d_out + _EPS) + (1 - m) * np.log(1 - d_out + _EPS))
            grad_d = -(m / (d_out + _EPS) - (1 - m) / (1 - d_out + _EPS)) / d_out.size
            d_grads, _ = disc.backward(d_seen, grad_d)
            disc.adam(d_grads, s.learning_rate)
            # generator step (through the updated discriminator)
            d_out, d_seen = disc.forward(np.hstack([x_hat, h]))
            observed_share = float(np.mean(m)) + _EPS
            loss_adv = -np.mean((1 - m) * np.log(d_out + _EPS))
            loss_rec = float(np.mean((m * x - m * g_out) ** 2)) / observed_share
            grad_dout = -(1 - m) / (d_out + _EPS) / d_out.size
            _, grad_input = disc.backward(d_seen, grad_dout)
            grad_xhat = grad_input[:, :d]
            grad_g = grad_xhat * (1 - m)
            grad_g += s.alpha * (-2.0 * m * (m * x - m * g_out)) / g_out.size / observed_share
            g_grads, _ = gen.backward(g_seen, grad_g)
            gen.adam(g_grads, s.learning_rate)
            self.losses.append((float(loss_d), float(loss_adv + s.alpha * loss_rec)))
        self.generator = gen
        return self

    def transform(self, data: Array, rng: np.random.Generator | None = None) -> Array:
        """*data* with its NaN entries imputed (observed entries unchanged)."""
        assert self.generator is not None and self.low is not None and self.span is not None
        rng = rng or np.random.default_rng(self.seed + 1)
        m = (~np.isnan(data)).astype(np.float64)
        x = np.nan_to_num(self._scale(data))
        z = rng.uniform(0.0, 0.01, size=x.shape)
        out, _ = self.generator.forward(np.hstack([m * x + (1 - m) * z, m]))
        imputed = m * x + (1 - m) * out
        result: Array = imputed * self.span + self.low
        return np.where(np.isnan(data), result, data)
