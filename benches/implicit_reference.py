#!/usr/bin/env python3
"""The peer recsys must beat: implicit's ALS and BPR (Frederickson, github.com/benfred/
implicit) over a small grid, on exactly the split `recsys eval` uses, scored exactly as
`recsys eval` scores (full ranking over every training item minus the user's training
items; rank = items strictly above + half the ties; HR@10, NDCG@10, MRR, coverage; a
test user or item the training data lacks counts as a miss).

    pip install implicit==0.7.2
    recsys eval --format movielens u.data --write-split /tmp/split [--ties shuffle]
    python3 benches/implicit_reference.py /tmp/split [--json]
    python3 benches/implicit_reference.py /tmp/split --als 64,0.1,1   # one ALS fit only

`--write-split` writes `train.tsv` (user, item, weight, ts) and `test.tsv` (user, item).
Each configuration is fitted once with a fixed seed; `fit_s` is its wall time on the
machine's threads (implicit uses OpenMP; OMP_NUM_THREADS sets how many).
"""

import itertools
import json
import math
import sys
import time

import numpy as np
import scipy.sparse as sp

import implicit


def read(split):
    train = [l.rstrip("\n").split("\t") for l in open(f"{split}/train.tsv") if l.strip()]
    test = [l.rstrip("\n").split("\t") for l in open(f"{split}/test.tsv") if l.strip()]
    users, items = {}, {}
    for u, i, _w, _t in train:
        users.setdefault(u, len(users))
        items.setdefault(i, len(items))
    rows = np.array([users[u] for u, _, _, _ in train])
    cols = np.array([items[i] for _, i, _, _ in train])
    ui = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (rows, cols)),
                       shape=(len(users), len(items)))
    ui.data[:] = 1.0  # repeated pairs count once, as the catalog's seen items do
    return ui, users, items, [(u, i) for u, i in test]


def evaluate(scores_of, ui, users, items, test, k=10):
    """`recsys eval`'s metrics for a function from a user row to its item scores."""
    hr = ndcg = mrr = 0.0
    covered = set()
    for u, i in test:
        if u not in users:
            continue
        r = users[u]
        s = scores_of(r).astype(np.float64)
        seen = ui.indices[ui.indptr[r]:ui.indptr[r + 1]]
        t = items.get(i)
        mask = np.zeros(len(items), dtype=bool)
        mask[seen] = True
        if t is not None:
            mask[t] = False
        s_top = s.copy()
        s_top[mask] = -np.inf
        top = np.argpartition(-s_top, k)[:k] if len(items) > k else np.arange(len(items))
        covered.update(top[np.isfinite(s_top[top])].tolist())
        if t is None:
            continue
        others = ~mask
        others[t] = False
        above = int((s[others] > s[t]).sum())
        ties = int((s[others] == s[t]).sum())
        rank = above + ties // 2
        if rank < k:
            hr += 1
            ndcg += 1 / math.log2(rank + 2)
        mrr += 1 / (rank + 1)
    n = len(test)
    return {"hr_at_10": hr / n, "ndcg_at_10": ndcg / n, "mrr": mrr / n,
            "coverage": len(covered) / len(items)}


def dense(m):
    return m.to_numpy() if hasattr(m, "to_numpy") else np.asarray(m)


def main():
    split = sys.argv[1]
    as_json = "--json" in sys.argv
    ui, users, items, test = read(split)
    print(f"{ui.nnz} training pairs, {len(users)} users, {len(items)} items, {len(test)} test users")
    grid = []
    als_grid = list(itertools.product([32, 64, 128], [0.01, 0.1, 1.0], [1.0, 5.0, 20.0, 40.0]))
    bpr_grid = list(itertools.product([32, 64, 128], [0.01, 0.05], [0.01, 0.001]))
    if "--als" in sys.argv:
        factors, reg, alpha = sys.argv[sys.argv.index("--als") + 1].split(",")
        als_grid, bpr_grid = [(int(factors), float(reg), float(alpha))], []
    def fit(kind, model, **settings):
        t = time.time()
        model.fit(ui, show_progress=False)
        fit_s = time.time() - t
        uf, itf = dense(model.user_factors), dense(model.item_factors)
        m = evaluate(lambda r: itf @ uf[r], ui, users, items, test)
        grid.append({"model": kind, **settings, "fit_s": fit_s, **m})

    for factors, reg, alpha in als_grid:
        fit("als", implicit.als.AlternatingLeastSquares(
                factors=factors, regularization=reg, alpha=alpha, iterations=15, random_state=7),
            factors=factors, regularization=reg, alpha=alpha, iterations=15)
    for factors, lr, reg in bpr_grid:
        fit("bpr", implicit.bpr.BayesianPersonalizedRanking(
                factors=factors, learning_rate=lr, regularization=reg, iterations=100,
                random_state=7),
            factors=factors, learning_rate=lr, regularization=reg, iterations=100)
    best = {}
    for g in grid:
        if g["model"] not in best or g["ndcg_at_10"] > best[g["model"]]["ndcg_at_10"]:
            best[g["model"]] = g
    print(f"{'model':<6} {'settings':<34} {'HR@10':>7} {'NDCG@10':>8} {'MRR':>7} {'coverage':>8} {'fit_s':>6}")
    for g in sorted(grid, key=lambda g: -g["ndcg_at_10"])[:8] + [best[m] for m in ["bpr"] if m in best]:
        settings = ", ".join(f"{k} {g[k]}" for k in ("factors", "regularization", "alpha", "learning_rate") if k in g)
        print(f"{g['model']:<6} {settings:<34} {g['hr_at_10']:>7.4f} {g['ndcg_at_10']:>8.4f} "
              f"{g['mrr']:>7.4f} {g['coverage']:>8.3f} {g['fit_s']:>6.1f}")
    if as_json:
        print(json.dumps({"als": best["als"], "bpr": best.get("bpr"), "grid": grid}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
