from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def expire_existing_tokens(apps, schema_editor):
    """Tokens issued before expiry existed live API_TOKEN_TTL_DAYS from their creation."""
    ApiToken = apps.get_model("hunt", "ApiToken")
    ApiToken.objects.update(
        expires_at=F("created_at") + timedelta(days=settings.API_TOKEN_TTL_DAYS)
    )


class Migration(migrations.Migration):
    dependencies = [("hunt", "0002_issue6_leaderboard_index")]

    operations = [
        migrations.AddField(
            model_name="apitoken", name="expires_at", field=models.DateTimeField(null=True)
        ),
        migrations.RunPython(expire_existing_tokens, migrations.RunPython.noop),
    ]
