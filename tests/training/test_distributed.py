"""Data-parallel training with 2 gloo processes on the CPU against one process.

Semantics pinned down here:
- default (per-process batch norm, as the paper's two GPU towers): the DDP gradient equals
  the gradient of the mean of the two half-batch losses, each half forwarded on its own;
- ``sync`` batch norm: the DDP gradient equals that of one process on the whole batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from nextvlad.losses import yt8m_loss
from nextvlad.models import create_model
from nextvlad.nn import BatchNorm

pytestmark = pytest.mark.slow
PRESET = "mix3-nextvlad-8g-112k-2048h"
SMALL = {"num_clusters": 4, "hidden_size": 16, "num_classes": 5, "dropout": 0.0, "expansion": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model(sync: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(PRESET, **SMALL).double().train()
    for module in model.modules():
        if isinstance(module, BatchNorm):
            module.sync = sync
    return model


def _loss(
    model: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor, n: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    out = net(x, n)
    terms = yt8m_loss(
        out.logits, y, branch_logits=out.branch_logits, l2_tensors=model.regularized_parameters()
    )
    return terms["total"]


def _worker(rank: int, world: int, port: int, sync: bool, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = load_file(f"{folder}/inputs.safetensors")
        half = data["x"].shape[0] // world
        part = slice(rank * half, (rank + 1) * half)
        model = _model(sync)
        net = DistributedDataParallel(model)
        loss = _loss(model, net, data["x"][part], data["n"][part], data["y"][part])
        loss.backward()
        if rank == 0:
            grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
            save_file(grads, f"{folder}/grads.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sync", [False, True], ids=["per-process-bn", "sync-bn"])
def test_ddp_gradients_match_one_process(tmp_path: Path, sync: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(6, 7, 1152, dtype=torch.float64)
    n = torch.tensor([7, 3, 5, 1, 7, 2])
    y = (torch.rand(6, 5) < 0.4).double()
    save_file({"x": x, "n": n, "y": y}, str(tmp_path / "inputs.safetensors"))
    mp.spawn(_worker, args=(2, _free_port(), sync, str(tmp_path)), nprocs=2, join=True)
    ddp = load_file(str(tmp_path / "grads.safetensors"))

    model = _model(sync=False)
    if sync:  # one process, the whole batch
        loss = _loss(model, model, x, n, y)
    else:  # two towers: each half with its own batch statistics, losses averaged
        loss = (
            _loss(model, model, x[:3], n[:3], y[:3]) + _loss(model, model, x[3:], n[3:], y[3:])
        ) / 2
    loss.backward()
    assert len(ddp) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(ddp[name], p.grad, rtol=1e-7, atol=1e-10, msg=name)


def test_torchrun_launch(tmp_path: Path) -> None:
    from nextvlad.data import write_synthetic

    write_synthetic(tmp_path / "data", videos=24, shards=4, num_classes=5, seed=0)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nextvlad",
        "train",
        "--preset",
        "nextvlad-8g-128k-2048h",
        "--set",
        "num_clusters=4",
        "--set",
        "hidden_size=16",
        "--set",
        "num_classes=5",
        "--set",
        "expansion=1",
        "--train-data",
        str(tmp_path / "data" / "*.tfrecord"),
        "--eval-data",
        str(tmp_path / "data" / "*.tfrecord"),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
        "--sync-batchnorm",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-00000003"
    assert '"num_videos": 24' in result.stdout  # evaluation reduced over both ranks
    # rank 0 alone says how many processes train, and where the checkpoint went
    assert result.stderr.count("training on 2 processes (torchrun): batch 4 each, 8 a step") == 1
    assert result.stderr.count("trained to step 3 (24 examples); checkpoint ") == 1


def _train_command(data: Path, run: Path, *launch: str, eval_data: Path | None = None) -> list[str]:
    """`nextvlad train` under torchrun (``launch``: its options), a tiny NeXtVLAD on CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "nextvlad"]
    command += ["train", "--preset", "nextvlad-8g-128k-2048h", "--set", "num_clusters=4"]
    command += ["--set", "hidden_size=16", "--set", "num_classes=5", "--set", "expansion=1"]
    command += ["--train-data", str(data / "*.tfrecord"), "--out", str(run)]
    command += ["--max-steps", "4", "--batch-size", "4", "--num-workers", "0", "--seed", "3"]
    command += ["--no-progress", "--device", "cpu", "--deterministic", "--eval-every", "0"]
    if eval_data is not None:
        command += ["--eval-data", str(eval_data / "*.tfrecord")]
    return command


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_per_process_batch_norm_statistics_evaluated_are_those_saved(tmp_path: Path) -> None:
    """Without --sync-batchnorm each process keeps its own moving statistics; the evaluation
    at the end of training (each process evaluating half of the data) and the checkpoint use
    the same ones: `nextvlad eval` of the checkpoint gives the run's figures."""
    from nextvlad.data import write_synthetic

    write_synthetic(tmp_path / "data", videos=24, shards=4, num_classes=5, seed=0)
    write_synthetic(tmp_path / "eval", videos=16, shards=2, num_classes=5, seed=1)
    run = tmp_path / "run"
    launch = ["--standalone", "--nproc_per_node", "2"]
    trained = _run(_train_command(tmp_path / "data", run, *launch, eval_data=tmp_path / "eval"))
    during = json.loads(trained.stdout.strip().splitlines()[-1])
    evaluated = _run([sys.executable, "-m", "nextvlad", "eval", "--checkpoint", str(run),
                      "--data", str(tmp_path / "eval" / "*.tfrecord"), "--json",
                      "--num-workers", "0", "--device", "cpu"])  # fmt: skip
    after = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert during["num_videos"] == after["num_videos"] == 16
    for key in ("gap", "map", "hit_at_one", "loss"):
        assert abs(during[key] - after[key]) < 1e-6, (key, during, after)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_on_loopback_train_as_one_node_of_two_processes(tmp_path: Path) -> None:
    """torchrun --nnodes 2 (c10d rendezvous on 127.0.0.1, one process a node): both finish,
    one checkpoint is written, with the weights of a one-node run with two processes."""
    from nextvlad.data import write_synthetic

    write_synthetic(tmp_path / "data", videos=24, shards=4, num_classes=5, seed=0)
    one = tmp_path / "one-node"
    _run(_train_command(tmp_path / "data", one, "--standalone", "--nproc_per_node", "2"))
    two = tmp_path / "two-nodes"
    endpoint = f"127.0.0.1:{_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --local-addr: the workers' store is reached at this address, not at the machine's
    # fully qualified host name (which need not resolve, as on a machine without DNS).
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "test"]
    rendezvous += ["--local-addr", "127.0.0.1"]
    nodes = []
    for rank in (0, 1):
        launch = ["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"]
        host = ["--rdzv-conf", f"is_host={int(rank == 0)}"]  # not decided by a race for the port
        command = _train_command(tmp_path / "data", two, *launch, *rendezvous, *host)
        pipe = subprocess.PIPE
        nodes.append(subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env))
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    except subprocess.TimeoutExpired:
        for node in nodes:
            node.kill()
        errors = [node.communicate()[1][-2000:] for node in nodes]
        raise AssertionError(f"the two nodes did not finish in 300 s: {errors}") from None
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert [p.name for p in (two / "checkpoints").iterdir() if p.name.startswith("step")] == [
        "step-00000004"
    ]
    a = load_file(str(one / "checkpoints" / "step-00000004" / "model.safetensors"))
    b = load_file(str(two / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
