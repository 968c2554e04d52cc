"""The real model for ``serve --device cpu|cuda``: the project's TorchRunner, answering top-k classes
and scores per item instead of the arg-max alone."""

from __future__ import annotations

from typing import Any

from batchsizer.hw.torch_runner import TorchRunner


class TopKRunner(TorchRunner):
    """A :class:`TorchRunner` whose ``run`` returns ``[(classes, scores), ...]`` (softmax top-k): the
    same timed, out-of-memory-aware run, with its own :meth:`head` and :meth:`rows`."""

    k: int = 5

    @classmethod
    def from_runner(cls, runner: TorchRunner, k: int) -> TopKRunner:
        """A TopKRunner sharing ``runner``'s loaded model and settings, answering the top ``k`` classes."""
        new = cls.__new__(cls)
        new.__dict__.update(runner.__dict__)
        new.k = k
        return new

    def head(self, logits: Any) -> Any:
        """Softmax then the top ``k`` (at most the number of classes) scores and classes per item, on the device."""
        probs = self.torch.softmax(logits.float(), dim=1)
        return probs.topk(min(self.k, probs.shape[1]), dim=1)

    def rows(self, answer: Any) -> list[Any]:
        """Per item, a list of (class, score) pairs, best first."""
        scores, classes = answer
        return list(zip(classes.cpu().tolist(), scores.cpu().tolist()))


def stack_images(arrays: list[Any]) -> Any:
    """(H, W, 3) uint8 arrays -> one (N, 3, H, W) uint8 array, what TorchRunner takes."""
    import numpy as np

    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
