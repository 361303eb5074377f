"""Topic administration: create the saga topics and their dead-letter topics at start-up."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from core_saga.messages import dead_letter_topic, is_dead_letter_topic

from adapters_kafka.settings import KafkaSettings


async def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    partitions: int = 6,
    replication_factor: int = 1,
) -> list[str]:
    """Create each topic and its ``<topic>.DLT``; return those that did not exist yet.

    Idempotent, so every replica may call it at start-up. Existing topics are left as they
    are (their partition count is not changed).
    """
    names = list(
        dict.fromkeys(settings.named(name) for topic in topics for name in _with_dead_letter(topic))
    )
    if not names:
        return []
    admin = AIOKafkaAdminClient(**settings.client_options())
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor) for name in names]
        )
    finally:
        await admin.close()
    created = []
    for name, code, *detail in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            raise for_code(code)(f"cannot create topic {name!r}: {detail}")
    return created


def _with_dead_letter(topic: str) -> tuple[str, ...]:
    return (topic,) if is_dead_letter_topic(topic) else (topic, dead_letter_topic(topic))
