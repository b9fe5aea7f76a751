"""The allocation an ensemble of MPI applications runs on: nodes with their cores and GPUs.

It comes, first found first, from ``PSMPI_HOSTS`` (``node1:8,node2:8``, or the path of a
host file with one ``host[:cores]`` or ``host slots=N`` per line), from Slurm
(``SLURM_JOB_NODELIST``, ``SLURM_JOB_CPUS_PER_NODE``, ``SLURM_JOB_GPUS`` or
``SLURM_GPUS_ON_NODE``), else it is this machine: its usable cores, and GPUs as
``PSMPI_NODE_GPUS`` (a count, or ``0,1``) or ``CUDA_VISIBLE_DEVICES`` say.
Everything here is pure: the environment is a mapping passed in, so tests fake it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping

from ..errors import ConfigError
from .base import available_cores


@dataclasses.dataclass(frozen=True)
class Node:
    """One host of the allocation: its name, cores and GPU device ids."""

    name: str
    cores: int
    gpus: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Allocation:
    """The nodes an ensemble may use, and where they were read from."""

    nodes: tuple[Node, ...]
    source: str  # "PSMPI_HOSTS", "slurm" or "this machine", for error messages
    slurm: bool = False  # launch with srun

    @property
    def cores(self) -> int:
        return sum(node.cores for node in self.nodes)

    @property
    def gpus(self) -> int:
        return sum(len(node.gpus) for node in self.nodes)

    def describe(self) -> str:
        """``3 nodes (a: 4 cores, 2 GPUs; ...) from slurm``, for error messages."""
        parts = [f"{n.name}: {n.cores} cores" + (f", {len(n.gpus)} GPUs" if n.gpus else "")
                 for n in self.nodes[:8]]
        more = f"; ... {len(self.nodes) - 8} more" if len(self.nodes) > 8 else ""
        return (f"{len(self.nodes)} node(s) ({'; '.join(parts)}{more}) from {self.source}")


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list as names.

    >>> expand_hostlist("node[01-03,07],gpu1,rack[1-2]n[1-2]")
    ['node01', 'node02', 'node03', 'node07', 'gpu1', 'rack1n1', 'rack1n2', 'rack2n1', 'rack2n2']
    """
    names: list[str] = []
    for item in _split_top(hostlist):
        names += _expand_one(item)
    return names


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_one(item: str) -> list[str]:
    match = re.match(r"([^\[]*)\[([^\]]*)\](.*)$", item)
    if match is None:
        return [item]
    prefix, ranges, rest = match.groups()
    tails = _expand_one(rest) if rest else [""]
    names = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ConfigError(f"cannot read the Slurm host list {item!r}: {part!r} is no range")
        for number in range(int(low), int(high or low) + 1):
            names += [f"{prefix}{number:0{len(low)}d}{tail}" for tail in tails]
    return names


def expand_counts(text: str) -> list[int]:
    """Slurm's per-node counts (``SLURM_JOB_CPUS_PER_NODE``) as a list.

    >>> expand_counts("36(x2),18")
    [36, 36, 18]
    """
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ConfigError(f"cannot read the Slurm counts {text!r} (expected e.g. 36(x4),18)")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def parse_hosts(text: str) -> list[Node]:
    """``node1:8,node2:8`` (a host without ``:N`` has one core) as nodes."""
    nodes = []
    for item in re.split(r"[,\s]+", text.strip()):
        if item:
            nodes.append(_host_entry(item, text))
    return nodes


def _host_entry(item: str, whole: str) -> Node:
    name, _, cores = item.partition(":")
    if not name or (cores and not cores.isdigit()) or cores == "0":
        raise ConfigError(f"PSMPI_HOSTS: cannot read {item!r} in {whole!r}; write host:cores "
                          f"entries, e.g. node1:8,node2:8")
    return Node(name, int(cores or 1))


def read_hostfile(path: str) -> list[Node]:
    """A host file: ``host``, ``host:N`` or ``host slots=N`` per line, ``#`` comments."""
    nodes = []
    with open(path) as file:
        for line in file:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            match = re.fullmatch(r"(\S+)\s+slots\s*=\s*(\d+)", line)
            nodes.append(Node(match.group(1), int(match.group(2))) if match
                         else _host_entry(line, path))
    return nodes


def local_gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    """This machine's GPU ids: ``PSMPI_NODE_GPUS`` (a count or ids), else
    ``CUDA_VISIBLE_DEVICES``, else none."""
    text = env.get("PSMPI_NODE_GPUS", "").strip() or env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not text:
        return ()
    if text.isdigit() and "PSMPI_NODE_GPUS" in env:
        return tuple(str(i) for i in range(int(text)))
    return tuple(part.strip() for part in text.split(",") if part.strip())


def slurm_gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    """GPUs Slurm gave each node: ``SLURM_JOB_GPUS`` ids, or a ``SLURM_GPUS_ON_NODE`` count."""
    ids = env.get("SLURM_JOB_GPUS", "").strip()
    if ids:
        return tuple(part.strip() for part in ids.split(",") if part.strip())
    count = env.get("SLURM_GPUS_ON_NODE", "").strip()
    return tuple(str(i) for i in range(int(count))) if count.isdigit() else ()


def from_slurm(env: Mapping[str, str]) -> Allocation:
    names = expand_hostlist(env["SLURM_JOB_NODELIST"])
    counts = expand_counts(env.get("SLURM_JOB_CPUS_PER_NODE", "1"))
    if len(counts) == 1:
        counts = counts * len(names)
    if len(counts) != len(names):
        raise ConfigError(f"Slurm gives {len(names)} nodes ({env['SLURM_JOB_NODELIST']}) but "
                          f"{len(counts)} CPU counts ({env.get('SLURM_JOB_CPUS_PER_NODE')})")
    gpus = slurm_gpus(env)
    return Allocation(tuple(Node(name, cores, gpus) for name, cores in zip(names, counts)),
                      "slurm", slurm=True)


def detect(env: Mapping[str, str] | None = None) -> Allocation:
    """The allocation: ``PSMPI_HOSTS`` (a list or a host file), else Slurm's job, else this
    machine."""
    env = os.environ if env is None else env
    hosts = env.get("PSMPI_HOSTS", "").strip()
    if hosts:
        nodes = read_hostfile(hosts) if os.path.isfile(hosts) else parse_hosts(hosts)
        if not nodes:
            raise ConfigError(f"PSMPI_HOSTS={hosts!r} names no host")
        if len(nodes) == 1:  # one host: its GPUs can be faked for tests
            nodes = [dataclasses.replace(nodes[0], gpus=local_gpus(env))]
        return Allocation(tuple(nodes), "PSMPI_HOSTS")
    if env.get("SLURM_JOB_NODELIST"):
        return from_slurm(env)
    return Allocation((Node(socket.gethostname(), available_cores(), local_gpus(env)),),
                      "this machine")
