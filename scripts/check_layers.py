#!/usr/bin/env python3
"""Checks the module layering of DESIGN §6 on the sources: a file under src/<module>/ may include
headers of its own module and of the modules LAYERS allows it, nothing else. The agent, in
particular, shares only common, http and protocol with the server. Exit 1 listing each include
that breaks the rule. Standard library only."""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# module -> the modules it may include (besides itself)
LAYERS = {
    "common": set(),
    "http": {"common"},
    "protocol": {"common", "http"},
    "store": {"common"},
    "jobs": {"common", "store"},
    "scheduling": {"common", "store", "jobs", "protocol"},
    "api": {"common", "http", "protocol", "store", "jobs", "scheduling"},
    "agent": {"common", "http", "protocol"},
    "cli": {"common", "http", "protocol", "store", "jobs", "scheduling", "api", "agent"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/')


def main():
    bad = []
    src = os.path.join(ROOT, "src")
    for module in sorted(os.listdir(src)):
        path = os.path.join(src, module)
        if not os.path.isdir(path):
            continue
        if module not in LAYERS:
            bad.append("src/%s: a module check_layers.py does not know (add it to LAYERS)" % module)
            continue
        allowed = LAYERS[module] | {module}
        for dirpath, _, names in os.walk(path):
            for n in sorted(names):
                if not n.endswith((".cc", ".h")):
                    continue
                f = os.path.join(dirpath, n)
                with open(f, errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if m and m.group(1) not in allowed:
                            bad.append("%s:%d: %s includes %s/ (allowed: %s)" % (
                                os.path.relpath(f, ROOT), lineno, module, m.group(1),
                                ", ".join(sorted(LAYERS[module])) or "nothing"))
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
