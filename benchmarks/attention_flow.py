"""Attention flow: vitlens' layered push-relabel vs the networkx max-flow formulation of the reference code.

    python benchmarks/attention_flow.py [--model deit_tiny_patch16_224] [--sharpen 1 6] [--nx-sources 2]
                                        [--nx-algorithms edmonds_karp shortest_augmenting_path] [--threads 1]

For a random-init timm model (default deit_tiny_patch16_224: 12 layers, 197 tokens) and one random image, the
attention graph of Abnar & Zuidema (head-mean attention, ``(A + I)`` rows renormalised) is built twice:

* networkx, as in samiraabnar/attention_flow: ``nx.from_numpy_array`` on the ``(L+1)N x (L+1)N`` adjacency with
  edges from layer l down to layer l−1, then ``nx.maximum_flow_value(G, cls_output_node, input_node,
  flow_func=...)`` per input token. ``edmonds_karp`` is the reference's choice (minutes per token);
  ``shortest_augmenting_path`` and ``preflow_push`` are networkx's fastest on this graph. A full map needs one
  call per patch; networkx is timed on ``--nx-sources`` patches spread over the grid and its time for all
  patches is extrapolated (graph building + patches × mean seconds per call);
  With ``--nx-reuse-residual`` networkx is also timed the way the reference does not use it: one residual
  network built once and passed to every call (``flow_func(G, s, t, residual=R)``), which saves rebuilding
  the 465k-arc residual graph per patch;
* vitlens: :func:`vitlens.explainers.flow.layered_max_flow` for all patches (median of ``--repeats`` runs), and
  the ``attention_flow`` explainer end to end (forward included).

The values agree on the sampled patches (max abs difference printed); the ratio is networkx's extrapolated time
over vitlens' measured time, same process, same threads (``--threads``, default 1: networkx is single-threaded).
``--sharpen s`` multiplies the query/key weights by s (attention logits by s²) to mimic the peaked attention of
trained models; a random-init model's attention is nearly uniform. Exits 1 with ``--check`` if a ratio is below
``--target`` (default 100) for the reference's algorithm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import networkx as nx
import numpy as np
import torch

import vitlens
from vitlens.explainers.attention import attention_pass
from vitlens.explainers.flow import layered_max_flow


def build(model_name: str, sharpen: float, seed: int = 0):
    torch.manual_seed(seed)
    model = vitlens.load_model(f"timm:{model_name}")
    if sharpen != 1.0:
        with torch.no_grad():
            for blk in model.module.blocks:
                d = blk.attn.qkv.in_features
                blk.attn.qkv.weight[: 2 * d] *= sharpen
    h, w = model.preprocessing.input_size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed + 1))
    attns, _, _, _ = attention_pass(model, x, None, grad=False)
    mats = []
    for a in attns:
        m = a[0].double().mean(dim=0) + torch.eye(a.shape[-1], dtype=torch.float64)
        mats.append(m / m.sum(dim=-1, keepdim=True))
    return model, x, torch.stack(mats)  # [L, N, N]


def vitlens_flows(model, mats: torch.Tensor) -> torch.Tensor:
    n = mats.shape[-1]
    p = model.num_prefix_tokens
    r = model.readout(n).double()
    src = mats[0, :, p:].T.contiguous()
    return layered_max_flow(src, mats[None, 1:], r[None], torch.zeros(src.shape[0], dtype=torch.long))


def networkx_graph(mats: np.ndarray) -> nx.DiGraph:
    layers, n, _ = mats.shape
    adj = np.zeros(((layers + 1) * n, (layers + 1) * n))
    for i in range(1, layers + 1):
        adj[i * n : (i + 1) * n, (i - 1) * n : i * n] = mats[i - 1]
    return nx.from_numpy_array(adj, create_using=nx.DiGraph(), edge_attr="capacity")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--sharpen", type=float, nargs="+", default=[1.0, 6.0])
    ap.add_argument("--nx-sources", type=int, default=2, help="patches networkx is timed on (per algorithm)")
    ap.add_argument("--nx-algorithms", nargs="+", default=["edmonds_karp", "shortest_augmenting_path", "preflow_push"])
    ap.add_argument("--nx-reuse-residual", action="store_true", help="also time networkx with one shared residual")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", type=float, default=100.0)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, networkx {nx.__version__}, threads {torch.get_num_threads()}, "
        f"model {args.model} (random init)"
    )
    print("| attention | method | patches | seconds | seconds per patch | vs vitlens | max abs diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst = []
    for sharpen in args.sharpen:
        model, x, mats = build(args.model, sharpen)
        layers, n, _ = mats.shape
        p = model.num_prefix_tokens
        n_patch = n - p
        label = "random init" if sharpen == 1.0 else f"q,k x{sharpen:g}"
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ours = vitlens_flows(model, mats)
            times.append(time.perf_counter() - t0)
        t_ours = statistics.median(times)
        exp = vitlens.get_explainer("attention_flow", model)
        t0 = time.perf_counter()
        maps = exp(x)
        t_exp = time.perf_counter() - t0
        assert torch.allclose(maps.flatten().double(), ours.float().double(), atol=1e-6)
        print(f"| {label} | vitlens layered_max_flow | {n_patch} | {t_ours:.2f} | {t_ours / n_patch:.4f} | 1× | |")
        print(
            f"| {label} | vitlens attention_flow explainer (forward included) | {n_patch} | {t_exp:.2f} | "
            f"{t_exp / n_patch:.4f} | | |",
            flush=True,
        )
        t0 = time.perf_counter()
        graph = networkx_graph(mats.numpy())
        t_build = time.perf_counter() - t0
        out = layers * n  # the CLS node of the last layer (the reference's output node)
        sources = np.linspace(p, n - 1, args.nx_sources).round().astype(int)
        for algo in args.nx_algorithms:
            func = getattr(nx.algorithms.flow, algo)
            secs, diffs = [], []
            for src in sources:
                t0 = time.perf_counter()
                value = nx.maximum_flow_value(graph, out, int(src), flow_func=func)
                secs.append(time.perf_counter() - t0)
                diffs.append(abs(value - float(ours[src - p])))
            total = t_build + n_patch * statistics.mean(secs)
            ratio = total / t_ours
            if algo == "edmonds_karp":
                worst.append(ratio)
            print(
                f"| {label} | networkx {algo} (graph {t_build:.1f} s + {n_patch} × "
                f"{statistics.mean(secs):.2f} s, timed on {len(sources)} patches) | {n_patch} | {total:.0f} | "
                f"{statistics.mean(secs):.2f} | {ratio:.0f}× | {max(diffs):.1e} |",
                flush=True,
            )
            if args.nx_reuse_residual:
                t0 = time.perf_counter()
                residual = nx.algorithms.flow.build_residual_network(graph, "capacity")
                t_res = time.perf_counter() - t0
                secs, diffs = [], []
                for src in sources:
                    t0 = time.perf_counter()
                    value = func(graph, out, int(src), residual=residual).graph["flow_value"]
                    secs.append(time.perf_counter() - t0)
                    diffs.append(abs(value - float(ours[src - p])))
                total = t_build + t_res + n_patch * statistics.mean(secs)
                print(
                    f"| {label} | networkx {algo}, residual network built once ({t_build + t_res:.1f} s + "
                    f"{n_patch} × {statistics.mean(secs):.2f} s) | {n_patch} | {total:.0f} | "
                    f"{statistics.mean(secs):.2f} | {total / t_ours:.0f}× | {max(diffs):.1e} |",
                    flush=True,
                )
    if args.check and worst and min(worst) < args.target:
        print(f"missed: speed-up {min(worst):.0f}× < {args.target:g}×")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
