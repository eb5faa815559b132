"""What a failed fault test leaves behind, when ``AETHER_FAULT_ARTIFACTS`` names a folder.

For every NATS cluster the test started: each server is stopped, its whole work folder (log,
JetStream store, Raft WAL) copied, and every stream's message blocks are parsed straight from
the copy (no server involved: no replica can hand a read to another or catch up from one). So the
dump of ``n1`` is exactly what replica ``n1`` had stored, and ``divergence.txt`` compares the
replicas sequence by sequence. Tests add their own view (which
acks the writer got) with :func:`write_json`. Used by ``scripts/fault_loop.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from aether.codec import decode_event
from aether.errors import AetherError
from aether.testing import NatsCluster

ENV_ARTIFACTS = "AETHER_FAULT_ARTIFACTS"


def artifacts_dir(test_name: str) -> Path | None:
    """The folder for this test's artefacts, or ``None`` when collection is off."""
    root = os.environ.get(ENV_ARTIFACTS)
    if not root:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in test_name)[:120]
    path = Path(root) / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(test_name: str, file_name: str, value: Any) -> None:
    """Write ``value`` as JSON into the test's artefact folder (no-op when collection is off)."""
    folder = artifacts_dir(test_name)
    if folder is not None:
        (folder / file_name).write_text(json.dumps(value, indent=1, default=str))


_HBIT = 1 << 31
_EBIT = 1 << 63
_TBIT = 1 << 62
_HDR = 22


def read_blocks(stream_dir: Path) -> dict[int, list[Any]]:
    """Every message record in a stream's message blocks (``msgs/*.blk``), straight from disk.

    No server is involved, so this is what this replica stored: ``{seq: [subject, msg_id, event,
    time_ns]}``. Erased records and tombstones are skipped (deletions recorded only in the block
    index are not applied: the fault tests never delete events).
    """
    rows: dict[int, list[Any]] = {}
    blocks = sorted((stream_dir / "msgs").glob("*.blk"), key=lambda p: int(p.stem))
    for block in blocks:
        buf = block.read_bytes()
        index = 0
        while index + _HDR <= len(buf):
            rl = int.from_bytes(buf[index:index + 4], "little")
            seq = int.from_bytes(buf[index + 4:index + 12], "little")
            ts = int.from_bytes(buf[index + 12:index + 20], "little")
            slen = int.from_bytes(buf[index + 20:index + 22], "little")
            has_headers = bool(rl & _HBIT)
            rl &= ~_HBIT
            if rl < _HDR + 8 or index + rl > len(buf):
                break  # a torn last record
            data = buf[index + _HDR:index + rl - 8]
            index += rl
            if seq & (_EBIT | _TBIT):
                continue
            subject = data[:slen].decode(errors="replace")
            rest = data[slen:]
            headers = b""
            if has_headers:
                hlen = int.from_bytes(rest[:4], "little")
                headers, rest = rest[4:4 + hlen], rest[4 + hlen:]
            msg_id = next((line.split(b":", 1)[1].strip().decode() for line in headers.split(b"\r\n")
                           if line.lower().startswith(b"nats-msg-id:")), None)
            event: Any = None
            if "." in subject and ".e." in subject:
                try:
                    decoded = decode_event(rest)
                    event = {"actor_id": decoded.actor_id, "version": decoded.version, "id": decoded.id,
                             "data": decoded.data}
                except AetherError:
                    event = None
            rows[seq] = [subject, msg_id, event, ts]
    return rows


def _dump_replica(store_root: Path, out: Path) -> dict[str, dict[int, list[Any]]]:
    result: dict[str, dict[int, list[Any]]] = {}
    for stream_dir in sorted(store_root.glob("jetstream/*/streams/*")):
        rows = read_blocks(stream_dir)
        result[stream_dir.name] = rows
        with open(out / f"{stream_dir.name}.jsonl", "w") as fh:
            for seq in sorted(rows):
                subject, msg_id, event, ts = rows[seq]
                fh.write(json.dumps({"seq": seq, "subject": subject, "msg_id": msg_id, "event": event,
                                     "ts": ts}) + "\n")
    return result


def _compare(dumps: dict[str, dict[str, dict[int, list[Any]]]], out: Path) -> None:
    lines: list[str] = []
    streams = sorted({s for d in dumps.values() for s in d})
    for stream in streams:
        per = {name: d.get(stream, {}) for name, d in dumps.items()}
        seqs = sorted({q for rows in per.values() for q in rows})
        diffs = []
        for q in seqs:
            keys = {name: (tuple(rows[q][:2]) if q in rows else None) for name, rows in per.items()}
            if len(set(keys.values())) > 1:
                diffs.append((q, keys))
        summary = ", ".join(f"{n}: {len(r)} msgs, last {max(r, default=0)}" for n, r in per.items())
        lines.append(f"stream {stream}: {summary}; {len(diffs)} sequences differ")
        for q, keys in diffs[:200]:
            lines.append(f"  seq {q}: " + "; ".join(f"{n}={v}" for n, v in keys.items()))
    (out / "divergence.txt").write_text("\n".join(lines) + "\n")


def collect_cluster(cluster: NatsCluster, out: Path) -> None:
    """Stop the cluster, copy each server's folder, dump each replica's blocks, compare them."""
    out.mkdir(parents=True, exist_ok=True)
    for server in cluster.servers:
        server.stop_sync()
    dumps: dict[str, dict[str, dict[int, list[Any]]]] = {}
    for server in cluster.servers:
        name = server.server_name or "nats"
        raw = out / f"{name}.raw"
        shutil.copytree(server.store_dir.parent, raw, dirs_exist_ok=True)
        dump_dir = out / f"{name}.dump"
        dump_dir.mkdir(exist_ok=True)
        try:
            dumps[name] = _dump_replica(raw / "jetstream", dump_dir)
        except Exception as exc:  # diagnostics must never hide the test's own failure
            (out / f"{name}.dump-error.txt").write_text(repr(exc))
    _compare(dumps, out)
