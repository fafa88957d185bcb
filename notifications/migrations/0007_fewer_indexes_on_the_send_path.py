"""Drop three indexes that others already cover; every send writes every index of its rows.

The uniqueness of dedup_key moves to a named constraint first, so no moment is without it, and
the LIKE index that unique=True adds on PostgreSQL goes.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0006_deadletter_failed_index"),
        ("orders", "0001_initial"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="notification",
            constraint=models.UniqueConstraint(fields=("dedup_key",), name="notification_dedup_key"),
        ),
        migrations.AlterField(
            model_name="notification",
            name="dedup_key",
            field=models.CharField(
                help_text="order:event:channel; one notification per event and channel", max_length=100
            ),
        ),
        migrations.AlterField(
            model_name="notification",
            name="order",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="notifications",
                to="orders.order",
            ),
        ),
        migrations.AlterField(
            model_name="notificationattempt",
            name="notification",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="attempt_log",
                to="notifications.notification",
            ),
        ),
    ]
