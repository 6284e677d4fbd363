"""One held-out question with the base and the tuned answer, side by side, for the console."""

from __future__ import annotations

from rich.table import Table


def comparison_table(sample: dict[str, str]) -> Table:
    table = Table(title=f"Held-out question: {sample['question']}", show_lines=True, expand=True)
    for column in ("base model", "tuned model", "reference"):
        table.add_column(column, ratio=1)
    table.add_row(sample["base"], sample["tuned"], sample["reference"])
    return table
