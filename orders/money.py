"""Amounts as customers and operators read them, with their currency (an ISO 4217 code).

Babel's copy of the Unicode CLDR data knows the currencies, their English symbols and how many
decimals each has (JPY none, KWD three). The texts are English, and amounts are written the
English way: `£1,234.50`, or `1,234.50 GBP` where only ASCII will do. An order placed with no
currency configured shows its bare amount, `1234.50`, as before.

Rendering runs in every order's transaction, so the formats are built once per currency and
applied with Python's own number formatting: Babel's pattern engine took 25 µs an amount.
"""

from datetime import date
from decimal import Decimal
from functools import cache

from babel.core import get_global
from babel.numbers import get_currency_precision, get_currency_symbol, get_territory_currencies

TEXT_LOCALE = "en"
# Order amounts keep two decimals (Order.total, OrderItem.unit_price).
STORED_DECIMALS = 2


@cache
def legal_tender() -> frozenset[str]:
    """The currencies legal tender somewhere today: not a withdrawn one (DEM, HRK), a fund or a
    metal (USN, XAU). Read once per process (30 ms)."""
    today = date.today()
    return frozenset(
        code
        for territory in get_global("territory_currencies")
        for code in get_territory_currencies(territory, start_date=today, tender=True)
    )


def currency_problem(code: str) -> str:
    """Why `code` cannot be an order's currency, or "" if it can."""
    if code not in legal_tender():
        return f"{code[:10]!r} is not the ISO 4217 code of a currency in use, e.g. EUR, GBP or USD"
    if minor_digits(code) > STORED_DECIMALS:
        return f"{code} amounts have {minor_digits(code)} decimals; orders keep {STORED_DECIMALS}"
    return ""


@cache
def minor_digits(currency: str) -> int:
    """How many decimals an amount in `currency` has: 2 for GBP, 0 for JPY."""
    return get_currency_precision(currency)


@cache
def _symbol_format(currency: str) -> str:
    symbol = get_currency_symbol(currency, locale=TEXT_LOCALE)
    # A symbol ending in a letter (CHF, KWD) would run into the digits: CHF 9.50, but £9.50 and CA$9.50.
    gap = " " if symbol[-1:].isalpha() else ""
    return f"{symbol}{gap}{{:,.{minor_digits(currency)}f}}"


@cache
def _code_format(currency: str) -> str:
    return f"{{:,.{minor_digits(currency)}f}} {currency}"


def format_money(amount: Decimal, currency: str) -> str:
    """`£1,234.50`, `¥1,200`, `CHF 9.50`; without a currency the bare amount, `1234.50`."""
    return _symbol_format(currency).format(amount) if currency else str(amount)


def format_money_code(amount: Decimal, currency: str) -> str:
    """`1,234.50 GBP`: ASCII only, for an SMS (one symbol outside GSM-7, such as ₹, would make
    the whole text UCS-2, 70 characters a segment); without a currency the bare amount."""
    return _code_format(currency).format(amount) if currency else str(amount)
