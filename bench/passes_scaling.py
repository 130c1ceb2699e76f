"""The rewrite passes scale linearly: time per node at 1,000 to 10,000 nodes, side by side.

Not a test. Builds IR graphs of repeated blocks (Gemm → BatchNorm → x·Sigmoid(x) → Gemm → Gemm),
each block giving every pass something to do: a fusion, a BatchNorm fold and a chain of linear
maps to merge. Times the whole rewrite pipeline, and each pass alone, and prints µs per node: flat
across sizes means O(N) (the pre-issue-10 passes scanned the node list for every producer lookup,
O(N²)).

Usage:  python -m bench.passes_scaling [--sizes 1000 2000 5000 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lipaudit.ir import Graph, Node, Value, fill_default_attributes
from lipaudit.passes import FoldBatchNorm, FuseActivations, MergeLinear, rewrite_passes

NODES_PER_BLOCK = 6


def block_graph(blocks: int, width: int = 8, seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    values = {"x": Value("x", (1, width))}
    nodes = []
    current = "x"
    for b in range(blocks):

        def const(name: str, array: np.ndarray) -> str:
            values[name] = Value(name, array.shape, array.astype(np.float32))
            return name

        w1, w2, w3 = (const(f"w{k}_{b}", rng.normal(size=(width, width)) / np.sqrt(width)) for k in range(3))
        bn = [const(f"{p}_{b}", rng.uniform(0.5, 1.5, size=width)) for p in ("scale", "bias", "mean", "var")]
        names = [f"{p}{b}" for p in ("g", "n", "s", "m", "h", "o")]
        nodes += [
            Node(f"gemm{b}", "Gemm", (current, w1), (names[0],)),
            Node(f"bn{b}", "BatchNormalization", (names[0], *bn), (names[1],)),
            Node(f"sig{b}", "Sigmoid", (names[1],), (names[2],)),
            Node(f"mul{b}", "Mul", (names[1], names[2]), (names[3],)),
            Node(f"fc{b}a", "MatMul", (names[3], w2), (names[4],)),
            Node(f"fc{b}b", "MatMul", (names[4], w3), (names[5],)),
        ]
        for name in names:
            values[name] = Value(name, (1, width))
        current = names[-1]
    graph = Graph(nodes, values, ["x"], [current], opset=17)
    fill_default_attributes(graph)
    return graph


def timed(run, graph: Graph) -> float:
    start = time.perf_counter()
    run(graph)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    args = parser.parse_args()
    header = f"{'nodes':>7}  {'pipeline s':>10}  {'µs/node':>8}  {'fuse µs/n':>9}  {'fold µs/n':>9}  {'merge µs/n':>10}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        blocks = max(1, size // NODES_PER_BLOCK)
        n = blocks * NODES_PER_BLOCK
        whole = timed(lambda g: rewrite_passes().run(g), block_graph(blocks))
        per_pass = [
            timed(lambda g, p=p: p().run(g), block_graph(blocks)) for p in (FuseActivations, FoldBatchNorm, MergeLinear)
        ]
        graph = block_graph(blocks)
        rewrite_passes().run(graph)
        # Per block, a Silu and one linear map are left: BatchNorm folded, the MatMul chain merged into
        # the next block's Gemm.
        assert len(graph.nodes) == 2 * blocks + 1, len(graph.nodes)
        print(
            f"{n:>7}  {whole:>10.3f}  {1e6 * whole / n:>8.1f}  "
            + "  ".join(f"{1e6 * t / n:>9.1f}" for t in per_pass[:2])
            + f"  {1e6 * per_pass[2] / n:>10.1f}"
            + f"   ({len(graph.nodes)} nodes left)"
        )


if __name__ == "__main__":
    main()
