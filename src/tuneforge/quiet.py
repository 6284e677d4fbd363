"""Keep the screen for what users need: hide library progress bars and deprecation chatter.

Set through environment variables before transformers/datasets are imported, so importing
this module stays cheap; `--debug` skips it to show everything.
"""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for module in ("transformers", "peft", "trl", "torch", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    warnings.filterwarnings("ignore", message=".*mtime may not be reliable.*")


def hide_load_progress() -> None:
    """transformers draws a bar for every weight load; ours are seconds long, so it is noise."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def quiet_optuna() -> None:
    """The sweep log says what each trial did; Optuna's own per-trial lines and 'experimental' notes repeat it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
