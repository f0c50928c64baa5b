#!/usr/bin/env python3
"""Checks the size rules of the C++ sources: no file over 600 lines and no function body over 80
lines, unless scripts/size_exceptions.txt names it with a reason.

  scripts/check_sizes.py            # lists every violation; exit 1 if one is not excepted
  scripts/check_sizes.py --all      # also lists the excepted ones and the longest functions

A function is found by a scan of the braces (strings and comments skipped): a `{` at namespace or
class scope whose preceding text ends like a signature (`)` then qualifiers, a trailing return
type or a constructor's initializer list) opens a function; everything up to its matching `}`
is its body, lambdas and nested blocks included. Standard library only.
"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DIRS = ["src", "bench"]
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
EXCEPTIONS = os.path.join(ROOT, "scripts", "size_exceptions.txt")


def strip_code(text):
    """The text with comments, string and character literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not text[i - 1].isalnum()):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = ")" + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            if c == "'" and i > 0 and text[i - 1].isalnum():  # digit separator: 60'000
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


SIGNATURE_END = re.compile(
    r"\)\s*(const|override|final|noexcept(\([^)]*\))?|mutable|&|&&|\s)*"
    r"(->\s*[\w:<>,\s\*&]+)?\s*$")
INIT_LIST = re.compile(r"\)\s*(noexcept\s*)?:\s*[\w:]+\s*[({]")


def functions(path):
    """(name, first line, body lines) of each function defined in the file."""
    with open(path, errors="replace") as f:
        code = strip_code(f.read())
    lines_before = [0]
    for ch in code:
        lines_before.append(lines_before[-1] + (ch == "\n"))
    stack = []  # scope kinds: "ns", "class", "func", "block"
    header_start = 0
    found = []
    opened = []  # (kind, name, line) per open brace
    i = 0
    for i, ch in enumerate(code):
        if ch in ";":
            header_start = i + 1
        elif ch == "{":
            header = code[header_start:i]
            flat = " ".join(header.split())
            inside_func = any(k == "func" for k in stack)
            if inside_func:
                kind = "block"
            elif re.search(r"\b(namespace|extern)\b", flat):
                kind = "ns"
            elif re.search(r"\b(class|struct|union|enum)\b", flat) and "(" not in flat:
                kind = "class"
            elif SIGNATURE_END.search(flat) or INIT_LIST.search(flat):
                kind = "func"
            else:
                kind = "block"
            name = ""
            if kind == "func":
                m = re.search(r"([~\w:]+(?:operator\s*[^\s(]+)?)\s*\(", flat)
                name = m.group(1) if m else flat[:40]
            stack.append(kind)
            opened.append((kind, name, lines_before[i] + 1))
            header_start = i + 1
        elif ch == "}":
            if stack:
                kind = stack.pop()
                k, name, start = opened.pop()
                if kind == "func":
                    end = lines_before[i] + 1
                    found.append((name, start, end - start - 1))
            header_start = i + 1
    return found


def load_exceptions():
    out = {}
    if not os.path.exists(EXCEPTIONS):
        return out
    with open(EXCEPTIONS) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, why = line.partition(" ")
            if not why.strip():
                sys.exit("size_exceptions.txt: %r has no reason" % key)
            out[key] = why.strip()
    return out


def main():
    show_all = "--all" in sys.argv[1:]
    exceptions = load_exceptions()
    used = set()
    bad, excused, longest = [], [], []
    for d in DIRS:
        for dirpath, _, names in os.walk(os.path.join(ROOT, d)):
            for n in sorted(names):
                if not n.endswith((".cc", ".h")):
                    continue
                path = os.path.join(dirpath, n)
                rel = os.path.relpath(path, ROOT)
                with open(path, errors="replace") as f:
                    count = sum(1 for _ in f)
                if count > MAX_FILE_LINES:
                    (excused if rel in exceptions else bad).append(
                        "%s: %d lines (most %d)" % (rel, count, MAX_FILE_LINES))
                    used.add(rel)
                for name, line, body in functions(path):
                    longest.append((body, "%s:%d %s" % (rel, line, name)))
                    if body > MAX_FUNCTION_LINES:
                        key = "%s:%s" % (rel, name)
                        (excused if key in exceptions else bad).append(
                            "%s:%d: %s has %d lines (most %d)" %
                            (rel, line, name, body, MAX_FUNCTION_LINES))
                        used.add(key)
    stale = sorted(set(exceptions) - used)
    for s in bad:
        print("too long: " + s)
    for s in stale:
        print("size_exceptions.txt: %s is no longer too long; remove it" % s)
    if show_all:
        for s in excused:
            print("excepted: " + s)
        for body, where in sorted(longest, reverse=True)[:15]:
            print("%4d  %s" % (body, where))
    return 1 if bad or stale else 0


if __name__ == "__main__":
    sys.exit(main())
