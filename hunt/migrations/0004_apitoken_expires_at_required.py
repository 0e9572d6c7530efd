from django.db import migrations, models


class Migration(migrations.Migration):
    # Apart from 0003: PostgreSQL refuses to alter a table in the transaction that updated it
    # while deferred foreign-key checks are pending.
    dependencies = [("hunt", "0003_apitoken_expires_at")]

    operations = [
        migrations.AlterField(
            model_name="apitoken", name="expires_at", field=models.DateTimeField()
        ),
    ]
