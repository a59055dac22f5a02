#!/usr/bin/env python3
"""Where a payment's time goes: the gaps between the steps of recent payments.

After a `ledgerctl load --payments` run against a running ledgerd:

    tools/payment-steps.py LEDGERCTL ADDR ADMIN_TOKEN_FILE METRICS_ADDR [SAMPLE]

reads the log's last events (from the head position on METRICS_ADDR/metrics), picks
SAMPLE (default 300) finished payments of kind send, reads each with `ledgerctl
payments ID`, and prints the median and p99 in ms of each gap between two recorded
steps. A step's time is when the platform decided it, before its event was appended
(so "created -> risk" includes the durable append of the creation and the driver
being scheduled; "direct -> finished" the durable append of the step's outcome).
"""

import json
import subprocess
import sys
import urllib.request


def main():
    ledgerctl, addr, token_file, metrics = sys.argv[1:5]
    sample = int(sys.argv[5]) if len(sys.argv) > 5 else 300
    head = 0
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("ledger_log_head_position "):
                head = int(line.split()[1])
    base = [ledgerctl, "--addr", addr, "--token-file", token_file, "--json"]
    events = subprocess.run(
        base + ["events", "--from", str(max(0, head - 20 * sample))], capture_output=True, text=True, check=True
    ).stdout
    ids = []
    for line in events.splitlines():
        event = json.loads(line)
        if event["event_type"] == "PaymentFinished" and event["stream"].startswith("payment-"):
            ids.append(event["stream"][len("payment-"):])
    gaps = {}
    for payment_id in ids[-sample:]:
        payment = json.loads(
            subprocess.run(base + ["payments", payment_id], capture_output=True, text=True, check=True).stdout
        )
        if payment["kind"] != "send":
            continue
        steps = payment["steps"]
        for before, after in zip(steps, steps[1:]):
            name = f"{before['step']} -> {after['step']}"
            gaps.setdefault(name, []).append((after["at_ns"] - before["at_ns"]) / 1e6)
        gaps.setdefault("created -> finished", []).append((steps[-1]["at_ns"] - steps[0]["at_ns"]) / 1e6)
    for name, values in gaps.items():
        values.sort()
        median = values[len(values) // 2]
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"{name:<22} n={len(values):<5} median {median:7.2f} ms   p99 {p99:7.2f} ms")


if __name__ == "__main__":
    main()
