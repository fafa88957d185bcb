from rest_framework.routers import SimpleRouter

from orders.api import OrderViewSet

router = SimpleRouter()
# Accept /api/orders as well as /api/orders/: a POST cannot be redirected to add the slash.
router.trailing_slash = "/?"
router.register("orders", OrderViewSet, basename="order")

urlpatterns = router.urls
