#!/usr/bin/env python3
"""Sum a perf profile's self time by component and list its top symbols.

Usage: perf report --stdio --no-children --sort dso,symbol -g none \\
           --percent-limit 0 -i perf.data | profile_summary.py [TOP]

Each line of perf's report is a sample share, a shared object and a symbol.
A symbol counts for:
  kernel     every symbol of [kernel.kallsyms], split into:
    kernel-net    TCP, IP, socket buffers and the socket system calls
    kernel-sched  task switches, wake-ups, futexes and the points where
                  interrupts are enabled again (see the note below)
    kernel-epoll  epoll
    kernel-other  system call entry and exit, copies, memory and the rest
  allocator  malloc, free and the other glibc heap functions, and Rust's
             __rust_alloc family that calls them
  keygate    Rust symbols whose path starts in the keygate crate, including
             keygate's implementations of pingora's traits
  pingora    Rust symbols whose path starts in a pingora crate, including
             pingora's generic code instantiated for keygate's types
  tokio      Rust symbols of tokio and mio
  std        Rust symbols of std, core and alloc (copies, hashing, formatting)
  crates     Rust symbols of every other crate, named in the output
  libc       the rest of glibc (memcpy, memmove and the like)
  vdso       clock reads that the kernel maps into the process
  unknown    samples perf could not name
TOP (default 20) sets how many symbols are listed, overall and of keygate.

NOTE: the cpu-clock event is a timer interrupt. While the kernel runs with
interrupts disabled, the sample waits and lands where interrupts are enabled
again (_raw_spin_unlock_irqrestore, finish_task_switch). So kernel-sched
also contains time of code that ran just before those points, such as
network work done with interrupts off. The kernel total is reliable, its
split less so.
"""

import re
import sys
from collections import defaultdict

# perf adds two IPC columns, "-" when the machine has no branch counters.
LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*?)(?:\s+-\s+-)?\s*$")
SAMPLES = re.compile(r"^# Samples: (.*)$")
ALLOCATOR = re.compile(
    r"^(__libc_)?(malloc|free|calloc|realloc|cfree|memalign|posix_memalign)(@.*)?$"
    r"|^_int_(malloc|free|realloc|memalign)|^malloc_consolidate$|^sysmalloc$|^unlink_chunk"
    r"|^tcache_|(^|::)__(rust|rdl)_(alloc|dealloc|realloc|alloc_zeroed|no_alloc_shim)"
)
KERNEL_NET = re.compile(
    r"tcp|inet|^ip_|^__ip_|skb|sock|^__sys_(send|recv|getpeername|accept|connect)|loopback"
    r"|^net|^__net|^__dev_|^dev_|^validate_xmit|^process_backlog|^napi|softirq|^_copy_|datagram"
)
KERNEL_SCHED = re.compile(
    r"^finish_task_switch|_raw_spin_unlock_irq|schedule|wake|futex|^ttwu|enqueue|dequeue"
    r"|^update_curr|^pick_next|^switch_|^__switch|^select_task|^psi_"
)
KERNEL_EPOLL = re.compile(r"^ep_|epoll")
# Leading wrappers that do not show which crate the code belongs to.
WRAPPERS = ("core::ptr::drop_in_place<", "<", "&", "*const ", "*mut ", "dyn ")
STD_CRATES = {"std", "core", "alloc"}


def crate_of(symbol):
    """Return the first path segment of a demangled Rust symbol, or None.

    In `<T as Trait>::method` with a generic T, the trait's crate counts.
    """
    name = re.sub(r"^<[A-Z][A-Za-z0-9_]* as ", "<", symbol)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPERS:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                changed = True
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    return match.group(1) if match else None


def component_of(dso, kind, symbol):
    if kind == "k" or dso.startswith("[kernel"):
        for component, pattern in (
            ("kernel-net", KERNEL_NET),
            ("kernel-sched", KERNEL_SCHED),
            ("kernel-epoll", KERNEL_EPOLL),
        ):
            if pattern.search(symbol):
                return component
        return "kernel-other"
    if dso == "[vdso]":
        return "vdso"
    if ALLOCATOR.search(symbol):
        return "allocator"
    if symbol.startswith("0x") or symbol == "[unknown]":
        return "unknown"
    crate = crate_of(symbol)
    if crate is None:
        return "libc" if dso.startswith("libc") else "unknown"
    if crate == "keygate":
        return "keygate"
    if crate.startswith("pingora"):
        return "pingora"
    if crate in ("tokio", "mio"):
        return "tokio"
    if crate in STD_CRATES:
        return "std"
    return f"crates ({crate})"


def main(argv):
    top = int(argv[1]) if len(argv) > 1 else 20
    entries = []
    samples = "an unknown number of samples"
    for line in sys.stdin:
        counted = SAMPLES.match(line)
        if counted:
            samples = counted.group(1)
        match = LINE.match(line)
        if match:
            share, dso, kind, symbol = match.groups()
            entries.append((float(share), dso, kind, symbol))
    if not entries:
        sys.stderr.write("profile_summary.py: no samples in the report\n")
        return 1

    totals = defaultdict(float)
    crates = defaultdict(float)
    for share, dso, kind, symbol in entries:
        component = component_of(dso, kind, symbol)
        if component.startswith("crates ("):
            crates[component[len("crates (") : -1]] += share
            component = "crates"
        totals[component] += share

    by_share = sorted(totals.items(), key=lambda item: -item[1])
    kernel_parts = [(name, share) for name, share in by_share if name.startswith("kernel")]
    print(f"  self time by component ({samples}):")
    print(f"    {'kernel':<14} {sum(share for _, share in kernel_parts):6.2f}%")
    for component, share in kernel_parts:
        print(f"      {component:<12} {share:6.2f}%")
    for component, share in by_share:
        if not component.startswith("kernel"):
            print(f"    {component:<14} {share:6.2f}%")
    if crates:
        named = ", ".join(
            f"{crate} {share:.1f}%" for crate, share in sorted(crates.items(), key=lambda item: -item[1])
        )
        print(f"    crates: {named}")
    ranked = sorted(entries, key=lambda entry: -entry[0])
    print(f"  top {top} symbols by self time:")
    for share, dso, kind, symbol in ranked[:top]:
        component = component_of(dso, kind, symbol).split(" ")[0]
        print(f"    {share:6.2f}%  {component:<12} {symbol[:110]}")
    own = [entry for entry in ranked if component_of(*entry[1:]) == "keygate"]
    print(f"  top {min(top, len(own))} keygate symbols by self time:")
    for share, _, _, symbol in own[:top]:
        print(f"    {share:6.2f}%  {symbol[:120]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
