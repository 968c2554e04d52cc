"""The real model for ``serve --device cpu|cuda``: the project's TorchRunner, answering top-k classes
and scores per item instead of the arg-max alone."""

from __future__ import annotations

import time
from typing import Any

from batchsizer.errors import OutOfMemoryError
from batchsizer.hw.torch_runner import TorchRunner, is_out_of_memory


class TopKRunner(TorchRunner):
    """A :class:`TorchRunner` whose ``run`` returns ``[(classes, scores), ...]`` (softmax top-k)."""

    k: int = 5

    @classmethod
    def from_runner(cls, runner: TorchRunner, k: int) -> TopKRunner:
        new = cls.__new__(cls)
        new.__dict__.update(runner.__dict__)
        new.k = k
        return new

    def run(self, batch: Any) -> tuple[float, float, list[Any]]:
        torch = self.torch
        start = time.monotonic()
        try:
            with torch.inference_mode():
                out = self.model(self.to_input(batch))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
                    out = out.logits
                probs = torch.softmax(out.float(), dim=1)
                scores, classes = probs.topk(min(self.k, probs.shape[1]), dim=1)
                if self.is_cuda:
                    torch.cuda.synchronize(self.device)
                end = time.monotonic()
                rows = list(zip(classes.cpu().tolist(), scores.cpu().tolist()))
        except RuntimeError as exc:
            if not is_out_of_memory(torch, exc):
                raise
        else:
            return start, end, rows
        if self.is_cuda:
            torch.cuda.empty_cache()
        raise OutOfMemoryError(len(batch), str(self.device))


def stack_images(arrays: list[Any]) -> Any:
    """(H, W, 3) uint8 arrays -> one (N, 3, H, W) uint8 array, what TorchRunner takes."""
    import numpy as np

    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
