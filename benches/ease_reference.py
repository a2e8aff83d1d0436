#!/usr/bin/env python3
"""Reference point for `recsys eval` on MovieLens data: EASE (Steck, WWW 2019), a strong
closed-form item-item baseline, under the same protocol as `recsys eval` (per-user
leave-last-out by timestamp, ties broken by file order, full ranking minus the user's
training items, rank = items strictly above). Not part of the engine; it tells how close
the engine's models get to a well-tuned non-streaming baseline.

    pip install torch
    python3 benches/ease_reference.py u.data          # tab-separated user item rating ts

Needs the item-item Gram matrix in memory (items² floats): fine for ML-100K / ML-1M.
"""

import collections
import math
import sys

import torch


def main() -> int:
    path = sys.argv[1]
    rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
    ev = [(r[0], r[1], int(r[3]), k) for k, r in enumerate(rows)]
    count = collections.Counter(e[0] for e in ev)
    last = {}
    for e in ev:
        if e[0] not in last or (e[2], e[3]) >= (last[e[0]][2], last[e[0]][3]):
            last[e[0]] = e
    held = {last[u][3] for u in last if count[u] >= 2}
    train = [e for e in ev if e[3] not in held]
    test = [(e[0], e[1]) for e in ev if e[3] in held]
    items, users = {}, {}
    for e in train:
        items.setdefault(e[1], len(items))
        users.setdefault(e[0], len(users))
    x = torch.zeros(len(users), len(items))
    for e in train:
        x[users[e[0]], items[e[1]]] = 1
    for lam in [50.0, 200.0, 500.0]:
        g = x.T @ x + lam * torch.eye(len(items))
        p = torch.linalg.inv(g)
        b = -p / torch.diag(p)
        b.fill_diagonal_(0)
        s_all = x @ b
        hr = ndcg = 0.0
        for u, i in test:
            if i not in items or u not in users:
                continue
            s = s_all[users[u]].clone()
            seen = x[users[u]] > 0
            t = items[i]
            seen[t] = False
            s[seen] = -1e9
            rank = int((s > s[t]).sum())
            if rank < 10:
                hr += 1
                ndcg += 1 / math.log2(rank + 2)
        print(f"EASE lambda={lam:g}: HR@10 {hr / len(test):.4f} NDCG@10 {ndcg / len(test):.4f} "
              f"({len(test)} test users)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
