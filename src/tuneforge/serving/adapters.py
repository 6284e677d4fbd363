"""Which weights a forward runs with: the base, one adapter, or a mix of adapters row by row.

- No adapter: the base model, nothing to choose.
- One adapter: merged into the base weights at load (peft `merge_adapter`). Every token then
  costs what the base costs, with no LoRA matmuls beside each linear layer. A request for
  'base' unmerges it first, so a batch holds either 'base' rows or adapter rows, never both
  (`lane`). peft's unmerge subtracts the same product it added, so the base weights come
  back to within float rounding.
- Several adapters: left unmerged, and one batch mixes them. When every row wants the same
  adapter it is simply made active; otherwise peft's `adapter_names=` runs each row's own
  LoRA matrices in the same forward ('__base__' for rows that want none).
- A full fine-tune (models/with_base.py): no LoRA to merge or mix. The tuned weights and the
  base are two models, so 'base' rows and tuned rows run in separate batches (`lane`), and
  the batch's model is switched before each forward.
"""

from __future__ import annotations

from typing import Any

BASE = "base"
_PEFT_BASE = "__base__"  # peft's name for "no adapter" in adapter_names


class AdapterRouter:
    def __init__(self, model: Any, adapters: list[str], merge: bool = False) -> None:
        self.model, self.adapters = model, adapters
        self.full = bool(adapters) and hasattr(model, "use_base")  # WithBase: a full fine-tune beside its base
        self.merge = merge and len(adapters) == 1 and not self.full
        self.merged = False
        self.after_merge: Any = None  # called once a merge or unmerge changed the weights (decode_copies.py)
        if self.merge:
            self._set_merged(True)

    def lane(self, name: str) -> str:
        """Rows of one batch share a lane: with a merged adapter or a full fine-tune, 'base' can't share its weights."""
        return name if self.merge or self.full else "any"

    def prepare(self, names: list[str]) -> dict[str, Any]:
        """Set the weights up for a forward over rows that want `names`; the forward's extra arguments."""
        if not self.adapters:
            return {}
        if self.full:
            self.model.use_base(names[0] == BASE)
            return {}
        if self.merge:
            self._set_merged(names[0] != BASE)
            return {} if self.merged else {"adapter_names": [_PEFT_BASE] * len(names)}
        distinct = set(names)
        if len(distinct) == 1 and BASE not in distinct:
            self.model.set_adapter(names[0])  # one adapter for all: no per-row split, no hook per forward
            return {}
        return {"adapter_names": [_PEFT_BASE if n == BASE else n for n in names]}

    def _set_merged(self, merged: bool) -> None:
        if merged != self.merged:
            self.model.merge_adapter() if merged else self.model.unmerge_adapter()
            self.merged = merged
            if self.after_merge is not None:
                self.after_merge()
