"""A fully fine-tuned model that answers like a peft model: `disable_adapter()` switches to its base.

chat --base, eval, serve's `base` model and the quick check after training compare the tuned
model with its base inside `model.disable_adapter()`. A LoRA run gets that from peft with one
copy of the weights; a full fine-tune has no adapter to switch off, so its base is loaded
beside it, the first time it is asked for (chat without --base never loads it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class WithBase:
    """Delegates every attribute and call to the model in use: the tuned one, or the base inside `disable_adapter()`."""

    def __init__(self, tuned: Any, load_base: Callable[[], Any]) -> None:
        self.__dict__.update(_tuned=tuned, _load_base=load_base, _base=None, _active=tuned)

    def __getattr__(self, name: str) -> Any:  # only called for names this class does not define
        return getattr(self.__dict__["_active"], name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._active(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The model in use when the call runs, not when `model.generate` was looked up.

        Through `__getattr__`, `model.generate(..., **router.prepare(...))` would bind to the model
        active before its arguments switch it (serve's one-at-a-time path did: a 'base' request after
        a tuned one got the tuned answer).
        """
        return self._active.generate(*args, **kwargs)

    @property
    def base(self) -> Any:
        if self._base is None:
            base = self._load_base()
            base.train(self._tuned.training)  # the same mode as the tuned model (eval: no dropout)
            self.__dict__["_base"] = base
        return self._base

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        self.__dict__["_active"] = self.base
        try:
            yield
        finally:
            self.__dict__["_active"] = self._tuned

    def use_base(self, base: bool) -> None:
        """serve's batches: one batch runs either the base or the tuned model, switched between batches."""
        self.__dict__["_active"] = self.base if base else self._tuned

    def set_adapter(self, name: str) -> None:
        """serve names the one tuned model; there is nothing to switch."""

    def eval(self) -> WithBase:
        return self.train(False)

    def train(self, mode: bool = True) -> WithBase:
        for model in (self._tuned, self._base):
            if model is not None:
                model.train(mode)
        return self
