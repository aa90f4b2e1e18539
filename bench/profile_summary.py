"""Summarise a py-spy raw (collapsed-stack) profile recorded with `--threads`, e.g. the one
`gateway_overhead.py --profile PREFIX` writes to PREFIX.raw.txt:

    .venv/bin/python bench/profile_summary.py /tmp/gw.raw.txt [--top 25] [--rate 250 --seconds 10]

Prints, per thread, its share of all samples; then for the event-loop thread (MainThread) and the
trace writer: self time by leaf package, self time by function, and inclusive time for functions in
our code (gateway/, traces/, opentracy_site/), each as % of that thread's samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

OURS = ("gateway/", "traces/", "opentracy_site/")
LINE = re.compile(r"^thread \((\d+)\): ([^;]*);(.*) (\d+)$")
FRAME = re.compile(r"^(.*) \((.*?):(\d+)\)$")


def frame_key(frame: str) -> tuple[str, str]:
    """('file:function', file) without the line number, so a function is counted once."""
    m = FRAME.match(frame)
    if not m:
        return frame, ""
    return f"{m[2]}:{m[1]}", m[2]


def package(path: str) -> str:
    if not path:
        return "?"
    if path.startswith(OURS):
        return "ours: " + path.split("/", 1)[0]
    if path.startswith("<frozen"):
        return "python (frozen)"
    head = path.split("/", 1)[0]
    return head if "/" in path else f"stdlib: {head}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw", type=Path)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--threads", default="MainThread,trace-writer", help="threads to detail (names)")
    args = ap.parse_args()

    per_thread: Counter[str] = Counter()
    stacks: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in args.raw.read_text().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name = m[2] if not m[2].startswith("ThreadPoolExecutor") else "ThreadPoolExecutor"
        n = int(m[4])
        per_thread[name] += n
        stacks[name].append((m[3].split(";"), n))
    total = sum(per_thread.values())
    print(f"samples: {total}")
    for name, n in per_thread.most_common():
        print(f"  {name:<24}{n:>8}  {100 * n / total:5.1f}%")

    for name in args.threads.split(","):
        if name not in stacks:
            continue
        n_thread = per_thread[name]
        self_fn: Counter[str] = Counter()
        self_pkg: Counter[str] = Counter()
        incl_ours: Counter[str] = Counter()
        for frames, n in stacks[name]:
            key, path = frame_key(frames[-1])
            self_fn[key] += n
            self_pkg[package(path)] += n
            seen = set()
            for f in frames:
                k, p = frame_key(f)
                if p.startswith(OURS) and k not in seen:
                    seen.add(k)
                    incl_ours[k] += n
        print(f"\n== {name}: {n_thread} samples ==")
        print("-- self time by package (leaf frame) --")
        for k, n in self_pkg.most_common(args.top):
            print(f"  {100 * n / n_thread:5.1f}%  {k}")
        print("-- self time by function (leaf frame) --")
        for k, n in self_fn.most_common(args.top):
            print(f"  {100 * n / n_thread:5.1f}%  {k}")
        print("-- inclusive time, our code --")
        for k, n in incl_ours.most_common(args.top):
            print(f"  {100 * n / n_thread:5.1f}%  {k}")


if __name__ == "__main__":
    main()
