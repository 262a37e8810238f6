"""Studies with many workers: real ``torchrun`` jobs on the CPU (gloo), compared row for row with one worker.

Expectations: the results of a study do not depend on how many workers computed it (each unit is computed by
exactly one worker from the same inputs), a worker killed with SIGKILL under ``--max-restarts 1`` loses and
duplicates nothing, a second command on a run directory in use is refused, and workers that do not share the
run directory (or read another config) stop with one clear message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vitlens.bench.config import ConfigError, parse_config
from vitlens.bench.runner import _prepare, run_study
from vitlens.bench.sources import make_source
from vitlens.bench.store import ResultsStore
from vitlens.bench.workers import RunLock, Workers

STUDY = {
    "name": "dist",
    "seed": 0,
    "batch_size": 2,
    "datasets": [{"name": "cells", "builtin": "cells", "n": 8, "models": ["builtin:cells_vit", "builtin:cells_cnn"]}],
    "explainers": ["rollout", "gradcam", {"name": "smoothgrad", "params": {"n_samples": 4}}],
    "metrics": ["pointing_game", {"name": "deletion", "params": {"steps": 7}}],
}
KEY = ["dataset", "model", "explainer_key", "metric_key", "output", "image_id"]


def frame(run_dir: Path) -> pd.DataFrame:
    return ResultsStore(run_dir).frame().sort_values(KEY).reset_index(drop=True)


def torchrun(cfg: Path, out: Path, nproc: int, *extra: str, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *extra]
    cmd += ["-m", "vitlens", "bench", str(cfg), "--out", str(out), "--quiet"]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    cfg = root / "study.yaml"
    cfg.write_text(yaml.safe_dump(STUDY))
    run_study(parse_config(STUDY), root / "one", progress=False)
    return cfg, root, frame(root / "one")


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) > 0
    assert (a[KEY].to_numpy() == b[KEY].to_numpy()).all()
    assert (a["value"].isna() == b["value"].isna()).all()
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), atol=1e-6, equal_nan=True)
    assert (a[["true", "predicted", "target"]].to_numpy() == b[["true", "predicted", "target"]].to_numpy()).all()


def unit_files(run_dir: Path) -> dict[str, int]:
    return {sub: len(list((run_dir / sub).glob("*"))) for sub in ("results", "maps", "units")}


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 3])
def test_workers_give_the_rows_of_one_worker(study, nproc):
    cfg, root, one = study
    out = root / f"n{nproc}"
    res = torchrun(cfg, out, nproc)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_rows(one, frame(out))
    assert unit_files(out) == unit_files(root / "one")
    run = json.loads((out / "run.json").read_text())
    assert run["workers"] == nproc and run["done"] + run["skipped"] == run["units"]
    per = [w["computed"] for w in run["per_worker"]]
    assert sum(per) == run["computed_now"] == run["done"]
    logged = [
        json.loads(line) for r in range(nproc) for line in (out / "logs" / f"rank{r}.jsonl").read_text().splitlines()
    ]
    assert sorted(e["unit"] for e in logged) == sorted(p.stem for p in (out / "units").glob("*.json"))  # once each
    assert f"by {nproc} worker(s)" in res.stdout


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_restarted_and_nothing_is_lost_or_duplicated(study):
    cfg, root, one = study
    out = root / "killed"
    proc = torchrun(cfg, out, 2, "--max-restarts=1", wait=False)
    log1 = out / "logs" / "rank1.jsonl"
    deadline = time.monotonic() + 300
    while not (log1.is_file() and log1.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # rank 1 has finished a unit and is inside its next one
    victim = json.loads(log1.read_text().split("\n")[0])["pid"]
    os.kill(victim, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout
    logged = [json.loads(line) for p in (out / "logs").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert {e["restart"] for e in logged} == {0, 1}, "the job was restarted once"
    assert_same_rows(one, frame(out))
    assert unit_files(out) == unit_files(root / "one")


@pytest.mark.slow
def test_nproc_shortcut_launches_torchrun(study):
    cfg, root, one = study
    from vitlens.cli import main

    assert main(["bench", str(cfg), "--out", str(root / "shortcut"), "--quiet", "--nproc", "2"]) == 0
    assert_same_rows(one, frame(root / "shortcut"))
    assert json.loads((root / "shortcut" / "run.json").read_text())["workers"] == 2


def test_a_run_directory_in_use_is_refused(tmp_path):
    lock = RunLock(tmp_path)
    try:
        with pytest.raises(ConfigError, match="in use by another vitlens bench"):
            run_study(parse_config(STUDY), tmp_path, progress=False)
    finally:
        lock.release()
    assert not (tmp_path / "units").exists() or not list((tmp_path / "units").glob("*")), "nothing was written"


class _Peer(Workers):
    """Rank 1 of a 2-worker job whose rank 0 sent ``sent`` in the first gather (its files and config) and no
    problem in the next one."""

    def __init__(self, sent):
        super().__init__(rank=1, world=2)
        self.sent = [sent, None]

    def gather(self, obj):
        return [self.sent.pop(0), obj]


def _sent(cfg, run_dir, token):
    """What rank 0 sends after preparing ``run_dir`` for ``cfg``."""
    sources = {ds.name: make_source(ds) for ds in cfg.datasets}
    _prepare(cfg, run_dir, sources, Workers())
    cfg_json = (run_dir / "config.json").read_text()
    prints = json.loads((run_dir / "datasets.json").read_text())
    return sources, (None, token or (run_dir / ".workers-token").read_text(), cfg_json, prints)


def test_a_worker_that_does_not_see_the_run_directory_stops(tmp_path):
    cfg = parse_config(STUDY)
    sources, sent = _sent(cfg, tmp_path, "a-token-another-machine-wrote")
    with pytest.raises(ConfigError, match="does not see the run directory"):
        _prepare(cfg, tmp_path, sources, _Peer(sent))


def test_a_worker_with_another_config_stops(tmp_path):
    cfg = parse_config(STUDY)
    sources, sent = _sent(cfg, tmp_path, None)
    _prepare(cfg, tmp_path, sources, _Peer(sent))  # the same config and files: fine
    other = parse_config({**STUDY, "seed": 1})
    with pytest.raises(ConfigError, match="another study configuration"):
        _prepare(other, tmp_path, sources, _Peer(sent))


def test_rank_zero_problems_stop_every_worker(tmp_path):
    cfg = parse_config(STUDY)
    sources, _ = _sent(cfg, tmp_path, None)
    with pytest.raises(ConfigError, match="holds a run of another configuration"):
        _prepare(
            cfg, tmp_path, sources, _Peer(("the run directory holds a run of another configuration", None, "", {}))
        )


@pytest.mark.slow
def test_two_machines_through_a_c10d_rendezvous(study):
    """Two torchrun agents (as on two nodes; here both on this machine) meet at a c10d rendezvous endpoint,
    as the Slurm example does, and share the run directory."""
    import socket

    cfg, root, one = study
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = root / "nodes"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d"]
    cmd += [f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=vitlens-test"]
    cmd += ["-m", "vitlens", "bench", str(cfg), "--out", str(out), "--quiet"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert_same_rows(one, frame(out))
    run = json.loads((out / "run.json").read_text())
    assert run["workers"] == 2 and all(w["computed"] > 0 for w in run["per_worker"])


@pytest.mark.slow
def test_the_slurm_example_runs_a_study_on_two_nodes(study, tmp_path):
    """examples/slurm/study.sbatch with stand-ins for Slurm's ``srun`` (one task per node: both here) and
    ``scontrol`` (the first node's name), on CPU workers."""
    import shutil
    import socket
    import stat

    cfg, _root, one = study
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    srun = ["#!/bin/bash", "shift  # --kill-on-bad-exit=1", 'for n in 1 2; do "$@" & done']
    (fake / "srun").write_text("\n".join([*srun, "for n in 1 2; do wait -n || exit 1; done", ""]))
    for f in fake.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun_dir = Path(shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "").parent
    env = {
        **os.environ,
        "PATH": f"{fake}:{torchrun_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_ID": "42",
        "GPUS_PER_NODE": "1",
        "DEVICE": "cpu",
        "RDZV_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }
    script = Path(__file__).parents[1] / "examples" / "slurm" / "study.sbatch"
    out = tmp_path / "run"
    res = subprocess.run(
        ["bash", str(script), str(cfg), str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_rows(one, frame(out))
    assert json.loads((out / "run.json").read_text())["workers"] == 2
