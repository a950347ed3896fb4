"""Feeding the lower-resolution levels of one image from its full-resolution layers.

Level 0's writer hands each layer here before its buffer may be reused.  On
the pipeline's downsampling thread (ordered, so levels receive frames in
order) the layer's steps are read back from the tiles, halved, and appended
to level 1's writer, whose output is halved for level 2, and so on.  Levels
are ordinary writers: they compress, write and publish their own shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .multiscale import Downsampler, gather_step
from .pipeline import Pipeline
from .writers import Writer
from .writers.base import Layer

__all__ = ["Pyramid"]


class Pyramid:
    def __init__(self, writers: list[Writer], method: str, pipeline: Pipeline) -> None:
        self.writers = writers
        self.pipeline = pipeline
        self.downsamplers = [Downsampler(w.layout, method) for w in writers[:-1]]
        writers[0].on_layer = self.on_layer

    def on_layer(self, layer: Layer) -> None:
        """Appending thread: queue the layer for downsampling (it holds the buffer until done)."""
        self.pipeline.submit_side(lambda failed: self._process(layer, failed))

    def _process(self, layer: Layer, failed: bool) -> None:
        try:
            if failed:
                return
            lay0 = self.writers[0].layout
            for t in range(-(-layer.slots // lay0.frames_per_index)):
                self._descend(0, gather_step(lay0, layer.buffer, t))
        finally:
            self.writers[0].layer_done(layer)

    def _descend(self, level: int, step: np.ndarray[Any, Any]) -> None:
        """Push a step of ``level`` into its downsampler; append what comes out to the next level."""
        out = self.downsamplers[level].push(step)
        if out is not None:
            self._emit(level + 1, out)

    def _emit(self, level: int, step: np.ndarray[Any, Any]) -> None:
        writer = self.writers[level]
        with writer.lock:
            writer.append(step.reshape(-1, *writer.layout.frame_shape))
        if level < len(self.downsamplers):
            self._descend(level, step)

    def finish(self) -> None:
        """After level 0 finished: flush each level's unpaired step, then finish it, top down."""
        self.pipeline.submit_side(self._finish)

    def _finish(self, failed: bool) -> None:
        if failed:
            return
        for level, ds in enumerate(self.downsamplers, start=1):
            out = ds.flush()
            if out is not None:
                self._emit(level, out)
            writer = self.writers[level]
            with writer.lock:
                writer.finish()
