"""``imgspec balance``: the account's balance as the API gives it (text or JSON)."""

from __future__ import annotations

from typing import Any

from pipeline.core.apimart.replies import Balance


def balance_text(balance: Balance, *, unit: str | None) -> str:
    """The balance on a line or two; the unit only when the user named it (the API does not)."""
    suffix = f" {unit}" if unit else ""
    used = "" if balance.used is None else f"used {balance.used}{suffix}\n"
    if balance.unlimited:
        return f"balance: unlimited quota\n{used}"
    note = "" if unit else " (unit not given by the API: USD, CNY or tokens by account)"
    return f"balance: {balance.remain}{suffix} remaining{note}\n{used}"


def balance_json(balance: Balance, *, unit: str | None) -> dict[str, Any]:
    """The balance as JSON-ready data (amounts as strings, to stay exact)."""
    return {
        "remain_balance": None if balance.remain is None else str(balance.remain),
        "used_balance": None if balance.used is None else str(balance.used),
        "unlimited_quota": balance.unlimited,
        "unit": unit,
    }
