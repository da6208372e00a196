#!/usr/bin/env python3
"""Checks that a .wasm file is a WASI preview 1 command: it exports `_start` and `memory`, and
imports nothing but functions from `wasi_snapshot_preview1`. Prints its imports and memory size.
Standard library only: parses the binary format's import, memory and export sections itself."""

import sys


def leb(data, pos):
    """An unsigned LEB128 number at pos: (value, next position)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def name(data, pos):
    n, pos = leb(data, pos)
    return data[pos:pos + n].decode("utf-8"), pos + n


def limits(data, pos):
    flags = data[pos]
    lo, pos = leb(data, pos + 1)
    hi = None
    if flags & 1:
        hi, pos = leb(data, pos)
    return (lo, hi), pos


def main(path):
    data = open(path, "rb").read()
    if data[:8] != b"\0asm\1\0\0\0":
        sys.exit(f"{path}: not a WebAssembly 1.0 module")
    imports, exports, memories = [], {}, []
    pos = 8
    while pos < len(data):
        section = data[pos]
        size, pos = leb(data, pos + 1)
        end = pos + size
        if section == 2:  # imports
            count, p = leb(data, pos)
            for _ in range(count):
                module, p = name(data, p)
                field, p = name(data, p)
                kind = data[p]
                p += 1
                if kind == 0:  # function: type index
                    _, p = leb(data, p)
                elif kind == 1:  # table: reference type, limits
                    _, p = limits(data, p + 1)
                elif kind == 2:  # memory: limits
                    lim, p = limits(data, p)
                    memories.append(lim)
                elif kind == 3:  # global: value type, mutability
                    p += 2
                else:
                    sys.exit(f"{path}: unknown import kind {kind}")
                imports.append((module, field, kind))
        elif section == 5:  # memories
            count, p = leb(data, pos)
            for _ in range(count):
                lim, p = limits(data, p)
                memories.append(lim)
        elif section == 7:  # exports
            count, p = leb(data, pos)
            for _ in range(count):
                field, p = name(data, p)
                kind = data[p]
                _, p = leb(data, p + 1)
                exports[field] = kind
        pos = end

    problems = []
    if exports.get("_start") != 0:
        problems.append("does not export a function `_start`")
    if exports.get("memory") != 2:
        problems.append("does not export its memory as `memory`")
    for module, field, kind in imports:
        if module != "wasi_snapshot_preview1" or kind != 0:
            problems.append(f"imports {module}.{field} (kind {kind}), not a wasi_snapshot_preview1 function")

    print(f"{path}: {len(data)} bytes")
    print("exports: " + ", ".join(sorted(exports)))
    print("imports: " + ", ".join(f"{m}.{f}" for m, f, _ in imports))
    for lo, hi in memories:
        print(f"memory: {lo} pages initially ({lo * 64 / 1024:.2f} MiB), maximum {hi if hi is not None else 'none'}")
    if problems:
        for p in problems:
            print("PROBLEM: " + p)
        sys.exit(1)
    print("ok: a WASI preview 1 command")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "checksum.wasm")
