"""Ordered fan-out to workers, the byte budget, the checkpoint: ledgers in, committed rows out."""

from ._budget import ByteBudget as ByteBudget
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import read_checkpoint as read_checkpoint
from ._checkpoint import write_checkpoint as write_checkpoint
from ._guard import guard_run as guard_run
from ._guard import verify_resume as verify_resume
from ._latency import HistogramSnapshot as HistogramSnapshot
from ._pipeline import Pipeline as Pipeline
from ._pipeline import PipelineStatistics as PipelineStatistics

__all__ = [
    "ByteBudget",
    "Checkpoint",
    "HistogramSnapshot",
    "Pipeline",
    "PipelineStatistics",
    "guard_run",
    "read_checkpoint",
    "verify_resume",
    "write_checkpoint",
]
