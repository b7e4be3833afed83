"""Data-parallel and sharded training on JAX's own runtime: a device mesh, ``NamedSharding`` and the compiler.

The training step is the same function on one device and on many. What changes is where its arrays live:

* the **batch** is split along its first axis over the mesh's ``data`` axis (``--devices N``). Every loss in
  funcdl is a mean over the batch, so XLA's partitioner turns its gradient into per-device partial sums plus
  one all-reduce; a batch-norm mean or variance over the batch axis becomes a global one the same way
  (synchronised batch norm for free), so the step on N devices computes the single-device step on the whole
  batch, up to the order of the float32 sums;
* with ``--shard optimizer`` (ZeRO stage 1/2) each optimizer moment is split along its first axis: each
  device keeps and updates 1/N of it, the gradient arrives reduce-scattered, the new parameters are
  all-gathered;
* with ``--shard params`` (fully sharded data parallel) the parameters are split the same way and gathered
  where the forward and backward need them.

A leaf whose first axis does not divide by N (a bias of 10 classes on 4 devices, a scalar) stays replicated.
The layouts are imposed with ``jax.lax.with_sharding_constraint`` inside the step, so they hold through a
``lax.scan`` carry too. Several processes (``jax.distributed``) make one mesh over all their devices.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["Parallel", "make_parallel", "per_device_bytes", "initialize_distributed", "to_host", "is_writer"]

SHARD_CHOICES = ("none", "optimizer", "params")


@dataclasses.dataclass(frozen=True)
class Parallel:
    """A mesh with one ``data`` axis and what is sharded over it."""

    mesh: Mesh
    shard: str = "none"

    @property
    def size(self) -> int:
        return self.mesh.devices.size

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch(self) -> NamedSharding:
        return NamedSharding(self.mesh, P("data"))

    def split_first_axis(self, tree):
        """A sharding per leaf: split along axis 0 where it divides by the mesh size, else replicated."""
        def one(x):
            shape = np.shape(x)
            if len(shape) and shape[0] % self.size == 0 and shape[0] >= self.size:
                return NamedSharding(self.mesh, P("data"))
            return self.replicated
        return jax.tree.map(one, tree)

    def layouts(self, params, opt_state, state):
        """Shardings of (params, optimizer state, model state) for this run's ``shard`` choice."""
        rep = lambda tree: jax.tree.map(lambda _: self.replicated, tree)  # noqa: E731
        p = self.split_first_axis(params) if self.shard == "params" else rep(params)
        o = self.split_first_axis(opt_state) if self.shard in ("optimizer", "params") else rep(opt_state)
        return p, o, rep(state)

    def constrain(self, tree, shardings):
        return jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)

    def constrain_batch(self, batch):
        """The batch split over the devices along its first axis (its size must divide by the device count)."""
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.batch), batch)

    def put_batches(self, tree):
        """Stacked host batches (steps, B, ...) onto the mesh, split along the batch axis; in several processes
        each process keeps only the rows of its own devices."""
        sharding = NamedSharding(self.mesh, P(None, "data"))
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, sharding, lambda idx, x=x: x[idx]),
                            tree)

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process's devices hold (all of them in one process): a streamed
        data set reads only these from disk. The mesh lists each process's devices together, so they are one
        contiguous range."""
        if jax.process_count() == 1:
            return slice(0, batch_size)
        index = NamedSharding(self.mesh, P("data")).addressable_devices_indices_map((batch_size,))
        starts = sorted({(i[0].start or 0, i[0].stop or batch_size) for i in index.values()})
        lo, hi = starts[0][0], starts[-1][1]
        if sum(b - a for a, b in starts) != hi - lo:
            raise ValueError(f"process {jax.process_index()}: its devices hold rows {starts} of the batch, not one "
                             "contiguous range; build the mesh with each process's devices together")
        return slice(lo, hi)

    def put_local_batches(self, tree, batch_size: int):
        """Stacked batches (steps, rows, ...) holding only this process's rows (``local_rows``) onto the mesh as
        global arrays of ``batch_size`` rows: no process reads or sends the others' rows."""
        sharding = NamedSharding(self.mesh, P(None, "data"))
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
            sharding, np.asarray(x), (x.shape[0], batch_size, *x.shape[2:])), tree)

    def put(self, tree, shardings):
        """Place host or device arrays on the mesh (in several processes, each gives the whole value)."""
        def one(x, s):
            x = np.asarray(x) if not isinstance(x, jax.Array) or jax.process_count() > 1 else x
            if jax.process_count() == 1:
                return jax.device_put(x, s)
            return jax.make_array_from_callback(np.shape(x), s, lambda idx, x=x: x[idx])
        return jax.tree.map(one, tree, shardings)


def make_parallel(devices: int | None, shard: str = "none", batch_size: int | None = None) -> Parallel | None:
    """The mesh for ``--devices N`` (None: every device JAX sees) and ``--shard``; None for one device and no
    sharding, so the single-device path stays exactly what it was."""
    if shard not in SHARD_CHOICES:
        raise ValueError(f"--shard must be one of {', '.join(SHARD_CHOICES)}, got {shard!r}")
    available = jax.device_count()
    n = available if devices is None else int(devices)
    if not 1 <= n <= available:
        raise ValueError(f"--devices {n}: JAX sees {available} device(s) ({jax.devices()[0].platform}); on a CPU, "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N")
    if batch_size is not None and batch_size % n:
        raise ValueError(f"batch size {batch_size} does not split over {n} devices; use a multiple of {n}")
    if n == 1 and shard == "none":
        return None
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])
    return Parallel(mesh, shard)


def initialize_distributed(coordinator: str, num_processes: int, process_id: int):
    """Join a multi-process run (``jax.distributed.initialize``); on CPU the collectives go through gloo. Every
    process then sees the devices of all of them, and one mesh spans them all. Under Slurm (or on a TPU pod)
    ``jax.distributed.initialize()`` finds these values itself: pass ``coordinator="auto"``."""
    if coordinator != "auto" and (num_processes is None or process_id is None):
        raise ValueError("--coordinator HOST:PORT needs --num-processes P and --process-id I")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} must lie in 0..{num_processes - 1}")
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_writer() -> bool:
    """Only process 0 writes the run directory."""
    return jax.process_index() == 0


def to_host(tree):
    """NumPy copies of every leaf, gathered from all processes when there are several (a collective: every
    process must call it)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def per_device_bytes(tree, shardings=None) -> int:
    """Bytes of ``tree`` that one device holds: under ``shardings`` (one per leaf) when given, else as the
    arrays are placed now."""
    leaves = jax.tree.leaves(tree)
    if shardings is None:
        shardings = [x.sharding if isinstance(x, jax.Array) else None for x in leaves]
    else:
        shardings = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
    total = 0
    for x, s in zip(leaves, shardings, strict=True):
        shape = np.shape(x) if s is None else s.shard_shape(np.shape(x))
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total
