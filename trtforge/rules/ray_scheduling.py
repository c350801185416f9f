"""What a build asks of a Ray cluster, and whether any node of the cluster offers it (pure rules).

A Ray node advertises resources: ``CPU``, ``GPU``, ``node:<ip>`` and, on a node whose GPUs Ray
detected, ``accelerator_type:<TYPE>`` (the type named in :mod:`trtforge.rules.gpus`: ``L4``,
``A10G``, ``H100``, ...); `ray start --resources` adds any other. A task asks for an amount of
each, and Ray starts it only on a node that has them all (Ray's documentation, "Accelerator
types": ``@ray.remote(accelerator_type=...)`` is a request of ``accelerator_type:<TYPE>: 0.001``).

- Full TensorRT builds an engine for the GPU it runs on: its task asks for one GPU of the
  target's type.
- TensorRT-RTX builds ahead of time on any CPU: its task asks for one CPU, or, pinned (``build
  --ray-pin-gpu``, e.g. to build near where the engines are verified), one CPU on a node of the
  target's GPU type (no GPU: the build does not use it).

Nothing here imports Ray: the driver feeds in what ``ray.nodes()`` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trtforge.core.errors import TargetError
from trtforge.rules.gpus import known_gpu
from trtforge.rules.target import RuntimeTarget

ACCELERATOR_PREFIX = "accelerator_type:"
NODE_PREFIX = "node:"
TYPE_AMOUNT = 0.001  # what Ray's own accelerator_type= asks: any share of the label, so no slots are used up
PIN_HINT = "give the target a GPU (gpu= in --target or the fleet entry, or --gpu), or leave --ray-pin-gpu out"


@dataclass(frozen=True)
class Demand:
    """What one build task asks of a node: CPUs, GPUs and custom resources (accelerator type, node)."""

    cpus: float = 1.0
    gpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    @property
    def accelerator_type(self) -> str | None:
        """The GPU type asked for (``L4``), or None."""
        for name, _ in self.resources:
            if name.startswith(ACCELERATOR_PREFIX):
                return name.removeprefix(ACCELERATOR_PREFIX)
        return None

    def on_node(self, ip: str) -> Demand:
        """The same, kept to the nodes at address ``ip`` (one machine: its ``node:<ip>`` resource)."""
        return Demand(self.cpus, self.gpus, (*self.resources, (f"{NODE_PREFIX}{ip}", TYPE_AMOUNT)))

    def describe(self) -> str:
        """``accelerator_type:L4 with 1 GPU and 1 CPU``, ``1 CPU``."""
        parts = [f"{self.gpus:g} GPU"] if self.gpus else []
        parts.append(f"{self.cpus:g} CPU")
        named = [name for name, _ in self.resources]
        return " with ".join([", ".join(named), " and ".join(parts)]) if named else " and ".join(parts)


def ray_gpu_type(target: RuntimeTarget) -> str:
    """Ray's accelerator type of the target's GPU (``NVIDIA L4`` -> ``L4``); TargetError when the
    target names no GPU the table knows (Ray schedules by GPU type, not by compute capability)."""
    model = known_gpu(target.gpu_name) if target.gpu_name else None
    if model is None:
        named = f"GPU {target.gpu_name!r} is not in trtforge's GPU table" if target.gpu_name else "names no GPU model"
        raise TargetError(
            f"Ray schedules builds by GPU type, and target {target.label or target.describe()} {named}",
            hint="name the target's GPU as nvidia-smi does (gpu= in --target or the fleet entry, or --gpu)",
        )
    return model.ray_accelerator_type


def demand_for(target: RuntimeTarget | None, *, pin_gpu: bool = False) -> Demand:
    """What the build task for ``target`` asks (None: this machine's default, a TensorRT-RTX build
    anywhere). Raises TargetError for a target Ray cannot place (a GPU it cannot name)."""
    if target is None:
        if pin_gpu:
            raise TargetError(
                "--ray-pin-gpu builds on a node of the target's GPU type, and no target was given", hint=PIN_HINT
            )
        return Demand()
    if target.flavor == "tensorrt":
        return Demand(gpus=1.0, resources=((ACCELERATOR_PREFIX + ray_gpu_type(target), TYPE_AMOUNT),))
    if pin_gpu:
        try:
            kind = ray_gpu_type(target)
        except TargetError as exc:
            raise TargetError(exc.message, hint=PIN_HINT) from None
        return Demand(resources=((ACCELERATOR_PREFIX + kind, TYPE_AMOUNT),))
    return Demand()


def why_unoffered(demand: Demand, nodes: Iterable[Mapping[str, float]]) -> str | None:
    """Why no node can run a task of ``demand`` (each node given by its total resources), or None.

    "no node offers accelerator_type:H100" when no node has the type at all; else the whole demand.
    """
    nodes = list(nodes)
    if any(_fits(demand, node) for node in nodes):
        return None
    kind = demand.accelerator_type
    if kind is not None and not any(node.get(ACCELERATOR_PREFIX + kind, 0) > 0 for node in nodes):
        return f"no node offers {ACCELERATOR_PREFIX}{kind}"
    return f"no node offers {demand.describe()}"


def _fits(demand: Demand, node: Mapping[str, float]) -> bool:
    wanted = {"CPU": demand.cpus, "GPU": demand.gpus, **dict(demand.resources)}
    return all(node.get(name, 0.0) >= amount for name, amount in wanted.items() if amount > 0)


def offered_types(nodes: Iterable[Mapping[str, float]]) -> list[str]:
    """The GPU types the nodes offer (``L4``, ``A10G``), sorted."""
    names = {name for node in nodes for name in node}
    return sorted(name.removeprefix(ACCELERATOR_PREFIX) for name in names if name.startswith(ACCELERATOR_PREFIX))


def other_machines(node_ips: Iterable[str], driver_ip: str) -> list[str]:
    """The node addresses that are not this machine's (Ray's node IP of the driver), sorted."""
    return sorted({ip for ip in node_ips if ip != driver_ip})
