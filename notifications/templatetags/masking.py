"""`masked`: free text (a provider's error) with every phone number and email address in it masked,
for the pages that list many rows; a row's own page shows it whole."""

from django import template

from orderflow.masking import mask_text

register = template.Library()


@register.filter
def masked(text) -> str:
    return mask_text(str(text or ""))
