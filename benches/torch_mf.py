#!/usr/bin/env python3
"""PyTorch peer of `recsys bench train`: the same MF training step, written in PyTorch.

Install its one dependency with `pip install torch` (from PyPI it also pulls the CUDA
libraries, several GB, but runs on the CPU). `recsys bench train` writes the event stream
and calls this script itself; to run it by hand:

    python3 benches/torch_mf.py --data events.bin --users 100000 --items 100000

The step matches the Rust trainer's: for a batch of (user, item) rows, gather the batch's
user rows and its *unique* item rows from sparse embedding tables (d = --dim), score every
event's user against every unique item plus --negatives uniformly drawn items (sampled
softmax, temperature 1; with --negatives at least --items, every item: a full softmax),
cross entropy against the event's own item, backward, and an Adagrad step on the touched rows
only (`nn.Embedding(sparse=True)` + `torch.optim.Adagrad`, which supports sparse
gradients). Differences, all in PyTorch's favour: Adagrad here keeps one accumulator per
weight (the Rust tables keep one per row), there is no L2 term and no logQ correction.

`--data` holds little-endian int32 pairs (user row, item row), in stream order. The last
line printed is one JSON object.
"""

import argparse
import json
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--negatives", type=int, default=2048,
                   help="uniform negatives per step; >= --items: every item")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5, help="batches before the clock starts")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(13)
    with open(a.data, "rb") as f:
        raw = bytearray(f.read())
    pairs = torch.frombuffer(raw, dtype=torch.int32).view(-1, 2).long()
    if pairs.numel() == 0:
        print("no events in --data", file=sys.stderr)
        return 2
    users = torch.nn.Embedding(a.users, a.dim, sparse=True)
    items = torch.nn.Embedding(a.items, a.dim, sparse=True)
    with torch.no_grad():
        users.weight.uniform_(-0.1, 0.1)
        items.weight.uniform_(-0.1, 0.1)
    opt = torch.optim.Adagrad(list(users.parameters()) + list(items.parameters()), lr=a.lr)

    full = a.negatives >= a.items

    def step(batch: torch.Tensor) -> float:
        u, i = batch[:, 0], batch[:, 1]
        if full:
            unique, target = torch.arange(a.items), i
        else:
            drawn = torch.randint(a.items, (a.negatives,))
            unique, inverse = torch.unique(torch.cat([i, drawn]), return_inverse=True)
            target = inverse[: len(i)]
        logits = users(u) @ items(unique).T
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    batches = list(torch.split(pairs, a.batch))
    for b in batches[: a.warmup]:
        step(b)
    timed = batches[a.warmup :]
    start = time.perf_counter()
    loss = float("nan")
    for b in timed:
        loss = step(b)
    secs = time.perf_counter() - start
    events = sum(len(b) for b in timed)
    rate = events / secs if secs > 0 else float("nan")
    print(f"torch {torch.__version__} MF d={a.dim} batch {a.batch} negatives {a.negatives}: "
          f"{rate:.0f} events/s "
          f"({a.threads} threads, last loss {loss:.3f})", file=sys.stderr)
    print(json.dumps({"events_per_s": rate, "events": events, "seconds": secs,
                      "torch_version": torch.__version__, "threads": a.threads,
                      "last_loss": loss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
