"""Notification texts, rendered from templates/notifications/.

Each event may have its own template (`sms/shipped.txt`); otherwise `default` is used with
the event's headline below. The templates render inside `{% localize off %}`: the texts are
English, so a total never takes the separators of whatever language is active, and rendering
skips Django's number formatting (a third of the rendering time).
"""

from dataclasses import dataclass

from django.template.loader import select_template

from notifications.models import Channel, Event

HEADLINES = {
    Event.PLACED: "we have received your order",
    Event.CONFIRMED: "your order is confirmed",
    Event.PROCESSING: "your order is being prepared",
    Event.SHIPPED: "your order is on its way",
    Event.DELIVERED: "your order has been delivered",
    Event.CANCELLED: "your order has been cancelled",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    html_body: str


def _render(kind: str, event: str, context: dict) -> str:
    return select_template(
        [f"notifications/{kind.replace('*', event)}", f"notifications/{kind.replace('*', 'default')}"]
    ).render(context)


def render_notification(*, order, items: list, event: str, channel: str) -> Rendered:
    context = {"order": order, "event": event, "headline": HEADLINES[event], "items": items}
    if channel == Channel.SMS:
        return Rendered(subject="", body=_render("sms/*.txt", event, context).strip(), html_body="")
    subject = " ".join(_render("email/*_subject.txt", event, context).split())
    return Rendered(
        subject=subject[:255],
        body=_render("email/*.txt", event, context).strip() + "\n",
        html_body=_render("email/*.html", event, context),
    )
