"""Exactly once into Redis, tied to a query and its checkpoint.

Spark replays a micro-batch after a failure with the same batch id and the
same records, so a sink that remembers the last batch id it applied can skip
the replay. A batch id alone is not enough: a deleted or new checkpoint starts
its batch ids at 0 again, and "skip every batch not above the last one" would
then skip real batches (or, reset by hand, count old ones twice). So each
sink script keeps, in one hash per query (`guard_key`), atomically with the
batch's effects:

* ``query_id``: the query's id, which Spark keeps in the checkpoint and
  renews with a new checkpoint; a batch of another id is never a replay;
* ``batch``: the last batch id applied under that id;
* ``offsets``: the Kafka offsets that batch ended at, read from the
  checkpoint's offset log (Spark writes it before the batch runs).

A query started without a checkpoint resumes from those offsets
(`resume_offsets`), so deleting a checkpoint neither loses nor repeats what
Redis already holds. The guard itself is jobs/lua/guard.lua, prepended to each
sink's script.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import redis
from pyspark.sql import SparkSession

from rtdash.settings import Settings


def checkpoint_location(settings: Settings, job: str) -> str:
    """Where a job's query keeps its checkpoint: <RTDASH_HOME>/checkpoints/<job>, as an absolute path."""
    return str((settings.checkpoints_dir / job).resolve())


def guard_key(prefix: str, query: str) -> str:
    return f"{prefix}:job:{query}:applied"


def load_script(name: str, *, guarded: bool = True, library: tuple[str, ...] = ()) -> str:
    """jobs/lua/guard.lua (when `guarded`), jobs/lua/envelope.lua (how channels are published), the
    `library` files (functions several scripts share), then jobs/lua/<name>.lua: one script, run
    atomically by Redis."""
    folder = resources.files("jobs") / "lua"
    parts = (["guard"] if guarded else []) + ["envelope", *library, name]
    return "\n".join((folder / f"{part}.lua").read_text() for part in parts)


@dataclass(frozen=True)
class Batch:
    """A micro-batch as the guard sees it: whose, which, and where its source offsets end."""

    query_id: str
    batch_id: int
    offsets: str  # JSON {"topic": {"partition": next offset}}, "" when unknown

    def args(self) -> list[str]:
        if self.batch_id < 0:
            raise ValueError(f"batch ids start at 0, got {self.batch_id}")
        return [self.query_id, str(self.batch_id), self.offsets]


NO_BATCH = ["", "", ""]  # guard arguments of a call outside any batch (e.g. bringing snapshots to today)


class CheckpointLog:
    """Reads a query's id and a batch's end offsets from its checkpoint, through Hadoop's FileSystem
    (so a checkpoint on HDFS or S3 works as well as a local one)."""

    def __init__(self, spark: SparkSession, location: str):
        self.spark = spark
        self.location = location
        self._query_id: str | None = None

    def _read(self, relative: str) -> str:
        jvm = self.spark._jvm
        path = jvm.org.apache.hadoop.fs.Path(f"{self.location}/{relative}")
        fs = path.getFileSystem(self.spark._jsc.hadoopConfiguration())
        stream = fs.open(path)
        try:
            return jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def query_id(self) -> str:
        if self._query_id is None:
            self._query_id = json.loads(self._read("metadata"))["id"]
        return self._query_id

    def batch(self, batch_id: int) -> Batch:
        """The guard's view of `batch_id`: Spark's offset log line 3 holds the source's end offsets."""
        lines = self._read(f"offsets/{batch_id}").splitlines()
        return Batch(self.query_id(), batch_id, lines[2] if len(lines) > 2 else "")


def resume_offsets(client: redis.Redis, prefix: str, query: str) -> str:
    """The Kafka source's startingOffsets: where Redis says the query got to, else "earliest".

    Spark uses it only when the query has no checkpoint yet (a checkpoint's own
    offsets win), so a deleted checkpoint resumes where the applied batches ended.
    """
    offsets = client.hget(guard_key(prefix, query), "offsets")
    return offsets.decode() if offsets else "earliest"
