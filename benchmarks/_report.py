"""Output helpers shared by the benchmark scripts."""

from __future__ import annotations

import numpy as np
import pandas as pd


def md(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """``df`` as a Markdown table (floats formatted with ``floatfmt``)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, float | np.floating) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
