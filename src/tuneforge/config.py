"""The one typed config that every command reads. Each field is documented here, once.

The text in `Field(description=...)` is also the `--help` text of the matching CLI flag,
so the docs and the flags never drift apart (litgpt's trick).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The fields a data row may hold; --data-map targets must be one of them. Here, not in data/,
# because the config layer sits below the data layer and checks the map when it is parsed.
FIELDS = ("messages", "conversations", "instruction", "input", "output", "system", "history",
          "prompt", "completion", "text")  # fmt: skip


class Section(BaseModel):
    """Unknown keys are errors (axolotl's untyped dict silently ignored typos)."""

    # frozen: the config is validated once and then only read. What changes during a run (the
    # batch after an out-of-memory step-down) is recipe state, not an edit of the config.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    name: str = Field(
        "smollm2-135m",
        description="Base model: a preset name (smollm2-135m, offline), a local model folder, or a Hugging Face model id.",
    )
    adapter: Path | None = Field(
        None,
        description="Start from an earlier run's adapter (its results folder), e.g. SFT before DPO; "
        "training goes on from it, and it is the reference that preference methods compare with.",
    )
    load_in_4bit: bool = Field(False, description="Load the base model in 4-bit with bitsandbytes (QLoRA). CUDA only.")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with a hub model. Off unless you trust its author."
    )


def split_weight(spec: str) -> tuple[str, float | None]:
    """'medical-terms:0.3' -> ('medical-terms', 0.3); the one parser of a mixture weight (config and data use it)."""
    name, colon, tail = spec.rpartition(":")
    if not colon or not name or "/" in tail or "\\" in tail:
        return spec, None
    try:
        return name, float(tail)
    except ValueError:
        return spec, None


class DataSection(Section):
    dataset: str | list[str] = Field(
        "medical-terms",
        description="Training data: a preset (medical-terms, offline; wiki-medical-terms, medical-flashcards, alpaca, online), "
        "a .jsonl/.json/.csv/.tsv/.parquet/.txt file, a folder with train.* and validation.*, or a Hugging Face dataset id. "
        "Repeat it to mix sources, each with an optional weight: --dataset clinic.jsonl --dataset medical-terms:0.3.",
    )
    eval_fraction: float = Field(
        0.02, gt=0, lt=1, description="Share of examples held out for evaluation (never trained on)."
    )
    eval_min: int = Field(
        200,
        ge=1,
        description="Hold out at least this many examples, but never more than 10% of the rows; "
        "below 50 rows nothing is held out unless --val-size asks.",
    )
    format: Literal["auto", "messages", "sharegpt", "alpaca", "prompt-completion", "text", "llama2-text"] = Field(
        "auto", description="Data format; auto detects it from the first row's fields."
    )
    map: dict[str, str] | None = Field(
        None,
        description="Rename your columns to ours, e.g. question=instruction,answer=output "
        "(targets: messages, conversations, instruction, input, output, system, history, prompt, completion, text).",
    )
    template: Literal["auto", "chatml", "llama2", "alpaca", "plain"] = Field(
        "auto", description="Chat template: auto uses the tokenizer's own, else chatml; name one for a base model."
    )
    val_size: float | None = Field(
        None,
        gt=0,
        description="Held-out examples for the validation loss: a fraction (0.05) or a count (200); overrides eval_fraction and eval_min.",
    )
    drop_long: bool = Field(
        False, description="Drop examples longer than max_seq_length instead of truncating them (counted either way)."
    )
    split: str = Field("train", description="Split of a Hugging Face or saved dataset to train on.")

    @field_validator("dataset")
    @classmethod
    def _check_weights(cls, value: str | list[str]) -> str | list[str]:
        """A mixture weight is the share of that source's rows used (0.3: 30%, 2: each row twice)."""
        specs = [value] if isinstance(value, str) else value
        if not specs:
            raise ValueError("name at least one dataset")
        for spec in specs:
            name, weight = split_weight(spec)
            if weight is not None and not weight > 0:
                raise ValueError(f"the weight of '{name}' is {weight:g}; a mixture weight must be above 0 "
                                 f"(the share of its rows used, e.g. {name}:0.3). Drop the source instead of weighting it 0")  # fmt: skip
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    @field_validator("map", mode="before")
    @classmethod
    def _parse_map(cls, value: object) -> object:
        """Accept the CLI's 'a=b,c=d' as well as a YAML mapping; targets must be fields we read."""
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            if any(len(pair) != 2 or not all(p.strip() for p in pair) for pair in pairs):
                raise ValueError(
                    "write it as yourcolumn=ourfield pairs separated by commas, e.g. question=instruction,answer=output"
                )
            value = {source.strip(): target.strip() for source, target in pairs}
        if isinstance(value, dict):
            unknown = [t for t in value.values() if t not in FIELDS]
            if unknown:
                raise ValueError(f"'{unknown[0]}' is not a field tuneforge reads; map to one of {', '.join(FIELDS)}")
        return value


class LoraSection(Section):
    r: int = Field(32, ge=1, description="LoRA rank: higher learns more, costs more memory and time.")
    alpha: int = Field(16, ge=1, description="LoRA alpha: the update is scaled by alpha / r.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the LoRA path, against overfitting (0: off, 1.35x faster on a CPU)."
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Layers that get LoRA adapters: 'all-linear' or a list such as [q_proj, v_proj].",
    )


class TrainSection(Section):
    method: Literal["sft", "pretrain", "dpo", "orpo", "kto"] = Field(
        "sft",
        description="Training method: sft (questions and answers), pretrain (continued pre-training on raw text), "
        "dpo, orpo or kto (preferences: chosen over rejected answers).",
    )
    finetune: Literal["lora", "dora", "qlora", "full"] = Field(
        "lora",
        description="What trains: lora (low-rank adapters), dora (LoRA split into direction and magnitude, peft's "
        "use_dora; a little slower, often closer to full fine-tuning), qlora (LoRA on a 4-bit base, CUDA only) or "
        "full (every weight, for models small enough: about 16 bytes per parameter; `tuneforge doctor` says what fits).",
    )
    output_dir: Path = Field(Path("results"), description="Folder for the adapter, logs and figures.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where to train: auto picks CUDA, then Apple MPS, then the CPU."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Number format for training: auto lets the hardware profile choose."
    )
    batch_size: int = Field(4, ge=1, description="Examples per step on each device (micro-batch).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches added up before each optimizer step.")
    max_steps: int = Field(150, ge=1, description="Optimizer steps to train for.")
    max_seq_length: int = Field(512, ge=16, description="Longest example in tokens; longer ones are cut.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate of the LoRA weights.")
    warmup_steps: int = Field(5, ge=0, description="Steps of linear learning-rate warm-up.")
    seed: int = Field(42, description="Random seed for data order, split and LoRA init.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations to save memory, at about 30% more time."
    )
    padding_free: bool = Field(
        True,
        description="Join each micro-batch into one row without padding; attention never crosses examples.",
    )
    group_by_length: bool = Field(
        False, description="Batch examples of similar length together, so less padding is computed."
    )
    pad_to_multiple_of: int = Field(
        64,  # 300 steps on 2 CPU cores: 5.1 GB peak and 299 tok/s at 1, 3.0 GB and 371 tok/s at 64
        ge=1,
        description="Pad each batch's token count up to a multiple of N (1: off), so kernels built for one "
        "shape are reused instead of rebuilt and cached for every new length.",
    )
    logging_steps: int = Field(5, ge=1, description="Log loss and speed every N steps.")
    save_steps: int = Field(50, ge=1, description="Save a checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Keep only the newest N checkpoints.")
    eval_examples: int = Field(
        32, ge=0, description="Held-out examples for the quick before/after check at the end (0 skips it)."
    )
    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = Field(
        "ddp",
        description="How several processes (--nproc) share the work: ddp copies the model to each GPU; "
        "fsdp and deepspeed-zero2/3 shard it when it does not fit on one (configs/ holds their settings).",
    )
    eval_steps: int = Field(
        0,
        ge=0,
        description="Measure the held-out loss every N steps while training (0: only before and after); sweeps prune on it.",
    )
    quick_eval: bool = Field(
        True,
        description="Answer held-out questions before and after training (the before/after check); off saves time.",
    )
    report_to: Literal["none", "tensorboard", "trackio", "mlflow", "wandb"] = Field(
        "none",
        description="Experiment tracker that gets the logged losses, offline, under <output-dir>/tracking: "
        "tensorboard, trackio, mlflow, wandb (offline mode) or none.",
    )

    @field_validator("learning_rate")
    @classmethod
    def _sane_lr(cls, value: float) -> float:
        if value >= 1:
            raise ValueError("a learning rate of 1 or more diverges; LoRA usually uses 1e-4 to 5e-4")
        return value


class ServeSection(Section):
    host: str = Field("127.0.0.1", description="Address to listen on; 127.0.0.1 keeps it on this machine.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the server.")
    api_key: str | None = Field(None, description="Require this key as a Bearer token (env TUNEFORGE_API_KEY).")
    max_tokens_cap: int = Field(512, ge=1, description="Longest answer one request may ask for, in tokens.")
    queue_size: int = Field(8, ge=0, description="Requests that may wait behind the running batch; more get 429.")
    max_batch: int = Field(
        8, ge=1, le=64,
        description="Requests decoded together; newcomers join between tokens. 1: one request at a time.",
    )  # fmt: skip
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "int4"] = Field(
        "auto",
        description="Number format of the served weights: auto is fp32 on the CPU (answers as trained). fp16 keeps "
        "fp32 and adds an fp16 copy that one request's decode steps read: faster for one client on an AVX2 CPU, +50% "
        "weight memory, a few greedy answers change. int8 keeps fp32 and adds an 8-bit copy that decode steps of up "
        "to 8 requests read: faster on a CPU with AVX-512 BF16 or AMX, +25% weight memory, some greedy answers "
        "change. int4 is int8 with the MLP's copies in 4 bits: faster still, most greedy answers change. bf16 "
        "halves the weights' memory; on a CPU without AVX-512 BF16 or AMX prompts run slower, and more greedy "
        "answers change.",
    )
    compile: bool = Field(
        False,
        description="Compile one request's decode step with torch.compile before serving (1.5 minutes the first "
        "time, about 30 s at later starts; on a CPU it needs a C++ compiler such as g++): 1.2-1.25x the tokens/s of a "
        "lone client on a 2-core CPU. Batches of several requests, prompts and other adapters run as without it. A greedy answer may change "
        "in a near-tie token.",
    )


# What `tuneforge sweep` may search: the key, and the kind of range it takes. Here, beside the
# fields, so a search-space typo is caught where every other config typo is.
SEARCHABLE = {"train.learning_rate": "float", "train.warmup_steps": "int", "train.batch_size": "int",
              "train.grad_accum": "int", "train.max_seq_length": "int", "lora.r": "int", "lora.alpha": "int",
              "lora.dropout": "float", "lora.target_modules": "choices", "data.template": "choices"}  # fmt: skip


class SearchRange(Section):
    """One parameter's range: low/high (log for a log scale), or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> SearchRange:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("the list of choices is empty; give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (and log: true for a log scale), or a list of choices")
        if self.low > self.high:
            raise ValueError(f"the range is empty: low {self.low} is above high {self.high}; swap them")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low above 0, not {self.low}")
        return self


def default_space() -> dict[str, SearchRange]:
    """The search a sweep runs unless `sweep.space` says otherwise: the settings that matter most for LoRA."""
    return {
        "train.learning_rate": SearchRange(low=1e-4, high=3e-3, log=True),  # the strongest knob
        "lora.r": SearchRange(choices=[8, 16, 32, 64]),
        "lora.alpha": SearchRange(choices=[8, 16, 32, 64]),
        "lora.dropout": SearchRange(low=0.0, high=0.1),
        "lora.target_modules": SearchRange(choices=["attention", "all-linear"]),  # attention: q,k,v,o only
        "train.warmup_steps": SearchRange(low=0, high=10),
    }


class SweepSection(Section):
    trials: int = Field(12, ge=1, description="Trials to finish (complete or pruned) in the sweep's study.")
    trial_steps: int = Field(
        36, ge=2, description="Training steps of each trial; best.yaml keeps train.max_steps for the full run."
    )
    eval_every: int = Field(
        18,
        ge=1,
        description="Held-out loss every N steps of a trial, reported to the pruner (each costs ~9 s on the default).",
    )
    objective: Literal["loss", "rouge"] = Field(
        "loss",
        description="What the sweep optimises: held-out loss (lower), or rouge: ROUGE-L of held-out answers (higher).",
    )
    pruner: Literal["median", "none"] = Field(
        "median",
        description="Stop hopeless trials early: median stops one worse than the median of earlier trials at the same step.",
    )
    workers: int = Field(1, ge=1, description="Trials run at the same time on this machine, each its own process.")
    storage: str | None = Field(
        None,
        description="Optuna storage URL, e.g. postgresql://user:pass@host/db to share one study between machines "
        "(default: study.db, SQLite, in the sweep folder).",
    )
    study_name: str = Field(
        "tuneforge", description="Name of the study in the storage; machines sharing one use the same."
    )
    output_dir: Path | None = Field(
        None, description="Sweep folder (default: sweeps/<date-time>); run again to resume."
    )
    space: dict[str, SearchRange] = Field(
        default_factory=default_space,
        description="Search space: {config key: {low, high, log} or {choices: [...]}}.",
    )

    @field_validator("space")
    @classmethod
    def _known_keys(cls, value: dict[str, SearchRange]) -> dict[str, SearchRange]:
        import difflib

        if not value:
            raise ValueError("the search space is empty; name at least one parameter, e.g. train.learning_rate")
        for key, span in value.items():
            if key not in SEARCHABLE:
                close = difflib.get_close_matches(key, list(SEARCHABLE), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(
                    f"'{key}' is not a parameter the sweep can search; {hint}searchable: {', '.join(SEARCHABLE)}"
                )
            if SEARCHABLE[key] == "choices" and span.choices is None:
                raise ValueError(f"'{key}' takes a list of choices, not a low/high range")
        return value


class TuneforgeConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    train: TrainSection = Field(default_factory=TrainSection)
    serve: ServeSection = Field(default_factory=ServeSection)
    sweep: SweepSection = Field(default_factory=SweepSection)


SECTIONS: dict[str, type[Section]] = {
    name: cast("type[Section]", field.annotation) for name, field in TuneforgeConfig.model_fields.items()
}


def wants_four_bit(cfg: TuneforgeConfig) -> bool:
    """The one rule for a 4-bit base: --load-in-4bit, or --finetune qlora, which means LoRA on one."""
    return cfg.model.load_in_4bit or cfg.train.finetune == "qlora"


def field_help(key: str) -> str:
    """The one description of a dotted key such as 'train.batch_size', for --help."""
    section, name = key.split(".")
    return SECTIONS[section].model_fields[name].description or ""


# Defaults that depend on the method, applied where the plain default would otherwise hold (never over a
# value the profile, a YAML file, the environment or a flag set). Here, next to the fields, so every default
# stays in this file.
_PREFERENCE_DEFAULTS: dict[str, object] = {
    "data.dataset": "medical-preferences",
    "train.learning_rate": 5e-4,  # half SFT's: a fresh adapter on a tuned model, moved by a weaker signal
    # each step scores chosen and rejected, and DPO/KTO a reference too (~10 s a step on 2 CPU cores): 32 steps,
    # the two held-out passes (~90 s each) and loading keep `--method dpo` on the default model within 10 minutes
    "train.max_steps": 32,
}
METHOD_DEFAULTS: dict[str, dict[str, object]] = {"dpo": _PREFERENCE_DEFAULTS, "orpo": _PREFERENCE_DEFAULTS,
                                                 "kto": _PREFERENCE_DEFAULTS}  # fmt: skip
# Full fine-tuning moves every weight, so LoRA's learning rates would wreck the model: TRL's own defaults
# (SFTConfig 2e-5; DPOConfig, ORPOConfig and KTOConfig 1e-6) win over the plain and the method's default.
FULL_LEARNING_RATES: dict[str, float] = {"sft": 2e-5, "pretrain": 2e-5, "dpo": 1e-6, "orpo": 1e-6, "kto": 1e-6}

# Flags not named after their field ("--" + name with dashes); cli.py declares them with these names.
FLAG_NAMES = {
    "model.name": "--model", "data.dataset": "--dataset", "data.format": "--data-format", "data.map": "--data-map",
    "data.split": "--dataset-split", "lora.r": "--lora-r", "lora.alpha": "--lora-alpha",
    "lora.dropout": "--lora-dropout", "train.padding_free": "--packing",
}  # fmt: skip


def flag_for(key: str) -> str:
    """The CLI flag of a dotted key, so the source shown and the fix suggested name the flag the user typed."""
    return FLAG_NAMES.get(key, "--" + key.split(".")[1].replace("_", "-"))


def all_keys() -> list[str]:
    """Every dotted key the config accepts, for 'did you mean' and for source tracking."""
    return [f"{s}.{f}" for s, cls in SECTIONS.items() for f in cls.model_fields]


def default_values() -> dict[str, object]:
    """Flat {dotted key: default}; the defaults themselves live only in the classes above."""
    dumped = TuneforgeConfig().model_dump()
    return {key: dumped[key.split(".")[0]][key.split(".")[1]] for key in all_keys()}
