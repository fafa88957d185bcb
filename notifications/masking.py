"""Show enough of a phone number or email address to recognise it, not enough to use it."""


def mask_recipient(value: str) -> str:
    if not value:
        return ""
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    digits = value.lstrip("+")
    if len(digits) <= 4:
        return "***"
    return f"{'+' if value.startswith('+') else ''}{digits[:2]}***{digits[-2:]}"
