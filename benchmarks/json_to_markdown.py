"""Prints the rows of a `ctc-bench --json` file as the README's markdown table."""
import json
import platform
import sys


def main(path):
    with open(path) as f:
        rows = json.load(f)
    print("| T | N | C | S | fwd built-in / ours (ms) | fwd speedup | fwd+bwd built-in / ours (ms) "
          "| fwd+bwd speedup | peak MiB built-in / ours | max loss diff | max grad diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "n/a" if r["builtin_peak_mb"] is None else f"{r['builtin_peak_mb']:.1f} / {r['ours_peak_mb']:.1f}"
        print(f"| {r['T']} | {r['N']} | {r['C']} | {r['S']} | {r['builtin_fwd_ms']:.2f} / {r['ours_fwd_ms']:.2f} "
              f"| {r['speedup_fwd']:.1f}x | {r['builtin_train_ms']:.2f} / {r['ours_train_ms']:.2f} "
              f"| {r['speedup_train']:.1f}x | {peak} | {r['max_loss_diff']:.1e} | {r['max_grad_diff']:.1e} |")
    first = rows[0]
    print(f"\n{first['device']}, {first['dtype']}, {first.get('threads', '?')} threads, kernels: "
          f"{first.get('isa', '?')}; {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main(sys.argv[1])
