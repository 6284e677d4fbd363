"""Recognise an out-of-memory error on CUDA, MPS or the CPU: one rule for training, the CLI and the server.

MPS errors arrive as plain RuntimeErrors that accelerate #4226 missed, so the message decides too.
"""

from __future__ import annotations

OOM_PHRASES = (
    "out of memory",  # CUDA "CUDA out of memory.", "CUDA error: out of memory", MPS "MPS backend out of memory"
    "not enough memory",  # CPU "DefaultCPUAllocator: not enough memory: you tried to allocate ..."
    "can't allocate memory",  # CPU on Linux: "DefaultCPUAllocator: can't allocate memory: ..."
    "cannot allocate memory",  # errno 12 (ENOMEM) text
    "std::bad_alloc",  # C++ allocation failure surfaced by torch
    "cublas_status_alloc_failed",  # cuBLAS could not get its workspace
    "invalid buffer size",  # MPS: one tensor larger than the GPU may allocate at once
)
NOT_OOM_PHRASES = ("shared memory", "illegal memory access")  # DataLoader shm, a kernel bug: a smaller batch won't help


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch.OutOfMemoryError, MemoryError, and RuntimeErrors whose message is an allocation failure."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    if any(phrase in message for phrase in NOT_OOM_PHRASES):
        return False
    return any(phrase in message for phrase in OOM_PHRASES)
