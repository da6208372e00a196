#!/usr/bin/env python3
"""Drive the official MCP memory server (@modelcontextprotocol/server-memory)
over stdio with newline-delimited JSON-RPC 2.0 and produce test fixtures.

Usage:
    mkdir -p /tmp/mcp-mem && cd /tmp/mcp-mem && npm install @modelcontextprotocol/server-memory
    python3 mcp_memory_fixture.py [--server PATH/TO/dist/index.js] [--workdir /tmp/mcp-mem] [--out DIR]

Writes into --out (default: this script's directory):
    mcp-memory.jsonl        the memory file the server wrote (MEMORY_FILE_PATH)
    mcp-memory-tools.json   the tools/list result, pretty JSON
    mcp-memory-graph.json   the final read_graph result text, pretty JSON
and into --workdir: transcript.jsonl (every request/response, in order).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

ap = argparse.ArgumentParser()
ap.add_argument("--workdir", default="/tmp/mcp-mem")
ap.add_argument("--server", default=None)
ap.add_argument("--out", default=HERE)
args = ap.parse_args()

server = args.server or os.path.join(
    args.workdir, "node_modules/@modelcontextprotocol/server-memory/dist/index.js")
mem = os.path.join(args.workdir, "memory.jsonl")
if os.path.exists(mem):
    os.remove(mem)

env = dict(os.environ, MEMORY_FILE_PATH=mem)
proc = subprocess.Popen(["node", server], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        env=env, text=True, encoding="utf-8")
transcript = []
next_id = 0


def send(obj):
    line = json.dumps(obj, ensure_ascii=False)
    transcript.append({"dir": "send", "msg": obj})
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def request(method, params=None):
    global next_id
    next_id += 1
    msg = {"jsonrpc": "2.0", "id": next_id, "method": method}
    if params is not None:
        msg["params"] = params
    send(msg)
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("server closed stdout")
        resp = json.loads(line)
        transcript.append({"dir": "recv", "msg": resp})
        if resp.get("id") == next_id:
            if "error" in resp:
                raise SystemExit(f"JSON-RPC error: {resp['error']}")
            return resp["result"]


def call(name, arguments):
    return request("tools/call", {"name": name, "arguments": arguments})


init = request("initialize", {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "caxton-fixture", "version": "0.1.0"},
})
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
tools = request("tools/list")

call("create_entities", {"entities": [
    {"name": "Alice Johnson", "entityType": "person",
     "observations": ["Senior engineer at Acme Corp", "Prefers Rust over Go"]},
    {"name": "Bob Müller", "entityType": "person",
     "observations": ["Lives in Zürich — speaks Deutsch and 日本語 🚀"]},
    {"name": "Carol Smith", "entityType": "person",
     "observations": ['Said "ship it"\nthen left the meeting']},
    {"name": "Acme Corp", "entityType": "organization",
     "observations": ["Makes anvils", "Founded in 1949", "Headquartered in Phoenix"]},
    {"name": "Globex", "entityType": "organization",
     "observations": ["Competitor of Acme"]},
    {"name": "Project Roadrunner", "entityType": "project",
     "observations": ["Internal codename for the anvil tracker", "Due in Q3"]},
]})
# duplicate name (already exists) -> skipped, result is []
call("create_entities", {"entities": [
    {"name": "Globex", "entityType": "organization", "observations": ["ignored"]}]})

call("create_relations", {"relations": [
    {"from": "Alice Johnson", "to": "Acme Corp", "relationType": "works_at"},
    {"from": "Carol Smith", "to": "Acme Corp", "relationType": "works_at"},
    {"from": "Bob Müller", "to": "Globex", "relationType": "works_at"},
    {"from": "Alice Johnson", "to": "Project Roadrunner", "relationType": "leads"},
    {"from": "Acme Corp", "to": "Project Roadrunner", "relationType": "owns"},
    {"from": "Carol Smith", "to": "Bob Müller", "relationType": "collaborates_with"},
]})
# exact duplicate triple -> skipped, result is []
call("create_relations", {"relations": [
    {"from": "Alice Johnson", "to": "Acme Corp", "relationType": "works_at"}]})

call("add_observations", {"observations": [
    {"entityName": "Alice Johnson", "contents": ["Mentors Carol", "Prefers Rust over Go"]},
    {"entityName": "Project Roadrunner", "contents": ["Uses SQLite for storage"]},
]})
# unknown entity -> tool error (isError: true), graph untouched
call("add_observations", {"observations": [
    {"entityName": "Nobody", "contents": ["x"]}]})

call("delete_observations", {"deletions": [
    {"entityName": "Acme Corp", "observations": ["Founded in 1949"]}]})
call("delete_relations", {"relations": [
    {"from": "Alice Johnson", "to": "Project Roadrunner", "relationType": "leads"}]})
# Globex has relation Bob Müller -works_at-> Globex: it must vanish too
call("delete_entities", {"entityNames": ["Globex"]})

graph = call("read_graph", {})
call("search_nodes", {"query": "acme"})
call("open_nodes", {"names": ["Alice Johnson", "Project Roadrunner"]})

proc.stdin.close()
proc.wait(timeout=10)

os.makedirs(args.out, exist_ok=True)
with open(mem, "rb") as f:
    data = f.read()
with open(os.path.join(args.out, "mcp-memory.jsonl"), "wb") as f:
    f.write(data)
with open(os.path.join(args.out, "mcp-memory-tools.json"), "w", encoding="utf-8") as f:
    json.dump(tools, f, indent=2, ensure_ascii=False)
    f.write("\n")
with open(os.path.join(args.out, "mcp-memory-graph.json"), "w", encoding="utf-8") as f:
    json.dump(json.loads(graph["content"][0]["text"]), f, indent=2, ensure_ascii=False)
    f.write("\n")
with open(os.path.join(args.workdir, "transcript.jsonl"), "w", encoding="utf-8") as f:
    for t in transcript:
        f.write(json.dumps(t, ensure_ascii=False) + "\n")
print("server:", init["serverInfo"], "protocol:", init["protocolVersion"], file=sys.stderr)
