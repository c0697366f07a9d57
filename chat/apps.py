from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat.heartbeat_cache import session_forgotten, stop_inputs_changed
        from chat.models import ApiToken, ChatSession
        from chat.tokens import api_tokens_forget

        # A revocation or deletion made in this process takes effect here at once.
        def token_deleted(instance: ApiToken, **_: object) -> None:
            api_tokens_forget(key_hash=instance.key_hash)

        def user_saved(instance, **_: object) -> None:
            if not instance.is_active:
                api_tokens_forget(user_pk=instance.pk)

        # Heartbeats read a session's stop inputs from Redis (chat.heartbeat_cache).
        def session_saved(instance: ChatSession, **_: object) -> None:
            stop_inputs_changed([instance.pk])

        def session_deleted(instance: ChatSession, **_: object) -> None:
            session_forgotten(instance)

        post_delete.connect(token_deleted, sender=ApiToken, weak=False)
        post_save.connect(session_saved, sender=ChatSession, weak=False)
        post_delete.connect(session_deleted, sender=ChatSession, weak=False)
        post_save.connect(user_saved, sender=settings.AUTH_USER_MODEL, weak=False)
