#!/usr/bin/python3
"""Activation patching, steering and routing on the built-in strata-demo model.

A tour of the notebook client (clients/python/strata_client.py) against a running
strata-server — no GPU, no weights on this side:

    make run &                                   # serves models/strata-demo on :8080
    /usr/bin/python3 examples/activation_patching.py [http://127.0.0.1:8080]

1. capture the residual stream of every block (run_with_cache)
2. activation patching: which layers carry "the LORD" vs "the people"? Patch each
   block's output from the clean run into the corrupted one, in one round trip each
3. steering: add (LORD − people) at one layer during generation
4. an attention pattern, and the MoE routing of each token
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
from strata_client import Client  # noqa: E402

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STRATA_URL", "http://127.0.0.1:8080")
c = Client(URL)

# ---------------------------------------------------------------- 0. the hook points
hooks = c.hooks()
kinds = {}
for h in hooks:
    kinds.setdefault(h["layer_kind"] or "global", []).append(h["name"])
print(f"{len(hooks)} hook points;", ", ".join(f"{k}: {len(v)}" for k, v in kinds.items()))

# ---------------------------------------------------------------- 1. the residual stream
clean = "And the LORD said unto"
corrupted = "And the people said unto"
logits, cache = c.run_with_cache(clean, names_filter=["embed.hook_out", "blocks.*.hook_out"])
n_layers = sum(1 for k in cache if k.startswith("blocks."))
print("\nresidual stream norm at the last position, by block:")
print("  embed  %.2f" % np.linalg.norm(cache["embed.hook_out"][-1]))
for i in range(n_layers):
    print("  %5d  %.2f" % (i, np.linalg.norm(cache[f"blocks.{i}.hook_out"][-1])))
ids_clean, ids_corrupt = c.tokenize(clean), c.tokenize(corrupted)
assert len(ids_clean) == len(ids_corrupt), "patching position by position needs equal lengths"
diff_pos = [i for i, (a, b) in enumerate(zip(ids_clean, ids_corrupt)) if a != b]
print("tokens differ at positions", diff_pos)

# ---------------------------------------------------------------- 2. activation patching
# metric: logit difference between the clean run's next token and the corrupted run's
corr_logits, _ = c.run_with_cache(corrupted, names_filter=["logits"])
good, bad = int(np.argmax(logits[-1])), int(np.argmax(corr_logits[-1]))
print(f"\nclean run predicts {c.detokenize([good])!r}, corrupted {c.detokenize([bad])!r}")


def logit_diff(lg):
    return lg[-1, good] - lg[-1, bad]


base_clean, base_corr = logit_diff(logits), logit_diff(corr_logits)
print(f"logit difference: clean {base_clean:.3f}, corrupted {base_corr:.3f}")


def restored(lg):
    return (logit_diff(lg) - base_corr) / (base_clean - base_corr)


print("patch blocks.{i}.hook_out at the differing position (clean -> corrupted): fraction restored")
print("(falls once later positions have already read the corrupted token)")
for i in range(n_layers):
    _, p = c.patch(clean, corrupted, f"blocks.{i}.hook_out", positions=diff_pos)
    f = restored(p["logits"])
    print("  block %2d  %6.3f  %s" % (i, f, "#" * int(max(0, min(1, f)) * 40)))
print("patch one block's mixer output at every position: fraction restored")
for i in range(n_layers):
    _, p = c.patch(clean, corrupted, f"blocks.{i}.mixer.hook_out", positions="all")
    f = restored(p["logits"])
    print("  block %2d mixer  %6.3f  %s" % (i, f, "#" * int(max(0, min(1, f)) * 40)))

# ---------------------------------------------------------------- 3. steering
layer = n_layers // 2
_, a = c.run_with_cache("the LORD", names_filter=f"blocks.{layer}.hook_out", positions="last")
_, b = c.run_with_cache("the people", names_filter=f"blocks.{layer}.hook_out", positions="last")
v = a[f"blocks.{layer}.hook_out"][-1] - b[f"blocks.{layer}.hook_out"][-1]
prompt = "And it came to pass, that"
print(f"\nsteering with (LORD - people) added at blocks.{layer}.hook_out, greedy:")
for scale in (0, 2, 4):
    iv = [{"hook": f"blocks.{layer}.hook_out", "op": "add", "value": scale * v}] if scale else None
    print(f"  x{scale}: {prompt}{c.generate(prompt, interventions=iv, max_tokens=24)!r}")

# ---------------------------------------------------------------- 4. attention and routing
hook_kinds = {h["name"]: h["layer_kind"] for h in hooks}
attn = sorted({int(n.split(".")[1]) for n, k in hook_kinds.items() if k == "attention"})
moe = sorted({int(n.split(".")[1]) for n, k in hook_kinds.items() if k == "moe"})
_, ac = c.run_with_cache(clean, names_filter=[f"blocks.{attn[0]}.mixer.hook_pattern",
                                              f"blocks.{moe[0]}.mixer.hook_expert_indices",
                                              f"blocks.{moe[0]}.mixer.hook_expert_weights"])
pattern = ac[f"blocks.{attn[0]}.mixer.hook_pattern"]          # (heads, queries, keys)
pieces = [c.detokenize([t]) for t in ids_clean]
print(f"\nattention of the last token in block {attn[0]} (heads x keys), top 3 keys per head:")
for h in range(pattern.shape[0]):
    best = np.argsort(pattern[h, -1])[::-1][:3]
    print(f"  head {h}: " + ", ".join(f"{pieces[k]!r} {pattern[h, -1, k]:.2f}" for k in best))
idx = ac[f"blocks.{moe[0]}.mixer.hook_expert_indices"]
w = ac[f"blocks.{moe[0]}.mixer.hook_expert_weights"]
print(f"\nMoE routing in block {moe[0]} (experts: weight):")
for t, piece in enumerate(pieces):
    print(f"  {piece!r:>12}  " + "  ".join(f"{e}: {x:.2f}" for e, x in zip(idx[t], w[t])))
abl = [{"hook": f"blocks.{moe[0]}.mixer.hook_expert_indices", "op": "ablate_experts",
        "experts": [int(np.bincount(idx.ravel()).argmax())]}]
_, ab = c.run_with_interventions(clean, abl, [f"blocks.{moe[0]}.mixer.hook_expert_indices", "logits"])
print(f"ablating expert {abl[0]['experts'][0]}: the router re-selects ->",
      ab[f"blocks.{moe[0]}.mixer.hook_expert_indices"][:4].tolist(),
      f"; next token {c.detokenize([int(np.argmax(ab['logits'][-1]))])!r}")
