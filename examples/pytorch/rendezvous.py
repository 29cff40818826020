"""Meet every rank over TCP, as torch.distributed's env:// rendezvous does.

Rank 0 listens on MASTER_PORT and waits for WORLD_SIZE - 1 peers; every other rank
connects to MASTER_ADDR:MASTER_PORT (retrying while the Master's pod and Service come
up), says its rank, and reads back the ranks that met. Any rank named by FAIL_RANK
exits 1 at once instead.
"""
import os
import socket
import sys
import time

rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if os.environ.get("FAIL_RANK", "") == str(rank):
    print(f"rank {rank} of {world}: failing on purpose (FAIL_RANK)", flush=True)
    sys.exit(1)
deadline = time.monotonic() + 180
if rank == 0:
    server = socket.create_server(("", port))
    server.settimeout(180)
    peers = {}
    while len(peers) < world - 1:
        conn, _ = server.accept()
        conn.settimeout(30)
        peers[int(conn.recv(16).decode())] = conn
    met = sorted([0, *peers])
    for conn in peers.values():
        conn.sendall(f"{world} {met}".encode())
        conn.close()
    print(f"rank 0 of {world}: met ranks {met}", flush=True)
    sys.exit(0 if met == list(range(world)) else 1)
while True:
    try:
        conn = socket.create_connection((addr, port), timeout=5)
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            print(f"rank {rank}: {addr}:{port} unreachable: {exc}", flush=True)
            sys.exit(2)
        time.sleep(0.5)
conn.sendall(str(rank).encode())
reply = conn.recv(256).decode()
print(f"rank {rank} of {world}: master {addr}:{port} answered {reply}", flush=True)
sys.exit(0 if reply.startswith(f"{world} ") else 1)
