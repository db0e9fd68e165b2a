"""Django tasks (the django-tasks backport on Django 5.2), run by icc's consumers."""

from django_tasks import task

from shop.models import Order


@task()
def send_receipt(order_id: int) -> str:
    order = Order.objects.get(id=order_id)
    order.receipt_sent = True
    order.save()
    return f"receipt for order {order_id} sent to {order.customer}"
