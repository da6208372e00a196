"""Runs the calculator agent N times, one after another, over the public JSON socket and prints the
mean wall time per run. Usage: json-runs.py API_SOCKET N"""
import socket
import sys
import time

sock_path, n = sys.argv[1], int(sys.argv[2])


def run():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rwb")
    f.write(b'{"run":{"agent":"calculator","input":"What is 6 * 7?"}}\n')
    f.flush()
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("the daemon closed the connection")
        if b'"finished"' in line:
            break
        if b'"failed"' in line or b'"error"' in line:
            raise SystemExit(f"run failed: {line!r}")
    s.close()


t = time.time()
for _ in range(n):
    run()
print("per run ms", (time.time() - t) / n * 1000)
