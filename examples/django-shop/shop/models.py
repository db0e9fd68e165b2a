from django.db import models


class Order(models.Model):
    customer = models.CharField(max_length=100)
    placed_at = models.DateTimeField(auto_now_add=True)
    confirmed = models.BooleanField(default=False)
    receipt_sent = models.BooleanField(default=False)


class DailyReport(models.Model):
    made_at = models.DateTimeField(auto_now_add=True)
    orders = models.IntegerField()
