#!/usr/bin/env python3
"""Run a Caxton agent over the local socket using only Python's standard library.

Usage: run_agent.py [--socket PATH] [--var KEY=VALUE ...] AGENT INPUT

Speaks the newline-delimited JSON form of the socket API (see the README, "Socket API"):
one request object per line, then one response object per line. Prints each event as it
arrives on stderr and the agent's answer on stdout. Exit status: 0 answered, 1 failed,
4 busy or shutting down, 5 timed out.
"""
import argparse
import json
import os
import socket
import sys


def default_socket():
    if os.environ.get("CAXTON_SOCKET"):
        return os.environ["CAXTON_SOCKET"]
    if os.environ.get("CAXTON_RUNTIME_DIR"):
        return os.path.join(os.environ["CAXTON_RUNTIME_DIR"], "api.sock")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "caxton", "api.sock")
    return "/tmp/caxton-%d/api.sock" % os.getuid()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", default=default_socket())
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("agent")
    p.add_argument("input")
    args = p.parse_args()
    variables = dict(v.split("=", 1) for v in args.var)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(args.socket)
    except OSError as e:
        print("no Caxton daemon at %s (%s); start one with `caxton serve`" % (args.socket, e), file=sys.stderr)
        return 3
    stream = sock.makefile("rw", encoding="utf-8", newline="\n")
    # The hello is optional on the JSON path; sending it makes a version mismatch explicit.
    stream.write(json.dumps({"hello": {"role": "script", "protocol": 1, "software": "run_agent.py", "pid": os.getpid()}}) + "\n")
    stream.write(json.dumps({"run": {"agent": args.agent, "input": args.input, "vars": variables}}) + "\n")
    stream.flush()

    welcome = json.loads(stream.readline())
    if "welcome" not in welcome:
        print("rejected: %s" % welcome, file=sys.stderr)
        return 1
    for line in stream:
        msg = json.loads(line)
        if "error" in msg:
            print("error (%s): %s" % (msg["error"]["kind"], msg["error"]["message"]), file=sys.stderr)
            return {"busy": 4, "shutting_down": 4}.get(msg["error"]["kind"], 1)
        (kind, body), = msg["event"].items()
        if kind == "finished":
            print(body["answer"])
            return 0
        if kind == "failed":
            print("failed (%s): %s" % (body["error"]["kind"], body["error"]["message"]), file=sys.stderr)
            return {"timeout": 5}.get(body["error"]["kind"], 1)
        print("event %s %s" % (kind, json.dumps(body)), file=sys.stderr)
    print("the daemon closed the connection mid-run", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
