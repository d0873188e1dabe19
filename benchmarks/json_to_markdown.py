"""Prints the rows of one or more `ctc-bench --json` files as one markdown table."""

import json
import platform
import sys


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
            f"| {r['builtin_fwd_ms']:.3f} / {r['ours_fwd_ms']:.3f} | {r['speedup_fwd']:.1f}x "
            f"| {r['builtin_train_ms']:.3f} / {r['ours_train_ms']:.3f} | {r['speedup_train']:.1f}x | {peak} "
            f"| {r['max_loss_diff']:.1e} | {r['max_grad_diff']:.1e} |"
        )
    first = rows[0]
    print(
        f"\n{first['device']}, {first['dtype']}, kernels: {first.get('isa', '?')}; "
        f"{platform.processor() or platform.machine()}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
