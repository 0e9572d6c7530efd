"""The real services CI provides: PostgreSQL through psycopg, Redis as channel layer and broker."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from lostwallet.settings import channel_layer_host
from tests.conftest import require_postgres, require_redis

pytestmark = pytest.mark.integration


@pytest.mark.django_db
def test_the_test_database_is_postgresql_through_psycopg():
    require_postgres()
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("select version()")
        assert "PostgreSQL" in cursor.fetchone()[0]
    assert connection.Database is psycopg


def test_the_redis_channel_layer_delivers_group_messages():
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[channel_layer_host(require_redis())])
    group = f"test.{uuid.uuid4().hex}"

    async def roundtrip():
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "chat.token", "text": "hello"})
        message = await layer.receive(channel)
        await layer.group_discard(group, channel)
        await layer.flush()
        return message

    assert async_to_sync(roundtrip)() == {"type": "chat.token", "text": "hello"}


def test_celery_reaches_the_redis_broker():
    from lostwallet.celery import app

    url = require_redis()
    with app.connection_for_write(url) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connected
