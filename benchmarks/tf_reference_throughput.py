"""Throughput of the original TensorFlow formulation of NeXtVLAD, as a same-machine anchor.

    ~/tfenv/bin/python benchmarks/tf_reference_throughput.py --batch-size 80 --json
    ~/tfenv/bin/python benchmarks/tf_reference_throughput.py --quick
    ~/tfenv/bin/python benchmarks/tf_reference_throughput.py --frames yt8m --json
    ~/tfenv/bin/python benchmarks/tf_reference_throughput.py --check-fixture \
        ../shared/fixtures/tf_reference/nextvlad_single_infer.npz

Setup: TensorFlow goes into a separate virtual environment, so that the Python that has torch
and ``nextvlad`` stays untouched (this script imports neither)::

    python -m venv ~/tfenv && ~/tfenv/bin/pip install tensorflow-cpu==2.21.0 numpy

What it builds: ``NeXtVLADModel`` + ``LogisticModel`` of linrongc/youtube-8m, re-written here
in TF 2 ops (graph mode through ``tf.function``, as the original's TF1 graph; ``--xla`` adds
``jit_compile=True``), computing what ``../shared/README.md`` ("What the reference code really
computes") records, with the original's variable names (``tower/video_VLAD/cluster_weights``,
...):

- input: ``q * 4/255 + (4/512 - 2)`` on the uint8 frames, frames at index >= num_frames set to
  0.0 after dequantisation, reverse whitening ``(x - 4/512) * (sqrt(e) + 1e-4)`` on the 1024
  rgb dimensions (Google's ``eigenvals.npy`` when found, else random positive eigenvalues);
  every video padded to ``--max-frames`` (300, like the original's reader);
- per stream (rgb: N 1024, G, K; audio: N 128, G/2, K/2): expansion FC (bias) to λN; group
  attention FC + sigmoid, multiplied by the frame mask (the only place the mask enters);
  assignment ``reshape(ẋ, [B*M, λN]) @ cluster_weights`` + ``cluster_bn`` (statistics over
  all B*M rows, padding included) + softmax over K, times the attention; anchors
  ``cluster_weights2`` [1, λN/G, K]; residual sums by a batched matmul over the M*G
  (frame, group) rows; intra-normalisation (``tf.nn.l2_normalize`` over λN/G, eps 1e-12);
  flattened [B, λN/G, K] -> f*K + k; ``vlad_bn``;
- concatenation, dropout (rate 0.5 for this configuration: Table 1's "0.5drop", also the
  original's ``drop_rate`` flag default), ``hidden1_weights`` (no bias) + ``hidden1_bn`` (no
  activation), SE context gating (``gating_weights_1``, ``gating_bn`` + ReLU,
  ``gating_weights_2``, sigmoid, product), logistic classifier ``fully_connected``;
- batch norm: epsilon 1e-3, moving averages with decay 0.999, centre and scale; training
  normalises with the biased batch variance, and the moving variance is updated with the
  biased one except in ``gating_bn`` (fused there in the original: unbiased);
- loss: cross-entropy on the sigmoid probabilities with 1e-8 inside the logs, summed over
  classes, averaged over the batch, plus 1e-5 * sum(w^2)/2 on the classifier's weights and
  biases; each gradient clipped to norm 1.0 separately; Adam (lr 2e-4, staircase x0.8 every
  2M examples, beta 0.9/0.999, epsilon 1e-8) through the same ``ResourceApplyAdam`` kernel as
  TF1's ``AdamOptimizer``; the batch-norm moving averages are updated in every step.

Initial values follow the original's initialisers in kind (variance scaling for the model's
weights, Glorot uniform for the classifier, zero biases); they do not matter for speed.

Measurement mirrors ``benchmarks/train_throughput.py``: for each mode (``train``: transform,
forward, loss, backward, per-tensor clipping, Adam, moving averages; ``infer``: transform and
forward with the moving statistics) a fresh process traces the step (untimed), runs
``--warmup`` steps, then times ``--steps`` steps; it reports examples/s (batch / median step
time), the peak RSS of that process, the FLOPs per example of the matmuls in the traced graph
(``MatMul``/``BatchMatMul`` ops, forward and backward, 2 per multiply-add, like
``torch.utils.flop_counter``) and the utilisation against a 4096 x 4096 fp32 matmul peak
measured by TF in the same run. The frames are random uint8 held in a ``tf.Variable`` (no
Python feed per step); their counts (``--frames``: ``N``, ``LOW-HIGH`` or ``yt8m``, i.e.
``min(U(120, 500), 300)``) come from ``benchmarks/_frames.py``, as ``train_throughput.py``'s
do, so both measure the same lengths for the same batch size. Speeds are ratios to be compared
within one machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import _frames

RGB_DIM, AUDIO_DIM = 1024, 128
FEATURE_DIM = RGB_DIM + AUDIO_DIM
BN_EPSILON, BN_DECAY = 1e-3, 0.999
CE_EPSILON = 1e-8
LEARNING_RATE, LR_DECAY, LR_DECAY_EXAMPLES = 2e-4, 0.8, 2_000_000
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8
CLIP_NORM = 1.0
# Trainable parameters of the PyTorch model for the paper configuration
# (`nextvlad params --preset nextvlad-8g-128k-2048h --json`).
PYTORCH_PARAMS = {"nextvlad-8g-128k-2048h": 88_889_378}
DEFAULT_EIGENVALUES = Path(__file__).resolve().parents[2] / "shared/data/yt8m_pca/eigenvals.npy"


@dataclasses.dataclass(frozen=True)
class Config:
    """The original's flags for NeXtVLADModel + LogisticModel (audio: half K and G)."""

    groups: int = 8
    clusters: int = 128
    expansion: int = 2
    hidden: int = 2048
    gating_reduction: int = 8
    vocab: int = 3862
    drop_rate: float = 0.5
    l2_penalty: float = 1e-5
    audio_clusters: int | None = None  # None: clusters // 2, as the original
    audio_groups: int | None = None  # None: groups // 2

    def streams(self) -> list[tuple[str, int, int, int, int]]:
        """(scope, feature size, clusters, groups, expansion) of each stream."""
        return [
            ("video_VLAD", RGB_DIM, self.clusters, self.groups, self.expansion),
            (
                "audio_VLAD",
                AUDIO_DIM,
                self.audio_clusters or self.clusters // 2,
                self.audio_groups or self.groups // 2,
                self.expansion,
            ),
        ]


PRESETS = {
    # Table 1: NeXtVLAD (8G, 0.5drop, 128K, 2048H), r = 8.
    "nextvlad-8g-128k-2048h": Config(),
    # The configuration of ../shared/fixtures/tf_reference/nextvlad_single_infer.npz.
    "fixture-tiny": Config(clusters=16, hidden=64, vocab=40),
}


class NeXtVLADReference:
    """The original model's variables (by TF name) and its forward computation."""

    def __init__(self, config: Config, seed: int = 0) -> None:
        self.config = config
        self.variables: dict[str, tf.Variable] = {}
        self.trainable: list[str] = []
        gen = tf.random.Generator.from_seed(seed)

        def weight(name: str, shape: tuple[int, ...], fan_in: int, glorot: bool = False) -> None:
            if glorot:
                limit = math.sqrt(6.0 / (shape[0] + shape[1]))
                value = gen.uniform(shape, -limit, limit)
            else:  # slim.variance_scaling_initializer: factor 2, fan in, truncated normal
                value = gen.truncated_normal(shape, stddev=math.sqrt(1.3 * 2.0 / fan_in))
            self._add(name, value, trainable=True)

        def bias(name: str, n: int) -> None:
            self._add(name, tf.zeros([n]), trainable=True)

        def batch_norm(scope: str, n: int) -> None:
            self._add(f"{scope}/beta", tf.zeros([n]), trainable=True)
            self._add(f"{scope}/gamma", tf.ones([n]), trainable=True)
            self._add(f"{scope}/moving_mean", tf.zeros([n]), trainable=False)
            self._add(f"{scope}/moving_variance", tf.ones([n]), trainable=False)

        pooled = 0
        for scope, n, k, g, lam in config.streams():
            if (lam * n) % g:
                raise SystemExit(f"{scope}: expansion * {n} is not divisible by {g} groups")
            s = f"tower/{scope}"
            weight(f"{s}/fully_connected/weights", (n, lam * n), n)
            bias(f"{s}/fully_connected/biases", lam * n)
            weight(f"{s}/fully_connected_1/weights", (lam * n, g), lam * n)
            bias(f"{s}/fully_connected_1/biases", g)
            weight(f"{s}/cluster_weights", (lam * n, g * k), lam * n)
            batch_norm(f"{s}/cluster_bn", g * k)
            weight(f"{s}/cluster_weights2", (1, lam * n // g, k), lam * n // g)
            batch_norm(f"{s}/vlad_bn", lam * n // g * k)
            pooled += lam * n // g * k
        h, r = config.hidden, config.gating_reduction
        weight("tower/hidden1_weights", (pooled, h), pooled)
        batch_norm("tower/hidden1_bn", h)
        weight("tower/gating_weights_1", (h, h // r), h)
        batch_norm("tower/gating_bn", h // r)
        weight("tower/gating_weights_2", (h // r, h), h // r)
        weight("tower/fully_connected/weights", (h, config.vocab), h, glorot=True)
        bias("tower/fully_connected/biases", config.vocab)

    def _add(self, name: str, value: tf.Tensor, trainable: bool) -> None:
        self.variables[name] = tf.Variable(value, trainable=trainable, name=name.replace("/", "."))
        if trainable:
            self.trainable.append(name)

    def num_trainable(self) -> int:
        return sum(int(np.prod(self.variables[n].shape)) for n in self.trainable)

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Assign every variable from arrays keyed by TF name; the name sets must match."""
        missing = sorted(set(self.variables) - set(arrays))
        if missing:
            raise SystemExit(f"variables missing from the arrays: {missing}")
        for name, var in self.variables.items():
            value = np.asarray(arrays[name], dtype=np.float32)
            if tuple(value.shape) != tuple(var.shape):
                raise SystemExit(f"{name}: shape {value.shape}, model has {tuple(var.shape)}")
            var.assign(value)

    # -- layers ------------------------------------------------------------------------------

    def _batch_norm(
        self, x: tf.Tensor, scope: str, training: bool, unbiased_update: bool = False
    ) -> tf.Tensor:
        v = self.variables
        gamma, beta = v[f"{scope}/gamma"], v[f"{scope}/beta"]
        moving_mean, moving_var = v[f"{scope}/moving_mean"], v[f"{scope}/moving_variance"]
        if not training:
            return tf.nn.batch_normalization(x, moving_mean, moving_var, beta, gamma, BN_EPSILON)
        mean, var = tf.nn.moments(x, axes=[0])
        update_var = var
        if unbiased_update:
            n = tf.cast(tf.shape(x)[0], tf.float32)
            update_var = var * n / (n - 1.0)
        moving_mean.assign_sub((moving_mean - mean) * (1.0 - BN_DECAY))
        moving_var.assign_sub((moving_var - update_var) * (1.0 - BN_DECAY))
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)

    def _nextvlad(
        self,
        x: tf.Tensor,
        mask: tf.Tensor,
        scope: str,
        n: int,
        k: int,
        g: int,
        lam: int,
        training: bool,
    ) -> tf.Tensor:
        """x: [B, M, N], mask: [B, M] -> [B, (λN/G) * K]."""
        v = {
            name.split("/", 2)[2]: var
            for name, var in self.variables.items()
            if name.startswith(f"tower/{scope}/")
        }
        m = x.shape[1]
        f = lam * n // g
        # Expansion FC: [B*M, N] -> [B*M, λN] (slim's dense on a 3-D input is this matmul).
        x2 = tf.reshape(x, [-1, n])
        xe = tf.matmul(x2, v["fully_connected/weights"]) + v["fully_connected/biases"]
        # Group attention (Eq. 7), masked (Eq. 18-19): [B, M*G, 1].
        attention = tf.sigmoid(
            tf.matmul(xe, v["fully_connected_1/weights"]) + v["fully_connected_1/biases"]
        )
        attention = tf.reshape(attention, [-1, m, g]) * tf.expand_dims(mask, -1)
        attention = tf.reshape(attention, [-1, m * g, 1])
        # Soft assignment (Eq. 6): [B*M, G*K] -> BN -> [B, M*G, K] -> softmax over K.
        assignment = tf.matmul(xe, v["cluster_weights"])
        assignment = self._batch_norm(assignment, f"tower/{scope}/cluster_bn", training)
        assignment = tf.nn.softmax(tf.reshape(assignment, [-1, m * g, k]), axis=-1)
        assignment = assignment * attention
        # Residuals (Eq. 8): sum_i a_igk x̃_i^g - (sum_i a_igk) c_k.
        a = tf.reduce_sum(assignment, axis=-2, keepdims=True) * v["cluster_weights2"]  # [B,F,K]
        assignment = tf.transpose(assignment, perm=[0, 2, 1])  # [B, K, M*G]
        grouped = tf.reshape(xe, [-1, m * g, f])  # [B, M*G, F]
        vlad = tf.transpose(tf.matmul(assignment, grouped), perm=[0, 2, 1]) - a  # [B, F, K]
        vlad = tf.nn.l2_normalize(vlad, axis=1, epsilon=1e-12)  # intra-normalisation
        vlad = tf.reshape(vlad, [-1, f * k])  # index f*K + k
        return self._batch_norm(vlad, f"tower/{scope}/vlad_bn", training)

    def logits(self, model_input: tf.Tensor, num_frames: tf.Tensor, training: bool) -> tf.Tensor:
        """model_input: [B, M, 1152] (dequantised, reverse-whitened), num_frames: [B]."""
        cfg, v = self.config, self.variables
        m = model_input.shape[1]
        mask = tf.sequence_mask(num_frames, m, dtype=tf.float32)  # length fixed at M
        pooled = []
        start = 0
        for scope, n, k, g, lam in cfg.streams():
            x = model_input[:, :, start : start + n]
            start += n
            pooled.append(self._nextvlad(x, mask, scope, n, k, g, lam, training))
        h = tf.concat(pooled, axis=1)
        if training and cfg.drop_rate > 0:
            h = tf.nn.dropout(h, rate=cfg.drop_rate)
        h = tf.matmul(h, v["tower/hidden1_weights"])
        h = self._batch_norm(h, "tower/hidden1_bn", training)
        gates = tf.matmul(h, v["tower/gating_weights_1"])
        gates = tf.nn.relu(self._batch_norm(gates, "tower/gating_bn", training, True))
        gates = tf.sigmoid(tf.matmul(gates, v["tower/gating_weights_2"]))
        h = h * gates
        return tf.matmul(h, v["tower/fully_connected/weights"]) + v["tower/fully_connected/biases"]

    def loss(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The reference's tower loss: CE on probabilities + the classifier's L2."""
        p = tf.sigmoid(logits)
        ce = -(
            labels * tf.math.log(p + CE_EPSILON)
            + (1.0 - labels) * tf.math.log(1.0 - p + CE_EPSILON)
        )
        label_loss = tf.reduce_mean(tf.reduce_sum(ce, axis=1))
        v = self.variables
        l2 = self.config.l2_penalty * (
            tf.nn.l2_loss(v["tower/fully_connected/weights"])
            + tf.nn.l2_loss(v["tower/fully_connected/biases"])
        )
        return label_loss + l2


def whitening_constants(eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """offset, scale (1152,) of the reverse whitening: x = (deq - offset) * scale."""
    e = np.asarray(eigenvalues, dtype=np.float32).reshape(-1)[:RGB_DIM]
    offset = np.concatenate([np.full(RGB_DIM, 4.0 / 512.0), np.zeros(AUDIO_DIM)])
    scale = np.concatenate([np.sqrt(e) + np.float32(1e-4), np.ones(AUDIO_DIM, np.float32)])
    return offset.astype(np.float32), scale.astype(np.float32)


def load_eigenvalues(path: str | None, seed: int = 0) -> tuple[np.ndarray, str]:
    candidate = Path(path) if path else DEFAULT_EIGENVALUES
    if candidate.exists():
        return np.load(candidate).astype(np.float32).reshape(-1)[:RGB_DIM], str(candidate)
    if path:
        raise SystemExit(f"eigenvalue file not found: {path}")
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 1.0, RGB_DIM).astype(np.float32), "random U(0.01, 1)"


def transform(
    quantized: tf.Tensor, num_frames: tf.Tensor, offset: tf.Tensor, scale: tf.Tensor
) -> tf.Tensor:
    """uint8 [B, M, 1152] -> model input: dequantise, zero the padding, reverse whitening."""
    deq = tf.cast(quantized, tf.float32) * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)
    real = tf.sequence_mask(num_frames, quantized.shape[1])[:, :, None]
    deq = tf.where(real, deq, tf.zeros_like(deq))
    return (deq - offset) * scale


class Adam:
    """TF1's AdamOptimizer: slots m, v and beta powers, applied with ResourceApplyAdam."""

    def __init__(self, variables: list[tf.Variable]) -> None:
        self.slots = [
            (
                tf.Variable(tf.zeros_like(v), trainable=False),
                tf.Variable(tf.zeros_like(v), trainable=False),
            )
            for v in variables
        ]
        self.beta1_power = tf.Variable(ADAM_BETA1, dtype=tf.float32, trainable=False)
        self.beta2_power = tf.Variable(ADAM_BETA2, dtype=tf.float32, trainable=False)

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable], lr: tf.Tensor) -> None:
        b1p, b2p = self.beta1_power.read_value(), self.beta2_power.read_value()
        for grad, var, (m, v) in zip(grads, variables, self.slots, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1p,
                beta2_power=b2p,
                lr=lr,
                beta1=ADAM_BETA1,
                beta2=ADAM_BETA2,
                epsilon=ADAM_EPSILON,
                grad=grad,
            )
        self.beta1_power.assign(b1p * ADAM_BETA1)
        self.beta2_power.assign(b2p * ADAM_BETA2)


def step_functions(
    model: NeXtVLADReference, eigenvalues: np.ndarray, batch_size: int
) -> tuple[Any, Any]:
    """(train, infer): the steps as Python functions of the batch, for a tf.function to trace:
    ``train(quantized, num_frames, labels)`` -> loss, ``infer(quantized, num_frames)`` ->
    probabilities (the optimizer's slots and the step counter are made here, once)."""
    offset, scale = (tf.constant(c) for c in whitening_constants(eigenvalues))
    trainable = [model.variables[n] for n in model.trainable]
    optimizer = Adam(trainable)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False)

    def train(quantized: tf.Tensor, num_frames: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        examples = tf.cast(global_step * batch_size, tf.float32)
        lr = LEARNING_RATE * tf.pow(LR_DECAY, tf.floor(examples / LR_DECAY_EXAMPLES))
        with tf.GradientTape() as tape:
            logits = model.logits(transform(quantized, num_frames, offset, scale), num_frames, True)
            loss = model.loss(logits, labels)
        grads = tape.gradient(loss, trainable)
        grads = [tf.clip_by_norm(g, CLIP_NORM) for g in grads]  # each tensor separately
        optimizer.apply(grads, trainable, lr)
        global_step.assign_add(1)
        return loss

    def infer(quantized: tf.Tensor, num_frames: tf.Tensor) -> tf.Tensor:
        x = transform(quantized, num_frames, offset, scale)
        return tf.sigmoid(model.logits(x, num_frames, False))

    return train, infer


def make_steps(
    model: NeXtVLADReference,
    quantized: tf.Variable,
    num_frames: tf.Variable,
    labels: tf.Variable,
    eigenvalues: np.ndarray,
    batch_size: int,
    xla: bool,
) -> tuple[Any, Any]:
    """(train_step, infer_step): tf.functions without arguments over the data variables."""
    train, infer = step_functions(model, eigenvalues, batch_size)

    @tf.function(jit_compile=xla)
    def train_step() -> tf.Tensor:
        return train(quantized, num_frames, labels)

    @tf.function(jit_compile=xla)
    def infer_step() -> tf.Tensor:
        return infer(quantized, num_frames)

    return train_step, infer_step


def graph_matmul_flops(function: Any) -> int:
    """2 * multiply-adds of the MatMul / BatchMatMul ops in a traced tf.function's graph."""
    total = 0
    for op in function.get_concrete_function().graph.get_operations():
        if op.type == "MatMul":
            a = op.inputs[0].shape.as_list()
            k = a[0] if op.get_attr("transpose_a") else a[1]
            out = op.outputs[0].shape.as_list()
            total += 2 * out[0] * out[1] * k
        elif op.type in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
            a = op.inputs[0].shape.as_list()
            k = a[-2] if op.get_attr("adj_x") else a[-1]
            total += 2 * int(np.prod(op.outputs[0].shape.as_list())) * k
    return total


def _cpu() -> dict[str, Any]:
    """CPU model and whether it has AVX-512 (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), ""
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return {"cpu_model": model, "avx512f": "avx512f" in flags}


def configure_threads(args: argparse.Namespace) -> None:
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)


def _config(args: argparse.Namespace) -> Config:
    return dataclasses.replace(PRESETS[args.preset], **json.loads(args.overrides))


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [B, --max-frames, 1152] and their counts [B] (``benchmarks/_frames.py``:
    the counts ``train_throughput.py`` uses for the same --frames and batch size)."""
    num_frames = _frames.num_frames(args.frames, args.batch_size).astype(np.int32)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (args.batch_size, args.max_frames, FEATURE_DIM), dtype=np.uint8)
    return frames, num_frames


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    config = _config(args)
    model = NeXtVLADReference(config, seed=0)
    eigenvalues, _ = load_eigenvalues(args.eigenvalues)
    frames, num_frames = _data(args)
    rng = np.random.default_rng(2)
    labels = (rng.random((args.batch_size, config.vocab)) < 0.001).astype(np.float32)
    quantized_var = tf.Variable(frames, trainable=False)
    num_frames_var = tf.Variable(num_frames, trainable=False)
    labels_var = tf.Variable(labels, trainable=False)
    train_step, infer_step = make_steps(
        model, quantized_var, num_frames_var, labels_var, eigenvalues, args.batch_size, args.xla
    )
    step = train_step if args.mode == "train" else infer_step
    start = time.perf_counter()
    step().numpy()  # trace (and compile with --xla); untimed
    first_call = time.perf_counter() - start
    flops = graph_matmul_flops(step)
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step().numpy()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "examples_per_s": args.batch_size / median,
        "median_step_s": median,
        "step_times_s": [round(t, 4) for t in times],
        "first_call_s": round(first_call, 3),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gflop_per_example": flops / args.batch_size / 1e9,
        "mean_frames": float(num_frames.mean()),
        "padded_frames": int(frames.shape[1]),
    }


def _matmul_peak() -> float:
    a = tf.random.normal([4096, 4096])
    b = tf.random.normal([4096, 4096])
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * 4096**3 / min(times) / 1e9


def check_fixture(args: argparse.Namespace) -> dict[str, Any]:
    """Load a parity fixture's variables and compare the inference-mode logits."""
    data = np.load(args.check_fixture)
    ref = json.loads(str(data["config"]))
    audio = ref.get("audio_nextvlad", {})
    config = Config(
        groups=ref["groups"],
        clusters=ref["nextvlad_cluster_size"],
        expansion=ref["expansion"],
        hidden=ref["nextvlad_hidden_size"],
        gating_reduction=ref["gating_reduction"],
        vocab=ref["vocab_size"],
        drop_rate=ref["drop_rate"],
        l2_penalty=ref.get("l2_penalty", 1e-5),
        audio_clusters=audio.get("cluster_size"),
        audio_groups=audio.get("groups"),
    )
    model = NeXtVLADReference(config)
    model.load({k: data[k] for k in data.files if k.startswith("tower/")})
    quantized = tf.constant(data["quantized"])
    num_frames = tf.constant(data["num_frames"].astype(np.int32))
    result: dict[str, Any] = {
        "fixture": str(args.check_fixture),
        "config": dataclasses.asdict(config),
        "trainable_params": model.num_trainable(),
        "xla": args.xla,
    }

    @tf.function(jit_compile=args.xla)
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model.logits(x, num_frames, False)

    eigenvalues, source = load_eigenvalues(args.eigenvalues)
    if source.startswith("random"):
        # No eigenvalue file: the model input comes from the fixture.
        model_input = tf.constant(data["model_input"])
        result["eigenvalues"] = "not found: used the fixture's model_input"
    else:
        offset, scale = whitening_constants(eigenvalues)
        model_input = transform(quantized, num_frames, tf.constant(offset), tf.constant(scale))
        result["eigenvalues"] = source
        result["model_input_max_abs_diff"] = float(
            np.abs(model_input.numpy() - data["model_input"]).max()
        )
    logits = forward(model_input).numpy()
    diff = float(np.abs(logits - data["logits"]).max())
    result["logits_max_abs_diff"] = diff
    result["logits_max_abs"] = float(np.abs(data["logits"]).max())
    result["predictions_max_abs_diff"] = float(
        np.abs(tf.sigmoid(logits).numpy() - data["predictions"]).max()
    )
    result["tolerance"] = args.tolerance
    result["ok"] = diff <= args.tolerance
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="nextvlad-8g-128k-2048h", choices=sorted(PRESETS))
    parser.add_argument(
        "--set",
        dest="overrides",
        default="{}",
        help="JSON of Config overrides, e.g. '{\"clusters\": 16}'",
    )
    parser.add_argument("--batch-size", type=int, default=80)
    parser.add_argument(
        "--frames",
        help=f"frames a video: {_frames.DISTRIBUTIONS} (benchmarks/_frames.py; default 300, "
        "20-40 with --quick)",
    )
    parser.add_argument(
        "--max-frames", type=int, default=300, help="padded length (the original pads to 300)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", default="train,infer", help="comma-separated")
    parser.add_argument("--xla", action="store_true", help="tf.function(jit_compile=True)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument(
        "--inter-op-threads", type=int, default=0, help="inter-op threads (0: TF default)"
    )
    parser.add_argument(
        "--eigenvalues",
        help=f"eigenvals.npy (default: {DEFAULT_EIGENVALUES} if present, else random)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 step (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--check-fixture",
        metavar="PATH",
        help="compare inference logits with a tf_reference fixture (nextvlad_single_infer.npz)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-5, help="for --check-fixture")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # internal: measure in this process
    args = parser.parse_args(argv)
    configure_threads(args)
    if args.check_fixture:
        result = check_fixture(args)
        print(json.dumps(result, indent=None if args.json else 2))
        return 0 if result["ok"] else 1
    if args.quick:  # padded to the most frames --frames can have, as the default's 300
        args.preset, args.batch_size, args.steps, args.warmup = "fixture-tiny", 4, 1, 0
        args.frames = args.frames or "20-40"
        args.max_frames = _frames.bounds(args.frames)[1]
    args.frames = args.frames or "300"
    try:
        most = _frames.bounds(args.frames)[1]
    except ValueError as error:
        parser.error(str(error))
    if most > args.max_frames:
        parser.error(
            f"--frames {args.frames}: up to {most} frames, over --max-frames {args.max_frames}"
        )
    if args.mode:
        print(json.dumps(_measure(args)))
        return 0
    config = _config(args)
    loadavg_before = os.getloadavg()
    peak = _matmul_peak()
    params = NeXtVLADReference(config).num_trainable()
    _, eigen_source = load_eigenvalues(args.eigenvalues)
    path = "tf_xla" if args.xla else "tf_graph"
    results: dict[str, Any] = {
        "preset": args.preset,
        "overrides": json.loads(args.overrides),
        "config": dataclasses.asdict(config),
        "trainable_params": params,
        "batch_size": args.batch_size,
        "frames": args.frames,
        "max_frames": args.max_frames,
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        **_cpu(),
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "xla": args.xla,
        "eigenvalues": eigen_source,
        "matmul_peak_gflops_fp32": round(peak, 1),
        "paths": {},
    }
    if args.preset in PYTORCH_PARAMS and args.overrides == "{}":
        results["pytorch_params"] = PYTORCH_PARAMS[args.preset]
        results["params_match_pytorch"] = params == PYTORCH_PARAMS[args.preset]
    for mode in args.modes.split(","):
        command = [
            sys.executable, __file__, "--mode", mode, "--preset", args.preset,
            "--set", args.overrides, "--batch-size", str(args.batch_size),
            "--frames", args.frames, "--max-frames", str(args.max_frames),
            "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--threads", str(args.threads), "--inter-op-threads", str(args.inter_op_threads),
        ]  # fmt: skip
        if args.xla:
            command.append("--xla")
        if args.eigenvalues:
            command += ["--eigenvalues", args.eigenvalues]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        achieved = row["gflop_per_example"] * row["examples_per_s"]
        row["flop_utilisation"] = round(achieved / peak, 3)
        results["paths"].setdefault(path, {})[mode] = row
    results["loadavg_before"] = [round(x, 2) for x in loadavg_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
