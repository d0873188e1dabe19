"""Prints the rows of one or more `ctc-bench --json` files as one markdown table."""

import json
import platform
import sys


def speedup(row, step):
    """'9.8x', with the interquartile range of the per-run speedups where the file has it."""
    text = f"{row[f'speedup_{step}']:.1f}x"
    if f"speedup_{step}_iqr" in row:
        q1, q3 = row[f"speedup_{step}_iqr"]
        text += f" ({q1:.1f}-{q3:.1f})"
    return text


def main(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            rows.extend(json.load(f))
    print(
        "| T | N | C | S | threads | fwd built-in / ours (ms) | fwd speedup | fwd+bwd built-in / ours (ms) "
        "| fwd+bwd speedup | peak MiB built-in / ours | max loss diff | max grad diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "n/a" if r["builtin_peak_mb"] is None else f"{r['builtin_peak_mb']:.1f} / {r['ours_peak_mb']:.1f}"
        print(
            f"| {r['T']} | {r['N']} | {r['C']} | {r['S']} | {r.get('threads', '?')} "
            f"| {r['builtin_fwd_ms']:.3f} / {r['ours_fwd_ms']:.3f} | {speedup(r, 'fwd')} "
            f"| {r['builtin_train_ms']:.3f} / {r['ours_train_ms']:.3f} | {speedup(r, 'train')} | {peak} "
            f"| {r['max_loss_diff']:.1e} | {r['max_grad_diff']:.1e} |" + (" unsteady" if r.get("unsteady") else "")
        )
    first = rows[0]
    print(
        f"\n{first['device']}, {first['dtype']}, kernels: {first.get('isa', '?')}; "
        f"{platform.processor() or platform.machine()}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
