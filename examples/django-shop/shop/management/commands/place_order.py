"""`manage.py place_order ann`: what a checkout view does, from the command line."""

from django.core.management.base import BaseCommand
from django.db import transaction
from icc.contrib.django import dispatch_on_commit

from shop.models import Order
from shop.tasks import send_receipt


class Command(BaseCommand):
    help = "Place an order: saved, then confirmed by a queue handler and a receipt sent by a Django task."

    def add_arguments(self, parser):
        parser.add_argument("customer")

    def handle(self, customer, **options):
        with transaction.atomic():
            order = Order.objects.create(customer=customer)
            dispatch_on_commit("order-placed", {"order": order.id})  # sent only if this commits
            result = send_receipt.enqueue(order.id)
        self.stdout.write(f"order {order.id} placed; receipt task {result.id}")
