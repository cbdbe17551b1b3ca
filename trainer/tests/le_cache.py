"""Writes a seqrec LE cache from `seqrec le samples` output, with the standard library only.

usage: le_cache.py SAMPLES.tsv N_ITEMS OUT.safetensors [nan]

A stand-in for a language environment computed elsewhere: the LE state of a sample is four
features of its history, the rewards favour the catalog walk's next item, the augmented
action is the recommender's first candidate. With `nan`, one reward is NaN (a bad cache).
"""
import json
import struct
import sys

samples, n_items, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bad = len(sys.argv) > 4 and sys.argv[4] == "nan"

rows = []
with open(samples) as f:
    header = f.readline().rstrip("\n").split("\t")
    for line in f:
        rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))

action, state, reward, negative, negative_reward, augmented, augmented_reward = ([] for _ in range(7))
for r in rows:
    history = [int(x) for x in r["history"].split()]
    a, neg = int(r["action"]), int(r["negative"])
    action.append(a)
    state += [len(history) / 10, sum(history) / len(history) / n_items, history[-1] / n_items, 1.0]
    reward.append(1.0 if a == history[-1] + 1 else 0.5)
    negative.append(neg)
    negative_reward.append(-0.25)
    top = [int(x) for x in r["top5"].split()] if "top5" in r else [a]
    augmented.append(top[0])
    augmented_reward.append(0.75)
if bad:
    reward[len(reward) // 2] = float("nan")

tensors = [
    ("action", "I64", [len(action)], struct.pack(f"<{len(action)}q", *action)),
    ("state", "F32", [len(rows), 4], struct.pack(f"<{len(state)}f", *state)),
    ("reward", "F32", [len(reward)], struct.pack(f"<{len(reward)}f", *reward)),
    ("negative", "I32", [len(negative)], struct.pack(f"<{len(negative)}i", *negative)),
    ("negative_reward", "F32", [len(rows)], struct.pack(f"<{len(rows)}f", *negative_reward)),
    ("augmented", "I64", [len(rows)], struct.pack(f"<{len(rows)}q", *augmented)),
    ("augmented_reward", "F32", [len(rows)], struct.pack(f"<{len(rows)}f", *augmented_reward)),
]
header = {"__metadata__": {"seqrec.le": json.dumps({"version": 1, "n_items": n_items})}}
offset = 0
for name, dtype, shape, data in tensors:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for _, _, _, data in tensors:
        f.write(data)
