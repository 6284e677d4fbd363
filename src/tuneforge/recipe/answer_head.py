"""Project only the answer positions onto the vocabulary where TRL's fused head can't.

TRL's SFTTrainer swaps the model's LM head for a chunked one (`add_fused_lm_head`) that never
builds the [tokens, vocabulary] logits. On a GPU its Triton kernel scores only the positions
that have a label. On a device without Triton (a CPU, a Mac) it folds the tiles in torch ops
and scores every position of the row, prompt included, adds a full-vocabulary top-1 mask and
entropy pass per tile, and casts the head's weight to bf16 four times a step. Profiled on
SmolLM2-135M (49,152 words) on 2 CPU cores, with packed rows of ~400 tokens of which about a
third are answer tokens, that head was about 40% of a training step
(`benchmarks/train_throughput.py --only tuneforge --profile`).

On those devices this head asks the model's own forward for the logits of the positions whose
next token is a label (`logits_to_keep` with a boolean mask, transformers' way for packed rows),
and scores them with PyTorch's fused cross-entropy. It returns TRL's `FusedCausalLMOutput`
(log-probabilities, token accuracy, entropy, label mask), so SFTTrainer's loss and metrics read
it unchanged: the same loss and gradients, less work. Written here rather than taken from a
library because TRL's own head picks the positions by device (to keep tile shapes fixed for
compilers), and no option of it turns that off.

It steps aside to TRL's head wherever that is the better tool: a Triton device, pre-shifted
labels (sequence parallelism), MoE router losses, a model whose forward has no
`logits_to_keep`, and more answer tokens than `MAX_LOGITS` can hold whole.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from tuneforge.models.positions import takes_position_mask

MAX_LOGITS = 1 << 26  # answer positions × vocabulary kept whole (256 MB in fp32); beyond, TRL's chunked head
ROWS = 16  # answer positions scored at a time: small temporaries the allocator reuses (whole-width ones faulted in fresh pages each step: 290 vs 313 tok/s)
# The vocabulary projection's row count is rounded up to a multiple of this with positions that have no
# label: oneDNN builds and keeps a kernel for each new shape, so a count that changed at every step
# grew the process's memory step after step.
BUCKET = 64
TRITON_DEVICES = ("cuda", "xpu")  # where TRL's fused head already scores only the labelled positions


def score_answers_only(model: Any, mean_logits: bool = False) -> bool:
    """Put the answer-only head in front of TRL's fused one on `model` (a peft model or a plain one).

    Call it after the TRL trainer is built, which is when TRL adds its head. `mean_logits` for the
    trainers that log it (DPO, KTO: their `logits/chosen` metric). False when the model's forward
    can't take a position mask, and the model is left as it was.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not takes_position_mask(base):
        return False
    trl_forward = base.forward  # TRL's fused forward, bound to `base`

    @functools.wraps(type(base).forward)  # generate() checks its keyword arguments against this signature
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        if fused_lm_head and labels is not None and shift_labels is None and _fits(self, labels, kwargs):
            return _answer_logprobs(trl_forward, args, kwargs, labels, num_items_in_batch, mean_logits)
        extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
        return trl_forward(*args, fused_lm_head=fused_lm_head, **extra, **kwargs)

    base.forward = types.MethodType(forward, base)
    return True


def _fill_to_bucket(keep: Any) -> None:
    """Add the first unkept positions until the count is a multiple of BUCKET (or the whole batch)."""
    count = int(keep.sum())
    wanted = min(-(-count // BUCKET) * BUCKET, keep.numel())
    if wanted > count:
        keep.view(-1)[(~keep).view(-1).nonzero().flatten()[: wanted - count]] = True


def _entropy(logits: Any) -> Any:
    import torch

    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def _fits(model: Any, labels: Any, kwargs: dict[str, Any]) -> bool:
    if labels.device.type in TRITON_DEVICES or kwargs.get("output_router_logits"):
        return False
    if getattr(model.config.get_text_config(), "output_router_logits", False):
        return False
    vocab = model.get_output_embeddings().weight.shape[0]
    return bool(int((labels[:, 1:] != -100).sum()) * vocab <= MAX_LOGITS)


def _answer_logprobs(trl_forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any], labels: Any,
                     num_items_in_batch: Any, with_mean: bool) -> Any:  # fmt: skip
    """The model's logits at the positions before each label, scored as TRL's fused head would."""
    import torch
    import torch.nn.functional as F
    from trl.trainer.utils import FusedCausalLMOutput

    targets = labels[:, 1:]
    mask = targets != -100  # [batch, length - 1], TRL's label_mask
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = mask  # position i predicts token i + 1
    _fill_to_bucket(keep)
    gold_at = torch.full_like(labels, -100)
    gold_at[:, :-1] = targets
    gold = gold_at[keep]  # -100 at the filler positions: cross_entropy ignores them
    kwargs["use_cache"] = False
    logits = trl_forward(*args, logits_to_keep=keep, **kwargs).logits  # [kept positions, vocabulary]
    pieces = list(zip(torch.split(logits, ROWS), torch.split(gold, ROWS), strict=True))
    real = gold != -100
    token_logprobs = torch.cat([-F.cross_entropy(z.float(), g, reduction="none") for z, g in pieces])[real]
    with torch.no_grad():  # SFTTrainer logs these two; neither is trained on
        entropy = torch.cat([_entropy(z.detach().float()) for z, _ in pieces])[real]
        is_top1 = (logits.detach().argmax(-1) == gold)[real]  # argmax takes the first maximum, as TRL's top-1 does
        mean = torch.cat([z.detach().float().mean(-1) for z, _ in pieces])[real] if with_mean else None

    def spread(values: Any) -> Any:  # one value per label, zero elsewhere: TRL's [batch, length - 1] layout
        return values.new_zeros(mask.shape).masked_scatter(mask, values)

    log_probs = spread(token_logprobs)
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=spread(entropy),
                               is_top1=spread(is_top1), label_mask=mask,
                               mean_logits=None if mean is None else spread(mean))  # fmt: skip
