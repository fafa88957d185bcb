import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages

from orders.models import ChangeSource, Order
from orders.services import order_transition
from tests.factories import UserFactory, place_order

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/orders/order/"


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_changelist_shows_orders_without_n_plus_one(client, operator, shop, django_assert_max_num_queries):
    for _ in range(20):
        place_order(owner=shop)
    with django_assert_max_num_queries(10):
        response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert response.content.decode().count("Ada Lovelace") == 20


# The phone as stored, and as people write it: spaces, brackets, dashes, 00 for the "+".
@pytest.mark.parametrize(
    "term", ["Grace", "grace@example.com", "+14155552671", "+1 (415) 555-2671", "001-415-555-2671", " +1 415 555 2671 "]
)
def test_search_by_name_email_phone(client, operator, shop, term):
    wanted = place_order(
        owner=shop, customer_name="Grace Hopper", customer_email="grace@example.com", customer_phone="+1 415 555 2671"
    )
    place_order(owner=shop, customer_phone="")
    response = client.get(CHANGELIST, {"q": term})
    assert list(response.context["cl"].result_list) == [wanted]


def test_search_by_id(client, operator, shop):
    wanted = place_order(owner=shop)
    # No digits in the other's contact details: an id found inside a phone number is found too.
    place_order(owner=shop, customer_phone="", customer_email="grace@example.com")
    response = client.get(CHANGELIST, {"q": str(wanted.pk)})
    assert list(response.context["cl"].result_list) == [wanted]


def test_search_by_number_as_the_lists_write_it(client, operator, shop):
    wanted = place_order(owner=shop)
    place_order(owner=shop, customer_phone="", customer_email="grace@example.com")
    response = client.get(CHANGELIST, {"q": f"#{wanted.pk}"})
    assert list(response.context["cl"].result_list) == [wanted]


def test_search_by_text_does_not_break_on_the_id_field(client, operator, shop):
    place_order(owner=shop)
    assert client.get(CHANGELIST, {"q": "no such customer"}).status_code == 200


def test_filter_by_status(client, operator, shop):
    place_order(owner=shop)
    cancelled = place_order(owner=shop)
    client.post(CHANGELIST, {"action": "mark_cancelled", "_selected_action": [cancelled.pk]})
    response = client.get(CHANGELIST, {"status__exact": "cancelled"})
    assert list(response.context["cl"].result_list) == [cancelled]


def test_detail_shows_items_and_history(client, operator, shop):
    order = place_order(owner=shop)
    response = client.get(f"{CHANGELIST}{order.pk}/change/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "Green tea" in page
    assert "status history" in page.lower()


def test_orders_are_not_added_in_the_admin(client, operator):
    assert client.get(f"{CHANGELIST}add/").status_code == 403


def test_action_moves_orders_through_the_service(client, operator, shop):
    orders = [place_order(owner=shop) for _ in range(3)]
    response = client.post(
        CHANGELIST, {"action": "mark_confirmed", "_selected_action": [o.pk for o in orders]}, follow=True
    )
    assert response.status_code == 200
    assert "3 order(s) marked confirmed." in messages_of(response)
    for order in orders:
        order.refresh_from_db()
        assert order.status == "confirmed"
        change = order.status_changes.last()
        assert (change.changed_by, change.source) == (operator, "admin")


def test_refused_action_reports_a_message_not_a_500(client, operator, shop):
    pending = place_order(owner=shop)
    response = client.post(CHANGELIST, {"action": "mark_delivered", "_selected_action": [pending.pk]}, follow=True)
    assert response.status_code == 200
    assert any("cannot become delivered" in message for message in messages_of(response))
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_an_action_on_orders_deleted_meanwhile_says_nothing_was_changed(client, operator):
    """A list opened before the orders went: the action has nothing to act on, and says so."""
    response = client.post(CHANGELIST, {"action": "mark_confirmed", "_selected_action": [99999]}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "1 selected row(s) are no longer in this list (removed, or changed so that its filters no longer match) "
        "and were left out: 99999.",
        "Nothing was changed.",
    ]


def test_an_action_names_the_selected_orders_the_list_no_longer_holds(client, operator, shop, published):
    """Selected in a list filtered to pending ones; one was confirmed meanwhile by someone else."""
    kept, moved_meanwhile = place_order(owner=shop), place_order(owner=shop)
    order_transition(order_id=moved_meanwhile.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    response = client.post(
        f"{CHANGELIST}?status__exact=pending",
        {"action": "mark_cancelled", "_selected_action": [kept.pk, moved_meanwhile.pk]},
        follow=True,
    )
    said = messages_of(response)
    assert f"left out: {moved_meanwhile.pk}." in said[0]
    assert "1 order(s) marked cancelled." in said
    moved_meanwhile.refresh_from_db()
    assert moved_meanwhile.status == "confirmed"


def test_a_bulk_action_names_ten_refusals_and_counts_the_rest(client, operator, shop, published):
    orders = [place_order(owner=shop) for _ in range(13)]
    response = client.post(
        CHANGELIST, {"action": "mark_delivered", "_selected_action": [o.pk for o in orders]}, follow=True
    )
    shown = messages_of(response)
    assert sum("cannot become delivered" in message for message in shown) == 10
    assert shown[-1] == "… and 3 more refused."


def test_staff_without_change_permission_cannot_run_actions(client, shop):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(viewer)
    order = place_order(owner=shop)
    page = client.get(CHANGELIST).content.decode()
    assert "mark_confirmed" not in page
    response = client.post(CHANGELIST, {"action": "mark_confirmed", "_selected_action": [order.pk]}, follow=True)
    assert messages_of(response) == [
        "You may not use “Mark selected orders confirmed”: that needs a permission you do not have. "
        "Nothing was changed."
    ]
    order.refresh_from_db()
    assert order.status == "pending"


def test_the_order_page_offers_no_save_for_fields_it_does_not_let_change(client, operator, shop):
    page = client.get(f"{CHANGELIST}{place_order(owner=shop).pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page


def test_the_owner_is_linked_only_for_those_who_may_open_users(client, operator, shop):
    url = f"{CHANGELIST}{place_order(owner=shop).pk}/change/"
    owner_page = f"/admin/auth/user/{shop.pk}/change/"
    assert owner_page in client.get(url).content.decode()

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(viewer)
    page = client.get(url).content.decode()
    assert owner_page not in page  # it would answer 403
    assert shop.username in page


def test_the_admin_links_to_no_site_it_does_not_serve(client, operator):
    assert "View site" not in client.get("/admin/").content.decode()


@pytest.mark.parametrize("may_change", [True, False])
def test_a_post_to_the_order_page_says_nothing_can_be_saved_there(client, operator, shop, may_change):
    order = place_order(owner=shop)
    if not may_change:
        viewer = UserFactory(username="viewer", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
        client.force_login(viewer)
    url = f"{CHANGELIST}{order.pk}/change/"
    response = client.post(url, {"customer_name": "Someone Else", "_save": "Save"}, follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert messages_of(response) == [
        "Nothing was saved: an order's fields are read-only here. Change its status with the actions of the order list."
    ]
    order.refresh_from_db()
    assert order.customer_name == "Ada Lovelace"


def test_a_transition_of_more_orders_than_a_request_can_take_changes_none_and_says_so(
    client, operator, shop, monkeypatch
):
    monkeypatch.setattr("orderflow.admin.ROW_BY_ROW_ACTION_LIMIT", 2)
    orders = [place_order(owner=shop) for _ in range(3)]
    response = client.post(
        CHANGELIST, {"action": "mark_confirmed", "_selected_action": [order.pk for order in orders]}, follow=True
    )
    assert messages_of(response) == [
        "3 orders are selected; this action takes at most 2 at a time. "
        "Nothing was changed: narrow the list with its filters, or select fewer."
    ]
    assert set(Order.objects.values_list("status", flat=True)) == {"pending"}
    client.post(CHANGELIST, {"action": "mark_confirmed", "_selected_action": [order.pk for order in orders[:2]]})
    assert Order.objects.filter(status="confirmed").count() == 2
