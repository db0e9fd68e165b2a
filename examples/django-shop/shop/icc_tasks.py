"""The shop's jobs and message handlers: found by icc.contrib.django because the app is installed."""

import icc

from shop.models import DailyReport, Order


def daily_report() -> None:
    """A job that writes through the ORM."""
    report = DailyReport.objects.create(orders=Order.objects.count())
    print(f"{report.orders} orders so far")


def confirm_order(payload: dict) -> None:
    """The handler of "order-placed", sent with dispatch_on_commit once the order is saved."""
    Order.objects.filter(id=payload["order"]).update(confirmed=True)


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(daily_report, name="daily-report").daily().at(6)
    scheduler.command("clearsessions").daily().at(3)  # a management command, output kept like any job


@icc.hookimpl
def register_handlers(register) -> None:
    register("order-placed", confirm_order, queue="async")
